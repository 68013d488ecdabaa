"""`slimbench compress --jobs N`: cases in worker processes, the same models as one at a time."""

from __future__ import annotations

import io
import os

import pytest
from conftest import cached_models, mini_params, run_compress, write_project

from slimbench import jobs
from slimbench.cases import expand_cases

STUDENT = {"model": "fashion_cnn", "model_kwargs": {"image_size": 8}, "budget": {"params": 100000}}
CASES = [{"method": "scratch", **STUDENT, "seeds": [0, 1]},
         {"method": "prune_global_magnitude", "budget": {"sparsity": 0.5}, "settings": {"finetune_epochs": 1}},
         {"method": "prune_global_magnitude", "budget": {"sparsity": 0.7}, "settings": {"finetune_epochs": 1},
          "from_case": "prune_global_magnitude-digits-sparsity50"},
         {"method": "kd_logits", **STUDENT, "teacher": "broken", "tag": "broken"}]
PARAMS = mini_params(CASES, broken={"dataset": "digits", "model": "fashion_cnn", "model_kwargs": {"image_size": 8}})



def test_jobs_make_the_models_one_at_a_time_makes_and_report_a_failed_case(tmp_path, digits_model):
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        root.mkdir()
        write_project(root, PARAMS, digits_model, wrong_md5=("broken",))
    sequential = run_compress(one)
    parallel = run_compress(two, "--jobs", "2", "--case", "scratch-*", "--case", "prune_*", "--case", "kd_*")
    for done in (sequential, parallel):
        assert done.returncode == 1, done.stdout + done.stderr
        assert "1 case(s) failed: kd_logits-digits-params100k-broken" in done.stderr
        assert "5 case(s): 4 trained, 1 failed" in done.stdout
    assert "[scratch-digits-params100k-seed1] [scratch] epoch 1/1" in parallel.stdout  # progress lines per case
    assert len(cached_models(two)) == 4 and cached_models(one) == cached_models(two)  # same keys, same weights


def test_a_case_starts_one_wave_after_the_case_it_starts_from(tmp_path, digits_model):
    write_project(tmp_path, PARAMS, digits_model)
    os.environ["SLIMBENCH_ROOT"] = str(tmp_path)
    try:
        cases = expand_cases("mini")
    finally:
        del os.environ["SLIMBENCH_ROOT"]
    got = [[c.case_id for c in wave] for wave in jobs.waves(cases)]
    assert got[1] == ["prune_global_magnitude-digits-sparsity70"] and len(got[0]) == 4
    assert jobs.waves([c for c in cases if "sparsity70" in c.case_id]) == [[cases[3]]]  # its upstream not in the batch


@pytest.mark.parametrize("device, jobs_, cores, expected", [("cpu", 8, 16, 2), ("cuda", 9, 16, 1), ("cuda", 4, 16, 2),
                                                            ("cuda", 32, 16, 1)])
def test_a_job_gets_its_share_of_the_cores_on_an_accelerator_and_the_tiers_threads_on_the_cpu(device, jobs_, cores,
                                                                                               expected):
    assert jobs.threads_per_job(2, jobs_, device, cores) == expected


def test_prefixed_lines_put_the_case_in_front_of_every_line():
    out = io.StringIO()
    stream = jobs.PrefixedLines(out, "[c] ")
    stream.write("epoch 1\nepoch")
    stream.write(" 2\n")
    assert out.getvalue() == "[c] epoch 1\n[c] epoch 2\n"
