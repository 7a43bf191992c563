"""Shared builders for the search tests."""

import dataclasses

from rstar_jax.config.schema import Config
from rstar_jax.data.problems import Problem


def make_cfg(seed: int = 0, **mcts) -> Config:
    cfg = Config(seed=seed)
    base = dict(rollouts=4, candidates=2, errors_threshold=2, trees_in_flight=1)
    base.update(mcts)
    return dataclasses.replace(cfg, mcts=dataclasses.replace(cfg.mcts, **base),
                               logging=dataclasses.replace(cfg.logging, progress=False))


def add_problems(count: int, start: int = 0):
    """'What is a + b?' with a = 3 + i, b = 4; gold a + b."""
    out = []
    for i in range(start, start + count):
        a, b = 3 + i, 4
        out.append(Problem(id=f"p{i}", question=f"What is {a} + {b}?", answer=str(a + b)))
    return out


def summary(tree):
    """(tag, N, W, terminal_reason) per node, for hand-written expectations."""
    return [(n.tag, n.N, n.W, n.terminal_reason) for n in tree.nodes]
