"""The PPM on ProcessBench: first-error prediction by threshold, F1 per subset.

A process reward model predicts the first step whose score falls below a
threshold t (`score < t`), or -1 when none does. On erroneous samples the
prediction must equal the label; on correct ones it must be -1. F1 is the
harmonic mean of those two accuracies. t is chosen to maximise F1 on one
subset (`tune_subset`) and reported on every subset, with the mean over the
others (the held-out figure).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np

from rstar_jax.data.processbench import ProcessBenchSample, prefix_texts


def score_samples(
    samples: Sequence[ProcessBenchSample],
    scorer,
    *,
    batch_size: int = 64,
    sep: str = "\n\n",
) -> List[np.ndarray]:
    """Per sample, `[num_steps]` float scores of each prefix, batched.

    Args:
      scorer: a `StepScorer` (`score(texts) -> float32 [len(texts)]`).
    """
    texts: List[str] = []
    bounds = []
    for s in samples:
        t = prefix_texts(s, sep)
        bounds.append((len(texts), len(texts) + len(t)))
        texts.extend(t)
    flat = np.zeros(len(texts), dtype=np.float32)
    for i in range(0, len(texts), batch_size):
        out = np.asarray(scorer.score(texts[i: i + batch_size]), dtype=np.float32)
        if out.shape != (min(batch_size, len(texts) - i),):
            raise ValueError(f"scorer returned shape {out.shape} for "
                             f"{min(batch_size, len(texts) - i)} texts")
        flat[i: i + len(out)] = out
    return [flat[a:b] for a, b in bounds]


def predict_first_error(step_scores: Sequence[float], threshold: float) -> int:
    """Index of the first step scoring below `threshold`, or -1."""
    below = np.flatnonzero(np.asarray(step_scores, dtype=np.float64) < threshold)
    return int(below[0]) if below.size else -1


def f1_from_predictions(labels: Sequence[int], preds: Sequence[int]) -> Dict[str, float]:
    """Accuracy (percent) on erroneous and on correct samples and their
    harmonic mean. An empty group has accuracy NaN and F1 is NaN then."""
    labels_a = np.asarray(labels)
    preds_a = np.asarray(preds)
    err = labels_a != -1
    err_acc = float(np.mean(preds_a[err] == labels_a[err])) * 100 if err.any() else math.nan
    cor_acc = float(np.mean(preds_a[~err] == -1)) * 100 if (~err).any() else math.nan
    if math.isnan(err_acc) or math.isnan(cor_acc):
        f1 = math.nan
    elif err_acc + cor_acc == 0:
        f1 = 0.0
    else:
        f1 = 2 * err_acc * cor_acc / (err_acc + cor_acc)
    return {"error_acc": err_acc, "correct_acc": cor_acc, "f1": f1,
            "n_error": int(err.sum()), "n_correct": int((~err).sum())}


def _correct_interval(scores: np.ndarray, label: int):
    """The thresholds t (lo < t <= hi) for which the prediction is right."""
    if label == -1:
        return -math.inf, float(scores.min())
    hi = float(scores[:label].min()) if label > 0 else math.inf
    return float(scores[label]), hi


def choose_threshold(step_scores: Sequence[np.ndarray], labels: Sequence[int]) -> float:
    """The threshold that maximises F1 on these samples.

    Each sample is predicted right exactly for t in an interval (lo, hi]
    (correct sample: t <= its minimum; erroneous: every earlier step >= t and
    the labelled step < t), so F1 changes only at interval ends and a best t
    sits at some finite right end. Ties go to the smallest threshold.
    """
    lo_hi = [_correct_interval(np.asarray(s, dtype=np.float64), int(lab))
             for s, lab in zip(step_scores, labels)]
    is_err = np.array([lab != -1 for lab in labels])
    lo = np.array([a for a, _ in lo_hi])
    hi = np.array([b for _, b in lo_hi])
    cands = np.unique(hi[np.isfinite(hi)])
    if cands.size == 0:
        return 0.0
    best_t, best_f1 = float(cands[0]), -1.0
    for t in cands:
        inside = (lo < t) & (t <= hi)
        ea = inside[is_err].mean() if is_err.any() else 0.0
        ca = inside[~is_err].mean() if (~is_err).any() else 0.0
        f1 = 0.0 if ea + ca == 0 else 2 * ea * ca / (ea + ca)
        if f1 > best_f1 + 1e-12:
            best_t, best_f1 = float(t), f1
    return best_t


def evaluate_scores(
    scores: Dict[str, List[np.ndarray]],
    labels: Dict[str, List[int]],
    *,
    tune_subset: Optional[str] = None,
    threshold: Optional[float] = None,
) -> Dict[str, object]:
    """F1 per subset at one threshold, chosen on `tune_subset` unless given.

    Returns `{"threshold", "tuned_on", "subsets": {name: f1 dict},
    "heldout_mean_f1"}`; the held-out mean leaves the tuning subset out.
    """
    if threshold is None:
        if tune_subset not in scores:
            raise ValueError(f"tune subset {tune_subset!r} not among {sorted(scores)}")
        threshold = choose_threshold(scores[tune_subset], labels[tune_subset])
    per = {}
    for name in scores:
        preds = [predict_first_error(s, threshold) for s in scores[name]]
        per[name] = f1_from_predictions(labels[name], preds)
    held = [v["f1"] for k, v in per.items() if k != tune_subset and not math.isnan(v["f1"])]
    return {"threshold": threshold, "tuned_on": tune_subset, "subsets": per,
            "heldout_mean_f1": float(np.mean(held)) if held else None}


def json_ready(obj):
    """NaN (an empty group) -> None, so the result is strict JSON."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def evaluate_processbench(
    data: Dict[str, List[ProcessBenchSample]],
    scorer,
    *,
    tune_subset: Optional[str] = "gsm8k",
    threshold: Optional[float] = None,
    batch_size: int = 64,
    sep: str = "\n\n",
) -> Dict[str, object]:
    """Scores every prefix of every sample with `scorer`, then `evaluate_scores`."""
    scores = {k: score_samples(v, scorer, batch_size=batch_size, sep=sep)
              for k, v in data.items()}
    labels = {k: [s.label for s in v] for k, v in data.items()}
    return json_ready(evaluate_scores(scores, labels, tune_subset=tune_subset,
                                      threshold=threshold))
