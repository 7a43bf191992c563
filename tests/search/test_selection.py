"""Answer selection with hand-computed expectations (spec section 4)."""

import math
from fractions import Fraction

import pytest

from rstar_jax.search import selection as sel


def toy_equiv(a, b):
    """Numbers equal as fractions ("0.5" == "1/2"); otherwise exact text."""
    try:
        return Fraction(a) == Fraction(b)
    except (ValueError, ZeroDivisionError):
        return a.strip() == b.strip()


def test_group_answers_classes_in_first_seen_order():
    classes = sel.group_answers(["1/2", "3", None, "0.5", "3", "x"], toy_equiv)
    assert [(c.answer, c.members) for c in classes] == [
        ("1/2", (0, 3)), ("3", (1, 4)), ("x", (5,))]


def test_group_answers_grader_exception_means_different():
    def boom(a, b):
        raise RuntimeError("bad latex")
    classes = sel.group_answers(["a", "b", "a"], boom)
    assert [c.members for c in classes] == [(0, 2), (1,)]


def test_top_score_ties_and_none():
    assert sel.select_top_score(["1", "2", "3"], [0.1, 0.9, 0.9]) == "2"
    # None never wins even with the best score.
    assert sel.select_top_score([None, "2"], [1.0, -1.0]) == "2"
    assert sel.select_top_score([None, None], [1.0, 0.0]) is None
    # NaN counts as -inf.
    assert sel.select_top_score(["1", "2"], [math.nan, -5.0]) == "2"
    with pytest.raises(ValueError):
        sel.select_top_score(["1"], [0.1, 0.2])


def test_majority_vote_uses_equivalence_and_first_seen_tie():
    # classes: {1/2, 0.5, 2/4}: 3, {7}: 2 -> "1/2".
    assert sel.majority_vote(["7", "1/2", "0.5", "7", "2/4"], toy_equiv) == "1/2"
    # tie 2-2: class seen first wins.
    assert sel.majority_vote(["7", "1/2", "0.5", "7"], toy_equiv) == "7"
    # None entries do not form a class even when most common.
    assert sel.majority_vote([None, None, None, "4"], toy_equiv) == "4"
    assert sel.majority_vote([None], toy_equiv) is None
    assert sel.majority_vote([], toy_equiv) is None


def test_weighted_vote_sums_scores_per_class():
    answers = ["a", "b", "b", "c"]
    scores = [0.9, 0.4, 0.4, 0.1]
    # sums: a 0.9, b 0.8, c 0.1
    assert sel.weighted_vote(answers, scores, toy_equiv) == "a"
    # sums: a 0.5, b 0.5 -> tie on sum, b is larger -> b.
    assert sel.weighted_vote(["a", "b", "b"], [0.5, 0.25, 0.25], toy_equiv) == "b"
    # Negative tanh scores: two -0.5s (sum -1.0) lose to one -0.9.
    assert sel.weighted_vote(["x", "x", "y"], [-0.5, -0.5, -0.9], toy_equiv) == "y"
    # equivalence merges 0.5 and 1/2: 0.3 + 0.3 = 0.6 > 0.5
    assert sel.weighted_vote(["2", "1/2", "0.5"], [0.5, 0.3, 0.3], toy_equiv) == "1/2"


def test_top_k_majority_hand_example():
    answers = ["5", "3", "3", "5", "5", None, "3"]
    scores = [0.2, 0.9, 0.8, 0.7, 0.6, 1.0, 0.1]
    # ranking (None dropped): 1(3,.9) 2(3,.8) 3(5,.7) 4(5,.6) 0(5,.2) 6(3,.1)
    # k=2: {3:2} -> 3; k=4: 3:2 vs 5:2, tie -> class of top member "3";
    # k=5: 5 has 3 -> 5; k=6: 3:3, 5:3 -> "3" (holds the top member).
    assert sel.top_k_majority(answers, scores, 2, toy_equiv) == "3"
    assert sel.top_k_majority(answers, scores, 4, toy_equiv) == "3"
    assert sel.top_k_majority(answers, scores, 5, toy_equiv) == "5"
    assert sel.top_k_majority(answers, scores, 6, toy_equiv) == "3"
    # k=1 is the top-score protocol.
    assert sel.top_k_majority(answers, scores, 1, toy_equiv) == sel.select_top_score(answers, scores)
    with pytest.raises(ValueError):
        sel.top_k_majority(answers, scores, 0, toy_equiv)


def test_select_dispatch():
    answers, scores = [None, "2", "2", "9"], [0.0, 0.1, 0.1, 0.95]
    assert sel.select("first", answers) is None
    assert sel.select("majority", answers, equiv=toy_equiv) == "2"
    assert sel.select("top_score", answers, scores) == "9"
    assert sel.select("weighted", answers, scores, equiv=toy_equiv) == "9"
    assert sel.select("top_k_majority", answers, scores, k=3, equiv=toy_equiv) == "2"
    with pytest.raises(ValueError, match="needs scores"):
        sel.select("weighted", answers)
    with pytest.raises(ValueError, match="unknown selection"):
        sel.select("best", answers, scores)


def test_default_equiv_is_the_executor_grader():
    answers = ["3", "\\frac{1}{2}", "0.5", "\\dfrac{1}{2}", "3.0"]
    classes = sel.group_answers(answers)
    assert [c.members for c in classes] == [(0, 4), (1, 2, 3)]
    assert sel.majority_vote(answers) == "\\frac{1}{2}"
    assert sel.weighted_vote(answers, [0.9, 0.1, 0.1, 0.1, 0.5]) == "3"
