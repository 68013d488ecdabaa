"""Data augmentation of training batches, drawn per epoch (``epoch_plan``) and applied on the
batch's device: random crops and flips as one gather (``crop_flip``), and RandAugment /
TrivialAugment from torchvision.transforms.v2 per chunk of images (``BatchPolicy``).

Every draw comes from the fit's generator, on the host, in one go per epoch, so a run is
deterministic and no step waits for the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from .errors import ConfigError

POLICIES = ("randaugment", "trivialaugment")
AUGMENTS = ("none", "crop", "crop_flip", *POLICIES)  # the values of ``Recipe.augment``


def crop_padding(height: int) -> int:
    """Zero padding of the random crop: 4 pixels at 32, 1/8 of the side for small images."""
    return max(1, height // 8)


# Ops drawn per chunk of this many images of a batch: torchvision's policies apply one op to
# whatever they are given, and one call per image would be a Python loop per step.
POLICY_CHUNK = 8
Ops = list[tuple[str, float]]  # (torchvision op name, signed magnitude), applied in order


class BatchPolicy:
    """RandAugment (2 ops at magnitude 9 of 31) or TrivialAugmentWide (1 op, uniform magnitude) from
    torchvision.transforms.v2, with the draws made from the fit's generator (not torch's global one)
    and each op applied to a chunk of a uint8 batch on its device."""

    def __init__(self, augment: str, height: int, width: int) -> None:
        self.transform = v2.RandAugment() if augment == "randaugment" else v2.TrivialAugmentWide()
        self.num_ops = getattr(self.transform, "num_ops", 1)
        bins = self.transform.num_magnitude_bins
        # torchvision's own op table: {name: (magnitudes(bins, h, w) or None, signed)}
        self.space = [(name, fn(bins, height, width), signed)
                      for name, (fn, signed) in self.transform._AUGMENTATION_SPACE.items()]

    def draw(self, chunks: int, gen: torch.Generator | None) -> list[Ops]:
        """Ops of ``chunks`` chunks: op ids, magnitude bins, then signs, each drawn for all at once."""
        shape = (chunks, self.num_ops)
        ops = torch.randint(len(self.space), shape, generator=gen).tolist()
        fixed = getattr(self.transform, "magnitude", None)  # RandAugment: one magnitude bin
        bins = torch.full(shape, fixed).tolist() if fixed is not None else \
            torch.randint(self.transform.num_magnitude_bins, shape, generator=gen).tolist()
        signs = (torch.rand(shape, generator=gen) < 0.5).tolist()
        return [[self.op(o, b, neg) for o, b, neg in zip(*row)] for row in zip(ops, bins, signs)]

    def op(self, index: int, magnitude_bin: int, negative: bool) -> tuple[str, float]:
        name, magnitudes, signed = self.space[index]
        magnitude = 0.0 if magnitudes is None else float(magnitudes[magnitude_bin])
        return name, -magnitude if signed and negative else magnitude

    def apply(self, images: torch.Tensor, chunk_ops: list[Ops]) -> torch.Tensor:
        """``images`` (uint8) with chunk k's ops applied to its POLICY_CHUNK images."""
        t = self.transform
        out = []
        for k, ops in enumerate(chunk_ops):
            chunk = images[k * POLICY_CHUNK:(k + 1) * POLICY_CHUNK]
            for name, magnitude in ops:
                chunk = t._apply_image_or_video_transform(chunk, name, magnitude, interpolation=t.interpolation,
                                                          fill=t._fill)
            out.append(chunk)
        return torch.cat(out)


@dataclass
class EpochPlan:
    """One epoch's random choices: the shuffle and, per image in shuffled order, crop offsets and flips;
    with a policy (``augment: randaugment | trivialaugment``), each batch's chunk ops."""

    order: torch.Tensor
    dy: torch.Tensor | None = None
    dx: torch.Tensor | None = None
    flip: torch.Tensor | None = None
    policy: BatchPolicy | None = None
    ops: list[list[Ops]] | None = None  # per batch, per chunk

    def to(self, dev: torch.device) -> "EpochPlan":
        move = lambda t: None if t is None else t.to(dev, non_blocking=True)  # noqa: E731
        return EpochPlan(move(self.order), move(self.dy), move(self.dx), move(self.flip), self.policy, self.ops)


def epoch_plan(n: int, batch_size: int, augment: str, pad: int, gen: torch.Generator | None,
               shuffle: bool = True, size: tuple[int, int] | None = None) -> EpochPlan:
    """Draws from ``gen`` in the order a batch-at-a-time loop makes them: the permutation, then per
    batch the vertical offsets, horizontal offsets and flips; so a run gets the same numbers. A
    policy's ops (images of ``size``) are drawn after those."""
    if augment not in AUGMENTS:
        raise ConfigError(f"unknown augment {augment!r}; valid: {', '.join(AUGMENTS)}")
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    if augment == "none":
        return EpochPlan(order)
    dy, dx, flip = [], [], []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        dy.append(torch.randint(0, 2 * pad + 1, (m,), generator=gen))
        dx.append(torch.randint(0, 2 * pad + 1, (m,), generator=gen))
        if augment != "crop":
            flip.append(torch.rand(m, generator=gen) < 0.5)
    plan = EpochPlan(order, torch.cat(dy), torch.cat(dx), torch.cat(flip) if flip else None)
    if augment in POLICIES:
        if size is None:
            raise ValueError(f"augment {augment} needs the image size")
        plan.policy = BatchPolicy(augment, *size)
        per_batch = [-(-min(batch_size, n - start) // POLICY_CHUNK) for start in range(0, n, batch_size)]
        ops = plan.policy.draw(sum(per_batch), gen)
        bounds = torch.tensor([0, *per_batch]).cumsum(0).tolist()
        plan.ops = [ops[a:b] for a, b in zip(bounds, bounds[1:])]
    return plan


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor | None, pad: int) -> torch.Tensor:
    """Random crops of the zero-padded batch at offsets (dy, dx) as one gather, then flips where ``flip``;
    all on ``x``'s device, without a host synchronisation."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    out = padded[torch.arange(n, device=x.device)[:, None, None, None],
                 torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    return out if flip is None else torch.where(flip[:, None, None, None], out.flip(-1), out)


def augment_batch(x: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
    """Random crop (``crop_padding``) and horizontal flip of one batch, drawn from ``gen``. Policies
    (RandAugment, TrivialAugment) need the uint8 images: ``iterate`` applies them."""
    if mode in POLICIES:
        raise ValueError(f"augment_batch does crop and flip only; augment {mode} runs in iterate, on uint8 images")
    pad = crop_padding(x.shape[-2])
    plan = epoch_plan(len(x), len(x), mode, pad, gen, shuffle=False).to(x.device)
    return x if mode == "none" else crop_flip(x, plan.dy, plan.dx, plan.flip, pad)
