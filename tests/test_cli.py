"""The `lorsp` command line (lorsp.cli): train end to end (one subprocess, the rest in-process), eval, params,
data, bench, help texts and out-of-range flags."""
from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

import _train_helpers as helpers

from lorsp import cli, results

SMOKE = ["--backbone", helpers.TINY_BACKBONE, "--dataset", "synthetic", "--epochs", "2", "--batch-size", "8",
         "--image-size", "32", "--train-per-class", "4", "--test-per-class", "2", "--device", "cpu",
         "--random-init", "--lr", "0.05", "--no-progress"]


def test_python_m_lorsp_train_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([*helpers.cli_command(), "train", *SMOKE, "--method", "lorsp", "--groups", "2",
                           "--rank", "2", "--tau", "2.5", "--v-threshold", "0.01", "--output", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "final accuracy" in proc.stdout and "RANDOM weights" in proc.stdout
    record = json.loads((out / "record.json").read_text())
    assert record["status"] == "completed" and 0 <= record["final_accuracy"] <= 1
    assert record["config"]["prompter_kwargs"] == {"groups": 2, "rank": 2, "tau": 2.5, "v_threshold": 0.01}
    assert (out / "checkpoint.pt").is_file() and (out / "prompt.safetensors").is_file()


def test_train_in_process_lp_then_eval_and_load(tmp_path, capsys):
    out = tmp_path / "lp"
    assert cli.main(["train", *SMOKE, "--method", "none", "--output", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["features_cached"] and record["prompt_params"] == 0
    frame = results.load(out / "record.json")
    assert frame.loc[0, "method"] == "none" and frame.loc[0, "epochs"] == 2
    assert cli.main(["eval", str(out), "--no-progress", "--output", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["n_images"] == record["data"]["n_test"]
    # the checkpoint evaluated again gives the record's final accuracy
    assert evaluated["test_accuracy"] == pytest.approx(record["final_accuracy"], abs=1e-6)
    assert json.loads((tmp_path / "eval.json").read_text())["epoch"] == 2


def test_train_divergence_exit_status(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LORSP_FAULT_INJECTION", json.dumps({"nonfinite_loss_at": [1, 0]}))
    assert cli.main(["train", *SMOKE, "--output", str(tmp_path / "r")]) == cli.EXIT_DIVERGED
    assert "non-finite training loss" in capsys.readouterr().err
    assert json.loads((tmp_path / "r" / "record.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("flag, value, words", [
    ("--epochs", "0", "[1, 100000]"), ("--batch-size", "-1", "[1,"), ("--lr", "0", "(0, 100]"),
    ("--lr", "nan", "(0, 100]"), ("--tau", "1", "(1, inf)"), ("--keep-ratio", "1.5", "(0, 1]"),
    ("--groups", "0", "[1, 4096]"), ("--rank", "x", "integer"), ("--momentum", "1", "[0, 1)"),
    ("--image-size", "0", "[1, 4096]"), ("--seed", "-2", "[0,"), ("--train-per-class", "0", ">= 1"),
    ("--surrogate-alpha", "0", "(0, inf)"),
])
def test_out_of_range_flags_name_the_flag_and_range(flag, value, words, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and words in err


def test_bad_config_combination_is_a_clear_error(capsys):
    assert cli.main(["train", "--weights", "w.pt", "--random-init", "--output", "x"]) == cli.EXIT_ERROR
    assert "random_init" in capsys.readouterr().err


def test_params_prints_the_paper_counts(capsys):
    assert cli.main(["params", "--method", "lorsp", "--groups", "4", "--rank", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"method": "lorsp", "params": 6272, "note": ""}]
    assert cli.main(["params", "--groups", "2", "--rank", "2"]) == 0
    assert "2,240" in capsys.readouterr().out  # the OOD setting (G = r = 2)


@pytest.mark.parametrize("command", [["train"], ["eval"], ["params"], ["data"], ["data", "import"],
                                     ["data", "list"], ["bench"], []])
def test_help_texts_have_examples(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([*command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: lorsp" in text
    if command != ["bench"]:
        assert "example" in text


def test_data_commands_call_the_data_module(monkeypatch, capsys, tmp_path):
    calls = []
    fake = types.SimpleNamespace(import_data=lambda paths, root=None: calls.append(("import", paths, root)) or
                                 {"imported": paths}, describe_data=lambda root=None: calls.append(("list", root))
                                 or "cifar10: 10 classes")
    import lorsp
    monkeypatch.setattr(lorsp, "data", fake, raising=False)
    monkeypatch.setitem(sys.modules, "lorsp.data", fake)
    assert cli.main(["data", "import", "a.zip", "b", "--root", str(tmp_path)]) == 0
    assert cli.main(["data", "list"]) == 0
    assert calls == [("import", ["a.zip", "b"], str(tmp_path)), ("list", None)]
    assert "cifar10: 10 classes" in capsys.readouterr().out


def test_bench_dispatches_to_lorsp_bench(monkeypatch, capsys):
    seen = {}

    def add_arguments(parser):
        parser.add_argument("--steps", type=int, default=3)

    fake = types.SimpleNamespace(add_arguments=add_arguments, main=lambda args: seen.setdefault("steps", args.steps)
                                 and 0)
    import lorsp
    monkeypatch.setattr(lorsp, "bench", fake, raising=False)
    monkeypatch.setitem(sys.modules, "lorsp.bench", fake)
    assert cli.main(["bench", "--steps", "5"]) == 0 and seen == {"steps": 5}


def test_bench_unavailable_is_a_clear_error(monkeypatch, capsys):
    import lorsp
    monkeypatch.delattr(lorsp, "bench", raising=False)
    monkeypatch.setitem(sys.modules, "lorsp.bench", None)  # import fails
    assert cli.main(["bench"]) == cli.EXIT_ERROR
    assert "unavailable" in capsys.readouterr().err
