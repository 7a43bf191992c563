"""The evaluation CLI on a fresh parser: evaluate, evaluate-ppm, help, exit codes."""

import argparse
import json

import numpy as np
import pytest

from rstar_jax.data.processbench import load_processbench
from rstar_jax.evaluation import commands, harness
from rstar_jax.evaluation.methods import MethodUnavailable
from rstar_jax.evaluation.processbench import f1_from_predictions


def parser():
    p = argparse.ArgumentParser(prog="rstar-jax")
    commands.register(p.add_subparsers(dest="command"))
    return p


@pytest.fixture
def cfg_file(tmp_path, shared_data):
    f = tmp_path / "eval.yaml"
    f.write_text(f"eval:\n  benchmark_dir: {shared_data / 'benchmarks'}\n"
                 f"  processbench_dir: {shared_data / 'processbench'}\n"
                 "  bootstrap_samples: 100\n  chunk_size: 4\n"
                 "logging:\n  level: WARNING\n  progress: false\n")
    return str(f)


def gold_runner(method, problems, cfg):
    """Answers every problem with its gold answer (first element of a list)."""
    out = []
    for p in problems:
        gold = p.answer[0] if isinstance(p.answer, tuple) else p.answer
        out.append(harness.result_for(p, "", method, preds=[gold, "wrong"], scores=[0.9, 0.1],
                                      generated_tokens=5))
    return out


@pytest.mark.parametrize("cmd", ["aggregate", "evaluate", "evaluate-ppm"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        parser().parse_args([cmd, "--help"])
    assert e.value.code == 0 and cmd in capsys.readouterr().out


def test_evaluate_end_to_end_two_benchmarks(cfg_file, tmp_path, capsys):
    out_dir = tmp_path / "run"
    args = parser().parse_args(["evaluate", "--config", cfg_file, "--benchmark", "aime,amc23",
                                "--method", "best_of_n", "--out", str(out_dir), "--limit", "3"])
    # The exact string equality grader: copying the gold answer is always right.
    rc = commands._evaluate(args, run_method=gold_runner)
    assert rc == 0
    out = capsys.readouterr().out
    assert "| aime2024 | best_of_n | 3 | 100.0 |" in out
    assert "| amc23 | best_of_n | 3 | 100.0 |" in out
    summary = json.loads((out_dir / "summary.json").read_text())
    assert [s["benchmark"] for s in summary["benchmarks"]] == ["aime2024", "amc23"]
    assert summary["benchmarks"][0]["pass@k"] == 100.0


def test_evaluate_bad_input_exit_2(cfg_file, tmp_path, capsys):
    p = parser()
    base = ["evaluate", "--config", cfg_file, "--out", str(tmp_path / "o"), "--method", "greedy"]
    assert commands._evaluate(p.parse_args(base + ["--benchmark", "nope"]),
                              run_method=gold_runner) == 2
    assert "unknown benchmark" in capsys.readouterr().err
    # A method whose model side is missing: a clear message, not a traceback.
    def unavailable(method, problems, cfg):
        raise MethodUnavailable(f"method {method!r} needs a PPM scorer")
    assert commands._evaluate(p.parse_args(base + ["--benchmark", "aime", "--limit", "1"]),
                              run_method=unavailable) == 2
    assert "method 'greedy' needs a PPM scorer" in capsys.readouterr().err


class FakeScorer:
    """Score = 0.9 minus 0.1 per step in the prefix: the k-th prefix scores 0.9 - 0.1 k."""

    def score(self, texts):
        return np.array([0.9 - 0.1 * (t.count("<end_of_step>") - 1) for t in texts], np.float32)


def test_evaluate_ppm_with_fake_scorer(cfg_file, tmp_path, capsys, shared_data):
    args = parser().parse_args(["evaluate-ppm", "--config", cfg_file, "--benchmark",
                                "processbench", "--subsets", "gsm8k,math", "--limit", "20",
                                "--out", str(tmp_path / "pb"), "eval.processbench_threshold=0.75"])
    assert commands._evaluate_ppm(args, scorer=FakeScorer()) == 0
    got = json.loads(capsys.readouterr().out)
    # Scores 0.9, 0.8, 0.7, ...: the first score < 0.75 is step 2, so the prediction is 2
    # for every sample with >= 3 steps, else -1.
    data = load_processbench(str(shared_data / "processbench"), ["gsm8k", "math"], 20)
    for name in ("gsm8k", "math"):
        assert sum(s.label == -1 for s in data[name]) == 10
        preds = [2 if len(s.steps) >= 3 else -1 for s in data[name]]
        want = f1_from_predictions([s.label for s in data[name]], preds)
        assert got["subsets"][name]["f1"] == pytest.approx(want["f1"])
        assert got["subsets"][name]["n_error"] == 10
    assert got["threshold"] == 0.75
    assert json.loads((tmp_path / "pb" / "processbench.json").read_text()) == got


def test_evaluate_ppm_errors(cfg_file, capsys):
    p = parser()
    assert commands._evaluate_ppm(p.parse_args(["evaluate-ppm", "--config", cfg_file,
                                                "--benchmark", "prmbench"]), FakeScorer()) == 2
    assert "only 'processbench'" in capsys.readouterr().err
    args = p.parse_args(["evaluate-ppm", "--config", cfg_file, "--subsets", "math"])
    assert commands._evaluate_ppm(args, FakeScorer()) == 2
    assert "tuning subset 'gsm8k'" in capsys.readouterr().err


def test_evaluate_reads_benchmarks_through_tfds(cfg_file, tmp_path, capsys):
    tfds_dir = tmp_path / "tfds"
    args = parser().parse_args(["evaluate", "--config", cfg_file, "--benchmark", "gaokao",
                                "--method", "greedy", "--out", str(tmp_path / "r"), "--limit", "2",
                                f"eval.data_dir={tfds_dir}"])
    assert commands._evaluate(args, run_method=gold_runner) == 0
    assert "| gaokao2023en | greedy | 2 | 100.0 |" in capsys.readouterr().out
    assert list((tfds_dir / "rstar_benchmark" / "gaokao2023en").rglob("*.array_record*"))
