"""Model state for training: mesh, sharded init, the exported final model.

Parameters are initialised abstractly first (`nnx.eval_shape`), their
shardings read from the `logical_axes` metadata through the training rule
table, and only then created by a jitted init with those out-shardings, so
no full copy ever sits on one device (STYLE point 2). The same abstract
target is what a checkpoint is restored onto, which lets a run resume on a
different mesh.

Interim: `make_mesh`, `init_params` and the final-model format here are
small private stand-ins for `rstar_jax.models.mesh` / `models.loading` /
`models.checkpoint`, to be swapped for them once they land on main.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rstar_jax.config.schema import Config, MeshConfig
from rstar_jax.models.decoder import PPM, ArchConfig, Policy
from rstar_jax.models.sharding import logical_to_spec

AXES = ("data", "fsdp", "tensor")
FINAL_META = "model.json"


def make_mesh(m: MeshConfig, devices=None) -> Mesh:
    """('data', 'fsdp', 'tensor') over all devices; one axis may be -1."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = [m.data, m.fsdp, m.tensor]
    known = int(np.prod([s for s in sizes if s != -1]))
    if sizes.count(-1) > 1 or len(devices) % known:
        raise ValueError(f"mesh {sizes} does not fit {len(devices)} devices")
    sizes = [len(devices) // known if s == -1 else s for s in sizes]
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(f"mesh {sizes} needs {int(np.prod(sizes))} devices, have {len(devices)}")
    auto = (jax.sharding.AxisType.Auto,) * 3
    return jax.make_mesh(tuple(sizes), AXES, axis_types=auto, devices=devices)


def _walk(tree, fn):
    """Maps `fn` over the Variables of an nnx State into a plain nested dict."""
    if isinstance(tree, nnx.Variable):
        return fn(tree)
    return {k: _walk(v, fn) for k, v in tree.items()}


def model_class(kind: str):
    return PPM if kind == "ppm" else Policy


def abstract_model(kind: str, arch: ArchConfig):
    """(graphdef, abstract nnx State) without allocating anything."""
    cls = model_class(kind)
    model = nnx.eval_shape(lambda: cls(arch, rngs=nnx.Rngs(0)))
    return nnx.split(model)


def param_shardings(abstract_state, mesh: Mesh, rules: Mapping) -> Dict:
    """NamedSharding per parameter (pure-dict tree) from `logical_axes`."""
    def one(v):
        shape = v.value.shape
        axes = v.get_metadata().get("logical_axes") or (None,) * len(shape)
        return NamedSharding(mesh, logical_to_spec(axes, shape, mesh, rules))
    return _walk(abstract_state, one)


def abstract_params(abstract_state, shardings) -> Dict:
    """ShapeDtypeStructs with shardings: the restore target."""
    structs = _walk(abstract_state, lambda v: v.value)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        structs, shardings)


def init_params(kind: str, arch: ArchConfig, shardings, seed: int) -> Dict:
    """Fresh parameters created directly in their shardings."""
    cls = model_class(kind)

    def init():
        return nnx.to_pure_dict(nnx.state(cls(arch, rngs=nnx.Rngs(seed))))
    return jax.jit(init, out_shardings=shardings)()


def batch_shardings(mesh: Mesh, rules: Mapping, example: Mapping[str, np.ndarray],
                    global_batch: int) -> Dict[str, NamedSharding]:
    """Dim 0 of every batch field over the `activation_batch` mesh axes."""
    out = {}
    for k, v in example.items():
        axes = ("activation_batch",) + (None,) * (v.ndim - 1)
        out[k] = NamedSharding(mesh, logical_to_spec(axes, (global_batch,) + v.shape[1:],
                                                     mesh, rules))
    return out


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def init_train_state(tx, params: Dict, mesh: Mesh) -> Dict:
    """{"params", "opt_state", "step"} with optimizer moments sharded like
    their parameters and counters replicated (created in place)."""
    import optax

    param_sh = jax.tree.map(lambda x: x.sharding, params)
    opt_sh = optax.tree_map_params(tx, lambda _, sh: sh, jax.eval_shape(tx.init, params),
                                   param_sh, transform_non_params=lambda _: replicated(mesh))
    opt_state = jax.jit(tx.init, out_shardings=opt_sh)(params)
    step = jax.device_put(jnp.zeros((), jnp.int32), replicated(mesh))
    return {"params": params, "opt_state": opt_state, "step": step}


# --- the exported final model -------------------------------------------------

def arch_to_json(arch: ArchConfig) -> Dict[str, Any]:
    d = dataclasses.asdict(arch)
    d["param_dtype"] = jnp.dtype(arch.param_dtype).name
    d["dtype"] = jnp.dtype(arch.dtype).name
    return d


def arch_from_json(d: Mapping[str, Any]) -> ArchConfig:
    d = dict(d)
    d["param_dtype"] = jnp.dtype(d["param_dtype"])
    d["dtype"] = jnp.dtype(d["dtype"])
    return ArchConfig(**d)


def export_final(path: str, params: Dict, *, kind: str, arch: ArchConfig, cfg: Config,
                 tokenizer=None) -> None:
    """Writes `path/params` (Orbax), `path/model.json` and `path/tokenizer`.

    Blocks until written. Every process must call it (Orbax gathers the
    shards); only process 0 writes the metadata and tokenizer.
    """
    import orbax.checkpoint as ocp

    path = os.path.abspath(path)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(path, "params"), params, force=True)
        ckptr.wait_until_finished()
    if jax.process_index() == 0:
        meta = {"kind": kind, "arch": arch_to_json(arch), "ppm": dataclasses.asdict(cfg.ppm),
                "model": dataclasses.asdict(cfg.model)}
        with open(os.path.join(path, FINAL_META), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
        if tokenizer is not None:
            tokenizer.save_pretrained(os.path.join(path, "tokenizer"))


def read_final_meta(path: str) -> Dict[str, Any]:
    with open(os.path.join(path, FINAL_META), encoding="utf-8") as f:
        return json.load(f)


def load_final_params(path: str, target: Optional[Dict] = None) -> Dict:
    """Restores exported params onto `target` (abstract params with
    shardings); without one, onto the first local device (inspection, tests)."""
    import orbax.checkpoint as ocp

    p = os.path.join(os.path.abspath(path), "params")
    with ocp.StandardCheckpointer() as ckptr:
        if target is None:
            meta = ckptr.metadata(p)
            tree = getattr(meta, "item_metadata", meta)
            one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                                  tree)
        return ckptr.restore(p, target)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def ppm_params_from_policy(policy_params: Dict, fresh_ppm_params: Dict) -> Dict:
    """A PPM initialised from a policy (spec section 6): the policy's backbone,
    the PPM's own freshly initialised value head; the LM head is dropped."""
    out = dict(fresh_ppm_params)
    out["model"] = policy_params["model"]
    return out


def initial_params(kind: str, arch: ArchConfig, cfg: Config, mesh: Mesh, rules: Mapping,
                   init_from: Optional[str]) -> Tuple[Any, Dict]:
    """(graphdef, params) for a run: fresh, or from an exported model dir.

    A policy export initialises a policy as is; for a PPM it supplies the
    backbone (the value head stays fresh). A PPM export initialises a PPM.
    """
    graphdef, abstract = abstract_model(kind, arch)
    shardings = param_shardings(abstract, mesh, rules)
    params = init_params(kind, arch, shardings, cfg.train.seed)
    if not init_from:
        return graphdef, params
    src_kind = read_final_meta(init_from)["kind"]
    if src_kind == kind:
        return graphdef, load_final_params(init_from, abstract_params(abstract, shardings))
    if (src_kind, kind) != ("policy", "ppm"):
        raise ValueError(f"cannot initialise a {kind} from a {src_kind} export ({init_from})")
    _, pol_abstract = abstract_model("policy", arch)
    pol_sh = param_shardings(pol_abstract, mesh, rules)
    pol = load_final_params(init_from, abstract_params(pol_abstract, pol_sh))
    return graphdef, ppm_params_from_policy(pol, params)
