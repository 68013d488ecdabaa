"""`slimbench compress --executor local|slurm`: cases as submitit jobs, the same models as one at a time."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import cached_models, mini_params, run_compress, write_project
from submitit.core.utils import FailedJobError, UncompletedJobError

from slimbench import executors
from slimbench.cases import Case, load_tier
from slimbench.cli import build_parser, main
from slimbench.jobs import JobResult

STUDENT = {"model": "fashion_cnn", "model_kwargs": {"image_size": 8}, "budget": {"params": 100000}}
CASES = [{"method": "prune_global_magnitude", "budget": {"sparsity": 0.5}, "settings": {"finetune_epochs": 1}},
         {"method": "prune_global_magnitude", "budget": {"sparsity": 0.7}, "settings": {"finetune_epochs": 1},
          "from_case": "prune_global_magnitude-digits-sparsity50"},
         {"method": "kd_logits", **STUDENT, "teacher": "broken", "tag": "broken"}]
PARAMS = mini_params(CASES, broken={"dataset": "digits", "model": "fashion_cnn", "model_kwargs": {"image_size": 8}})
BROKEN = "kd_logits-digits-params100k-broken"



def test_local_jobs_make_the_models_one_at_a_time_makes_and_name_a_failed_cases_log(tmp_path, digits_model):
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        root.mkdir()
        write_project(root, PARAMS, digits_model, wrong_md5=("broken",))
    sequential = run_compress(one)
    local = run_compress(two, "--executor", "local", "--jobs", "2", "--summary-json", "summary.json")
    for done in (sequential, local):
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"1 case(s) failed: {BROKEN}" in done.stderr and "3 case(s): 2 trained, 1 failed" in done.stdout
    assert len(cached_models(two)) == 2 and cached_models(one) == cached_models(two)  # same keys, same weights
    out = local.stdout
    assert out.index("prune_global_magnitude-digits-sparsity50: top-1") < out.index("[prune_global_magnitude-digits-"
                                                                                    "sparsity70] job")  # next wave
    row = next(line for line in out.splitlines() if line.startswith(BROKEN))
    log = Path(row.rsplit("log: ", 1)[1].strip())
    assert log.parent == two / ".slimbench-jobs" / "mini" and log.name.endswith("_log.err") and log.is_file()
    summary = json.loads((two / "summary.json").read_text())
    assert summary["executor"] == "local" and all(c["job_id"] and c["job_state"] for c in summary["cases"])
    assert all(f" {c['job_id']} " in out for c in summary["cases"])  # the table's job column


def test_slurm_jobs_get_params_yaml_options_overridden_by_the_command_line(tmp_path, monkeypatch):
    params = {**PARAMS, "executor": {"timeout_min": 30, "mem_gb": 8, "cpus_per_task": 4, "gpus_per_node": 1,
                                     "partition": "cpu", "account": "lab"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLIMBENCH_ROOT", str(tmp_path))
    monkeypatch.setenv("SLIMBENCH_DEVICE", "cuda")  # submitting needs no GPU
    args = build_parser().parse_args(["compress", "--tier", "mini", "--executor", "slurm", "--jobs", "3", "--partition",
                                      "gpu", "--mem-gb", "12.5", "--qos", "high", "--constraint", "h100"])
    plan = executors.plan(args, load_tier("mini"))
    slurm = executors.make_executor(plan)._executor
    slurm.parameters["map_count"] = 5  # as submitit does for a job array of 5
    text = slurm._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for flag in ("partition=gpu", "gpus-per-node=1", "time=30", "mem=12800MB", "cpus-per-task=4", "qos=high",
                 "account=lab", "constraint=h100", "job-name=slimbench-mini", "array=0-4%3"):
        assert f"#SBATCH --{flag}\n" in text
    assert plan.folder == tmp_path / ".slimbench-jobs" / "mini" and plan.on == "cuda" and plan.threads == 1


@pytest.mark.parametrize("executor_section, argv, message", [
    ({"timout_min": 5}, ["--executor", "local"], "params.yaml executor.timout_min: unknown key; fix: use one of "),
    ({"mem_gb": "lots"}, ["--executor", "local"], "params.yaml executor.mem_gb: 'lots' is not a number of GB > 0"),
    ("slurm", [], "params.yaml executor: must be a mapping"),
    ({}, ["--partition", "gpu"], "--partition applies to --executor slurm, not --executor pool"),
    ({}, ["--timeout-min", "30"], "--timeout-min applies to --executor local or slurm, not --executor pool"),
    ({}, ["--executor", "local", "--cpus-per-task", "0"], "--cpus-per-task 0 is not a whole number >= 1"),
    ({}, ["--executor", "slurm", "--device", "cuda"], "--device cuda on Slurm with gpus_per_node 0"),
])
def test_bad_executor_settings_are_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys, executor_section, argv,
                                                             message):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "executor": executor_section}))
    monkeypatch.setenv("SLIMBENCH_ROOT", str(tmp_path))
    monkeypatch.setenv("SLIMBENCH_DEVICE", "cpu")  # restored afterwards (--device sets it)
    assert main(["compress", "--tier", "mini", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "fix: " in err and err.count("\n") == 1, err


def test_slimbench_check_reports_a_bad_executor_section(tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "executor": {"timout_min": 5}}))
    monkeypatch.setenv("SLIMBENCH_ROOT", str(tmp_path))
    assert main(["check", "--tier", "mini"]) == 2
    assert "params.yaml executor.timout_min: unknown key" in capsys.readouterr().out


class FakeJob:
    """A submitit job in a given final state: its JobResult, a crash, no result, or Ctrl-C while polled."""

    def __init__(self, job_id: str, outcome) -> None:
        self.job_id, self.outcome, self.cancelled = job_id, outcome, False
        self.paths = SimpleNamespace(stderr=Path(f"/jobs/{job_id}_0_log.err"))

    @property
    def state(self) -> str:
        if self.outcome is KeyboardInterrupt:
            raise KeyboardInterrupt
        return "COMPLETED" if isinstance(self.outcome, JobResult) else "OUT_OF_MEMORY"

    def done(self) -> bool:
        return True

    def get_info(self, mode: str) -> dict:
        return {}

    def result(self) -> JobResult:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    def cancel(self, check: bool) -> None:
        self.cancelled = True


class FakeExecutor:
    def __init__(self, *outcomes) -> None:
        self.jobs = [FakeJob(str(11 + i), o) for i, o in enumerate(outcomes)]
        self.submitted = 0

    @contextmanager
    def batch(self):
        yield

    def submit(self, fn, case, *args) -> FakeJob:
        self.submitted += 1
        return self.jobs[self.submitted - 1]


def _cases(n: int) -> list[Case]:
    return [Case(f"scratch-digits-seed{i}", "mini", "scratch", "digits", "fashion_cnn") for i in range(n)]


def test_a_crashed_or_killed_job_is_a_failed_case_with_its_state_and_log(monkeypatch, capsys):
    monkeypatch.setitem(executors.POLL_S, "local", 0)
    trace = "Traceback (most recent call last):\n  ...\nRuntimeError: CUDA error: out of memory"
    crashed = FailedJobError(f"Job (task=0) failed during processing with trace:\n{'-' * 22}\n{trace}\n{'-' * 22}\n"
                             "You can check full logs")
    fake = FakeExecutor(JobResult("scratch-digits-seed0", "trained", 3.0, 90.0, "val 89%"), crashed,
                        UncompletedJobError("Job 13 has not produced any output (state: OUT_OF_MEMORY)"))
    plan = executors.Plan("local", "mini", 2, "cpu", 1, 1, {}, Path("/jobs"))
    ok, crash, killed = executors.run(plan, _cases(3), fake)
    assert (ok.status, ok.job_id, ok.job_state) == ("trained", "11", "COMPLETED")
    assert crash.status == "failed" and crash.detail == ("job crashed: RuntimeError: CUDA error: out of memory; "
                                                         "log: /jobs/12_0_log.err")
    assert killed.status == "failed" and "(state OUT_OF_MEMORY" in killed.detail
    assert killed.detail.endswith("; log: /jobs/13_0_log.err")
    assert "[scratch-digits-seed1] job 12: OUT_OF_MEMORY" in capsys.readouterr().out


def test_ctrl_c_cancels_the_submitted_jobs_and_says_how_to_resume(monkeypatch):
    monkeypatch.setitem(executors.POLL_S, "local", 0)
    fake = FakeExecutor(KeyboardInterrupt, KeyboardInterrupt)
    plan = executors.Plan("local", "mini", 2, "cpu", 1, 1, {}, Path("/jobs"))
    with pytest.raises(executors.SlimbenchError) as caught:
        executors.run(plan, _cases(3), fake)
    assert all(job.cancelled for job in fake.jobs) and fake.submitted == 2  # the third was never submitted
    message = str(caught.value)
    assert "interrupted after 0 of 3 case(s); cancelled 2 local job(s) (11, 12); fix: run the same command" in message
