"""`evaluate` into an existing directory: the same run resumes, another is refused.

Also the refusal of PPM methods without a trained PPM and the report's
warnings (no answer extracted, untrained PPM).
"""

import json
import os
import subprocess
import sys

import pytest
from evaluation.test_harness import PROBLEMS, FixedRunner, make_cfg
from evaluation.toygrader import toy_equiv, toy_grade

from rstar_jax.config.schema import replace
from rstar_jax.data.problems import Problem
from rstar_jax.evaluation import harness
from rstar_jax.utils.fingerprint import CONFIG_FILE, FINGERPRINT_FILE, SUPERSEDED_DIR
from testutil import REPO


def evaluate(tmp_path, cfg, runner, problems=PROBLEMS, force=False, method="greedy"):
    return harness.evaluate(cfg, ["gsm8k"], method, str(tmp_path / "out"), run_method=runner,
                            grade=toy_grade, equiv=toy_equiv, problems={"gsm8k": problems},
                            force=force)


def with_model(cfg, path):
    return replace(cfg, model=replace(cfg.model, checkpoint=str(path)))


def fake_checkpoint(path, content: bytes):
    path.mkdir()
    (path / "params.bin").write_bytes(content)
    return path


def test_same_run_resumes_and_records_its_config(tmp_path):
    cfg = with_model(make_cfg(), fake_checkpoint(tmp_path / "a", b"weights"))
    evaluate(tmp_path, cfg, FixedRunner())
    again = FixedRunner()
    evaluate(tmp_path, cfg, again)
    assert again.seen == []  # everything resumed
    fp = json.loads((tmp_path / "out" / FINGERPRINT_FILE).read_text())
    assert fp["model"]["path"] == str(tmp_path / "a") and fp["config"]["seed"] == 0
    assert "seed: 0" in (tmp_path / "out" / CONFIG_FILE).read_text()


def test_other_model_checkpoint_is_refused_naming_it(tmp_path):
    a = fake_checkpoint(tmp_path / "a", b"weights a")
    b = fake_checkpoint(tmp_path / "b", b"weights b")
    evaluate(tmp_path, with_model(make_cfg(), a), FixedRunner())
    idle = FixedRunner()
    with pytest.raises(harness.EvaluationError, match=f"model {a} -> {b}") as e:
        evaluate(tmp_path, with_model(make_cfg(), b), idle)
    assert "--force" in str(e.value) and idle.seen == []
    # The same path with other contents is another model too.
    (a / "params.bin").write_bytes(b"retrained")
    with pytest.raises(harness.EvaluationError, match="its contents changed"):
        evaluate(tmp_path, with_model(make_cfg(), a), FixedRunner())


def test_seed_and_budget_changes_are_refused(tmp_path):
    evaluate(tmp_path, make_cfg(), FixedRunner())
    cfg = make_cfg()
    with pytest.raises(harness.EvaluationError, match="seed 0 -> 5"):
        evaluate(tmp_path, replace(cfg, seed=5), FixedRunner())
    with pytest.raises(harness.EvaluationError, match="mcts.rollouts 8 -> 64"):
        evaluate(tmp_path, replace(cfg, mcts=replace(cfg.mcts, rollouts=64)), FixedRunner())
    # Speed-only settings resume.
    fast = replace(cfg, eval=replace(cfg.eval, chunk_size=3),
                   engine=replace(cfg.engine, num_slots=8))
    evaluate(tmp_path, fast, FixedRunner())


def test_question_changed_under_the_same_id_is_refused_then_forced(tmp_path):
    evaluate(tmp_path, make_cfg(), FixedRunner())
    other = [Problem("p0", "another question", "2")] + PROBLEMS[1:]
    with pytest.raises(harness.EvaluationError, match="problems gsm8k"):
        evaluate(tmp_path, make_cfg(), FixedRunner(), problems=other)
    runner = FixedRunner()
    evaluate(tmp_path, make_cfg(), runner, problems=other, force=True)
    assert runner.seen == ["p0", "p1", "p2", "p3"]  # started again
    (old,) = os.listdir(tmp_path / "out" / SUPERSEDED_DIR)
    assert (tmp_path / "out" / SUPERSEDED_DIR / old / FINGERPRINT_FILE).exists()
    rows = [json.loads(x) for x in (tmp_path / "out" / "gsm8k" / "results.jsonl").open()]
    assert rows[0]["question"] == "another question"


def test_results_are_not_resumed_by_id_alone(tmp_path):
    """Even without the fingerprint (removed), a record of another question is no resume."""
    evaluate(tmp_path, make_cfg(), FixedRunner())
    os.remove(tmp_path / "out" / FINGERPRINT_FILE)
    other = [Problem("p0", "another question", "2")] + PROBLEMS[1:]
    with pytest.raises(harness.EvaluationError):  # no fingerprint: refused as unknown
        evaluate(tmp_path, make_cfg(), FixedRunner(), problems=other)
    store_dir = tmp_path / "out2" / "gsm8k"
    store_dir.mkdir(parents=True)
    (store_dir / "results.jsonl").write_text(
        (tmp_path / "out" / "gsm8k" / "results.jsonl").read_text())
    with pytest.raises(harness.EvaluationError, match="another question under the same id"):
        harness.run_benchmark("gsm8k", other, "greedy", make_cfg(), str(tmp_path / "out2"),
                              FixedRunner())


class NoneRunner(FixedRunner):
    def __call__(self, method, problems, cfg):
        return [harness.result_for(p, "x", method, prompt="p", outputs=["<|endoftext|>"],
                                   preds=[None], scores=None, generated_tokens=1)
                for p in problems]


def test_report_says_when_no_answer_was_extracted(tmp_path):
    out = evaluate(tmp_path, make_cfg(), NoneRunner())
    (summary,) = out["summaries"]
    assert summary["answered"] == 0 and "no answer was extracted" in summary["warnings"][0]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "no answer was extracted from any of the 4" in report
    out = harness.evaluate(make_cfg(), ["gsm8k"], "greedy", str(tmp_path / "ok"),
                           run_method=FixedRunner(), grade=toy_grade, equiv=toy_equiv,
                           problems={"gsm8k": PROBLEMS})
    assert out["summaries"][0]["warnings"] == [] and out["summaries"][0]["answered"] == 2


@pytest.mark.parametrize("method", ["mcts_ppm", "best_of_n", "beam"])
def test_ppm_methods_without_a_trained_ppm_are_refused(tmp_path, method):
    with pytest.raises(harness.EvaluationError, match="ppm.checkpoint=DIR"):
        harness.evaluate(make_cfg(), ["gsm8k"], method, str(tmp_path / method),
                         problems={"gsm8k": PROBLEMS})
    assert not (tmp_path / method).exists()


def test_untrained_ppm_when_allowed_is_named_in_the_report(tmp_path, monkeypatch):
    import rstar_jax.evaluation.methods as methods

    monkeypatch.setattr(methods, "run_method", FixedRunner())
    monkeypatch.setattr(methods, "close_session", lambda: None)
    out = harness.evaluate(make_cfg(allow_untrained_ppm=True), ["gsm8k"], "mcts_ppm",
                           str(tmp_path / "out"), grade=toy_grade, equiv=toy_equiv,
                           problems={"gsm8k": PROBLEMS})
    assert "untrained PPM value head" in out["summaries"][0]["warnings"][0]
    assert "untrained PPM value head" in (tmp_path / "out" / "report.md").read_text()


def test_cli_mcts_ppm_without_ppm_exits_2_in_one_line_before_loading(tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps({"id": "a", "question": "1+1?", "answer": "2"}) + "\n")
    policy = tmp_path / "policy"  # exists (model paths are checked first); never loaded
    policy.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "rstar_jax", "evaluate", "--config",
         str(REPO / "configs/presets/cpu-eval.yaml"), "--benchmark", str(problems),
         "--method", "mcts_ppm", "--out", str(tmp_path / "out"), f"model.checkpoint={policy}"],
        cwd=REPO, capture_output=True, text=True, timeout=120)  # an empty dir cannot load
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "eval.allow_untrained_ppm=true" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
