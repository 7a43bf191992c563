"""Decoder building blocks: RMSNorm, rotary embeddings, GQA attention, SwiGLU.

Parameters carry logical axis names in their `logical_axes` metadata
(`embed`, `heads`, `kv_heads`, `head_dim`, `mlp`, `vocab`, `norm`); the
rule tables in the config map them onto mesh axes (`sharding.py`). Layers
never name mesh axes themselves. Activations are constrained with
`sharding.constrain`, a no-op outside a sharding context.

Shapes: B batch, T new tokens, S cache length, D hidden, H query heads,
K key/value heads, G = H // K, Dh head dim, F the MLP width. The KV cache is
`[B, K, S, Dh]` (heads before length), so both attention products are
batched matmuls over (B, K) with no transpose of the cache (issue 4).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
from flax import nnx

from rstar_jax.models.decode_attention import (
    decode_attention,
    gather_pages,
    online_softmax,
    online_softmax_block,
    paged_decode_attention,
)
from rstar_jax.models.sharding import constrain

Array = jax.Array


# (mesh, rules) while `init_placement` is active: parameters are drawn straight
# into their shardings.
_PLACEMENT: contextvars.ContextVar = contextvars.ContextVar("init_placement", default=None)


@contextlib.contextmanager
def init_placement(mesh, rules):
    """Within it, `_param` draws each parameter directly into its sharding on
    `mesh` (by `rules`), so an eager model construction never materialises a
    parameter on one device."""
    token = _PLACEMENT.set(None if mesh is None else (mesh, dict(rules or {})))
    try:
        yield
    finally:
        _PLACEMENT.reset(token)


@functools.lru_cache(maxsize=256)
def _normal_init(shape, std: float, dtype, sharding):
    """A jitted normal(0, std) initializer for one shape: compiled once per
    distinct (shape, dtype, sharding), so building a model eagerly costs a
    handful of small compiles, not one whole-model initializer (issue 17)."""
    return jax.jit(lambda key: (std * jax.random.normal(key, shape, jnp.float32)).astype(dtype),
                   out_shardings=sharding)


def _param(rngs: nnx.Rngs, shape, axes, dtype, scale: Optional[float] = None) -> nnx.Param:
    """A normal(0, scale) parameter (scale defaults to 1/sqrt(fan_in))."""
    fan_in = shape[0] if len(shape) > 1 else 1
    std = scale if scale is not None else fan_in ** -0.5
    key = rngs.params()
    placement = _PLACEMENT.get()
    if isinstance(key, jax.core.Tracer):  # inside a trace (eval_shape, a jitted init)
        value = (std * jax.random.normal(key, shape, jnp.float32)).astype(dtype)
    else:
        sharding = None
        if placement is not None:
            from jax.sharding import NamedSharding

            from rstar_jax.models.sharding import logical_to_spec

            mesh, rules = placement
            sharding = NamedSharding(mesh, logical_to_spec(axes, shape, mesh, rules))
        value = _normal_init(tuple(shape), float(std), jnp.dtype(dtype), sharding)(key)
    return nnx.Param(value, logical_axes=tuple(axes))


def _zeros(shape, axes, dtype) -> nnx.Param:
    return nnx.Param(jnp.zeros(shape, dtype), logical_axes=tuple(axes))


class RMSNorm(nnx.Module):
    """x / rms(x) * scale, computed in float32 (as HF Qwen2/Llama do)."""

    def __init__(self, dim: int, eps: float, *, param_dtype, rngs: nnx.Rngs):
        del rngs
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=("norm",))

    def __call__(self, x: Array) -> Array:
        dtype = x.dtype
        x32 = x.astype(jnp.float32)
        var = jnp.mean(x32 * x32, axis=-1, keepdims=True)
        y = x32 * jax.lax.rsqrt(var + self.eps)
        return (self.scale[...].astype(jnp.float32) * y).astype(dtype)


def rope_tables(positions: Array, head_dim: int, theta: float) -> Tuple[Array, Array]:
    """cos, sin `[B, T, Dh]` for the half-rotation convention of HF Llama/Qwen2."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, Dh/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotates `x [B, T, N, Dh]` by the tables `[B, T, Dh]`."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    return (x.astype(jnp.float32) * c + rotated.astype(jnp.float32) * s).astype(x.dtype)


class Attention(nnx.Module):
    """Grouped-query attention with optional q/k/v bias and a KV cache.

    With a cache, new keys/values are written at their absolute positions
    (`positions`) and every query attends to cache entries at positions
    `<= its own`. Entries past a row's current position may hold stale
    values (padding, an earlier request); the mask never reads them, and
    the token that owns a position overwrites its entry before any later
    query can see it.
    """

    def __init__(self, *, hidden: int, heads: int, kv_heads: int, head_dim: int, bias: bool,
                 rope_theta: float, param_dtype, dtype, rngs: nnx.Rngs):
        if heads % kv_heads:
            raise ValueError(f"num_heads {heads} is not a multiple of num_kv_heads {kv_heads}")
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.rope_theta, self.dtype = rope_theta, dtype
        self.q = _param(rngs, (hidden, heads, head_dim), ("embed", "heads", "head_dim"), param_dtype)
        self.k = _param(rngs, (hidden, kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), param_dtype)
        self.v = _param(rngs, (hidden, kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), param_dtype)
        self.o = _param(rngs, (heads, head_dim, hidden), ("heads", "head_dim", "embed"), param_dtype,
                        scale=(heads * head_dim) ** -0.5)
        self.bias = bias
        if bias:
            self.q_bias = _zeros((heads, head_dim), ("heads", "head_dim"), param_dtype)
            self.k_bias = _zeros((kv_heads, head_dim), ("kv_heads", "head_dim"), param_dtype)
            self.v_bias = _zeros((kv_heads, head_dim), ("kv_heads", "head_dim"), param_dtype)

    def _proj(self, x, w, b):
        # Plain 2-D matmuls on free reshapes of the row-major weights: as
        # einsums over (n, h), XLA:CPU may pick a head-minor layout and copy
        # the weight transposed in every decode step (issue 4).
        w = w[...].astype(self.dtype)
        y = (x @ w.reshape(w.shape[0], -1)).reshape(*x.shape[:2], *w.shape[1:])
        return y + b[...].astype(self.dtype) if b is not None else y

    def __call__(self, x: Array, positions: Array, cache: Optional[Tuple[Array, Array]] = None,
                 segment_ids: Optional[Array] = None, slots: Optional[Array] = None,
                 pages: Optional[Array] = None):
        """x `[B, T, D]`, positions `[B, T]`; cache (k, v) `[B, K, S, Dh]`.

        `slots [B]` (with a cache of N >= B rows): row b's keys/values go to
        cache row `slots[b]` and its queries read that row, through only the
        key blocks below the largest position (batched prefill straight into
        decode slots). Positions `>= S` mark padding: never written.

        `pages [B, M]` (paged layout): the cache is a page pool `[K, P, ps, Dh]`
        and row b's position p lives in page `pages[b, p // ps]` at offset
        `p % ps`; positions `>= M * ps` are padding. The returned cache is the pool.

        Returns (out `[B, T, D]`, new cache or None).
        """
        if pages is not None:
            return self._paged(x, positions, cache, pages)
        q = self._proj(x, self.q, self.q_bias if self.bias else None)
        k = self._proj(x, self.k, self.k_bias if self.bias else None)
        v = self._proj(x, self.v, self.v_bias if self.bias else None)
        cos, sin = rope_tables(positions, self.head_dim, self.rope_theta)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q = constrain(q, ("activation_batch", "activation_length", "activation_heads", None))
        k = constrain(k, ("activation_batch", "activation_length", "activation_kv_heads", None))

        if cache is not None:
            ck, cv = cache
            rows = (jnp.arange(x.shape[0]) if slots is None else slots)[:, None]
            # Write [B, T, K, Dh] at (row, :, position): scatter dims (0, 2).
            ck = ck.at[rows, :, positions].set(k.astype(ck.dtype), mode="drop")
            cv = cv.at[rows, :, positions].set(v.astype(cv.dtype), mode="drop")
            keys, values = ck.astype(self.dtype), cv.astype(self.dtype)
            key_pos = jnp.arange(ck.shape[2])[None, :]  # [1, S]
            mask = key_pos[:, None, :] <= positions[:, :, None]  # [B, T, S]
            new_cache = (ck, cv)
        else:
            keys, values = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)  # [B, K, T, Dh]
            mask = positions[:, None, :] <= positions[:, :, None]  # [B, T, T]
            if segment_ids is not None:
                mask &= segment_ids[:, :, None] == segment_ids[:, None, :]
            new_cache = None

        b, t = x.shape[:2]
        groups = self.heads // self.kv_heads
        qg = q.reshape(b, t, self.kv_heads, groups, self.head_dim)
        if slots is not None:
            out = prefill_attention(qg, new_cache[0], new_cache[1], slots, positions, self.dtype)
            out = out.reshape(b, t, self.heads, self.head_dim)
        elif cache is not None and t == 1:
            # Per backend: the whole cache on CPU, only its filled part elsewhere.
            out = decode_attention(qg[:, 0], ck, cv, positions[:, 0], self.dtype)
            out = out.reshape(b, 1, self.heads, self.head_dim)
        else:
            scores = jnp.einsum("btkgh,bksh->bkgts", qg, keys).astype(jnp.float32)
            scores = scores * (self.head_dim ** -0.5)
            scores = jnp.where(mask[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
            probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
            out = jnp.einsum("bkgts,bksh->btkgh", probs, values)
            out = out.reshape(b, t, self.heads, self.head_dim)
        wo = self.o[...].astype(self.dtype)
        out = out.reshape(b, t, -1) @ wo.reshape(-1, wo.shape[-1])
        return out, new_cache


    def _paged(self, x, positions, cache, pages):
        """Attention over a page pool: writes this call's keys/values into
        their pages, then runs the dense decode / prefill attention over each
        row's pages (`paged_decode_attention` picks the path per backend).

        `pages` may be a pair `(prefill [R, M], decode [B, M])`: a mixed call,
        x `[1, R * C + B, D]` holding R prefill chunks of C tokens and then B
        decode tokens (one device call for both, so the projections and the
        MLP read the weights once); each part writes and reads its own rows'
        pages, the prefill part first."""
        q = self._proj(x, self.q, self.q_bias if self.bias else None)
        k = self._proj(x, self.k, self.k_bias if self.bias else None)
        v = self._proj(x, self.v, self.v_bias if self.bias else None)
        cos, sin = rope_tables(positions, self.head_dim, self.rope_theta)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        b, t = x.shape[:2]
        groups = self.heads // self.kv_heads
        qg = q.reshape(b, t, self.kv_heads, groups, self.head_dim)
        pool_k, pool_v = cache
        if isinstance(pages, tuple):
            pre, dec = pages
            r, nd = pre.shape[0], dec.shape[0]
            c = (t - nd) // r
            split = lambda a: (a[0, : r * c].reshape(r, c, *a.shape[2:]),  # noqa: E731
                               a[0, r * c:].reshape(nd, 1, *a.shape[2:]))
            parts = list(zip((pre, dec), split(qg), split(k), split(v), split(positions)))
        else:
            parts = [(pages, qg, k, v, positions)]
        for tables, _, kp, vp, pos in parts:
            pool_k, pool_v = write_pages(pool_k, kp, tables, pos), write_pages(pool_v, vp, tables, pos)
        outs = []
        for tables, qp, _, _, pos in parts:
            rows, steps = pos.shape
            if steps == 1:
                out = paged_decode_attention(qp[:, 0], pool_k, pool_v, tables, pos[:, 0], self.dtype)
            else:
                vk, vv = gather_pages(pool_k, tables), gather_pages(pool_v, tables)
                out = prefill_attention(qp, vk, vv, jnp.arange(rows), pos, self.dtype)
            outs.append(out.reshape(rows * steps, self.heads * self.head_dim))
        out = jnp.concatenate(outs).reshape(b, t, -1)
        wo = self.o[...].astype(self.dtype)
        out = out @ wo.reshape(-1, wo.shape[-1])
        return out, (pool_k, pool_v)


def write_pages(pool: Array, new: Array, pages: Array, positions: Array) -> Array:
    """Writes `new [B, T, K, Dh]` at `positions [B, T]` through the page
    tables `pages [B, M]` into `pool [K, P, ps, Dh]`; positions past the
    table (padding) are dropped."""
    _, num_pages, ps, _ = pool.shape
    width = pages.shape[1]
    slot = positions // ps
    page = jnp.take_along_axis(pages, jnp.clip(slot, 0, width - 1), axis=1)
    page = jnp.where((positions >= 0) & (slot < width), page, num_pages)  # out of range: dropped
    rows = jnp.transpose(new, (2, 0, 1, 3)).astype(pool.dtype)  # [K, B, T, Dh]
    return pool.at[:, page, positions % ps].set(rows, mode="drop")


PREFILL_KEY_BLOCK = 128


def prefill_attention(q: Array, ck: Array, cv: Array, slots: Array, positions: Array, dtype,
                      block: int = PREFILL_KEY_BLOCK) -> Array:
    """Causal attention of chunk queries over their slots' cache rows.

    q `[R, T, K, G, Dh]`; ck/cv `[N, K, S, Dh]` (already holding this chunk's
    keys); slots `[R]`; positions `[R, T]` (`>= S`: padding). Keys are read
    in blocks of `block` rows up to the largest real position of the call (a
    `while` loop with a data-dependent trip count, online softmax), so a
    chunk reads only the filled part of the cache whatever its bucket:
    no compile per key length, no work on the empty tail. -> `[R, T, K, G, Dh]`.
    """
    r, t, kh, g, dh = q.shape
    s = ck.shape[2]
    blk = block if s % block == 0 else s
    valid = positions < s
    end = jnp.max(jnp.where(valid, positions, -1)) + 1
    nblk = (end + blk - 1) // blk
    qh = jnp.transpose(q, (0, 2, 1, 3, 4)).reshape(r, kh, t * g, dh)
    qh = (qh * jnp.asarray(dh ** -0.5, qh.dtype)).astype(dtype)
    qpos = jnp.repeat(jnp.where(valid, positions, s), g, axis=1)[:, None, :, None]  # [R, 1, TG, 1]

    def rows(cache, start):
        one = lambda slot: jax.lax.dynamic_slice(cache, (slot, 0, start, 0), (1, kh, blk, dh))[0]  # noqa: E731
        return jax.vmap(one)(slots).astype(dtype)  # [R, K, blk, Dh]

    def body(i, carry):
        start = i * blk
        kb, vb = rows(ck, start), rows(cv, start)
        sc = jnp.einsum("rkqh,rksh->rkqs", qh, kb, preferred_element_type=jnp.float32)
        mask = (start + jnp.arange(blk))[None, None, None, :] <= qpos
        return online_softmax_block(carry, sc, mask, vb, dtype)

    out = online_softmax(nblk, body, (r, kh, t * g), dh, dtype).reshape(r, kh, t, g, dh)
    return jnp.transpose(out, (0, 2, 1, 3, 4))


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, *, hidden: int, inner: int, param_dtype, dtype, rngs: nnx.Rngs):
        self.dtype = dtype
        self.gate = _param(rngs, (hidden, inner), ("embed", "mlp"), param_dtype)
        self.up = _param(rngs, (hidden, inner), ("embed", "mlp"), param_dtype)
        self.down = _param(rngs, (inner, hidden), ("mlp", "embed"), param_dtype)

    def __call__(self, x: Array) -> Array:
        g = x @ self.gate[...].astype(self.dtype)
        u = x @ self.up[...].astype(self.dtype)
        h = constrain(jax.nn.silu(g) * u, ("activation_batch", "activation_length", "activation_mlp"))
        return h @ self.down[...].astype(self.dtype)


class Block(nnx.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        pd, cd = cfg.param_dtype, cfg.dtype
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=pd, rngs=rngs)
        self.attn = Attention(hidden=cfg.hidden_size, heads=cfg.num_heads, kv_heads=cfg.num_kv_heads,
                              head_dim=cfg.head_dim, bias=cfg.attention_bias,
                              rope_theta=cfg.rope_theta, param_dtype=pd, dtype=cd, rngs=rngs)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=pd, rngs=rngs)
        self.mlp = MLP(hidden=cfg.hidden_size, inner=cfg.intermediate_size, param_dtype=pd,
                       dtype=cd, rngs=rngs)

    def __call__(self, x, positions, cache=None, segment_ids=None, slots=None, pages=None):
        h, new_cache = self.attn(self.attn_norm(x), positions, cache, segment_ids, slots, pages)
        x = x + h
        x = x + self.mlp(self.mlp_norm(x))
        return constrain(x, ("activation_batch", "activation_length", "activation_embed")), new_cache
