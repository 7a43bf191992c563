"""Metrics on fixed predictions against hand-computed values."""

import json
import math

import pytest
from evaluation.toygrader import toy_equiv, toy_grade

from rstar_jax.evaluation import metrics as M

# Three problems worked by hand (see the expected tables below).
SAMPLES = [
    M.Samples("2", ("2", "3", "3"), (0.9, 0.2, 0.3)),
    M.Samples(("3", "-3"), (None, "-3", "1/2"), (0.5, 0.1, 0.2)),
    M.Samples("0.5", ("1/2", "4", "4"), (-0.9, -0.2, -0.2)),
]


def test_pass_at_k_matches_binomial_formula():
    assert M.pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)
    assert M.pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert M.pass_at_k(3, 2, 2) == 1.0
    assert M.pass_at_k(10, 0, 3) == 0.0
    assert M.pass_at_k(100, 7, 10) == pytest.approx(1 - math.comb(93, 10) / math.comb(100, 10))
    with pytest.raises(ValueError):
        M.pass_at_k(3, 1, 4)


def test_problem_metrics_by_hand():
    got = [M.problem_metrics(s, None, toy_grade, toy_equiv) for s in SAMPLES]
    assert got[0] == {"first": 1.0, "maj@k": 0.0, "best@k": 1.0, "weighted@k": 1.0, "pass@k": 1.0}
    assert got[1] == {"first": 0.0, "maj@k": 1.0, "best@k": 0.0, "weighted@k": 0.0, "pass@k": 1.0}
    assert got[2] == {"first": 1.0, "maj@k": 0.0, "best@k": 0.0, "weighted@k": 0.0, "pass@k": 1.0}


def test_aggregate_all_and_k2():
    out = M.aggregate(SAMPLES, None, toy_grade, toy_equiv)
    assert out["n"] == 3 and out["n_scored"] == 3
    assert out["first"] == pytest.approx(66.6667)
    assert out["maj@k"] == pytest.approx(33.3333)  # per problem 0, 1, 0
    assert out["best@k"] == pytest.approx(33.3333)
    assert out["weighted@k"] == pytest.approx(33.3333)
    assert out["pass@k"] == 100.0
    out2 = M.aggregate(SAMPLES, 2, toy_grade, toy_equiv)
    assert out2["maj@k"] == 100.0
    assert out2["best@k"] == pytest.approx(66.6667)
    assert out2["weighted@k"] == pytest.approx(66.6667)
    # pass@2 from 3 samples with 1 correct: 1 - C(2,2)/C(3,2) = 2/3 each.
    assert out2["pass@k"] == pytest.approx(66.6667)


def test_unscored_problems_have_no_best_or_weighted():
    s = [M.Samples("1", ("1", "2")), M.Samples("5", ("5",), (0.3,))]
    out = M.aggregate(s, None, toy_grade, toy_equiv)
    assert out["n_scored"] == 1
    assert out["best@k"] == 100.0  # only the scored problem counts
    assert M.aggregate(s[:1], None, toy_grade, toy_equiv)["best@k"] is None


def test_bootstrap_ci_seeded_and_sane():
    assert M.bootstrap_ci([1.0] * 20) == (1.0, 1.0)
    vals = [0.0, 1.0] * 50
    lo, hi = M.bootstrap_ci(vals, 2000, seed=3)
    assert (lo, hi) == M.bootstrap_ci(vals, 2000, seed=3)
    # sd of the mean = 0.5 / sqrt(100) = 0.05, so about 0.5 -+ 0.098.
    assert 0.38 <= lo <= 0.42 and 0.58 <= hi <= 0.62
    summary = M.summarize([{"first": v} for v in vals], bootstrap_samples=500)
    assert summary["first"] == 50.0 and summary["first_ci"][0] < 50.0 < summary["first_ci"][1]


def test_accuracy_vs_trajectories_by_hand():
    assert M.trajectory_counts(3) == [1, 2, 3]
    assert M.trajectory_counts(8) == [1, 2, 4, 8]
    curve = M.accuracy_vs_trajectories(SAMPLES, None, toy_grade, toy_equiv)
    assert [r["n"] for r in curve] == [1, 2, 3]
    # n=1: every metric is the first answer's correctness (P2 has None).
    assert curve[0]["maj@k"] == curve[0]["best@k"] == pytest.approx(66.6667)
    # n=2: see the k=2 case; pass@2 on 2 samples is plain "any correct".
    assert curve[1]["maj@k"] == 100.0 and curve[1]["best@k"] == pytest.approx(66.6667)
    assert curve[1]["pass@k"] == 100.0
    assert curve[2]["maj@k"] == pytest.approx(33.3333)


def test_breakdown_by_level_and_subject(tmp_path):
    path = tmp_path / "levels.jsonl"
    rows = [{"problem": "Q1 ", "level": 1, "subject": "Algebra", "unique_id": "a/1.json"},
            {"problem": "Q2", "level": 2, "subject": "Algebra", "unique_id": "a/2.json"},
            {"problem": "Q3", "level": 2, "subject": "Geometry", "unique_id": "g/3.json"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    table = M.load_levels(str(path))
    keys = [["Q1"], ["x", "a/2.json"], ["Q3"], ["Q9"]]
    out = M.breakdown(keys, [1.0, 0.0, 1.0, 1.0], table)
    assert out["level"] == {"1": {"n": 1, "accuracy": 100.0}, "2": {"n": 2, "accuracy": 50.0},
                            "unknown": {"n": 1, "accuracy": 100.0}}
    assert out["subject"]["Algebra"] == {"n": 2, "accuracy": 50.0}
    assert out["subject"]["Geometry"] == {"n": 1, "accuracy": 100.0}


def test_math500_levels_join_on_question_text(shared_data):
    table = M.load_levels(str(shared_data / "benchmarks" / "math500_levels.jsonl"))
    problems = json.loads((shared_data / "benchmarks" / "math500_test.json").read_text())
    out = M.breakdown([[p["question"]] for p in problems], [1.0] * len(problems), table)
    assert "unknown" not in out["level"]
    assert sum(v["n"] for v in out["level"].values()) == 500
    assert set(out["level"]) == {"1", "2", "3", "4", "5"}
    assert len(out["subject"]) == 7


def test_real_grader_same_numbers_as_toy():
    """The executor's grader agrees with the hand-checked toy grader here."""
    assert M.aggregate(SAMPLES, 2) == M.aggregate(SAMPLES, 2, toy_grade, toy_equiv)
    # And handles LaTeX the toy one cannot: \frac{1}{2} == 0.5, any list element.
    s = [M.Samples(("\\frac{1}{2}", "2"), ("0.5", "\\dfrac12", "3"), (0.1, 0.2, 0.9))]
    out = M.aggregate(s)
    assert out["first"] == 100.0 and out["maj@k"] == 100.0 and out["best@k"] == 0.0
    assert out["weighted@k"] == 0.0  # {0.5, \dfrac12}: 0.3 < 0.9
