"""Where the PPM fails: per-level margins between right and wrong answers,
on hand-made results whose numbers can be checked by hand."""

import pytest

from rstar_jax.evaluation.report import ppm_margins
from rstar_jax.evaluation.results import ProblemResult


def res(pid, level, preds, scores, gold="7"):
    return ProblemResult(id=pid, benchmark="test", method="best_of_n", question=pid, gold=gold,
                         preds=preds, scores=scores, meta={"level": level})


def exact(pred, gold):
    return pred == gold


RESULTS = [
    # level 1: right on top by 0.5; right on top by 0.1 (a dead end scores higher, ignored)
    res("a", 1, ["7", "8", "9"], [0.9, 0.4, 0.1]),
    res("b", 1, ["8", None, "7"], [0.2, 0.99, 0.3]),
    # level 3: wrong on top by 0.3; a tie (not "right first"); all wrong; all right
    res("c", 3, ["7", "8"], [0.2, 0.5]),
    res("d", 3, ["8", "7"], [0.6, 0.6]),
    res("e", 3, ["8", "9"], [0.1, 0.2]),
    res("f", 3, ["7", "7"], [0.1, 0.2]),
    # no scores (greedy-like) or no gold: not counted
    res("g", 3, ["7"], None),
    res("h", 3, ["7", "8"], [0.1, 0.2], gold=None),
]


def test_margins_per_level_and_overall():
    out = ppm_margins(RESULTS, exact)
    assert list(out) == ["1", "3", "all"]
    one, three, every = out["1"], out["3"], out["all"]
    assert (one["problems"], one["mixed"], one["all_right"], one["all_wrong"]) == (2, 2, 0, 0)
    assert one["mean_margin"] == pytest.approx(0.3) and one["median_margin"] == pytest.approx(0.3)
    assert one["right_first"] == 1.0
    assert (three["problems"], three["mixed"], three["all_right"], three["all_wrong"]) == (4, 2, 1, 1)
    assert three["mean_margin"] == pytest.approx(-0.15) and three["median_margin"] == pytest.approx(-0.15)
    assert three["right_first"] == 0.0
    assert (every["problems"], every["mixed"]) == (6, 4)
    assert every["mean_margin"] == pytest.approx((0.5 + 0.1 - 0.3 + 0.0) / 4)
    assert every["median_margin"] == pytest.approx((0.0 + 0.1) / 2)
    assert every["right_first"] == 0.5


def test_no_mixed_problem_gives_none_and_missing_level_is_named():
    out = ppm_margins([res("x", None, ["7"], [0.3])], exact)
    assert set(out) == {"?", "all"}
    row = out["all"]
    assert row["mixed"] == 0 and row["mean_margin"] is None and row["right_first"] is None
    assert row["all_right"] == 1
    bare = ProblemResult(id="y", benchmark="t", method="m", question="y", gold="7",
                         preds=["8"], scores=[0.1])
    assert set(ppm_margins([bare], exact)) == {"?", "all"}
