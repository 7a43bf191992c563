"""Answer choice among candidate solutions (spec section 4).

At inference time a search returns several candidate final answers, each with
a solution score (the PPM score of its final-answer step). The paper keeps
the answer of the highest-scoring trajectory; the reference README takes a
majority vote over the top K answers by score pooled across independent
runs; a score-weighted vote sits between the two. All of them first group
answers into equivalence classes with the grader, because "1/2", "0.5" and
"\\frac{1}{2}" are one answer.

Tie-breaking is deterministic and the same everywhere: among equal counts or
equal summed scores, the class whose first member comes first (in input
order, or in score order for `top_k_majority`) wins. A class is returned as
its first member's string. `None` (no extracted answer) never forms a class,
so it never beats a real answer; a function returns `None` only when no
candidate has an answer. NaN scores count as minus infinity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

Equiv = Callable[[str, str], bool]


def default_equiv() -> Equiv:
    """The executor's grader (`rstar_jax.execution.grading.is_equiv`).

    Imported lazily: selection is pure host code and its callers may inject
    a cheaper or stricter comparison.
    """
    from rstar_jax.execution.grading import is_equiv

    return is_equiv


@dataclass(frozen=True)
class AnswerClass:
    """Answers judged equivalent. `members` index the input, ascending."""

    answer: str
    members: Tuple[int, ...]


def group_answers(
    answers: Sequence[Optional[str]],
    equiv: Optional[Equiv] = None,
    order: Optional[Sequence[int]] = None,
) -> List[AnswerClass]:
    """Groups answers into equivalence classes, ordered by first member.

    Each distinct string is compared once against each existing class's
    first string (the grader may be slow: sympy), so the cost is
    O(distinct strings x classes) grader calls. An answer joins the first
    class it matches; classes are not merged transitively afterwards.

    Args:
      answers: `[n]` extracted answers; None entries are left out.
      equiv: symmetric equivalence test; default the executor's grader.
      order: visiting order of the indices (default 0..n-1); the first
        visited member names the class and classes come out in that order.
    """
    equiv = equiv or default_equiv()
    order = list(range(len(answers))) if order is None else list(order)
    reps: List[str] = []
    members: List[List[int]] = []
    class_of: Dict[str, int] = {}
    for i in order:
        a = answers[i]
        if a is None:
            continue
        c = class_of.get(a)
        if c is None:
            c = next((j for j, r in enumerate(reps) if _safe_equiv(equiv, a, r)), None)
            if c is None:
                reps.append(a)
                members.append([])
                c = len(reps) - 1
            class_of[a] = c
        members[c].append(i)
    return [AnswerClass(r, tuple(m)) for r, m in zip(reps, members)]


def _safe_equiv(equiv: Equiv, a: str, b: str) -> bool:
    """A grader failure on odd input means "not equivalent", not a crash."""
    if a == b:
        return True
    try:
        return bool(equiv(a, b))
    except Exception:  # noqa: BLE001 - hostile model output must not stop a run
        return False


def _score(x: float) -> float:
    x = float(x)
    return -math.inf if math.isnan(x) else x


def _check_scores(answers: Sequence, scores: Sequence[float]) -> None:
    if len(answers) != len(scores):
        raise ValueError(f"{len(answers)} answers but {len(scores)} scores")


def select_top_score(
    answers: Sequence[Optional[str]], scores: Sequence[float]
) -> Optional[str]:
    """The answer of the highest-scoring candidate that has an answer (the
    paper's protocol). Ties go to the earliest candidate. Needs no grader."""
    _check_scores(answers, scores)
    best, best_s = None, -math.inf
    for a, s in zip(answers, scores):
        if a is None:
            continue
        s = _score(s)
        if best is None or s > best_s:
            best, best_s = a, s
    return best


def majority_vote(
    answers: Sequence[Optional[str]], equiv: Optional[Equiv] = None
) -> Optional[str]:
    """The largest equivalence class; ties go to the class seen first."""
    classes = group_answers(answers, equiv)
    if not classes:
        return None
    # max() keeps the first maximum, i.e. the class seen first.
    return max(classes, key=lambda c: len(c.members)).answer


def weighted_vote(
    answers: Sequence[Optional[str]],
    scores: Sequence[float],
    equiv: Optional[Equiv] = None,
) -> Optional[str]:
    """The class with the largest sum of member scores.

    Ties go to the larger class, then to the class seen first. With negative
    scores (tanh PPM outputs) a single low-scoring answer can beat a large
    class of even lower ones; that is the point of weighting.
    """
    _check_scores(answers, scores)
    classes = group_answers(answers, equiv)
    if not classes:
        return None

    def key(c: AnswerClass):
        total = sum(_score(scores[i]) for i in c.members)
        return (total, len(c.members))

    return max(classes, key=key).answer


def rank_by_score(answers: Sequence[Optional[str]], scores: Sequence[float]) -> List[int]:
    """Indices of candidates with an answer, highest score first (stable)."""
    _check_scores(answers, scores)
    idx = [i for i, a in enumerate(answers) if a is not None]
    return sorted(idx, key=lambda i: -_score(scores[i]))


def top_k_majority(
    answers: Sequence[Optional[str]],
    scores: Sequence[float],
    k: int,
    equiv: Optional[Equiv] = None,
) -> Optional[str]:
    """Majority vote over the k highest-scoring answers (reference README).

    Pool the candidates of all independent runs before calling. Candidates
    without an answer are dropped before the top k are taken. Ties in the
    vote go to the class holding the highest-scoring member (earliest index
    among equal scores), which is the top-score answer when all counts are 1.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    top = rank_by_score(answers, scores)[:k]
    classes = group_answers(answers, equiv, order=top)
    if not classes:
        return None
    return max(classes, key=lambda c: len(c.members)).answer


SELECTORS = ("first", "top_score", "majority", "weighted", "top_k_majority")


def select(
    method: str,
    answers: Sequence[Optional[str]],
    scores: Optional[Sequence[float]] = None,
    *,
    k: int = 4,
    equiv: Optional[Equiv] = None,
) -> Optional[str]:
    """Dispatches on one of `SELECTORS` (config-driven callers use this).

    `first` is the first candidate's answer as is (None stays None): the
    greedy protocol, where only one solution exists.
    """
    if method == "first":
        return answers[0] if answers else None
    if method == "majority":
        return majority_vote(answers, equiv)
    if scores is None:
        raise ValueError(f"selection {method!r} needs scores")
    if method == "top_score":
        return select_top_score(answers, scores)
    if method == "weighted":
        return weighted_vote(answers, scores, equiv)
    if method == "top_k_majority":
        return top_k_majority(answers, scores, k, equiv)
    raise ValueError(f"unknown selection {method!r}; expected one of {SELECTORS}")
