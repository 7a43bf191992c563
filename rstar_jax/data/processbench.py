"""ProcessBench (Qwen): step-by-step solutions labelled with their first
wrong step, for judging a process reward model on data it never saw.

Files: one JSON list per subset (`gsm8k.json` 400, `math.json` 1000,
`olympiadbench.json` 1000, `omnimath.json` 1000) of
`{"id", "generator", "problem", "steps": [str], "final_answer_correct", "label"}`,
where `label` is the index of the earliest wrong step, or -1 when all are right.

The PPM scores texts in the policy's format, so a ProcessBench prefix is
rendered as the policy prompt followed by each step in turn, every step
closed by `<end_of_step>` exactly like a search node's text. The steps are
prose, not our code-commented steps: the PPM is judged out of distribution,
which is the point of the benchmark.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from rstar_jax.data.prompts import END_OF_STEP, policy_prompt

SUBSETS: Dict[str, int] = {"gsm8k": 400, "math": 1000, "olympiadbench": 1000, "omnimath": 1000}


@dataclass(frozen=True)
class ProcessBenchSample:
    """One labelled solution; `label` = first wrong step, -1 if none."""

    id: str
    subset: str
    problem: str
    steps: Tuple[str, ...]
    label: int
    final_answer_correct: Optional[bool] = None


class ProcessBenchError(ValueError):
    """A ProcessBench file or directory is missing or malformed."""


def _sample(rec, subset: str, i: int) -> ProcessBenchSample:
    if not isinstance(rec, dict):
        raise ValueError("expected a JSON object")
    steps = rec.get("steps")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        raise ValueError("'steps' must be a non-empty list of strings")
    label = rec.get("label")
    if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
        raise ValueError(f"'label' must be -1 or a step index < {len(steps)}, got {label!r}")
    problem = rec.get("problem")
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError("no 'problem' text")
    return ProcessBenchSample(id=str(rec.get("id", f"{subset}-{i}")), subset=subset,
                              problem=problem, steps=tuple(steps), label=label,
                              final_answer_correct=rec.get("final_answer_correct"))


def load_subset(path: str, subset: Optional[str] = None,
                limit: Optional[int] = None) -> List[ProcessBenchSample]:
    """Reads one subset file; a malformed row is an error (the set is curated).
    `limit` keeps a class-balanced head (see `balanced_head`)."""
    subset = subset or os.path.splitext(os.path.basename(path))[0]
    try:
        with open(path, encoding="utf-8") as f:
            records = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ProcessBenchError(f"cannot read {path}: {e}") from None
    if not isinstance(records, list):
        raise ProcessBenchError(f"{path}: expected a JSON list")
    out = []
    for i, rec in enumerate(records):
        try:
            out.append(_sample(rec, subset, i))
        except ValueError as e:
            raise ProcessBenchError(f"{path}: row {i}: {e}") from None
    return out if limit is None else balanced_head(out, limit)


def balanced_head(samples: Sequence[ProcessBenchSample], n: int) -> List[ProcessBenchSample]:
    """The first ceil(n/2) erroneous and first floor(n/2) correct samples
    (topped up from the other group when one runs short), in file order.

    The official files list erroneous solutions first, so a plain head would
    hold no correct sample and F1 would be undefined.
    """
    err = [i for i, s in enumerate(samples) if s.label != -1]
    cor = [i for i, s in enumerate(samples) if s.label == -1]
    n_err = min(len(err), (n + 1) // 2)
    n_cor = min(len(cor), n - n_err)
    n_err = min(len(err), n - n_cor)
    keep = sorted(err[:n_err] + cor[:n_cor])
    return [samples[i] for i in keep]


def load_processbench(directory: str, subsets: Optional[Sequence[str]] = None,
                      limit: Optional[int] = None) -> Dict[str, List[ProcessBenchSample]]:
    """{subset: samples} for the named subsets (default: all four) of a
    directory holding `<subset>.json`; `limit` caps each subset."""
    names = list(subsets) if subsets else list(SUBSETS)
    out = {}
    for name in names:
        path = os.path.join(directory, f"{name}.json")
        if not os.path.isfile(path):
            raise ProcessBenchError(f"no {name}.json in {directory}")
        out[name] = load_subset(path, name, limit)
    return out


def render_partial(steps: Sequence[str]) -> str:
    """Steps so far as a partial solution: each `\\n{step}\\n<end_of_step>`."""
    return "".join(f"\n{s.strip()}\n{END_OF_STEP}" for s in steps)


def prefix_texts(sample: ProcessBenchSample, sep: str = "\n\n") -> List[str]:
    """`[num_steps]` texts to score: prompt + steps[:i+1] for each i."""
    return [policy_prompt(sample.problem, render_partial(sample.steps[: i + 1]), sep=sep)
            for i in range(len(sample.steps))]
