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
from .models import build_model_for, count_nn_parameters, get_model
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
    resume = paths.teachers / f".{name}.resume.pt"
    result = fit(model, data, recipe, resume_path=resume, desc=name)
    # fit's own clock: the epochs of every run that contributed, an interrupted one included
    meta.update(train_seconds=round(result.seconds, 1), best_epoch=result.best_epoch,
                history=result.history, val_top1=round(evaluate(model, data.val, data), 2),
                top1=round(evaluate(model, data.test, data), 2), params=count_nn_parameters(model),
                data_md5=data.data_md5, torch_version=str(torch.__version__), trained_on=trained_on())
    ckpt = paths.teachers / f"{name}.pt"
    atomic_torch_save(ckpt, {"state_dict": model.state_dict(), "meta": meta})
    meta["md5"] = md5sum(ckpt)
    write_json(paths.teachers / f"{name}.json", meta)
    resume.unlink(missing_ok=True)  # only now: a kill before the checkpoint was stored keeps the training
    return meta


LOAD_KEYS = ("architecture", "num_classes", "in_channels", "md5")  # what load_teacher needs
TABLE_KEYS = ("name", "dataset", *LOAD_KEYS)  # what `slimbench teachers` also reads


def checkpoint_fix(name: str) -> str:
    """Restore a teacher's committed checkpoint and metadata, or rebuild both."""
    return (f"`dvc pull --force teachers/{name}.pt` and `git checkout teachers/{name}.json` restore the "
            f"committed pair, or `dvc repro teacher@{name}` retrains it")


def meta_fix(name: str) -> str:
    """teachers/<name>.json is a git-tracked DVC metric (cache: false): git restores it, DVC cannot."""
    return f"`git checkout teachers/{name}.json` restores it, or `dvc repro teacher@{name}` retrains the teacher"


def read_teacher_meta(path: str | os.PathLike, required: tuple[str, ...] = LOAD_KEYS) -> dict[str, Any]:
    """A teacher's metadata (teachers/<name>.json), checked: a missing, malformed or incomplete
    file (any of ``required`` absent) raises a one-line IntegrityError naming it and the fix.
    `slimbench teachers` should read with ``required=TABLE_KEYS``."""
    path = Path(path)
    fix = meta_fix(path.stem)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise IntegrityError(f"missing teacher metadata {path}; fix: {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        why = " ".join(str(exc).split())
        raise IntegrityError(f"unreadable teacher metadata {path} ({exc.__class__.__name__}: {why}); "
                             f"fix: {fix}") from None
    if not isinstance(meta, dict):
        raise IntegrityError(f"teacher metadata {path} is a JSON {type(meta).__name__}, not an object; fix: {fix}")
    missing = [key for key in required if key not in meta]
    if missing:
        raise IntegrityError(f"teacher metadata {path} lacks {', '.join(missing)}; fix: {fix}")
    md5 = meta.get("md5", "0" * 32)
    if not (isinstance(md5, str) and len(md5) == 32 and all(c in "0123456789abcdef" for c in md5)):
        raise IntegrityError(f"teacher metadata {path} has a malformed md5 {md5!r}; fix: {fix}")
    return meta


def load_teacher(name: str, paths: Paths | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher model (eval mode) and its metadata, after checking the checkpoint's md5."""
    paths = paths or default_paths()
    meta_path, ckpt = paths.teachers / f"{name}.json", paths.teachers / f"{name}.pt"
    if not meta_path.is_file():
        teacher_spec(name, paths)  # an unknown name lists the valid ones
    meta = read_teacher_meta(meta_path)
    fix = checkpoint_fix(name)
    verify_md5(ckpt, meta["md5"], fix)
    with torch.serialization.safe_globals([TorchVersion]):  # a str subclass some checkpoints carry
        blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    model = get_model(meta["architecture"], num_classes=meta["num_classes"], in_channels=meta["in_channels"],
                      **meta.get("model_kwargs", {}))
    try:
        model.load_state_dict(blob["state_dict"], strict=True)
    except RuntimeError as exc:  # the pair disagrees: e.g. the JSON of another teacher
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise IntegrityError(f"teacher checkpoint {ckpt} does not fit its metadata {meta_path} ({first}); "
                             f"fix: {fix}") from None
    return model.eval(), meta
