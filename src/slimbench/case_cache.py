"""Case-cache entries: a compressed model stored as data, checked whole before it is used.

An entry is one folder, ``.slimbench-cache/<tier>/<case_id>/<key>/``, holding:

- ``state.pt``: the model's state_dict only (tensors, dtypes and plain containers);
- ``predictions.pt``: the predicted class of every test image (uint8 tensor);
- ``quality.json``: the quality numbers measured when the model was made (with ``method_log``);
- ``entry.json``, written last: the entry format, the md5 of every other file and ``model_md5``
  (``metrics.model_md5`` of the stored model).

Nothing is unpickled beyond what ``torch.load(weights_only=True)`` accepts, so an entry cannot
run code; the module itself is rebuilt by the method (``Method.restore``) and must give the
recorded ``model_md5``. An entry that fails any check (missing entry.json, an md5 mismatch, an
unreadable file, a failed restore, another model_md5) is a miss: one line names the entry and
the reason, the entry is removed and the case is recomputed. An entry is written into
``.<key>.pid<pid>.entry.tmp`` (``fileio``'s temporaries) and renamed into place, so a killed run leaves no partial entry; the
temporary folders of dead processes are removed on the next store or lookup.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .fileio import clean_stale_temporaries, temporary_prefix
from .metrics import model_md5

ENTRY_FORMAT = 1
FILES = ("state.pt", "predictions.pt", "quality.json")  # what entry.json lists, besides itself
OLD_TMP = re.compile(r"^\.[0-9a-f]{32}\.[a-z0-9_]{8}$")  # tempfile.mkdtemp(prefix=".<key>.") before format 3

Restore = Callable[[dict[str, Any], dict[str, Any]], nn.Module]  # (state, quality) -> model


class BadEntry(Exception):
    """Why an entry cannot be used (the text of its one-line report)."""


def store(key_dir: Path, model: nn.Module, quality: dict[str, Any], predictions: torch.Tensor) -> None:
    """Write the entry into a temporary folder beside ``key_dir``, then rename it into place;
    the case's entries under other keys are superseded and removed."""
    case_dir = key_dir.parent
    case_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(case_dir)
    tmp = case_dir / f"{temporary_prefix(key_dir)}entry.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # this process's own leftover
    tmp.mkdir()
    try:
        blobs = {"state.pt": _saved(model.state_dict()), "predictions.pt": _saved(predictions.to(torch.uint8)),
                 "quality.json": json.dumps(quality, indent=2).encode()}
        for name, data in blobs.items():
            (tmp / name).write_bytes(data)
        entry = {"format": ENTRY_FORMAT, "files": {name: _md5(data) for name, data in blobs.items()},
                 "model_md5": model_md5(model)}
        (tmp / "entry.json").write_text(json.dumps(entry, indent=2) + "\n")
        if key_dir.is_dir():
            shutil.rmtree(key_dir)
        elif key_dir.exists():
            key_dir.unlink()
        os.replace(tmp, key_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for stale in case_dir.iterdir():  # older keys of this case are superseded
        if stale != key_dir and not stale.name.startswith("."):
            shutil.rmtree(stale, ignore_errors=True)


def load(key_dir: Path, restore: Restore) -> tuple[nn.Module, dict[str, Any], torch.Tensor] | None:
    """The entry's model (rebuilt by ``restore(state, quality)``), quality numbers and test
    predictions; None on a miss (no entry, or a bad one: reported in one line and removed)."""
    if key_dir.parent.is_dir():
        remove_stale_temporaries(key_dir.parent)
    if not key_dir.is_dir():
        return None
    if not (key_dir / "entry.json").is_file() and (key_dir / "model.pt").exists():
        _drop(key_dir, "from an older slimbench (a pickled model.pt, not loaded); rebuilding")
        return None
    try:
        return _checked(key_dir, restore)
    except BadEntry as exc:
        _drop(key_dir, f"{exc}; recomputing")
        return None


def _checked(key_dir: Path, restore: Restore) -> tuple[nn.Module, dict[str, Any], torch.Tensor]:
    if not (key_dir / "entry.json").is_file():
        raise BadEntry("incomplete (no entry.json: its store was interrupted)")
    try:
        entry = json.loads((key_dir / "entry.json").read_text())
        files, recorded_md5 = entry["files"], entry["model_md5"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadEntry(f"unreadable entry.json ({_why(exc)})") from None
    if entry.get("format") != ENTRY_FORMAT:
        raise BadEntry(f"entry format {entry.get('format')!r}, not {ENTRY_FORMAT}")
    if not isinstance(files, dict) or sorted(files) != sorted(FILES):
        raise BadEntry(f"entry.json lists {sorted(files) if isinstance(files, dict) else files!r}, not {list(FILES)}")
    present = sorted(p.name for p in key_dir.iterdir())
    if present != sorted((*FILES, "entry.json")):
        extra = sorted(set(present) - {*FILES, "entry.json"})
        raise BadEntry(f"unexpected file {extra[0]}" if extra else f"missing {sorted(set(FILES) - set(present))[0]}")
    blobs = {}
    for name in FILES:
        try:
            data = (key_dir / name).read_bytes()  # checked and then parsed from the same bytes
        except OSError as exc:
            raise BadEntry(f"unreadable {name} ({_why(exc)})") from None
        if _md5(data) != files[name]:
            raise BadEntry(f"{name} md5 {_md5(data)} != recorded {files[name]}")
        blobs[name] = data
    try:
        with warnings.catch_warnings():  # torch rebuilds quantized tensors through TypedStorage
            warnings.filterwarnings("ignore", "TypedStorage is deprecated", UserWarning)
            state = torch.load(io.BytesIO(blobs["state.pt"]), map_location="cpu", weights_only=True)
            predictions = torch.load(io.BytesIO(blobs["predictions.pt"]), map_location="cpu", weights_only=True)
        quality = json.loads(blobs["quality.json"])
    except Exception as exc:  # noqa: BLE001 - whatever the unpickler refuses
        raise BadEntry(f"unreadable file ({_why(exc)})") from None
    if not isinstance(state, dict) or not isinstance(quality, dict):
        raise BadEntry("state.pt or quality.json does not hold a mapping")
    if not (isinstance(predictions, torch.Tensor) and predictions.dtype == torch.uint8 and predictions.dim() == 1):
        raise BadEntry("predictions.pt does not hold a 1-d uint8 tensor")
    try:
        model = restore(state, quality)
    except Exception as exc:  # noqa: BLE001 - a model that cannot be rebuilt is recomputed
        raise BadEntry(f"restore failed ({_why(exc)})") from None
    if (actual := model_md5(model)) != recorded_md5:
        raise BadEntry(f"restored model md5 {actual} != recorded {recorded_md5}")
    return model, quality, predictions.long()


def remove_stale_temporaries(case_dir: Path) -> None:
    """Remove the half-written entries of dead processes (``fileio.clean_stale_temporaries``) and
    the ``.<key>.<random>`` folders of slimbench before cache format 3. ``.resume-<key>`` folders
    (resume state of unfinished training) are kept."""
    clean_stale_temporaries(case_dir)
    for path in case_dir.iterdir():
        if path.is_dir() and OLD_TMP.match(path.name):
            shutil.rmtree(path, ignore_errors=True)


def _saved(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _why(exc: BaseException) -> str:
    if "Weights only load failed" in str(exc):  # torch's long text ends advising an unsafe load
        return f"{exc.__class__.__name__}: it holds objects other than tensors, refused by weights-only loading"
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0][:200]}" if text else exc.__class__.__name__


def _drop(key_dir: Path, reason: str) -> None:
    print(f"cache entry {key_dir}: {reason}")
    shutil.rmtree(key_dir, ignore_errors=True)
