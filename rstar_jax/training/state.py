"""Model state for training: loading, shardings of batches and optimizer.

Models come from `rstar_jax.models` (`load_policy` / `load_ppm`: a fresh
init created directly in its shardings, an HF directory, or one of our
checkpoints or exports, with the tokenizer and its vocabulary fitted).
Training works on the parameters as a plain nested dict (`nnx` pure dict)
beside a static graphdef, so the train state is an ordinary pytree.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rstar_jax.config.schema import Config
from rstar_jax.models.sharding import logical_to_spec


def split_params(model: nnx.Module) -> Tuple[nnx.GraphDef, Dict]:
    """(graphdef, parameters as a pure nested dict of arrays)."""
    graphdef, state = nnx.split(model)
    return graphdef, nnx.to_pure_dict(state)


def load_for_training(cfg: Config, kind: str, mesh: Mesh, init_from: Optional[str] = None,
                      tokenizer=None):
    """(graphdef, params, tokenizer, arch) of the model a stage starts from.

    `kind` is `policy` or `ppm`. `init_from` (an export or checkpoint dir)
    replaces `model.checkpoint` for a policy and `ppm.checkpoint` for a PPM,
    where a policy there supplies the backbone and the value head starts
    fresh (spec section 6). Without it the config's own source is used
    (`model.checkpoint`, `model.hf_dir`, else a fresh init).
    """
    from rstar_jax.models.decoder import set_remat
    from rstar_jax.models.loading import is_hf_dir, load_policy, load_ppm

    if is_hf_dir(init_from):
        # An HF model (a pretrained base, e.g. round 1 from Qwen or the demo's
        # shipped base): its weights, for a PPM with the reference's value
        # head if it has one, else a fresh head on its backbone.
        cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, hf_dir=init_from, checkpoint=None),
            ppm=dataclasses.replace(cfg.ppm, checkpoint=None))
    elif init_from and kind == "ppm":
        cfg = dataclasses.replace(cfg, ppm=dataclasses.replace(cfg.ppm, checkpoint=init_from))
    elif init_from:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, checkpoint=init_from))
    load = load_ppm if kind == "ppm" else load_policy
    model, tok = load(cfg, mesh=mesh, mode="training", with_tokenizer=tokenizer is None)
    tok = tokenizer if tokenizer is not None else tok
    if tok is None:
        raise ValueError("no tokenizer: set model.tokenizer_dir (or pass tokenizer=)")
    if len(tok) > model.arch.vocab_size:
        raise ValueError(f"tokenizer has {len(tok)} tokens but the model vocab is "
                         f"{model.arch.vocab_size}")
    set_remat(model, cfg.model.remat)  # per-block rematerialisation in the train step
    graphdef, params = split_params(model)
    return graphdef, params, tok, model.arch


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
