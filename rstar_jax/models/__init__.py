"""Flax NNX decoder (Qwen2 / Llama), policy and PPM heads, sharding, loading, checkpoints.

Notebook use::

    from rstar_jax.models import load_checkpoint
    policy, tok = load_checkpoint("runs/demo/round_4/sft/ckpt")
"""

from rstar_jax.models.checkpoint import (
    Checkpointer,
    export_params,
    latest_step,
    load_checkpoint,
    load_exported,
    load_model,
    restore,
)
from rstar_jax.models.decoder import (
    PPM,
    ArchConfig,
    Decoder,
    KVCache,
    Policy,
    init_cache,
    score_transform,
)
from rstar_jax.models.loading import (
    abstract_model,
    flat_params,
    init_model,
    load_hf,
    load_policy,
    load_ppm,
    load_tokenizer,
    ppm_from_policy,
    resize_vocab,
)
from rstar_jax.models.mesh import make_mesh, maybe_initialize_distributed
from rstar_jax.models.sharding import (
    constrain,
    logical_to_spec,
    param_shardings,
    replication_report,
    sharding_context,
)

__all__ = [
    "PPM", "ArchConfig", "Checkpointer", "Decoder", "KVCache", "Policy", "abstract_model",
    "constrain", "export_params", "flat_params", "init_cache", "init_model", "latest_step",
    "load_checkpoint", "load_exported", "load_hf", "load_model", "load_policy", "load_ppm",
    "load_tokenizer", "logical_to_spec", "make_mesh", "maybe_initialize_distributed",
    "param_shardings", "ppm_from_policy", "replication_report", "resize_vocab", "restore",
    "score_transform", "sharding_context",
]
