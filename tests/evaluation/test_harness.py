"""The evaluate harness with a fixed-prediction runner: resume, choice, report."""

import json
import os

import pytest
from evaluation.toygrader import toy_equiv, toy_grade

from rstar_jax.config import load_config
from rstar_jax.config.schema import Config, replace
from rstar_jax.data.problems import Problem
from rstar_jax.evaluation import harness
from rstar_jax.evaluation.results import ResultStore

# id -> (preds, scores, tokens); gold answers below.
FIXED = {
    "p0": (["2", "3", "3"], [0.9, 0.2, 0.3], 30),
    "p1": ([None, "-3", "1/2"], [0.5, 0.1, 0.2], 60),
    "p2": (["1/2", "4", "4"], [-0.9, -0.2, -0.2], 90),
    "p3": ([None, None, None], [0.1, 0.1, 0.1], 120),
}
PROBLEMS = [Problem("p0", "Q0", "2"), Problem("p1", "Q1", ("3", "-3")),
            Problem("p2", "Q2", "0.5"), Problem("p3", "Q3", "7")]


def make_cfg(**eval_changes):
    cfg = Config()
    return replace(cfg, eval=replace(cfg.eval, chunk_size=2, bootstrap_samples=200,
                                     **eval_changes),
                   logging=replace(cfg.logging, progress=False))


class FixedRunner:
    def __init__(self, fail_after=None):
        self.seen = []
        self.fail_after = fail_after

    def __call__(self, method, problems, cfg):
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.seen.extend(p.id for p in problems)
        out = []
        for p in problems:
            preds, scores, toks = FIXED[p.id]
            out.append(harness.result_for(p, "x", method, prompt=f"prompt {p.id}",
                                          outputs=[f"out {a}" for a in preds], preds=preds,
                                          scores=scores, generated_tokens=toks))
        return out


def run(tmp_path, method, runner, **eval_changes):
    return harness.evaluate(make_cfg(**eval_changes), ["gsm8k"], method, str(tmp_path / "out"),
                            run_method=runner, grade=toy_grade, equiv=toy_equiv,
                            problems={"gsm8k": PROBLEMS})


@pytest.mark.parametrize("method,expected", [
    # chosen: greedy first -> p0 ok, p1 None, p2 ok, p3 None = 50%
    ("greedy", 50.0),
    # majority: p0 "3" x, p1 "-3" ok, p2 "4" x, p3 None x = 25%
    ("majority", 25.0),
    # best_of_n: p0 "2" ok, p1 "1/2" x, p2 "4" x = 25%
    ("best_of_n", 25.0),
])
def test_method_accuracy_by_hand(tmp_path, method, expected):
    out = run(tmp_path, method, FixedRunner())
    s = out["summaries"][0]
    assert s["accuracy"] == expected and s["n"] == 4
    assert s["first"] == 50.0 and s["pass@k"] == 75.0
    assert s["avg_generated_tokens"] == 75.0
    assert s["accuracy_ci"][0] <= expected <= s["accuracy_ci"][1]


def test_mcts_selection_from_config(tmp_path):
    # top_k_majority with k=2: p0 top2 = "2"(.9), "3"(.3) tie -> "2" ok;
    # p1 "1/2"(.2), "-3"(.1) -> "1/2" x; p2 "4","4" x -> 25%. weighted: p0 "2" .9 vs .5 ok;
    # p1 "1/2" .2 x; p2 "4" x -> 25%. majority -> 25% too; top_score -> 25%.
    out = run(tmp_path, "mcts_ppm", FixedRunner(), mcts_selection="top_k_majority", top_k_vote=2)
    assert out["summaries"][0]["accuracy"] == 25.0


def test_resume_skips_finished_problems(tmp_path):
    crashing = FixedRunner(fail_after=2)  # first chunk (p0, p1) saved, then a crash
    with pytest.raises(RuntimeError):
        run(tmp_path, "greedy", crashing)
    path = tmp_path / "out" / "gsm8k" / "results.jsonl"
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["p0", "p1"]
    # A torn last line from a crash mid-write is dropped.
    with open(path, "a") as f:
        f.write('{"id": "p2", "bench')
    again = FixedRunner()
    out = run(tmp_path, "greedy", again)
    assert again.seen == ["p2", "p3"]
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["p0", "p1", "p2", "p3"]
    assert out["summaries"][0]["accuracy"] == 50.0
    # A third run does nothing new but reports the same numbers.
    idle = FixedRunner()
    assert run(tmp_path, "greedy", idle)["summaries"][0]["accuracy"] == 50.0
    assert idle.seen == []


def test_rerun_with_other_method_is_refused(tmp_path):
    run(tmp_path, "greedy", FixedRunner())
    with pytest.raises(harness.EvaluationError, match="eval.method 'greedy' -> 'majority'"):
        run(tmp_path, "majority", FixedRunner())


def test_report_files_and_inspection_jsonl(tmp_path):
    out = run(tmp_path, "best_of_n", FixedRunner())
    d = tmp_path / "out"
    for name in ("summary.json", "report.md", "accuracy.png", "run.json",
                 "gsm8k/trajectories.png", "gsm8k/results.jsonl"):
        assert (d / name).is_file(), name
    assert (d / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (d / "report.md").read_text()
    assert "| gsm8k | best_of_n | 4 | 25.0 |" in md
    rec = ResultStore(str(d / "gsm8k" / "results.jsonl")).load()["p1"]
    assert rec.prompt == "prompt p1" and rec.outputs[1] == "out -3"
    assert rec.chosen == "1/2" and rec.gold == ["3", "-3"]
    summary = json.loads((d / "summary.json").read_text())["benchmarks"][0]
    assert [row["n"] for row in summary["curve"]] == [1, 2, 3]
    assert out["paths"]["json"] == str(d / "summary.json")


def test_math500_breakdown_and_real_loader(tmp_path, shared_data):
    bench = str(shared_data / "benchmarks")
    cfg = make_cfg(benchmark_dir=bench, limit=6)

    def runner(method, problems, cfg):
        # Correct on even positions by copying the gold answer.
        return [harness.result_for(p, "math500", method, preds=[p.answer if i % 2 == 0 else "x"])
                for i, p in enumerate(problems)]
    out = harness.evaluate(cfg, ["math500"], "greedy", str(tmp_path / "o"), run_method=runner,
                           grade=toy_grade, equiv=toy_equiv)
    s = out["summaries"][0]
    assert s["n"] == 6
    bd = s["breakdown"]
    assert sum(v["n"] for v in bd["level"].values()) == 6 and "unknown" not in bd["level"]
    assert os.path.isfile(out["paths"]["math500_breakdown_png"])


def test_unknown_method_and_bad_runner(tmp_path):
    with pytest.raises(harness.EvaluationError, match="unknown method"):
        run(tmp_path, "sampling", FixedRunner())
    with pytest.raises(harness.EvaluationError, match="returned ids"):
        run(tmp_path, "greedy", lambda m, probs, c: [])


def test_config_fields_load(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("eval:\n  mcts_selection: weighted\n  chunk_size: 3\n")
    cfg = load_config(str(f), ["eval.processbench_tune_subset=math"])
    assert cfg.eval.mcts_selection == "weighted" and cfg.eval.processbench_tune_subset == "math"


def test_evaluate_methods_one_problem_set(tmp_path):
    out = harness.evaluate_methods(make_cfg(), PROBLEMS, ["greedy", "majority", "best_of_n"],
                                   str(tmp_path / "ev"), run_method=FixedRunner(),
                                   grade=toy_grade, equiv=toy_equiv)
    assert {m: s["accuracy"] for m, s in out.items()} == {"greedy": 50.0, "majority": 25.0,
                                                          "best_of_n": 25.0}
    assert (tmp_path / "ev" / "majority" / "test" / "results.jsonl").is_file()
