"""Paired bootstrap differences (metrics.paired_difference) on hand-made per-problem results."""

import numpy as np
import pytest

from rstar_jax.evaluation.metrics import paired_difference


def test_identical_methods_give_a_zero_interval():
    a = [1.0, 0.0, 1.0, 1.0, 0.0] * 4
    assert paired_difference(a, list(a)) == {"n": 20, "diff": 0.0, "ci": [0.0, 0.0],
                                             "excludes_zero": False}


def test_a_difference_on_every_problem_excludes_zero_both_ways():
    right, wrong = [1.0] * 12, [0.0] * 12
    up = paired_difference(right, wrong)
    assert (up["diff"], up["ci"], up["excludes_zero"]) == (1.0, [1.0, 1.0], True)
    down = paired_difference(wrong, right)
    assert (down["diff"], down["ci"], down["excludes_zero"]) == (-1.0, [-1.0, -1.0], True)


def test_pairing_is_what_narrows_the_interval():
    """Both methods right on the same 40 of 80 problems, A also on 6 more:
    the separate accuracies (50% vs 57.5%) are hard to tell apart, but the
    per-problem differences (+1 on 6, 0 elsewhere) are all >= 0."""
    b = np.array([1.0] * 40 + [0.0] * 40)
    a = b.copy()
    a[40:46] = 1.0
    got = paired_difference(a, b, samples=2000, seed=3)
    assert got["n"] == 80 and got["diff"] == pytest.approx(6 / 80)
    assert 0.0 < got["ci"][0] < 6 / 80 < got["ci"][1] and got["excludes_zero"]
    # One problem the other way round: the interval reaches below zero.
    a[0] = 0.0
    mixed = paired_difference(a, b, samples=2000, seed=3)
    assert mixed["diff"] == pytest.approx(5 / 80) and mixed["ci"][0] <= 0.0 < mixed["ci"][1]


def test_seeded_and_optional_and_checked():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, 50).astype(float), rng.integers(0, 2, 50).astype(float)
    assert paired_difference(a, b, seed=7) == paired_difference(a, b, seed=7)
    assert paired_difference(a, b, seed=7)["ci"] != paired_difference(a, b, seed=8)["ci"]
    none = paired_difference(a, b, samples=0)
    assert none["ci"] is None and none["excludes_zero"] is None
    assert none["diff"] == pytest.approx(float(np.mean(a - b)))
    assert paired_difference([], []) == {"n": 0, "diff": None, "ci": None, "excludes_zero": None}
    with pytest.raises(ValueError, match="same problems"):
        paired_difference([1.0, 0.0], [1.0])
