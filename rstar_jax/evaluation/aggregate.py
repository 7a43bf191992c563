"""`rstar-jax aggregate`: re-score saved samples without rerunning a model.

Input: JSON Lines, one problem per line,
`{"gold": "..." | [...], "preds": ["..." | null, ...], "scores": [float, ...]}`
(answers already extracted; `scores` optional, one per pred). Output: one
JSON object with `n` (usable lines), `skipped` (malformed lines), `k`,
`n_scored` (lines with scores) and the accuracy in percent of `first`,
`maj@k`, `best@k`, `weighted@k` and unbiased `pass@k` (see `metrics`).
`best@k` / `weighted@k` average over the scored lines only and are null when
no line has scores.

A malformed line (bad JSON, missing or mistyped field, scores of the wrong
length) is reported on stderr as `line N: reason` and not counted.
"""

from __future__ import annotations

import json
import math
from typing import IO, Iterable, List, Optional, Tuple

from rstar_jax.evaluation import metrics


def _as_answer(x, what: str) -> Optional[str]:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (str, int, float)):
        raise ValueError(f"{what} must be a string, a number or null, not {type(x).__name__}")
    return str(x)


def parse_samples(line: str) -> metrics.Samples:
    """One input line -> Samples; raises ValueError with a reason."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg})") from None
    if not isinstance(rec, dict):
        raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
    if "gold" not in rec:
        raise ValueError("missing 'gold'")
    gold = rec["gold"]
    if isinstance(gold, list):
        if not gold:
            raise ValueError("'gold' list is empty")
        gold = tuple(_as_answer(g, "'gold' element") for g in gold)
        if any(g is None for g in gold):
            raise ValueError("'gold' list holds null")
    else:
        gold = _as_answer(gold, "'gold'")
        if gold is None:
            raise ValueError("'gold' is null")
    preds = rec.get("preds")
    if not isinstance(preds, list) or not preds:
        raise ValueError("'preds' must be a non-empty list")
    preds_t = tuple(_as_answer(p, "each pred") for p in preds)
    scores = rec.get("scores")
    if scores is not None:
        if not isinstance(scores, list):
            raise ValueError("'scores' must be a list of numbers")
        if any(isinstance(s, bool) or not isinstance(s, (int, float)) for s in scores):
            raise ValueError("'scores' must hold numbers only")
        if len(scores) != len(preds_t):
            raise ValueError(f"{len(preds_t)} preds but {len(scores)} scores")
        if any(math.isinf(float(s)) for s in scores):
            raise ValueError("'scores' must be finite")
        scores = tuple(float(s) for s in scores)
    return metrics.Samples(gold, preds_t, scores)


def read_samples(lines: Iterable[str], errors: List[str]) -> List[metrics.Samples]:
    """Parses every non-blank line; reasons for bad ones go to `errors`."""
    out = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(parse_samples(line))
        except ValueError as e:
            errors.append(f"line {lineno}: {e}")
    return out


def aggregate_lines(
    lines: Iterable[str],
    k: Optional[int] = None,
    grade: Optional[metrics.Grade] = None,
    equiv: Optional[metrics.Equiv] = None,
) -> Tuple[dict, List[str]]:
    """The whole command as a function: (result object, per-line errors)."""
    errors: List[str] = []
    samples = read_samples(lines, errors)
    result = metrics.aggregate(samples, k, grade, equiv)
    result = {"n": result.pop("n"), "skipped": len(errors), **result}
    return result, errors


def run(stdin: IO[str], stdout: IO[str], stderr: IO[str], k: Optional[int] = None,
        grade=None, equiv=None) -> int:
    """Reads stdin, prints one JSON object; 2 when no line is usable."""
    if k is not None and k < 1:
        print(f"rstar-jax aggregate: --k must be >= 1, got {k}", file=stderr)
        return 2
    result, errors = aggregate_lines(stdin, k, grade, equiv)
    for e in errors:
        print(f"rstar-jax aggregate: {e}", file=stderr)
    if result["n"] == 0:
        print("rstar-jax aggregate: no usable input line", file=stderr)
        return 2
    print(json.dumps(result), file=stdout)
    return 0
