"""The inference engine (prefill / insert or clone into slots / decode / free),
sampling, on-device stop strings and PPM batch scoring.

Public API: `Engine`, `PPMScorer`, and the factories the search and the
evaluation call: `load_policy_engine(cfg)`, `load_ppm_scorer(cfg)`.
"""

from __future__ import annotations

from rstar_jax.inference.engine import Engine, PromptTooLongError
from rstar_jax.inference.scoring import PPMScorer
from rstar_jax.inference.types import (
    Completion,
    GenerationEngine,
    GenerationRequest,
    SamplingParams,
    StepScorer,
)


def _mesh_for(cfg, mesh):
    """The given mesh, else `cfg.mesh` over all devices when there are several."""
    import jax

    if mesh is not None or jax.device_count() == 1:
        return mesh
    from rstar_jax.models.mesh import make_mesh

    return make_mesh(cfg.mesh)


def _need_tokenizer(tokenizer, cfg):
    if tokenizer is None:
        raise ValueError("no tokenizer: set model.tokenizer_dir or model.hf_dir (or load a "
                         "checkpoint that saved one), or pass tokenizer=")
    return tokenizer


def load_policy_engine(cfg, *, mesh=None, tokenizer=None) -> Engine:
    """The policy named by `cfg.model` behind an `Engine` (`cfg.engine`),
    sharded by `cfg.mesh.inference_rules` when there are several devices.

    `tokenizer` overrides the one found with the model (needed when the
    config names none, e.g. a fresh tiny model in tests).
    """
    from rstar_jax.models.loading import load_policy

    mesh = _mesh_for(cfg, mesh)
    policy, found = load_policy(cfg, mesh=mesh, mode="inference", with_tokenizer=tokenizer is None)
    tok = _need_tokenizer(tokenizer or found, cfg)
    return Engine(policy, tok, cfg.engine, mesh=mesh, rules=cfg.mesh.inference_rules)


def load_ppm_scorer(cfg, *, mesh=None, tokenizer=None) -> PPMScorer:
    """The PPM named by `cfg.ppm` / `cfg.model` as a `StepScorer` (scores with
    `cfg.ppm.score_transform` applied)."""
    from rstar_jax.models.loading import load_ppm

    mesh = _mesh_for(cfg, mesh)
    ppm_model, found = load_ppm(cfg, mesh=mesh, mode="inference", with_tokenizer=tokenizer is None)
    tok = _need_tokenizer(tokenizer or found, cfg)
    return PPMScorer(ppm_model, tok, cfg, mesh=mesh, rules=cfg.mesh.inference_rules)


__all__ = [
    "Completion", "Engine", "GenerationEngine", "GenerationRequest", "PPMScorer",
    "PromptTooLongError", "SamplingParams", "StepScorer", "load_policy_engine", "load_ppm_scorer",
]
