"""Teacher checkpoints: public CIFAR ResNets (md5 verified, loaded strictly), fine-tuned and
trained teachers with torchvision-style metadata, stored as teachers/<name>.pt + .json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.torch_version import TorchVersion

from .config import Paths, default_paths, load_params
from .datasets import load_splits
from .errors import ConfigError, IntegrityError
from .fileio import atomic_torch_save, atomic_write, md5sum, verify_md5, write_json
from .models import build_model_for, count_params, get_model
from .training import Recipe, evaluate, fit, trained_on

PUBLIC_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
PUBLIC_CHECKPOINTS = {  # architecture -> (file, md5); BSD-2-Clause, option-A shortcuts
    "cifar_resnet20": ("resnet20-12fca82f.th", "1f38c81cdebd6bcce9b03d082161a36c"),
    "cifar_resnet32": ("resnet32-d509ac18.th", "1b290d0b1aad139b0f2be36cf1fa4846"),
    "cifar_resnet44": ("resnet44-014dd654.th", "953c35969bce8e16eba14f6de91ef262"),
    "cifar_resnet56": ("resnet56-4bfd9763.th", "48a2383e717f38f02934658ab8d4d9a2"),
}
PUBLIC_FIX = ("point params.yaml data.teacher_mirrors (or SLIMBENCH_TEACHER_MIRROR) at a folder "
              "holding the public checkpoints, e.g. ../shared/teachers/cifar10, or set SLIMBENCH_ONLINE=1")


def public_checkpoint_path(arch: str, paths: Paths) -> Path:
    """Locate (or, online, download) the public checkpoint for ``arch`` and verify its md5."""
    if arch not in PUBLIC_CHECKPOINTS:
        raise ConfigError(f"no public checkpoint for {arch!r}; valid: {', '.join(PUBLIC_CHECKPOINTS)}")
    filename, md5 = PUBLIC_CHECKPOINTS[arch]
    mirrors = [m for m in os.environ.get("SLIMBENCH_TEACHER_MIRROR", "").split(os.pathsep) if m]
    mirrors += load_params(paths.root).get("data", {}).get("teacher_mirrors", [])
    for mirror in mirrors:
        candidate = (paths.root / mirror / filename)
        if candidate.is_file():
            verify_md5(candidate, md5, PUBLIC_FIX)
            return candidate
    if os.environ.get("SLIMBENCH_ONLINE") == "1":
        target = paths.root / "teachers" / "public" / filename
        if not target.is_file():
            atomic_write(target, lambda tmp: torch.hub.download_url_to_file(PUBLIC_URL + filename, tmp))
        verify_md5(target, md5, PUBLIC_FIX)
        return target
    raise IntegrityError(f"missing public checkpoint {filename} (md5 {md5}) in {mirrors}; fix: {PUBLIC_FIX}")


def load_public(arch: str, paths: Paths | None = None) -> nn.Module:
    """A CIFAR ResNet with the public weights, loaded strictly (every key must match)."""
    path = public_checkpoint_path(arch, paths or default_paths())
    blob = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in blob["state_dict"].items()}
    model = get_model(arch)
    model.load_state_dict(state, strict=True)
    return model


def teacher_specs(paths: Paths | None = None) -> dict[str, dict[str, Any]]:
    specs = load_params((paths or default_paths()).root).get("teachers", {})
    if not isinstance(specs, dict):
        raise ConfigError("params.yaml `teachers` must map teacher names to settings")
    return specs


def teacher_spec(name: str, paths: Paths | None = None) -> dict[str, Any]:
    specs = teacher_specs(paths)
    if name not in specs:
        raise ConfigError(f"unknown teacher {name!r}; valid teachers: {', '.join(sorted(specs))}")
    return specs[name]


def train_teacher(name: str, paths: Paths | None = None) -> dict[str, Any]:
    """Train or fine-tune teacher ``name`` as params.yaml says; write its checkpoint and metadata."""
    paths = paths or default_paths()
    spec = teacher_spec(name, paths)
    data = load_splits(spec["dataset"], paths=paths)
    recipe = Recipe.from_dict(spec.get("recipe"))
    meta: dict[str, Any] = {"name": name, "dataset": spec["dataset"], "architecture": spec["model"],
                            "model_kwargs": spec.get("model_kwargs", {}), "num_classes": data.num_classes,
                            "in_channels": data.in_channels, "recipe": recipe.to_dict()}
    if spec.get("init") == "public":
        model = load_public(spec["model"], paths)
        filename, md5 = PUBLIC_CHECKPOINTS[spec["model"]]
        meta["source"] = f"{PUBLIC_URL}{filename} (md5 {md5}), fine-tuned on {spec['dataset']} train split"
        meta["top1_as_shipped"] = round(evaluate(model, data.test, data), 2)
        meta["val_top1_as_shipped"] = round(evaluate(model, data.val, data), 2)
    else:
        model = build_model_for(spec["model"], data, spec.get("model_kwargs"))
        meta["source"] = f"trained from scratch by slimbench on {spec['dataset']} train split"
    paths.teachers.mkdir(parents=True, exist_ok=True)
    result = fit(model, data, recipe, resume_path=paths.teachers / f".{name}.resume.pt", desc=name)
    # fit's own clock: the epochs of every run that contributed, an interrupted one included
    meta.update(train_seconds=round(result.seconds, 1), best_epoch=result.best_epoch,
                history=result.history, val_top1=round(evaluate(model, data.val, data), 2),
                top1=round(evaluate(model, data.test, data), 2), params=count_params(model),
                data_md5=data.data_md5, torch_version=str(torch.__version__), trained_on=trained_on())
    ckpt = paths.teachers / f"{name}.pt"
    atomic_torch_save(ckpt, {"state_dict": model.state_dict(), "meta": meta})
    meta["md5"] = md5sum(ckpt)
    write_json(paths.teachers / f"{name}.json", meta)
    return meta


def load_teacher(name: str, paths: Paths | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher model (eval mode) and its metadata, after checking the checkpoint's md5."""
    paths = paths or default_paths()
    meta_path, ckpt = paths.teachers / f"{name}.json", paths.teachers / f"{name}.pt"
    fix = f"run `dvc pull teachers/{name}.pt` or rebuild it with `dvc repro teacher@{name}`"
    if not meta_path.is_file():
        teacher_spec(name, paths)  # an unknown name lists the valid ones
        raise IntegrityError(f"missing teacher metadata {meta_path}; fix: {fix}")
    meta = json.loads(meta_path.read_text())
    verify_md5(ckpt, meta["md5"], fix)
    with torch.serialization.safe_globals([TorchVersion]):  # a str subclass some checkpoints carry
        blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    model = get_model(meta["architecture"], num_classes=meta["num_classes"], in_channels=meta["in_channels"],
                      **meta.get("model_kwargs", {}))
    model.load_state_dict(blob["state_dict"], strict=True)
    return model.eval(), meta
