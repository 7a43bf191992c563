"""Flax NNX decoder (Qwen2 / Llama), policy and PPM heads, sharding rules."""

from rstar_jax.models.decoder import (
    PPM,
    ArchConfig,
    Decoder,
    KVCache,
    Policy,
    init_cache,
    score_transform,
)
from rstar_jax.models.sharding import constrain, logical_to_spec, sharding_context

__all__ = [
    "PPM", "ArchConfig", "Decoder", "KVCache", "Policy", "constrain", "init_cache",
    "logical_to_spec", "score_transform", "sharding_context",
]
