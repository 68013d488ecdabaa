"""Plain training and evaluation functions (train_one_epoch, evaluate, fit), torchvision-reference style.

Images stay uint8 in memory; batches are normalised (and augmented) on the fly. Model selection
uses the validation split only: `fit` keeps the weights of the best validation epoch.
Training and evaluation run on ``device()`` ($SLIMBENCH_DEVICE, default cpu); models are handed
back on the CPU, where every cost metric is measured.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .datasets import DataSplits, ImageSet
from .errors import ConfigError
from .fileio import atomic_torch_save

# (logits, x, y, idx) -> loss; idx are the batch's positions in the train split
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
EpochHook = Callable[[int, int], None]  # (epoch about to start, 1-based; total epochs)


def device() -> torch.device:
    """Where training and evaluation run: $SLIMBENCH_DEVICE (cpu, cuda, cuda:1, ...), default cpu."""
    name = os.environ.get("SLIMBENCH_DEVICE", "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"SLIMBENCH_DEVICE={name!r} is not a device; fix: use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"SLIMBENCH_DEVICE={name} but torch sees no CUDA device; fix: unset it or use cpu")
    return dev


def trained_on() -> str:
    """The device and torch build training ran on, for rows and teacher metadata."""
    dev = device()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    return f"{dev.type} ({name}), torch {torch.__version__}"


@dataclass
class Recipe:
    """How to train: every field is a case setting in params.yaml."""

    epochs: int = 1
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: str = "none"  # none | crop | crop_flip
    label_smoothing: float = 0.0
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict | None) -> "Recipe":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown recipe keys {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitResult:
    best_val_top1: float
    best_epoch: int
    seconds: float
    history: list[dict] = field(default_factory=list)


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 [N,C,H,W] -> float, scaled to [0,1] and standardised per channel."""
    m = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


def augment_batch(x: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
    """Random crop (4-pixel zero padding, 1/8 of the side for small images) and horizontal flip."""
    if mode == "none":
        return x
    if mode not in ("crop", "crop_flip"):
        raise ConfigError(f"unknown augment {mode!r}; valid: none, crop, crop_flip")
    n, c, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # one gather, no per-image loop
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    out = padded[torch.arange(n, device=x.device)[:, None, None, None],
                 torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    if mode == "crop_flip":
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        out[flip] = out[flip].flip(-1)
    return out


def iterate(part: ImageSet, data: DataSplits, batch_size: int, *, shuffle: bool = False,
            augment: str = "none", gen: torch.Generator | None = None,
            to: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(normalised float images, labels, positions in ``part``) batches, on device ``to`` (default cpu)."""
    order = torch.randperm(len(part), generator=gen) if shuffle else torch.arange(len(part))
    for start in range(0, len(part), batch_size):
        idx = order[start:start + batch_size]
        x = normalize(part.images[idx].to(to or "cpu", non_blocking=True), data.mean, data.std)
        y = part.labels[idx].to(to or "cpu", non_blocking=True)
        yield (augment_batch(x, augment, gen) if gen is not None else x), y, idx


def runs_on_cpu_only(model: nn.Module) -> bool:
    """torch.ao quantized modules have CPU kernels only."""
    return any(".quantized" in type(m).__module__ for m in model.modules())


@torch.inference_mode()
def predict(model: nn.Module, part: ImageSet, data: DataSplits, batch_size: int = 512) -> torch.Tensor:
    """Logits (on the CPU) of ``model`` on every item of ``part``, in order; runs on ``device()``."""
    model.eval()
    dev = device() if not runs_on_cpu_only(model) else torch.device("cpu")
    home = next(model.parameters()).device if any(True for _ in model.parameters()) else dev
    model.to(dev)
    try:
        return torch.cat([model(x).float().cpu() for x, _, _ in iterate(part, data, batch_size, to=dev)])
    finally:
        model.to(home)


def evaluate(model: nn.Module, part: ImageSet, data: DataSplits, batch_size: int = 512) -> float:
    """Top-1 accuracy in percent."""
    logits = predict(model, part, data, batch_size)
    return 100.0 * (logits.argmax(1) == part.labels).float().mean().item()


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay, nesterov=recipe.momentum > 0)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ConfigError(f"unknown optimizer {recipe.optimizer!r}; valid: sgd, adamw")


def train_one_epoch(model: nn.Module, data: DataSplits, recipe: Recipe, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, loss_fn: LossFn, gen: torch.Generator,
                    desc: str = "") -> float:
    """One pass over the train split; returns the mean loss."""
    model.train()
    dev = device()
    total, count = torch.zeros((), device=dev), 0
    steps = (len(data.train) + recipe.batch_size - 1) // recipe.batch_size
    bar = tqdm(iterate(data.train, data, recipe.batch_size, shuffle=True, augment=recipe.augment, gen=gen, to=dev),
               total=steps, desc=desc, leave=False, mininterval=5, disable=None)
    for step, (x, y, idx) in enumerate(bar):
        x = x.contiguous(memory_format=torch.channels_last)
        loss = loss_fn(model(x), x, y, idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.detach() * len(y)  # summed on the device: no host sync per step
        count += len(y)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{total.item() / count:.4f}", refresh=False)
    return total.item() / max(count, 1)


def cross_entropy_loss(recipe: Recipe) -> LossFn:
    return lambda logits, x, y, idx: F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)


def fit(model: nn.Module, data: DataSplits, recipe: Recipe, loss_fn: LossFn | None = None,
        resume_path: Path | None = None, desc: str = "train", on_epoch: EpochHook | None = None) -> FitResult:
    """Train ``model`` in place for ``recipe.epochs`` on ``device()``; keep the best-validation weights.

    ``on_epoch(epoch, epochs)`` runs before each epoch (loss-weight schedules). With
    ``resume_path``, state is saved atomically after every epoch and a rerun resumes from the
    last finished epoch. The file outlives training: the caller removes it once the trained model
    is stored, so a kill in between loses nothing. The model ends on the CPU.
    """
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    loss_fn = loss_fn or cross_entropy_loss(recipe)
    model.to(device(), memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    steps = max(1, recipe.epochs * ((len(data.train) + recipe.batch_size - 1) // recipe.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=steps,
                                                    pct_start=0.15, anneal_strategy="cos")
    state = {"epoch": 0, "best_val": -1.0, "best_epoch": 0, "best_state": None, "history": [], "seconds": 0.0}
    if resume_path is not None and resume_path.is_file():
        state = _load_resume(resume_path, model, optimizer, scheduler, gen)
    for epoch in range(state["epoch"] + 1, recipe.epochs + 1):
        start = time.perf_counter()
        if on_epoch is not None:
            on_epoch(epoch, recipe.epochs)
        loss = train_one_epoch(model, data, recipe, optimizer, scheduler, loss_fn, gen,
                               desc=f"{desc} {epoch}/{recipe.epochs}")
        val = evaluate(model, data.val, data)
        state["seconds"] += time.perf_counter() - start
        state["history"].append({"epoch": epoch, "loss": round(loss, 5), "val_top1": round(val, 3)})
        tqdm.write(f"[{desc}] epoch {epoch}/{recipe.epochs} loss {loss:.4f} val_top1 {val:.2f}%")
        if val > state["best_val"]:
            state.update(best_val=val, best_epoch=epoch,
                         best_state={k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        state["epoch"] = epoch
        if resume_path is not None:
            _save_resume(resume_path, state, model, optimizer, scheduler, gen)
    model.to("cpu", memory_format=torch.contiguous_format)
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    return FitResult(state["best_val"], state["best_epoch"], state["seconds"], state["history"])


class TrainingContext(Protocol):
    """What ``finetune`` reads from a method's context (``methods.base.Context`` is one)."""

    data: DataSplits
    recipe: Recipe
    log: dict[str, Any]

    def resume_path(self, tag: str) -> Path | None: ...


def finetune(model: nn.Module, ctx: TrainingContext, epochs: int, tag: str) -> None:
    """Fine-tune (pruning masks, if any, attached) for ``epochs`` epochs of the case recipe, resumable
    under ``tag``; the best epoch is appended to ``ctx.log["best_epochs"]``. No-op at 0."""
    if epochs > 0:
        result = fit(model, ctx.data, replace(ctx.recipe, epochs=epochs), desc=tag,
                     resume_path=ctx.resume_path(tag))
        ctx.log.setdefault("best_epochs", []).append(result.best_epoch)


def _save_resume(path: Path, state: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, gen: torch.Generator) -> None:
    blob = {**state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "gen": gen.get_state(), "torch_rng": torch.get_rng_state()}
    atomic_torch_save(path, blob)


def _load_resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, gen: torch.Generator) -> dict:
    blob = torch.load(path, map_location=device(), weights_only=True)  # tensors and plain values only
    model.load_state_dict(blob.pop("model"))
    optimizer.load_state_dict(blob.pop("optimizer"))
    scheduler.load_state_dict(blob.pop("scheduler"))
    gen.set_state(blob.pop("gen").cpu())
    torch.set_rng_state(blob.pop("torch_rng").cpu())
    tqdm.write(f"resuming from {path} after epoch {blob['epoch']}")
    return blob
