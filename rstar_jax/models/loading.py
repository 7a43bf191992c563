"""Loading models from a config: our checkpoints, HF weights, or a fresh init.

`load_policy` / `load_ppm` pick the source (`model.checkpoint`, then
`model.hf_dir`, else a fresh init from the config's architecture), shard it
by the mesh's rules, and attach the tokenizer (`vocab.attach_tokenizer`).
The lower layers (`params`, `vocab`, `checkpoint`, `convert`) never import
this module.
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Type

from flax import nnx
from jax.sharding import Mesh

from rstar_jax.models.checkpoint import load_model, tokenizer_dir
from rstar_jax.models.convert import HFTensors, has_value_head, hf_to_params
from rstar_jax.models.decoder import PPM, ArchConfig, Policy
from rstar_jax.models.params import (  # noqa: F401  (re-exported: the models API)
    MODEL_CLASSES,
    abstract_model,
    assemble,
    flat_params,
    init_model,
    model_kind,
    path_key,
    place_params,
    ppm_from_policy,
)
from rstar_jax.models.sharding import Rules
from rstar_jax.models.vocab import (  # noqa: F401  (re-exported: the models API)
    attach_tokenizer,
    fit_vocab_to_tokenizer,
    init_new_token_rows,
    load_tokenizer,
    resize_vocab,
    wants_tags,
)

log = logging.getLogger(__name__)


def rules_for(mesh_cfg, mode: str) -> Rules:
    """The rule table of `mode` ('inference' or 'training')."""
    if mode not in ("inference", "training"):
        raise ValueError(f"mode must be 'inference' or 'training', not {mode!r}")
    return mesh_cfg.inference_rules if mode == "inference" else mesh_cfg.training_rules


def load_hf(cls: Type[nnx.Module], hf_dir: str, *, mesh: Optional[Mesh] = None,
            rules: Optional[Rules] = None, param_dtype: str = "float32",
            compute_dtype: str = "float32", seed: int = 0) -> nnx.Module:
    """A Policy or PPM from an HF directory (config.json + safetensors).

    A PPM needs the reference's value head (`v_head.summary.*`) in the weights;
    for a PPM from a plain causal LM use `ppm_from_policy`.
    """
    arch = ArchConfig.from_hf_dir(hf_dir, param_dtype=param_dtype, compute_dtype=compute_dtype)
    tensors = HFTensors(hf_dir)
    abstract = abstract_model(cls, arch, seed=seed)
    return place_params(abstract, hf_to_params(tensors, arch, ppm=cls is PPM),
                        mesh=mesh, rules=rules)


def is_hf_dir(path: Optional[str]) -> bool:
    """Whether `path` is an HF model directory (config.json + safetensors)
    rather than one of our checkpoints or exports (which hold `params/`)."""
    return bool(path) and os.path.isfile(os.path.join(path, "config.json")) and not os.path.isdir(
        os.path.join(path, "params"))


def _tokenizer_source(m, checkpoint: Optional[str]) -> Optional[str]:
    if m.tokenizer_dir:
        return m.tokenizer_dir
    if checkpoint:
        found = tokenizer_dir(checkpoint)
        if found:
            return found
    return m.hf_dir


def _with_tokenizer(model, cfg, checkpoint, mesh, rules, with_tokenizer: bool, mode: str,
                    pretrained: bool):
    m = cfg.model
    source = _tokenizer_source(m, checkpoint) if with_tokenizer else None
    add = wants_tags(m.add_special_tokens, mode=mode, pretrained=pretrained)
    return attach_tokenizer(model, source, add_tags=add, mesh=mesh, rules=rules)


def _load(cls, cfg, mesh, rules, checkpoint: Optional[str]):
    m = cfg.model
    if checkpoint:
        return load_model(checkpoint, mesh=mesh, rules=rules, dtype=m.param_dtype,
                          compute_dtype=m.compute_dtype)
    if m.hf_dir:
        return load_hf(cls, m.hf_dir, mesh=mesh, rules=rules, param_dtype=m.param_dtype,
                       compute_dtype=m.compute_dtype, seed=cfg.seed)
    return init_model(cls, ArchConfig.from_model_config(m), mesh=mesh, rules=rules, seed=cfg.seed)


def load_policy(cfg, *, mesh: Optional[Mesh] = None, mode: str = "inference",
                with_tokenizer: bool = True):
    """(Policy, tokenizer or None) from `cfg.model`.

    Source, first found: `model.checkpoint` (ours), `model.hf_dir` (HF
    weights), else a fresh init from the config's architecture. The
    tokenizer (`model.tokenizer_dir`, the checkpoint's, or `model.hf_dir`)
    gets the rStar tags as `vocab.wants_tags` decides from
    `model.add_special_tokens` and `mode` (by default: for training, or a
    fresh init), and the vocabulary grows to fit them. Parameters are
    sharded by `cfg.mesh`'s rules of `mode`.
    """
    rules = rules_for(cfg.mesh, mode) if mesh is not None else None
    model = _load(Policy, cfg, mesh, rules, cfg.model.checkpoint)
    if not isinstance(model, Policy):
        raise ValueError(f"{cfg.model.checkpoint} holds a {model_kind(model)}, not a policy")
    pretrained = bool(cfg.model.checkpoint or cfg.model.hf_dir)
    return _with_tokenizer(model, cfg, cfg.model.checkpoint, mesh, rules, with_tokenizer, mode,
                           pretrained)


def load_ppm(cfg, *, mesh: Optional[Mesh] = None, mode: str = "training",
             with_tokenizer: bool = True):
    """(PPM, tokenizer or None): `ppm.checkpoint` if set (a policy checkpoint
    there gets a fresh value head), else an HF dir with the reference's value
    head, else the policy of `cfg.model` with a fresh head (spec section 6)."""
    rules = rules_for(cfg.mesh, mode) if mesh is not None else None
    m = cfg.model
    if cfg.ppm.checkpoint:
        model, source = _load(PPM, cfg, mesh, rules, cfg.ppm.checkpoint), cfg.ppm.checkpoint
    elif m.hf_dir and not m.checkpoint and has_value_head(HFTensors(m.hf_dir)):
        model = load_hf(PPM, m.hf_dir, mesh=mesh, rules=rules, param_dtype=m.param_dtype,
                        compute_dtype=m.compute_dtype, seed=cfg.seed)
        source = None
    else:
        model, source = _load(Policy, cfg, mesh, rules, m.checkpoint), m.checkpoint
    if isinstance(model, Policy):
        model = ppm_from_policy(model, seed=cfg.seed)
    pretrained = bool(cfg.ppm.checkpoint or m.checkpoint or m.hf_dir)
    return _with_tokenizer(model, cfg, source, mesh, rules, with_tokenizer, mode, pretrained)
