"""Publishing results without losing rows or tearing boards: a lock per tier, a board set
swapped in at once, temporaries of killed processes cleaned, a full disk said in one line,
failed cases kept off the board while the passed ones are published."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import mini_params, write_project
import torch

from slimbench import fileio, leaderboard, rows
from slimbench.config import Paths
from slimbench.errors import DiskFullError
from slimbench.fileio import md5sum
from slimbench.training import Recipe, fit

ROOT = Path(__file__).resolve().parents[1]
BOARD = ("leaderboard.json", "metrics.json", "leaderboard.csv", "LEADERBOARD.md")


def _row(case_id, top1=90.0):
    return {**{k: 0 for k in rows.ROW_KEYS}, "case_id": case_id, "dataset": "digits", "top1": top1,
            "budget_kind": "none", "budget_value": 0, "budget_met": True, "latency_ms": 1.0 + top1 / 100}


def _slow_update(out: Path, rows: list[dict], valid: list[str], root: Path, pause: float) -> None:
    """leaderboard.update with a pause between reading the old board and writing the new one."""
    summarize = leaderboard.summarize

    def slow(rows):
        time.sleep(pause)
        return summarize(rows)

    leaderboard.summarize = slow
    leaderboard.update(out, "mini", rows, valid, root)


def _two_writers(out: Path, root: Path) -> dict:
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_slow_update, args=(out, [_row(cid)], ["a", "b"], root, 1.0)) for cid in "ab"]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
    assert [w.exitcode for w in writers] == [0, 0]
    return json.loads((out / "leaderboard.json").read_text())


def test_two_concurrent_writers_of_a_tier_keep_both_rows(tmp_path):
    board = _two_writers(tmp_path / "results" / "mini", ROOT)
    assert sorted(r["case_id"] for r in board["rows"]) == ["a", "b"]


def test_without_the_lock_the_same_writers_lose_a_row(tmp_path, monkeypatch):
    """The race the lock prevents is real: the previous test fails without it."""
    from contextlib import nullcontext

    monkeypatch.setattr(leaderboard, "locked", lambda *a, **k: nullcontext())
    board = _two_writers(tmp_path / "results" / "mini", ROOT)
    assert len(board["rows"]) == 1


def _board_md5s(out: Path) -> dict[str, str]:
    return {name: md5sum(out / name) for name in BOARD}


def _kill_while_writing(out: Path, root: Path, victim: str) -> None:
    """A process killed (os._exit, no clean-up) when it starts writing ``victim``."""
    write_json, write_text = leaderboard.write_json, leaderboard.write_text

    def dying(write):
        def wrapped(path, obj):
            if Path(path).name == victim:
                os._exit(9)
            write(path, obj)
        return wrapped

    leaderboard.write_json, leaderboard.write_text = dying(write_json), dying(write_text)
    leaderboard.update(out, "mini", [_row("a", top1=10.0), _row("b", top1=20.0)], ["a", "b"], root)


@pytest.mark.parametrize("victim", ["metrics.json", "LEADERBOARD.md"])
def test_a_kill_during_the_board_write_leaves_the_previous_set_whole(tmp_path, victim):
    out = tmp_path / "results" / "mini"
    leaderboard.update(out, "mini", [_row("a"), _row("b")], ["a", "b"], ROOT)
    before = _board_md5s(out)
    proc = multiprocessing.get_context("fork").Process(target=_kill_while_writing, args=(out, ROOT, victim))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 9
    assert _board_md5s(out) == before  # leaderboard.json and metrics.json agree: both are the old ones
    leftovers = [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers, "the killed writer's staging folder is what the next run must clean"
    leaderboard.update(out, "mini", [_row("a", top1=50.0)], ["a", "b"], ROOT)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {r["case_id"]: r for r in json.loads((out / "leaderboard.json").read_text())["rows"]}
    assert metrics["a"]["top1"] == rows["a"]["top1"] == 50.0


def test_a_kill_between_the_fallback_renames_is_repaired(tmp_path, monkeypatch):
    out = tmp_path / "results" / "mini"
    leaderboard.update(out, "mini", [_row("a")], ["a"], ROOT)
    monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)  # a system without renameat2
    renames = []
    real_rename = os.rename

    def rename_then_die(src, dst):
        renames.append((src, dst))
        real_rename(src, dst)
        if len(renames) == 1:  # the old board moved aside, the new one not yet in place
            raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "rename", rename_then_die)
    with pytest.raises(KeyboardInterrupt):
        leaderboard.update(out, "mini", [_row("a", top1=1.0)], ["a"], ROOT)
    monkeypatch.setattr(fileio.os, "rename", real_rename)
    assert not out.exists()
    board = leaderboard.update(out, "mini", [_row("b")], ["a", "b"], ROOT)
    assert [(r["case_id"], r["top1"]) for r in board["rows"]] == [("a", 90.0), ("b", 90.0)]


def test_files_beside_the_board_are_carried_over(tmp_path):
    out = tmp_path / "results" / "mini"
    leaderboard.update(out, "mini", [_row("a")], ["a"], ROOT)
    (out / "benchmark.json").write_text("{}")
    leaderboard.update(out, "mini", [_row("a")], ["a"], ROOT)
    assert (out / "benchmark.json").read_text() == "{}"


def test_stale_temporaries_are_cleaned_and_live_ones_kept(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        old_style = folder / ".leaderboard.json.k3j2x9.tmp"  # an older slimbench's, without a pid
        stale = folder / f".leaderboard.json.pid{dead.pid}.ab12.tmp"
        running = folder / f".mini.pid{live.pid}.cd34.tmp"
        old_style.write_text("x")
        stale.write_text("x")
        running.mkdir()
        removed = fileio.clean_stale_temporaries(folder)
        assert sorted(removed) == sorted([old_style, stale])
        assert running.is_dir() and not old_style.exists() and not stale.exists()
    finally:
        live.kill()


def _full_tmpfs(folder: Path) -> bool:
    folder.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def test_a_full_disk_is_one_line_and_keeps_the_previous_board(tmp_path, monkeypatch, capsys):
    disk = tmp_path / "disk"
    mounted = _full_tmpfs(disk)
    try:
        out = disk / "results" / "mini"
        leaderboard.update(out, "mini", [_row("a")], ["a"], ROOT)
        before = _board_md5s(out)
        if mounted:  # fill the small filesystem, leaving a few kB
            free = shutil.disk_usage(disk).free
            (disk / "filler").write_bytes(b"\0" * max(0, free - 8192))
        else:  # no tmpfs here: the write fails as it would on a full disk
            def full(*a, **k):
                raise OSError(errno.ENOSPC, "No space left on device")
            monkeypatch.setattr(leaderboard, "render_csv", full)
        with pytest.raises(DiskFullError) as info:
            leaderboard.update(out, "mini", [_row("a", top1=1.0), _row("b")], ["a", "b"], ROOT)
        message = str(info.value)
        assert "\n" not in message and f"writing in {out} (" in message and "needed" in message and "fix:" in message
        assert _board_md5s(out) == before
        assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)


def test_a_finished_fit_keeps_its_resume_state_until_the_caller_removes_it(digits, tmp_path, monkeypatch):
    """A kill after the last epoch and before the model is stored loses no training."""
    from slimbench import training
    from slimbench.models import get_model

    recipe = Recipe(epochs=2, lr=0.05, batch_size=64)
    resume = tmp_path / "state.pt"
    torch.manual_seed(0)
    model = get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8)
    fit(model, digits, recipe, resume_path=resume)
    assert resume.is_file()
    epochs = []
    monkeypatch.setattr(training, "train_one_epoch", lambda *a, **k: epochs.append(1) or 0.0)
    again = get_model("fashion_cnn", num_classes=10, in_channels=1, image_size=8)
    fit(again, digits, recipe, resume_path=resume)
    assert epochs == []  # nothing retrained
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


# --- `slimbench run` end to end, on a throwaway project with a digits tier -------------------

MINI = mini_params([{"method": "reference"},
                    {"method": "quant_weight_fp16", "budget": {"bits": 16}},
                    {"method": "reference", "teacher": "broken", "tag": "broken"}],
                   broken={"dataset": "digits", "model": "fashion_cnn", "model_kwargs": {"image_size": 8}})


@pytest.fixture
def mini_project(tmp_path, digits_model):
    write_project(tmp_path, MINI, digits_model, wrong_md5=("broken",))
    shutil.copytree(ROOT / "benchmarks", tmp_path / "benchmarks",
                    ignore=shutil.ignore_patterns("test_*.py", "__pycache__"))
    (tmp_path / "benchmarks" / "test_mini.py").write_text(
        "import pytest\nfrom matrix import check_row, tier_params\n\n\n"
        "@pytest.mark.parametrize('case', tier_params('mini'))\ndef test_case(case, run_case):\n"
        "    check_row(run_case(case))\n")
    return Paths(tmp_path)


def _slimbench(root: Path, *argv: str) -> subprocess.Popen:
    env = {**os.environ, "SLIMBENCH_ROOT": str(root)}
    return subprocess.Popen([sys.executable, "-m", "slimbench.cli", *argv], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_failing_case_does_not_block_the_rows_that_passed(mini_project):
    proc = _slimbench(mini_project.root, "run", "--tier", "mini")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, out + err
    assert "1 case(s) failed" in err and "reference-digits-nobudget-broken" in err
    board = json.loads((mini_project.results("mini") / "leaderboard.json").read_text())
    assert sorted(r["case_id"] for r in board["rows"]) == ["quant_weight_fp16-digits-bits16", "reference-digits-nobudget"]
    (run_json,) = (mini_project.root / "results" / "runs" / "mini").glob("*.json")
    kept = leaderboard.rows_from_benchmark_json(run_json)
    assert "reference-digits-nobudget-broken" not in {r["case_id"] for r in kept}


def test_two_concurrent_runs_of_a_tier_end_with_both_rows(mini_project):
    runs = [_slimbench(mini_project.root, "run", "--tier", "mini", "--case", case)
            for case in ("reference-digits-nobudget", "quant_weight_fp16-*")]
    results = [p.communicate(timeout=600) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], results
    board = json.loads((mini_project.results("mini") / "leaderboard.json").read_text())
    assert sorted(r["case_id"] for r in board["rows"]) == ["quant_weight_fp16-digits-bits16", "reference-digits-nobudget"]
    assert len(list((mini_project.root / "results" / "runs" / "mini").glob("*.json"))) == 2  # one JSON per run


def test_a_rebuilt_cache_entry_is_reported_at_the_end_of_a_run(mini_project):
    case = "quant_weight_fp16-digits-bits16"
    first = _slimbench(mini_project.root, "run", "--tier", "mini", "--case", case)
    assert first.wait(timeout=600) == 0, first.communicate()
    (entry,) = (mini_project.cache / "mini" / case).glob("[0-9a-f]*")
    state = bytearray((entry / "state.pt").read_bytes())
    state[len(state) // 2] ^= 0xFF
    (entry / "state.pt").write_bytes(bytes(state))
    again = _slimbench(mini_project.root, "run", "--tier", "mini", "--case", case)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, out + err
    summary = out.split("slimbench: rebuilt cache entries and resumed training", 1)[1]
    assert f"{case}: cache entry " in summary and "state.pt md5" in summary
