"""Plain training and evaluation functions (train_one_epoch, evaluate, fit), torchvision-reference style.

Images stay uint8 in memory; batches are normalised (and augmented) on the fly. Model selection
uses the validation split only: `fit` keeps the weights of the best validation epoch.
Training and evaluation run on ``device()`` ($SLIMBENCH_DEVICE, default cpu); models are handed
back on the CPU, where every cost metric is measured.

The loop keeps an accelerator busy: the uint8 splits are moved to the device once per ``fit``,
an epoch's shuffle and augmentation draws are made in one go (``augment.epoch_plan``, the CPU
generator's draws in the same order as one batch at a time, so CPU runs are unchanged) and sent
over once, augmentation runs on the device, and the host waits on the device once per epoch
(the loss), not per step. On CUDA the step runs under bf16 autocast (``Recipe.precision``: auto).

Levers a recipe may switch on (all off by default, so default recipes train bit for bit as before):
``schedule: cosine`` (with ``warmup_epochs``), ``ema`` (a weight EMA that is evaluated, selected
and returned), and ``augment: randaugment | trivialaugment`` (torchvision's policies on the uint8
batch, one op draw per chunk of ``augment.POLICY_CHUNK`` images, then crop and flip).
"""

from __future__ import annotations

import copy
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .augment import AUGMENTS, crop_flip, crop_padding, epoch_plan
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
    augment: str = "none"  # none | crop | crop_flip | randaugment | trivialaugment (the last two: + crop_flip)
    label_smoothing: float = 0.0
    precision: str = "auto"  # auto (bf16 autocast on CUDA, float32 elsewhere) | fp32 | bf16
    seed: int = 0
    schedule: str = "onecycle"  # onecycle (15% warm-up, cosine down) | cosine (from lr to 0 per step)
    warmup_epochs: int = 0  # cosine only: linear warm-up from lr / warm-up steps to lr
    ema: float = 0.0  # 0: off; else the per-step decay of a weight EMA that is evaluated and kept

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


# Values a recipe's string fields take (make_optimizer, augment.epoch_plan, autocast_dtype, make_scheduler).
RECIPE_CHOICES = {"optimizer": ("sgd", "adamw"), "augment": AUGMENTS,
                  "precision": ("auto", "fp32", "bf16"), "schedule": ("onecycle", "cosine")}


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 [N,C,H,W] -> float, scaled to [0,1] and standardised per channel."""
    m = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


def on_device(part: ImageSet, dev: torch.device) -> ImageSet:
    """``part`` with its uint8 images and labels on ``dev`` (the tensors themselves when already there)."""
    return ImageSet(part.images.to(dev), part.labels.to(dev))


def iterate(part: ImageSet, data: DataSplits, batch_size: int, *, shuffle: bool = False,
            augment: str = "none", gen: torch.Generator | None = None,
            to: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(normalised float images, labels, positions in ``part``) batches, on device ``to`` (default cpu).
    ``part`` is moved there whole, once."""
    part = on_device(part, torch.device(to or "cpu"))
    dev = part.images.device
    n, pad = len(part), crop_padding(part.images.shape[-2])
    plan = epoch_plan(n, batch_size, augment if gen is not None else "none", pad, gen, shuffle,
                      size=tuple(part.images.shape[-2:])).to(dev)
    for b, start in enumerate(range(0, n, batch_size)):
        idx = plan.order[start:start + batch_size]
        images = part.images[idx]
        if plan.policy is not None:
            images = plan.policy.apply(images, plan.ops[b])
        x = normalize(images, data.mean, data.std)
        if plan.dy is not None:
            stop = start + len(idx)
            x = crop_flip(x, plan.dy[start:stop], plan.dx[start:stop],
                          None if plan.flip is None else plan.flip[start:stop], pad)
        yield x, part.labels[idx], idx


def autocast_dtype(recipe: Recipe, dev: torch.device) -> torch.dtype | None:
    """The autocast dtype of a training step: bf16 on CUDA under ``precision: auto``, else as set."""
    if recipe.precision not in RECIPE_CHOICES["precision"]:
        raise ConfigError(f"unknown precision {recipe.precision!r}; valid: {', '.join(RECIPE_CHOICES['precision'])}")
    wanted = recipe.precision if recipe.precision != "auto" else ("bf16" if dev.type == "cuda" else "fp32")
    return torch.bfloat16 if wanted == "bf16" else None


def autocast(dev: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    return torch.autocast(dev.type, dtype=dtype) if dtype is not None else nullcontext()


def eval_batch_size(dev: torch.device) -> int:
    """Large batches on an accelerator; 512 on the CPU (the size CPU-trained models were selected with)."""
    return 2048 if dev.type == "cuda" else 512


class DeviceClock:
    """Sums the time spent in ``with clock:`` blocks; on CUDA with events, read once at the end
    (``seconds``), so timing a step does not make the host wait for the device."""

    def __init__(self) -> None:
        self._host = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._start = 0.0

    def timed(self, dev: torch.device) -> AbstractContextManager:
        return _CudaSpan(self) if dev.type == "cuda" else _HostSpan(self)

    @property
    def seconds(self) -> float:
        if self._events:
            torch.cuda.synchronize()
        return self._host + sum(a.elapsed_time(b) for a, b in self._events) / 1000.0


class _HostSpan:
    def __init__(self, clock: DeviceClock) -> None:
        self.clock = clock

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.clock._host += time.perf_counter() - self.start


class _CudaSpan(_HostSpan):
    def __enter__(self) -> None:
        self.events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        self.events[0].record()

    def __exit__(self, *exc: object) -> None:
        self.events[1].record()
        self.clock._events.append(self.events)


def runs_on_cpu_only(model: nn.Module) -> bool:
    """torch.ao quantized modules have CPU kernels only."""
    return any(".quantized" in type(m).__module__ for m in model.modules())


@torch.inference_mode()
def predict(model: nn.Module, part: ImageSet, data: DataSplits, batch_size: int | None = None) -> torch.Tensor:
    """Logits (float32, on the CPU) of ``model`` on every item of ``part``, in order; runs on
    ``device()`` in float32 (``eval_batch_size`` images at a time unless given)."""
    model.eval()
    dev = device() if not runs_on_cpu_only(model) else torch.device("cpu")
    home = next(model.parameters()).device if any(True for _ in model.parameters()) else dev
    model.to(dev)
    try:
        batches = iterate(part, data, batch_size or eval_batch_size(dev), to=dev)
        return torch.cat([model(x).float() for x, _, _ in batches]).cpu()
    finally:
        model.to(home)


def evaluate(model: nn.Module, part: ImageSet, data: DataSplits, batch_size: int | None = None) -> float:
    """Top-1 accuracy in percent."""
    logits = predict(model, part, data, batch_size)
    return 100.0 * (logits.argmax(1) == part.labels.cpu()).float().mean().item()


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay, nesterov=recipe.momentum > 0)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ConfigError(f"unknown optimizer {recipe.optimizer!r}; valid: sgd, adamw")


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per batch: OneCycle (15% warm-up, cosine annealing), or cosine from ``lr`` to 0
    after ``warmup_epochs`` of linear warm-up."""
    steps = max(1, recipe.epochs * steps_per_epoch)
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=steps,
                                                   pct_start=0.15, anneal_strategy="cos")
    if recipe.schedule != "cosine":
        raise ConfigError(f"unknown schedule {recipe.schedule!r}; valid: {', '.join(RECIPE_CHOICES['schedule'])}")
    warm = recipe.warmup_epochs * steps_per_epoch
    if recipe.warmup_epochs and warm >= steps:
        raise ConfigError(f"warmup_epochs {recipe.warmup_epochs} is not below epochs {recipe.epochs}; "
                          "fix: shorten the warm-up")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, warm, steps))


def cosine_factor(step: int, warm: int, steps: int) -> float:
    """Learning-rate multiplier at ``step``: linear to 1 over ``warm`` steps, then half a cosine to 0."""
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


class WeightEMA:
    """An exponential moving average of a model's weights and BatchNorm statistics (every float
    parameter and buffer; integer buffers are copied), updated after every optimiser step. The decay
    warms up as in TensorFlow's ExponentialMovingAverage, min(decay, (1 + t) / (10 + t)) at step t,
    so a fit of a few hundred steps (a pruning round's fine-tune) is not averaged with its start.
    torch's AveragedModel has no warm-up and reads its step count on the device every step
    (``bool(n_averaged == 0)``), a host wait per step; here the count stays on the host."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"ema {decay} is not a decay in (0, 1); fix: e.g. ema: 0.999, or 0 for off")
        for m in model.modules():  # a pruning mask's hook leaves `weight` as a non-leaf, which deepcopy refuses
            for name, value in list(vars(m).items()):
                if isinstance(value, torch.Tensor) and not value.is_leaf:
                    setattr(m, name, value.detach())  # recomputed by the hook on the next forward
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.steps = decay, 0
        pairs = list(zip(self._tensors(self.module), self._tensors(model)))
        self._floats = [list(t) for t in zip(*[pair for pair in pairs if pair[0].is_floating_point()])]
        self._ints = [pair for pair in pairs if not pair[0].is_floating_point()]

    @staticmethod
    def _tensors(model: nn.Module) -> list[torch.Tensor]:
        return [t.detach() for t in (*model.parameters(), *model.buffers())]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.steps) / (10 + self.steps))

    @torch.no_grad()
    def update(self) -> None:
        if self._floats:
            torch._foreach_lerp_(self._floats[0], self._floats[1], 1.0 - self.current_decay())
        for mine, theirs in self._ints:
            mine.copy_(theirs)
        self.steps += 1


def train_steps(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                loss_fn: LossFn, dev: torch.device, amp: torch.dtype | None,
                after_step: Callable[[], None] | None = None) -> tuple[torch.Tensor, int]:
    """The optimisation steps over ``batches``: (summed loss, on the device; images seen); ``after_step``
    runs after each (the weight EMA). Nothing here makes the host wait for the device."""
    total, count = torch.zeros((), device=dev), 0
    for x, y, idx in batches:
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(dev, amp):
            loss = loss_fn(model(x), x, y, idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if after_step is not None:
            after_step()
        total += loss.detach().float() * len(y)
        count += len(y)
    return total, count


def train_one_epoch(model: nn.Module, data: DataSplits, recipe: Recipe, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, loss_fn: LossFn, gen: torch.Generator,
                    desc: str = "", train: ImageSet | None = None, ema: WeightEMA | None = None) -> float:
    """One pass over the train split (``train``: that split already on the device); returns the
    mean loss, the one value the host waits for."""
    model.train()
    dev = device()
    train = train or on_device(data.train, dev)
    steps = (len(train) + recipe.batch_size - 1) // recipe.batch_size
    batches = iterate(train, data, recipe.batch_size, shuffle=True, augment=recipe.augment, gen=gen, to=dev)
    total, count = train_steps(model, tqdm(batches, total=steps, desc=desc, leave=False, mininterval=5, disable=None),
                               optimizer, scheduler, loss_fn, dev, autocast_dtype(recipe, dev),
                               after_step=None if ema is None else ema.update)
    return total.item() / max(count, 1)


def cross_entropy_loss(recipe: Recipe) -> LossFn:
    return lambda logits, x, y, idx: F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)


def fit(model: nn.Module, data: DataSplits, recipe: Recipe, loss_fn: LossFn | None = None,
        resume_path: Path | None = None, desc: str = "train", on_epoch: EpochHook | None = None) -> FitResult:
    """Train ``model`` in place for ``recipe.epochs`` on ``device()``; keep the best-validation weights
    (with ``recipe.ema``: the EMA's weights, which are the ones evaluated and selected).

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
    scheduler = make_scheduler(optimizer, recipe, (len(data.train) + recipe.batch_size - 1) // recipe.batch_size)
    ema = WeightEMA(model, recipe.ema) if recipe.ema else None
    state = {"epoch": 0, "best_val": -1.0, "best_epoch": 0, "best_state": None, "history": [], "seconds": 0.0}
    if resume_path is not None and resume_path.is_file():
        state = _load_resume(resume_path, model, optimizer, scheduler, gen, ema)
    selected = model if ema is None else ema.module  # the weights evaluated, selected and returned
    train, val_part = on_device(data.train, device()), on_device(data.val, device())  # moved once per fit
    for epoch in range(state["epoch"] + 1, recipe.epochs + 1):
        start = time.perf_counter()
        if on_epoch is not None:
            on_epoch(epoch, recipe.epochs)
        loss = train_one_epoch(model, data, recipe, optimizer, scheduler, loss_fn, gen,
                               desc=f"{desc} {epoch}/{recipe.epochs}", train=train, ema=ema)
        val = evaluate(selected, val_part, data)
        state["seconds"] += time.perf_counter() - start
        state["history"].append({"epoch": epoch, "loss": round(loss, 5), "val_top1": round(val, 3)})
        if ema is not None:  # the raw weights too, for the EMA's ablation (outside the timed span)
            state["history"][-1]["val_top1_raw"] = round(evaluate(model, val_part, data), 3)
        tqdm.write(f"[{desc}] epoch {epoch}/{recipe.epochs} loss {loss:.4f} val_top1 {val:.2f}%")
        if val > state["best_val"]:
            state.update(best_val=val, best_epoch=epoch,
                         best_state={k: v.detach().to("cpu", copy=True) for k, v in selected.state_dict().items()})
        state["epoch"] = epoch
        if resume_path is not None:
            _save_resume(resume_path, state, model, optimizer, scheduler, gen, ema)
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


def finetune(model: nn.Module, ctx: TrainingContext, epochs: int, tag: str, loss_fn: LossFn | None = None) -> None:
    """Fine-tune (pruning masks, if any, attached) for ``epochs`` epochs of the case recipe, resumable
    under ``tag``, with ``loss_fn`` (default: the recipe's cross-entropy); the best epoch is appended
    to ``ctx.log["best_epochs"]``. No-op at 0."""
    if epochs > 0:
        result = fit(model, ctx.data, replace(ctx.recipe, epochs=epochs), loss_fn=loss_fn, desc=tag,
                     resume_path=ctx.resume_path(tag))
        ctx.log.setdefault("best_epochs", []).append(result.best_epoch)


def _save_resume(path: Path, state: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, gen: torch.Generator,
                 ema: WeightEMA | None = None) -> None:
    blob = {**state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "gen": gen.get_state(), "torch_rng": torch.get_rng_state()}
    if ema is not None:
        blob.update(ema=ema.module.state_dict(), ema_steps=ema.steps)
    atomic_torch_save(path, blob)


def _load_resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, gen: torch.Generator,
                 ema: WeightEMA | None = None) -> dict:
    blob = torch.load(path, map_location=device(), weights_only=True)  # tensors and plain values only
    model.load_state_dict(blob.pop("model"))
    ema_state, ema_steps = blob.pop("ema", None), blob.pop("ema_steps", 0)
    if ema is not None and ema_state is not None:
        ema.module.load_state_dict(ema_state)
        ema.steps = ema_steps
    optimizer.load_state_dict(blob.pop("optimizer"))
    scheduler.load_state_dict(blob.pop("scheduler"))
    gen.set_state(blob.pop("gen").cpu())
    torch.set_rng_state(blob.pop("torch_rng").cpu())
    tqdm.write(f"resuming from {path} after epoch {blob['epoch']}")
    return blob
