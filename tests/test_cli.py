import pytest

from slimbench.cli import main


def test_list_commands(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "kd_logits" in out and "prune_global_magnitude" in out and "quant_ptq_int8" in out and "arch_dwsep" in out
    assert main(["list", "cases", "--tier", "smoke"]) == 0
    assert "kd_logits-fashion_mnist-params100k" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["run", "--tier", "nightly"], "unknown tier 'nightly'; valid tiers: latency1, paper, smoke, standard"),
    (["run", "--tier", "smoke", "--case", "zzz*"], "no case of tier smoke matches 'zzz*'"),
    (["prepare", "mnist"], "unknown dataset 'mnist'; valid datasets:"),
    (["teacher", "nobody"], "unknown teacher 'nobody'; valid teachers:"),
])
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
