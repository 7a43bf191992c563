"""MCTS over code-augmented reasoning steps (spec section 4), the paper's
baseline searches, tree files and answer selection.

Public API (imported lazily, so `import rstar_jax.search` pulls in neither
JAX nor the engine):

  * `search_to_dir(cfg, problems, out_dir, engine, executor, scorer=None,
    hooks=None, *, process_index=None, process_count=None) -> dict`: what
    `rstar-jax search` runs; resumable, one tree file per JAX process.
  * `run_mcts(cfg, problems, engine, executor, scorer=None, hooks=None)
    -> list[ProblemResult]` and `MCTSDriver` for callers that keep the trees
    in memory; `run_baseline(...)` for greedy / best_of_n / beam.
  * `choose_answer(trees, method, k, equiv)`: the final answer of an
    inference search (`mcts.answer_selection`), built on `selection`.
  * `Tree`, `Node` (tree.py), `load_records`, `merge_tree_files`,
    `TreeWriter` (treefile.py), `Hooks`, `default_hooks` (expansion.py).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "search_to_dir": "rstar_jax.search.run",
    "choose_answer": "rstar_jax.search.run",
    "result_record": "rstar_jax.search.run",
    "MCTSDriver": "rstar_jax.search.driver",
    "ProblemResult": "rstar_jax.search.driver",
    "run_mcts": "rstar_jax.search.driver",
    "run_baseline": "rstar_jax.search.baselines",
    "Tree": "rstar_jax.search.tree",
    "Node": "rstar_jax.search.tree",
    "Hooks": "rstar_jax.search.expansion",
    "default_hooks": "rstar_jax.search.expansion",
    "load_records": "rstar_jax.search.treefile",
    "merge_tree_files": "rstar_jax.search.treefile",
    "TreeWriter": "rstar_jax.search.treefile",
    "select": "rstar_jax.search.selection",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rstar_jax.search' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
