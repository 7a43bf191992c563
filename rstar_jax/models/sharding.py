"""Logical axes -> mesh axes, and the activation constraint used by layers.

Layers name logical axes only; a rule table from the config
(`mesh.training_rules` / `mesh.inference_rules`) maps each logical name to
zero or more mesh axes. A mesh axis is dropped from a dimension it does not
divide (Qwen2.5-1.5B has 2 KV heads: a tensor axis of 4 leaves them
replicated) and never used twice in one spec.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Mapping[str, Sequence[str]]

log = logging.getLogger(__name__)

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


def _is_variable(x) -> bool:
    from flax import nnx

    return isinstance(x, nnx.Variable)


def _as_state(model_or_state):
    """`nnx.State` of a module (abstract or real), or the state itself."""
    from flax import nnx

    if isinstance(model_or_state, nnx.Module):
        return nnx.state(model_or_state)
    return model_or_state


def param_spec(var, mesh: Mesh, rules: Rules) -> PartitionSpec:
    """The PartitionSpec of one nnx Variable from its `logical_axes` metadata.

    A Variable without `logical_axes` (none exist in our models) is replicated.
    """
    axes = var.get_metadata().get("logical_axes")
    shape = var.value.shape if hasattr(var, "value") else var.shape
    if axes is None:
        return PartitionSpec()
    if len(axes) != len(shape):
        raise ValueError(f"logical_axes {axes} do not match the shape {shape}")
    return logical_to_spec(axes, shape, mesh, rules)


def param_shardings(abstract_model_or_state, mesh: Mesh, rules: Rules):
    """A `NamedSharding` per Variable, in the structure of `nnx.state(model)`.

    Usable as `out_shardings` of a jitted init (a prefix of the state tree:
    each Variable node gets one sharding) and as the sharding of an abstract
    restore target.
    """
    state = _as_state(abstract_model_or_state)
    return jax.tree.map(
        lambda v: NamedSharding(mesh, param_spec(v, mesh, rules)), state, is_leaf=_is_variable)


def replication_report(abstract_model_or_state, mesh: Mesh, rules: Rules, mesh_cfg=None) -> Dict:
    """How much of the parameters stays whole on every device.

    Returns `{"total_bytes", "replicated_bytes", "replicated_fraction",
    "per_device_bytes", "per_device_fraction", "devices"}`; a parameter is
    replicated when its spec shards no dimension. Raises ValueError when
    `mesh_cfg.refuse_replicated` and the replicated fraction exceeds
    `mesh_cfg.max_replicated_fraction` on a mesh of more than one device
    (a rule table that shards nothing would otherwise only show up as an
    out-of-memory error much later).
    """
    import numpy as np

    state = _as_state(abstract_model_or_state)
    total = replicated = per_device = 0
    for var in jax.tree.leaves(state, is_leaf=_is_variable):
        value = var.value if hasattr(var, "value") else var
        nbytes = int(np.prod(value.shape)) * np.dtype(value.dtype).itemsize
        spec = param_spec(var, mesh, rules)
        shards = 1
        for entry in spec:
            for axis in (entry if isinstance(entry, tuple) else (entry,)):
                shards *= mesh.shape[axis] if axis else 1
        total += nbytes
        per_device += nbytes // shards
        replicated += nbytes if shards == 1 else 0
    report = {
        "total_bytes": total,
        "replicated_bytes": replicated,
        "replicated_fraction": replicated / total if total else 0.0,
        "per_device_bytes": per_device,
        "per_device_fraction": per_device / total if total else 0.0,
        "devices": mesh.size,
    }
    if mesh_cfg is not None and mesh.size > 1:
        limit = mesh_cfg.max_replicated_fraction
        if report["replicated_fraction"] > limit:
            msg = (f"{report['replicated_fraction']:.0%} of the parameter bytes are replicated on "
                   f"every one of {mesh.size} devices (limit {limit:.0%}); check the mesh "
                   "rule table")
            if mesh_cfg.refuse_replicated:
                raise ValueError(msg)
            log.warning(msg)
    return report
