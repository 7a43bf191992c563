"""The real evaluation methods behind `harness.MethodRunner`.

`run_method(method, problems, cfg)` builds (once per process) the policy
engine, the sandboxed executor and, where the method needs one, the PPM
scorer, then runs the search package's entry point for the method and turns
its trees into ProblemResults (every final-answer trajectory a candidate,
its PPM score the candidate's score).

This is the one seam between evaluation and search/inference: the harness,
metrics and reports never import a model.
"""

from __future__ import annotations

from typing import List, Sequence

from rstar_jax.data.problems import Problem
from rstar_jax.evaluation.results import ProblemResult


class MethodUnavailable(RuntimeError):
    """The method's model-side pieces are not available in this build."""


def run_method(method: str, problems: Sequence[Problem], cfg) -> List[ProblemResult]:
    """Runs `method` on `problems` with the configured models."""
    raise MethodUnavailable(
        f"method {method!r} needs the search package's entry points and the inference "
        "engine, which this build does not wire yet")
