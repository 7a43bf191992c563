"""Evaluation: metrics over saved samples, the resumable `evaluate` harness,
reports, ProcessBench for the PPM, and analysis helpers for the notebooks.

Public API (imported lazily so `rstar-jax --help` stays fast):
  evaluate(cfg, benchmarks, method, out_dir, *, run_method=None, ...)  harness
  ProblemResult, ResultStore                                            results
  metrics.aggregate(samples, k=None, grade=None, equiv=None)  (submodule `aggregate` is the CLI)
  pass_at_k(n, c, k), bootstrap_ci(values, samples, seed)               metrics
  evaluate_processbench(data, scorer, *, tune_subset, threshold)        processbench
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "evaluate": "harness",
    "MethodRunner": "harness",
    "ProblemResult": "results",
    "ResultStore": "results",
    "Samples": "metrics",
    "pass_at_k": "metrics",
    "bootstrap_ci": "metrics",
    "evaluate_processbench": "processbench",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
