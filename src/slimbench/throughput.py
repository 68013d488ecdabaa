"""Training throughput, in images per second: the trainer against the loop it replaced.

``slimbench throughput`` times optimisation steps of ResNet-8 and ResNet-20 students on the real
cifar10_jpeg train split (random crop + flip), alone and under a ResNet-56 teacher (logit
distillation, the teacher's forward every step), on this machine's CPU or a CUDA device:

- ``legacy``: the loop before the device-resident trainer (kept here, verbatim in what it does,
  only for this comparison): each batch gathered on the host and copied over, its crops drawn on
  the host and copied, flips by boolean indexing, a host sync every 50 steps and after every
  teacher forward; float32;
- ``current``: ``training.train_steps`` over ``training.iterate`` on the resident split, at the
  precision ``Recipe.precision: auto`` picks on that device (bf16 autocast on CUDA);
- on CUDA also ``current+compile``: the same with the student under ``torch.compile`` (students alone).

Variants run in interleaved rounds (each round: every variant, the same number of steps), so a
ratio of two variants is taken within a round and slow phases of a shared machine hit both.
Rows give the median images/s with its interquartile range over rounds, and the median ratio to
``legacy`` with a bootstrap 95% interval over rounds.
"""

from __future__ import annotations

import itertools
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .datasets import DataSplits
from .config import project_root
from .environment import fingerprint
from .fileio import atomic_write, write_json
from .methods.distill import kd_logits_loss
from .models import get_model
from .stats import bootstrap_ratio_ci
from .training import Recipe, autocast_dtype, iterate, normalize, on_device, train_steps

StepsFn = Callable[[int], None]  # runs that many optimisation steps and waits for the device


@dataclass(frozen=True)
class Setup:
    student: str  # a registered architecture
    teacher: bool  # under the ResNet-56 teacher (logit distillation) or alone


SETUPS = (Setup("cifar_resnet8", False), Setup("cifar_resnet8", True),
          Setup("cifar_resnet20", False), Setup("cifar_resnet20", True))


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def kd_loss(teacher: nn.Module | None, legacy: bool) -> Callable:
    """Cross-entropy alone, or logit distillation (T=4, alpha=0.9) with the teacher's forward per step."""
    if teacher is None:
        return lambda logits, x, y, idx: F.cross_entropy(logits, y)

    def loss(logits, x, y, idx):
        with torch.inference_mode():
            t = teacher(x)
        if legacy:
            sync(x.device)  # the old TeacherSignal timed each forward with a synchronisation
        return kd_logits_loss(logits, t.clone(), y, 4.0, 0.9)
    return loss


def legacy_steps(model: nn.Module, data: DataSplits, optimizer, scheduler, loss_fn, gen: torch.Generator,
                 dev: torch.device, batch_size: int) -> StepsFn:
    """The loop before the resident trainer, as it ran on ``dev``."""
    part = data.train

    def batches():
        while True:
            order = torch.randperm(len(part), generator=gen)
            for start in range(0, len(part), batch_size):
                idx = order[start:start + batch_size]
                x = normalize(part.images[idx].to(dev, non_blocking=True), data.mean, data.std)
                yield _legacy_augment(x, gen), part.labels[idx].to(dev, non_blocking=True), idx
    stream = batches()

    def run(steps: int) -> None:
        total, count = torch.zeros((), device=dev), 0
        for step, (x, y, idx) in enumerate(itertools.islice(stream, steps)):
            x = x.contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(x), x, y, idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.detach() * len(y)
            count += len(y)
            if step % 50 == 0:
                total.item()  # the progress bar's loss
        total.item()
    return run


def _legacy_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    out = padded[torch.arange(n, device=x.device)[:, None, None, None],
                 torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    out[flip] = out[flip].flip(-1)
    return out


def current_steps(model: nn.Module, data: DataSplits, optimizer, scheduler, loss_fn, gen: torch.Generator,
                  dev: torch.device, batch_size: int) -> StepsFn:
    """``training.train_steps`` on the resident split, as ``fit`` runs it on ``dev``."""
    train = on_device(data.train, dev)
    amp = autocast_dtype(Recipe(), dev)

    def batches():
        while True:
            yield from iterate(train, data, batch_size, shuffle=True, augment="crop_flip", gen=gen, to=dev)
    stream = batches()

    def run(steps: int) -> None:
        total, _ = train_steps(model, itertools.islice(stream, steps), optimizer, scheduler, loss_fn, dev, amp)
        total.item()
    return run


def variant(name: str, setup: Setup, data: DataSplits, teacher: nn.Module | None, dev: torch.device,
            batch_size: int) -> StepsFn:
    """A fresh student (seed 0) with its optimiser, and the steps function of variant ``name``."""
    torch.manual_seed(0)
    model = get_model(setup.student, num_classes=data.num_classes, in_channels=data.in_channels)
    model.to(dev, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=100_000)
    gen = torch.Generator().manual_seed(0)
    make = legacy_steps if name == "legacy" else current_steps
    trainee = torch.compile(model) if name == "current+compile" else model
    return make(trainee, data, optimizer, scheduler, kd_loss(teacher, name == "legacy"), gen, dev, batch_size)


def variants_for(dev: torch.device, setup: Setup) -> tuple[str, ...]:
    """Compilation (tens of seconds per model) is tried on CUDA for a student alone."""
    compiled = ("current+compile",) if dev.type == "cuda" and not setup.teacher else ()
    return ("legacy", "current", *compiled)


def measure(setup: Setup, data: DataSplits, teacher: nn.Module | None, dev: torch.device, batch_size: int,
            rounds: int, steps: int, warmup: int) -> list[dict[str, Any]]:
    """Rows of one setup: every variant timed in ``rounds`` interleaved rounds of ``steps`` steps."""
    runs, errors = {}, {}
    for name in variants_for(dev, setup):
        try:
            runs[name] = variant(name, setup, data, teacher, dev, batch_size)
            runs[name](warmup)  # compilation, cuDNN autotuning, allocator warm-up
        except Exception as exc:  # a variant that cannot run here (e.g. no compiler) is reported, not fatal
            errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
            runs.pop(name, None)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            sync(dev)
            start = time.perf_counter()
            run(steps)
            rates[name].append(steps * batch_size / (time.perf_counter() - start))
    return [_row(setup, name, rates, batch_size, errors.get(name)) for name in variants_for(dev, setup)]


def _row(setup: Setup, name: str, rates: dict[str, list[float]], batch_size: int, error: str | None) -> dict:
    row: dict[str, Any] = {"student": setup.student, "teacher": "cifar_resnet56" if setup.teacher else None,
                           "variant": name, "batch_size": batch_size}
    if name not in rates:
        return {**row, "images_per_s": None, "error": error}
    got = rates[name]
    q25, q75 = np.percentile(got, [25, 75])
    row.update(images_per_s=round(statistics.median(got)), images_per_s_iqr=[round(q25), round(q75)],
               samples=[round(r) for r in got])
    if name != "legacy" and rates.get("legacy"):  # median(new) / median(legacy), rounds resampled as pairs
        low, high = bootstrap_ratio_ci(got, rates["legacy"])
        row.update(vs_legacy=round(statistics.median(got) / statistics.median(rates["legacy"]), 3),
                   vs_legacy_ci95=[round(low, 3), round(high, 3)])
    return row


def machine(dev: torch.device, threads: int) -> dict[str, Any]:
    env = fingerprint(project_root())
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else env.get("cpu") or platform.processor()
    return {"device": dev.type, "name": where, "torch": torch.__version__, "threads": threads,
            "cpu": env.get("cpu"), "cpu_cores": env.get("cpu_cores"), "commit": env.get("commit"),
            "dirty": env.get("dirty")}


def run(data: DataSplits, teacher: nn.Module, dev: torch.device, batch_size: int, rounds: int, steps: int,
        warmup: int, setups: tuple[Setup, ...] = SETUPS) -> dict[str, Any]:
    """The measurement of one device: its machine facts and one row per setup and variant."""
    teacher = teacher.to(dev, memory_format=torch.channels_last).eval()
    rows = []
    for setup in setups:
        measured = measure(setup, data, teacher if setup.teacher else None, dev, batch_size, rounds, steps, warmup)
        print(format_rows(measured), flush=True)
        rows += measured
    return {"machine": machine(dev, torch.get_num_threads()), "rounds": rounds, "steps_per_round": steps,
            "dataset": data.name, "train_images": len(data.train), "rows": rows,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        who = f"{r['student']}{' + teacher' if r['teacher'] else ''} {r['variant']}"
        if r.get("images_per_s") is None:
            lines.append(f"{who}: not run ({r.get('error')})")
            continue
        ratio = f", x{r['vs_legacy']} [{r['vs_legacy_ci95'][0]}, {r['vs_legacy_ci95'][1]}]" if "vs_legacy" in r else ""
        lines.append(f"{who}: {r['images_per_s']} images/s (IQR {r['images_per_s_iqr'][0]}-{r['images_per_s_iqr'][1]}){ratio}")
    return "\n".join(lines)


def markdown(doc: dict[str, Any]) -> str:
    """One table per measured device of results/throughput.json."""
    out = []
    for key, entry in sorted(doc.get("devices", {}).items()):
        m = entry["machine"]
        out.append(f"**{m['name']}** ({m['device']}, torch {m['torch']}, {m['threads']} threads, batch "
                   f"{entry['rows'][0]['batch_size']}, {entry['rounds']} rounds of {entry['steps_per_round']} steps, "
                   f"commit {str(m.get('commit'))[:10]}{' with uncommitted changes' if m.get('dirty') else ''}, "
                   f"{entry['measured_at']})\n")
        out.append("| student | teacher | trainer | images/s (median) | IQR | vs legacy (95% CI) |")
        out.append("|---|---|---|---:|---|---|")
        for r in entry["rows"]:
            rate = "not run: " + str(r.get("error")) if r.get("images_per_s") is None else f"{r['images_per_s']:,}"
            iqr = "" if r.get("images_per_s") is None else f"{r['images_per_s_iqr'][0]:,}-{r['images_per_s_iqr'][1]:,}"
            vs = f"{r['vs_legacy']:.2f}x [{r['vs_legacy_ci95'][0]:.2f}, {r['vs_legacy_ci95'][1]:.2f}]" if "vs_legacy" in r else ""
            out.append(f"| {r['student']} | {r['teacher'] or '-'} | {r['variant']} | {rate} | {iqr} | {vs} |")
        out.append("")
    return "\n".join(out)


def record(path: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Put ``entry`` into the JSON at ``path`` under its device's key (one entry per device model)
    and write the Markdown tables beside it; returns the whole document."""
    doc = json.loads(path.read_text()) if path.is_file() else {}
    key = f"{entry['machine']['device']}: {entry['machine']['name']}"
    doc = {"about": __doc__.split("\n\n")[0], "devices": {**doc.get("devices", {}), key: entry}}
    write_json(path, doc)
    text = "# Training throughput\n\n" + markdown(doc)
    atomic_write(path.with_suffix(".md"), lambda tmp: Path(tmp).write_text(text))
    return doc

