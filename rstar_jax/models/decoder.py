"""The decoder LM (Qwen2 and Llama families), the policy and the PPM.

`Policy` = decoder + LM head (tied to the embedding or not).
`PPM` = the same backbone + a scalar value head `Linear(hidden, 1)` read at
the last non-pad token; `score_transform` turns its raw output into the
score used both by the training loss and by search (one function, so the
two can never disagree).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import List, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import nnx

from rstar_jax.config.schema import ModelConfig, PPMConfig
from rstar_jax.models.layers import Block, RMSNorm, _param
from rstar_jax.models.sharding import constrain

Array = jax.Array
KVCache = List[Tuple[Array, Array]]  # per layer (k, v), each [B, K, S, Dh]

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ArchConfig:
    """Resolved architecture numbers (what the layers need)."""

    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    rope_theta: float
    rms_norm_eps: float
    attention_bias: bool
    tie_word_embeddings: bool
    param_dtype: jnp.dtype = jnp.float32
    dtype: jnp.dtype = jnp.float32  # compute dtype

    @classmethod
    def from_model_config(cls, m: ModelConfig, vocab_size: Optional[int] = None) -> ArchConfig:
        """From our config; `model.hf_dir`'s config.json wins when set."""
        if m.hf_dir:
            return cls.from_hf_dir(m.hf_dir, param_dtype=m.param_dtype, compute_dtype=m.compute_dtype)
        return cls(
            family=m.family,
            vocab_size=vocab_size or m.vocab_size,
            hidden_size=m.hidden_size,
            intermediate_size=m.intermediate_size,
            num_layers=m.num_layers,
            num_heads=m.num_heads,
            num_kv_heads=m.num_kv_heads,
            head_dim=m.head_dim or m.hidden_size // m.num_heads,
            max_position_embeddings=m.max_position_embeddings,
            rope_theta=m.rope_theta,
            rms_norm_eps=m.rms_norm_eps,
            attention_bias=m.attention_bias,
            tie_word_embeddings=m.tie_word_embeddings,
            param_dtype=DTYPES[m.param_dtype],
            dtype=DTYPES[m.compute_dtype],
        )

    @classmethod
    def from_hf_dict(cls, hf: dict, *, param_dtype="float32", compute_dtype="float32") -> ArchConfig:
        """From a HuggingFace `config.json` of a Qwen2 or Llama model."""
        model_type = hf.get("model_type", "")
        if model_type not in ("qwen2", "llama"):
            raise ValueError(f"unsupported HF model_type {model_type!r} (need qwen2 or llama)")
        _check_supported_hf(hf)
        heads = hf["num_attention_heads"]
        rope = hf.get("rope_theta")
        if rope is None:
            rope = (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        return cls(
            family=model_type,
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            max_position_embeddings=hf.get("max_position_embeddings", 4096),
            rope_theta=float(rope),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            attention_bias=(model_type == "qwen2") or bool(hf.get("attention_bias", False)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            param_dtype=DTYPES[param_dtype],
            dtype=DTYPES[compute_dtype],
        )

    @classmethod
    def from_hf_dir(cls, path: str, **kw) -> ArchConfig:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            return cls.from_hf_dict(json.load(f), **kw)

    def replace(self, **kw) -> ArchConfig:
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        """JSON-able form (dtypes by name), stored with every checkpoint."""
        d = dataclasses.asdict(self)
        d["param_dtype"] = jnp.dtype(self.param_dtype).name
        d["dtype"] = jnp.dtype(self.dtype).name
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ArchConfig:
        """Inverse of `to_dict`."""
        d = dict(d)
        d["param_dtype"] = DTYPES[d.get("param_dtype", "float32")]
        d["dtype"] = DTYPES[d.get("dtype", "float32")]
        return cls(**d)


def _check_supported_hf(hf: dict) -> None:
    """Rejects HF options our layers do not implement (silently wrong logits otherwise)."""
    model_type = hf.get("model_type")
    if model_type == "llama" and (hf.get("attention_bias") or hf.get("mlp_bias")):
        raise ValueError("Llama with attention_bias/mlp_bias is not supported")
    scaling = hf.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type", scaling.get("type"))
    if rope_type is None:
        rope_type = (hf.get("rope_parameters") or {}).get("rope_type", "default")
    if rope_type not in ("default", None):
        raise ValueError(f"rope scaling {rope_type!r} is not supported")
    if hf.get("use_sliding_window"):
        raise ValueError("sliding-window attention is not supported")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"activation {hf.get('hidden_act')!r} is not supported (need silu)")


# Rematerialisation of each decoder block in training (`model.remat`): `none`
# keeps every activation for the backward pass; `full` keeps only each
# block's input and recomputes the rest; `dots_saveable` keeps the matmul
# outputs and recomputes the cheap elementwise work between them.
REMAT_POLICIES = {"none": None, "full": None,
                  "dots_saveable": jax.checkpoint_policies.dots_saveable}


def _block_call(layer, x, positions, segment_ids):
    return layer(x, positions, None, segment_ids)[0]


def set_remat(model: nnx.Module, policy: str) -> nnx.Module:
    """Sets the rematerialisation policy of `model`'s decoder (a Policy or PPM)."""
    if policy not in REMAT_POLICIES:
        raise ValueError(f"model.remat must be one of {sorted(REMAT_POLICIES)}, not {policy!r}")
    model.model.remat = policy
    return model


class Decoder(nnx.Module):
    """Embedding + blocks + final norm. Returns hidden states."""

    def __init__(self, arch: ArchConfig, *, rngs: nnx.Rngs):
        self.arch = arch
        self.remat = "none"  # set_remat; only cache-free (training) calls rematerialise
        self.embed = _param(rngs, (arch.vocab_size, arch.hidden_size), ("vocab", "embed"),
                            arch.param_dtype, scale=0.02)
        self.layers = nnx.List([Block(arch, rngs=rngs) for _ in range(arch.num_layers)])
        self.norm = RMSNorm(arch.hidden_size, arch.rms_norm_eps, param_dtype=arch.param_dtype,
                            rngs=rngs)

    def __call__(self, tokens: Array, positions: Optional[Array] = None, *,
                 cache: Optional[KVCache] = None, segment_ids: Optional[Array] = None,
                 slots: Optional[Array] = None, pages: Optional[Array] = None):
        """tokens `[B, T]` int32; positions `[B, T]` (default 0..T-1).

        `slots [B]`: the cache rows the batch rows own (prefill into decode
        slots); `pages [B, M]`: the rows' page tables when `cache` is a page
        pool per layer, or a pair of tables (prefill rows, decode rows) for a
        mixed call with tokens `[1, R * C + B]` (see `layers.Attention._paged`). Returns (hidden `[B, T, D]`,
        new cache or None).
        """
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        x = jnp.take(self.embed[...], tokens, axis=0).astype(self.arch.dtype)
        x = constrain(x, ("activation_batch", "activation_length", "activation_embed"))
        new_cache: Optional[KVCache] = [] if cache is not None else None
        remat = getattr(self, "remat", "none") if cache is None else "none"
        for i, layer in enumerate(self.layers):
            if remat != "none":
                x = nnx.remat(_block_call, policy=REMAT_POLICIES[remat])(
                    layer, x, positions, segment_ids)
                continue
            x, layer_cache = layer(x, positions, None if cache is None else cache[i], segment_ids, slots,
                                   pages)
            if new_cache is not None:
                new_cache.append(layer_cache)
        return self.norm(x), new_cache


class Policy(nnx.Module):
    """Decoder + LM head. Logits are float32."""

    def __init__(self, arch: ArchConfig, *, rngs: nnx.Rngs):
        self.arch = arch
        self.model = Decoder(arch, rngs=rngs)
        if not arch.tie_word_embeddings:
            self.lm_head = _param(rngs, (arch.hidden_size, arch.vocab_size), ("embed", "vocab"),
                                  arch.param_dtype)

    def logits_from_hidden(self, h: Array) -> Array:
        if self.arch.tie_word_embeddings:
            w = self.model.embed[...].astype(self.arch.dtype).T
        else:
            w = self.lm_head[...].astype(self.arch.dtype)
        logits = (h @ w).astype(jnp.float32)
        return constrain(logits, ("activation_batch", "activation_length", "activation_vocab"))

    def __call__(self, tokens: Array, positions: Optional[Array] = None, *,
                 cache: Optional[KVCache] = None, segment_ids: Optional[Array] = None,
                 pages: Optional[Array] = None):
        """Returns (logits `[B, T, V]` float32, new cache or None)."""
        h, new_cache = self.model(tokens, positions, cache=cache, segment_ids=segment_ids, pages=pages)
        return self.logits_from_hidden(h), new_cache


class PPM(nnx.Module):
    """Decoder + scalar value head read at the last non-pad token."""

    def __init__(self, arch: ArchConfig, *, rngs: nnx.Rngs):
        self.arch = arch
        self.model = Decoder(arch, rngs=rngs)
        self.value_kernel = _param(rngs, (arch.hidden_size,), ("embed",), jnp.float32,
                                   scale=arch.hidden_size ** -0.5)
        self.value_bias = nnx.Param(jnp.zeros((), jnp.float32), logical_axes=())

    def __call__(self, tokens: Array, lengths: Array, positions: Optional[Array] = None, *,
                 segment_ids: Optional[Array] = None) -> Array:
        """tokens `[B, T]` right-padded, lengths `[B]` -> raw rewards `[B]` float32."""
        h, _ = self.model(tokens, positions, segment_ids=segment_ids)
        last = jnp.clip(lengths - 1, 0, tokens.shape[1] - 1)
        h_last = jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0].astype(jnp.float32)
        return h_last @ self.value_kernel[...] + self.value_bias[...]


def score_transform(raw: Array, ppm: PPMConfig) -> Array:
    """The PPM score from its raw output, identical in training and search.

    `tanh` is the paper's head; `tanh_scaled` is the reference's
    inference-time `tanh(r / 5)`; `none` keeps the raw output.
    """
    if ppm.score_transform == "tanh":
        return jnp.tanh(raw)
    if ppm.score_transform == "tanh_scaled":
        return jnp.tanh(raw / ppm.score_scale)
    return raw


def init_cache(arch: ArchConfig, batch: int, max_len: int, dtype=None) -> KVCache:
    """A zeroed KV cache `[B, K, S, Dh]` per layer."""
    dtype = dtype or arch.dtype
    shape = (batch, arch.num_kv_heads, max_len, arch.head_dim)
    return [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(arch.num_layers)]
