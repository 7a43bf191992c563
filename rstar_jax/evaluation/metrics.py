"""Accuracy metrics over saved samples: first, maj@k, best@k, weighted@k,
unbiased pass@k, bootstrap intervals (of one method's accuracy and of the
paired difference of two on the same problems), accuracy vs trajectories and
per-level / per-subject breakdowns.

Everything here works on extracted answers and optional solution scores,
never on a model, so `rstar-jax aggregate` and `rstar-jax evaluate` share
the same numbers. Fractions are in [0, 1]; `summarize` turns them into the
percentages that reports print.

The grader is injected (`grade(pred, gold) -> bool`, `equiv(a, b) -> bool`);
the defaults are the executor's (`rstar_jax.execution.grading`). A gold
answer may be a list: any element counts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from rstar_jax.search import selection

Gold = Union[str, Sequence[str]]
Grade = Callable[[str, Gold], bool]
Equiv = selection.Equiv

# Names of the per-problem metrics, in report order.
METRICS = ("first", "maj@k", "best@k", "weighted@k", "pass@k")


def default_grade() -> Grade:
    from rstar_jax.execution.grading import grade

    return grade


@dataclass(frozen=True)
class Samples:
    """One problem's candidates: `preds[i]` is the answer extracted from
    trajectory i (None: none found), `scores[i]` its solution score."""

    gold: Gold
    preds: Tuple[Optional[str], ...]
    scores: Optional[Tuple[float, ...]] = None

    def __post_init__(self):
        if self.scores is not None and len(self.scores) != len(self.preds):
            raise ValueError(f"{len(self.preds)} preds but {len(self.scores)} scores")


class CachedGrader:
    """Grades each distinct prediction of a problem once (sympy is slow and a
    majority vote asks about the same strings again and again)."""

    def __init__(self, grade: Optional[Grade] = None):
        self._grade = grade  # None: the executor's grader, resolved on first use
        self._cache: Dict[Tuple[str, str], bool] = {}

    def __call__(self, pred: Optional[str], gold: Gold) -> bool:
        if pred is None:
            return False
        gold_arg = list(gold) if isinstance(gold, (list, tuple)) else gold
        key = (pred, json.dumps(gold_arg))
        hit = self._cache.get(key)
        if hit is None:
            if self._grade is None:
                self._grade = default_grade()
            try:
                hit = bool(self._grade(pred, gold_arg))
            except Exception:  # noqa: BLE001 - odd model output is just wrong
                hit = False
            self._cache[key] = hit
        return hit


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k).

    Computed as a product, 1 - prod_{i=n-c+1}^{n} (1 - k / i), which stays
    exact-ish for large n where the binomials overflow floats.
    """
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def effective_k(k: Optional[int], n: int) -> int:
    """`k` capped at the number of samples; None means all of them."""
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return n if k is None else min(k, n)


def problem_metrics(
    s: Samples,
    k: Optional[int] = None,
    grade: Optional[Grade] = None,
    equiv: Optional[Equiv] = None,
) -> Dict[str, Optional[float]]:
    """Per-problem scores in [0, 1] for every name in `METRICS`.

    `maj@k`, `best@k` and `weighted@k` choose among the first k samples;
    `pass@k` uses all n samples with the unbiased estimator. `best@k` and
    `weighted@k` are None when the problem has no scores. A problem with no
    sample scores 0 everywhere.
    """
    grade = grade if isinstance(grade, CachedGrader) else CachedGrader(grade)
    n = len(s.preds)
    if n == 0:
        return {m: (None if m in ("best@k", "weighted@k") and s.scores is None else 0.0)
                for m in METRICS}
    kk = effective_k(k, n)
    preds = list(s.preds[:kk])
    out: Dict[str, Optional[float]] = {
        "first": float(grade(s.preds[0], s.gold)),
        "maj@k": float(grade(selection.majority_vote(preds, equiv), s.gold)),
        "best@k": None,
        "weighted@k": None,
    }
    if s.scores is not None:
        sc = list(s.scores[:kk])
        out["best@k"] = float(grade(selection.select_top_score(preds, sc), s.gold))
        out["weighted@k"] = float(grade(selection.weighted_vote(preds, sc, equiv), s.gold))
    c = sum(grade(p, s.gold) for p in s.preds)
    out["pass@k"] = pass_at_k(n, c, kk)
    return out


def bootstrap_ci(
    values: Sequence[float], samples: int = 1000, seed: int = 0, level: float = 0.95
) -> Tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-problem values.

    Seeded, so a report is reproducible. `values` are 0/1 correctness (or
    pass@k probabilities), shape `[num_problems]`.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(samples, v.size))
    means = v[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def paired_difference(
    a: Sequence[float], b: Sequence[float], samples: int = 1000, seed: int = 0,
    level: float = 0.95,
) -> Dict[str, object]:
    """Mean of `a - b` over the same problems, with a paired bootstrap interval.

    `a[i]` and `b[i]` are two methods' correctness on problem i (shape
    `[num_problems]`). Resampling problems (not each method on its own)
    keeps what the two share: on 80 problems where both are right on the
    same 30, their accuracies' separate intervals overlap widely while the
    paired one can still exclude zero. `samples == 0` gives no interval.

    Returns:
      {"n": problems, "diff": mean difference, "ci": [lo, hi] or None,
       "excludes_zero": whether the interval lies strictly on one side of 0
       (None without an interval)}; fractions, not percent.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired values need the same problems: shapes {x.shape} and {y.shape}")
    d = x - y
    out: Dict[str, object] = {"n": int(d.size), "diff": float(d.mean()) if d.size else None,
                              "ci": None, "excludes_zero": None}
    if d.size and samples:
        lo, hi = bootstrap_ci(d, samples, seed, level)
        out["ci"] = [lo, hi]
        out["excludes_zero"] = bool(lo > 0.0 or hi < 0.0)
    return out


def mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def summarize(
    per_problem: Sequence[Dict[str, Optional[float]]],
    *,
    bootstrap_samples: int = 0,
    seed: int = 0,
) -> Dict[str, object]:
    """Mean of each metric over problems, in percent (None when no problem
    has that metric), plus `<metric>_ci` [lo, hi] percent when
    `bootstrap_samples` > 0."""
    out: Dict[str, object] = {}
    for m in METRICS:
        vals = [p[m] for p in per_problem if p.get(m) is not None]
        out[m] = round(100.0 * mean(vals), 4) if vals else None
        if bootstrap_samples and vals:
            lo, hi = bootstrap_ci(vals, bootstrap_samples, seed)
            out[f"{m}_ci"] = [round(100.0 * lo, 4), round(100.0 * hi, 4)]
    return out


def aggregate(
    samples: Sequence[Samples],
    k: Optional[int] = None,
    grade: Optional[Grade] = None,
    equiv: Optional[Equiv] = None,
    bootstrap_samples: int = 0,
    seed: int = 0,
) -> Dict[str, object]:
    """`summarize` over `problem_metrics` of every problem, with counts."""
    cg = CachedGrader(grade)
    per = [problem_metrics(s, k, cg, equiv) for s in samples]
    out: Dict[str, object] = {"n": len(samples),
                              "n_scored": sum(s.scores is not None for s in samples),
                              "k": k}
    out.update(summarize(per, bootstrap_samples=bootstrap_samples, seed=seed))
    return out


def trajectory_counts(max_n: int) -> List[int]:
    """1, 2, 4, ... up to max_n (max_n itself included): Figure 3's x axis."""
    ns, n = [], 1
    while n < max_n:
        ns.append(n)
        n *= 2
    if max_n >= 1:
        ns.append(max_n)
    return ns


def accuracy_vs_trajectories(
    samples: Sequence[Samples],
    ns: Optional[Sequence[int]] = None,
    grade: Optional[Grade] = None,
    equiv: Optional[Equiv] = None,
) -> List[Dict[str, object]]:
    """Accuracy (percent) of each metric when only the first n trajectories
    of every problem exist, for each n in `ns` (the paper's Figure 3).

    pass@n here is computed on the first n samples (not estimated from all
    of them) so each point is what a run with budget n would have scored.
    """
    if not samples:
        return []
    max_n = max(len(s.preds) for s in samples)
    ns = list(ns) if ns is not None else trajectory_counts(max_n)
    cg = CachedGrader(grade)
    curve = []
    for n in ns:
        cut = [Samples(s.gold, s.preds[:n], None if s.scores is None else s.scores[:n])
               for s in samples]
        row: Dict[str, object] = {"n": n}
        row.update(summarize([problem_metrics(c, n, cg, equiv) for c in cut]))
        curve.append(row)
    return curve


def load_levels(path: str) -> Dict[str, Dict[str, object]]:
    """MATH500 `math500_levels.jsonl` -> {key: {"level", "subject"}}, keyed by
    both the stripped problem text and the `unique_id`."""
    table: Dict[str, Dict[str, object]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            info = {"level": rec.get("level"), "subject": rec.get("subject")}
            table[rec["problem"].strip()] = info
            if "unique_id" in rec:
                table[str(rec["unique_id"])] = info
    return table


def breakdown(
    keys: Sequence[Sequence[str]],
    correct: Sequence[float],
    levels: Dict[str, Dict[str, object]],
) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Accuracy (percent) and count per level and per subject.

    Args:
      keys: per problem, candidate join keys tried in order (e.g. its
        question text, its unique id); unmatched problems are counted under
        "unknown".
      correct: per-problem correctness in [0, 1], `[num_problems]`.
      levels: a `load_levels` table.
    """
    groups: Dict[str, Dict[str, List[float]]] = {"level": {}, "subject": {}}
    for ks, c in zip(keys, correct):
        info = next((levels[k.strip()] for k in ks if k and k.strip() in levels), None)
        for field in ("level", "subject"):
            name = "unknown" if info is None or info.get(field) is None else str(info[field])
            groups[field].setdefault(name, []).append(float(c))
    return {
        field: {name: {"n": len(v), "accuracy": round(100.0 * mean(v), 4)}
                for name, v in sorted(g.items())}
        for field, g in groups.items()
    }
