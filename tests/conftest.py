"""Shared fixtures for unit tests: the real project root, a tiny trained model on digits and a method context."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from slimbench.config import Paths
from slimbench.datasets import load_dataset
from slimbench.fileio import md5sum
from slimbench.methods import Context
from slimbench.models import get_model
from slimbench.training import Recipe, fit

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def paths() -> Paths:
    return Paths(ROOT)


@pytest.fixture(scope="session")
def digits(paths):
    return load_dataset("digits", paths=paths)


@pytest.fixture(scope="session")
def digits_model(digits):
    """A small CNN trained for a few epochs on digits (well above chance)."""
    torch.manual_seed(0)
    model = get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8)
    fit(model, digits, Recipe(epochs=4, lr=0.05, batch_size=64))
    return model.eval()


def ctx_for(data, teacher=None, *, lr: float = 0.05, recipe: Recipe | None = None, **settings) -> Context:
    """A method context on ``data`` (digits, or None for a method that reads none) with ``settings``:
    one epoch at learning rate ``lr`` in batches of 64 unless ``recipe`` is given, and a build_model
    that builds fashion_cnn for digits (8x8, one channel, 10 classes) with keyword overrides."""
    return Context(data=data, teacher=teacher, recipe=recipe or Recipe(epochs=1, lr=lr, batch_size=64),
                   settings=settings, build_model=lambda **kw: get_model("fashion_cnn", num_classes=10, in_channels=1,
                                                                         **{"image_size": 8, **kw}))


def needs_shared(*parts: str):
    """Skip when ../shared (real data beside the checkout) is absent, e.g. on a laptop."""
    return pytest.mark.skipif(not SHARED.joinpath(*parts).exists(), reason=f"../shared/{'/'.join(parts)} absent")


def mini_params(cases: list[dict], **teachers: dict) -> dict:
    """params.yaml of a throwaway project: one tier `mini` on digits with teacher `t` (and ``teachers``)."""
    student = {"dataset": "digits", "model": "fashion_cnn", "model_kwargs": {"image_size": 8}}
    return {
        "data": {"mirrors": [], "val_fraction": 0.1, "split_seed": 0},
        "teachers": {"t": student, **teachers},
        "tiers": {"mini": {
            "threads": 1, "batch_size": 8, "latency_rounds": 3, "latency_warmup": 1,
            "datasets": {"digits": {"teacher": "t", "recipe": {"epochs": 1, "batch_size": 64}}},
            "cases": cases,
        }},
    }


def write_project(root: Path, params: dict, teacher: nn.Module, wrong_md5: tuple[str, ...] = ()) -> Paths:
    """A throwaway project at ``root``: params.yaml, and for each of its teachers the digits model
    as checkpoint + metadata (the teachers named in ``wrong_md5`` record a wrong md5)."""
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "teachers").mkdir()
    for name in params["teachers"]:
        ckpt = root / "teachers" / f"{name}.pt"
        torch.save({"state_dict": teacher.state_dict()}, ckpt)
        meta = {"architecture": "fashion_cnn", "model_kwargs": {"image_size": 8}, "num_classes": 10,
                "in_channels": 1, "dataset": "digits", "md5": "0" * 32 if name in wrong_md5 else md5sum(ckpt)}
        (root / "teachers" / f"{name}.json").write_text(json.dumps(meta))
    return Paths(root)


def run_compress(root: Path, *argv: str, tier: str = "mini") -> subprocess.CompletedProcess:
    """`slimbench compress --tier TIER ARGV` in a subprocess, on the throwaway project at ``root``."""
    env = {**os.environ, "SLIMBENCH_ROOT": str(root)}
    return subprocess.run([sys.executable, "-m", "slimbench.cli", "compress", "--tier", tier, *argv], cwd=root,
                          env=env, capture_output=True, text=True, timeout=900)


def cached_models(root: Path, tier: str = "mini") -> dict[str, tuple[str, str]]:
    """case id -> (cache key, model_md5) of its cache entry."""
    return {entry.parent.name: (entry.name, json.loads(entry.joinpath("entry.json").read_text())["model_md5"])
            for entry in (root / ".slimbench-cache" / tier).glob("*/[0-9a-f]*")}
