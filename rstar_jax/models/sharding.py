"""Logical axes -> mesh axes, and the activation constraint used by layers.

Layers name logical axes only; a rule table from the config
(`mesh.training_rules` / `mesh.inference_rules`) maps each logical name to
zero or more mesh axes. A mesh axis is dropped from a dimension it does not
divide (Qwen2.5-1.5B has 2 KV heads: a tensor axis of 4 leaves them
replicated) and never used twice in one spec.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Mapping[str, Sequence[str]]

_context = threading.local()


def logical_to_spec(
    axes: Sequence[Optional[str]], shape: Sequence[int], mesh: Mesh, rules: Rules
) -> PartitionSpec:
    """The PartitionSpec for an array of `shape` whose dims are named `axes`."""
    used: set = set()
    spec: List = []
    for name, dim in zip(axes, shape):
        chosen: List[str] = []
        size = 1
        for mesh_axis in (rules.get(name, ()) if name else ()):
            n = mesh.shape.get(mesh_axis, 1)
            if mesh_axis in used or n == 1:
                continue
            if dim % (size * n):
                continue  # does not divide: leave this axis out
            chosen.append(mesh_axis)
            size *= n
        used.update(chosen)
        spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
    while spec and spec[-1] is None:
        spec.pop()
    return PartitionSpec(*spec)


@contextlib.contextmanager
def sharding_context(mesh: Mesh, rules: Rules):
    """Within it (at trace time), `constrain` shards activations by `rules`."""
    prev = getattr(_context, "value", None)
    _context.value = (mesh, dict(rules))
    try:
        yield
    finally:
        _context.value = prev


def current_context() -> Optional[Tuple[Mesh, Dict]]:
    return getattr(_context, "value", None)


def constrain(x: jax.Array, axes: Sequence[Optional[str]]) -> jax.Array:
    """`with_sharding_constraint` by logical names; identity without a context
    or on a single device."""
    ctx = current_context()
    if ctx is None:
        return x
    mesh, rules = ctx
    if mesh.size == 1:
        return x
    spec = logical_to_spec(axes, x.shape, mesh, rules)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
