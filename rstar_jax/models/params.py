"""Models as flat parameters on a mesh: abstract shapes, fresh init, placement.

Nothing here materialises a whole model on one device and shards it
afterwards: the abstract model (`nnx.eval_shape`) gives the shapes and the
logical axes, `param_shardings` turns those into shardings, and values are
either created by a jitted init with those `out_shardings` or placed tensor
by tensor with `jax.device_put(host_array, sharding)` (each device receives
only its shard). The bottom of the models package: checkpoints, vocabulary
changes and loading from a config all build on it.
"""

from __future__ import annotations

import logging
from typing import Dict, Iterable, Mapping, Optional, Tuple, Type

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from rstar_jax.models.decoder import PPM, ArchConfig, Policy
from rstar_jax.models.sharding import Rules, param_shardings

log = logging.getLogger(__name__)

MODEL_CLASSES = {"policy": Policy, "ppm": PPM}


def path_key(path: Iterable) -> str:
    """`('model', 'layers', 0, 'attn', 'q')` -> `'model/layers/0/attn/q'`."""
    return "/".join(str(p) for p in path)


def model_kind(model: nnx.Module) -> str:
    return "ppm" if isinstance(model, PPM) else "policy"


def abstract_model(cls: Type[nnx.Module], arch: ArchConfig, *, seed: int = 0) -> nnx.Module:
    """The model with `ShapeDtypeStruct` values: shapes and metadata, no memory."""
    return nnx.eval_shape(lambda: cls(arch, rngs=nnx.Rngs(seed)))


def flat_params(model_or_state) -> Dict[str, jax.Array]:
    """Path string -> array (or ShapeDtypeStruct) for every Variable."""
    state = nnx.state(model_or_state) if isinstance(model_or_state, nnx.Module) else model_or_state
    return {path_key(p): v.get_value() for p, v in state.flat_state()}


def assemble(abstract: nnx.Module, values: Mapping[str, jax.Array]) -> nnx.Module:
    """A live model with the structure of `abstract` and the given values."""
    graphdef, state = nnx.split(abstract)
    missing = [path_key(p) for p, _ in state.flat_state() if path_key(p) not in values]
    if missing:
        raise KeyError(f"no values for {missing[:5]}{'...' if len(missing) > 5 else ''}")
    new = {p: v.replace(value=values[path_key(p)]) for p, v in state.flat_state()}
    return nnx.merge(graphdef, nnx.State.from_flat_path(new))


def _shardings(abstract: nnx.Module, mesh: Optional[Mesh], rules: Optional[Rules]):
    if mesh is None:
        return None
    return {path_key(p): s for p, s in param_shardings(abstract, mesh, rules or {}).flat_state()}


def init_model(cls: Type[nnx.Module], arch: ArchConfig, *, mesh: Optional[Mesh] = None,
               rules: Optional[Rules] = None, seed: int = 0) -> nnx.Module:
    """A freshly initialised model, each parameter created already sharded.

    The same numbers as `cls(arch, rngs=nnx.Rngs(seed))`. Built eagerly:
    each weight is drawn by a small jitted initializer straight into its
    sharding (`layers.init_placement`), compiled once per distinct shape, so
    a 1.5B model starts in seconds; a jitted whole-model initializer spent
    110 s compiling on an H200 (issue 17). The few constant parameters
    (norm scales, biases) are created on the default device and then placed.
    Without a mesh the parameters land on the default device.
    """
    from rstar_jax.models.layers import init_placement

    with init_placement(mesh, rules):
        model = cls(arch, rngs=nnx.Rngs(seed))
    if mesh is None:
        return model
    shardings = _shardings(model, mesh, rules)
    graphdef, state = nnx.split(model)
    placed = {p: v.replace(value=jax.device_put(v.get_value(), shardings[path_key(p)]))
              for p, v in state.flat_state()}
    return nnx.merge(graphdef, nnx.State.from_flat_path(placed))


def place_params(abstract: nnx.Module, arrays: Iterable[Tuple[str, np.ndarray]], *,
                 mesh: Optional[Mesh] = None, rules: Optional[Rules] = None,
                 fill: Optional[Mapping[str, jax.Array]] = None) -> nnx.Module:
    """Puts host arrays (path, value) onto their shardings one at a time.

    Values are cast to each parameter's dtype and must have its shape;
    `fill` supplies parameters absent from `arrays` (e.g. a fresh head).
    """
    shapes = flat_params(abstract)
    shardings = _shardings(abstract, mesh, rules)
    values: Dict[str, jax.Array] = dict(fill or {})
    for key, host in arrays:
        if key not in shapes:
            raise KeyError(f"unexpected parameter {key!r}")
        want = shapes[key]
        if tuple(host.shape) != tuple(want.shape):
            raise ValueError(f"{key}: shape {tuple(host.shape)} != model's {tuple(want.shape)}")
        host = np.asarray(host).astype(want.dtype)
        values[key] = jax.device_put(host, shardings[key]) if shardings else jnp.asarray(host)
    return assemble(abstract, values)


def ppm_from_policy(policy: Policy, *, seed: int = 0) -> PPM:
    """A PPM sharing the policy's backbone weights, with a fresh value head (spec section 6).

    The backbone arrays are reused as they are (same shardings, no copy);
    the LM head is dropped.
    """
    abstract = abstract_model(PPM, policy.arch, seed=seed)
    values = {k: v for k, v in flat_params(policy).items() if k.startswith("model/")}
    hidden = policy.arch.hidden_size
    head = {  # PPM.__init__'s head initialisation, without building a second backbone
        "value_kernel": hidden ** -0.5 * jax.random.normal(jax.random.key(seed), (hidden,)),
        "value_bias": jnp.zeros((), jnp.float32),
    }
    ref = policy.model.embed.get_value()
    values.update({k: _like(v, ref, replicated=True) for k, v in head.items()})
    return assemble(abstract, values)


def _like(value: jax.Array, ref: jax.Array, *, replicated: bool = False) -> jax.Array:
    """`value` placed on `ref`'s mesh (replicated) when `ref` is mesh-sharded."""
    sharding = getattr(ref, "sharding", None)
    if isinstance(sharding, NamedSharding) and replicated:
        return jax.device_put(value, NamedSharding(sharding.mesh, jax.sharding.PartitionSpec()))
    return value
