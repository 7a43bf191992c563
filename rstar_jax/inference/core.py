"""The device half of the engine: fixed slots, bucketed prefill, on-device stops.

`generate`'s path (issue 17): `prefill_rows` writes many prompts' chunks
straight into their decode slots in one call (rows x chunk bucketed, padding
writes nothing); `copy_slots` clones a prefilled slot into the slots of the
prompt's other candidates; `arm` starts many slots in one call; `extract` /
`seed_slot` move a slot's KV to and from the prefix cache.

Explicit one-prompt API (kept for callers that schedule slots themselves):
  * `prefill(token_ids) -> Prefill`: the KV of a prompt's context (all but its
    last token), with the context padded to a `prefill_buckets` length so
    prefills compile once per bucket; reuses the KV of a cached prompt that
    shares its prefix (`PrefixCache`).
  * `insert(prefill, slot, params, candidate)`: copies that KV into a slot;
    inserting one prefill into n slots is how the n candidates of a search
    node share one prefill (`clone`).
  * `decode() -> np.ndarray`: `decode_steps_per_call` steps for every slot in
    one jitted call (a `fori_loop`), on a donated decode state; the tokens,
    log-probs and end codes of all steps come back in one packed array.
  * `free(slot)`.

A slot's first decode step feeds the prompt's last token, so prefill needs
no logits and every generated token comes out of the same sampling code.

Shapes: N slots, S decode cache length (grows through the cache buckets as
slots get longer, so attention reads a bounded multiple of the used length),
K kv heads, Dh head dim, V vocabulary, T steps per call.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rstar_jax.inference import stops as stops_lib
from rstar_jax.inference.sampling import sample, slot_uniforms
from rstar_jax.inference.types import SamplingParams
from rstar_jax.models import decode_attention as attention_paths
from rstar_jax.models.decode_attention import paths_used

log = logging.getLogger(__name__)

# End codes in the packed output: 0 no token (slot idle), 1 a token, and the
# token that ended the slot: 2 stop string, 3 eos, 4 length.
IDLE, TOKEN, STOP, EOS, LENGTH = 0, 1, 2, 3, 4
_MAX_EOS = 4
# Position of a padding token in a batched prefill: past any cache, so its
# key/value write is dropped and no query treats it as real.
PAD_POSITION = 1 << 30


@dataclasses.dataclass
class Prefill:
    """A prompt's context KV, ready to insert into slots.

    `kv` is a list per layer of (k, v) `[1, K, length, Dh]` (None when the
    context is empty), valid for positions `[0, num_tokens - 1)`; the last
    prompt token is fed by the first decode step.
    """

    token_ids: tuple
    kv: Optional[list]

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def length(self) -> int:
        return 0 if self.kv is None else int(self.kv[0][0].shape[2])


def bucket(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= n."""
    for b in buckets:
        if b >= n:
            return b
    raise ValueError(f"length {n} exceeds the largest bucket {buckets[-1]}")


def warmup_timer(report: dict, state):
    """`timed(kind, fn, *args)` for warmups: calls `fn`, waits for its result
    (or for `state()` when it returns None: calls that update the engine's
    state in place) and adds one call and its seconds to `report[kind]`."""
    import time

    def timed(kind, fn, *args, **kw):
        t = time.perf_counter()
        out = fn(*args, **kw)
        jax.block_until_ready(state() if out is None else out)
        n, secs = report.get(kind, (0, 0.0))
        report[kind] = (n + 1, secs + time.perf_counter() - t)
        return out

    return timed


def _layer_caches(cache):
    return [tuple(kv) for kv in cache]


class DecodeCore:
    """The jitted device functions and the donated decode state.

    Host bookkeeping (which request owns which slot) lives in `Engine`; this
    class only moves arrays. With a mesh, parameters follow the inference
    rules (`sharding_context` around tracing, weights without fsdp) and the
    KV cache is sharded over slots ('cache_batch') and heads ('cache_heads').
    """

    def __init__(self, policy, *, num_slots: int, max_seq_len: int, buckets: Sequence[int],
                 steps_per_call: int, mesh=None, rules=None, prefill_tokens: int = 2048,
                 prefill_chunk: int = 512, prefill_rows: Optional[Sequence[int]] = None):
        self.arch = policy.arch
        self.num_slots, self.max_seq_len = num_slots, max_seq_len
        self.buckets = sorted({b for b in buckets if b < max_seq_len} | {max_seq_len})
        self.steps = steps_per_call
        # Batched prefill shapes: chunk lengths are the buckets up to
        # `prefill_chunk`; rows per call are powers of two up to the token budget.
        self.chunk_lengths = [b for b in self.buckets if b <= prefill_chunk] or self.buckets[:1]
        self.row_buckets = {}
        for c in self.chunk_lengths:
            most = min(num_slots, max(1, prefill_tokens // c))
            self.row_buckets[c] = (power_of_two_rows(most) if prefill_rows is None
                                   else sorted({r for r in prefill_rows if 0 < r < most} | {most}))
        self.mesh, self.rules = mesh, dict(rules or {})
        self.copied_bytes = 0  # KV bytes moved between slots / into slots (benchmarks)
        self.attention_used: dict = {}  # the decode attention paths this core traced
        self.graphdef, params = nnx.split(policy)
        self.params = self._place_params(params)
        self._empty = jax.jit(self._empty_fn, static_argnames=("length",))
        self._seed = jax.jit(self._seed_fn, static_argnames=("length",))
        self._chunk = jax.jit(self._chunk_fn, donate_argnums=(1,))
        self._insert = jax.jit(self._insert_fn, donate_argnums=(0,))
        # A forced attention path is part of the key: forcing another one retraces.
        self._decode = jax.jit(self._decode_fn, donate_argnums=(1,), static_argnames=("path",))
        self._grow = jax.jit(self._grow_fn, static_argnames=("length",))  # pad cannot alias
        self._zeros = jax.jit(self._zeros_fn, static_argnames=("length",))
        self._free = jax.jit(self._free_fn, donate_argnums=(0,))
        self._prefill = jax.jit(self._prefill_fn, donate_argnums=(1,))
        self._arm = jax.jit(self._arm_fn, donate_argnums=(0,))
        self._copy = jax.jit(self._copy_fn, donate_argnums=(0,))
        self._extract = jax.jit(self._extract_fn, static_argnames=("length",))
        self._seed_slot = jax.jit(self._seed_slot_fn, donate_argnums=(0,))
        self.state = self._init_state(self.buckets[0])

    # ----- sharding -------------------------------------------------------
    def _ctx(self):
        """Around every device call: the mesh's sharding rules, and this core's
        record of the attention paths its traces take."""
        import contextlib

        from rstar_jax.models.sharding import sharding_context

        stack = contextlib.ExitStack()
        if self.mesh is not None:
            stack.enter_context(sharding_context(self.mesh, self.rules))
        stack.enter_context(attention_paths.recording(self.attention_used))
        return stack

    def _sharding(self, axes, shape):
        from jax.sharding import NamedSharding

        from rstar_jax.models.sharding import logical_to_spec

        return NamedSharding(self.mesh, logical_to_spec(axes, shape, self.mesh, self.rules))

    def _place_params(self, params):
        if self.mesh is None:
            return params

        def put(var):
            axes = getattr(var, "logical_axes", None) or (None,) * var[...].ndim
            return var.replace(jax.device_put(var[...], self._sharding(axes, var[...].shape)))

        return jax.tree.map(put, params, is_leaf=lambda x: isinstance(x, nnx.Variable))

    def _constrain_cache(self, cache):
        if self.mesh is None:
            return cache
        axes = ("cache_batch", "cache_heads", "cache_length", "cache_head_dim")
        return [tuple(jax.lax.with_sharding_constraint(a, self._sharding(axes, a.shape)) for a in kv)
                for kv in cache]

    def planned_attention(self) -> str:
        """The decode attention path this core's steps take here (at the
        largest cache length), for the log line each engine writes at start."""
        a = self.arch
        q = (self.num_slots, a.num_kv_heads, a.num_heads // a.num_kv_heads, a.head_dim)
        with self._ctx():
            return attention_paths.planned_path(
                q, a.dtype, cache_shape=(self.num_slots, a.num_kv_heads, self.max_seq_len, a.head_dim))

    def attention_paths_used(self) -> dict:
        """`{path: [shapes]}` this core's decode steps traced (not the process's)."""
        return paths_used(self.attention_used)

    # ----- state ----------------------------------------------------------
    def _init_state(self, length: int) -> dict:
        """A fresh decode state with every slot idle and a cache of `length`."""
        with self._ctx():
            return self._zeros(length=length)

    def _zeros_fn(self, *, length):
        n, a = self.num_slots, self.arch
        shape = (n, a.num_kv_heads, length, a.head_dim)
        zeros = lambda dt: jnp.zeros((n,), dt)  # noqa: E731
        cache = [(jnp.zeros(shape, a.dtype), jnp.zeros(shape, a.dtype)) for _ in range(a.num_layers)]
        return dict(
            cache=self._constrain_cache(cache), token=zeros(jnp.int32), pos=zeros(jnp.int32),
            count=zeros(jnp.int32), max_new=zeros(jnp.int32), active=zeros(jnp.bool_),
            stop_state=zeros(jnp.int32), stop_mask=zeros(jnp.int32),
            temperature=zeros(jnp.float32), top_p=jnp.ones((n,), jnp.float32),
            top_k=zeros(jnp.int32), seed=zeros(jnp.int32), candidate=zeros(jnp.int32))

    def reset(self) -> None:
        """Idles every slot and shrinks the cache to the smallest bucket."""
        self.state = self._init_state(self.buckets[0])

    @property
    def cache_length(self) -> int:
        return int(self.state["cache"][0][0].shape[2])

    def ensure_cache_length(self, needed: int) -> None:
        """Grows the decode cache to the bucket holding `needed` positions, one
        bucket at a time (so the set of compiled grows is fixed: `warmup`)."""
        needed = min(needed, self.max_seq_len)
        while needed > self.cache_length:
            nxt = bucket(self.cache_length + 1, self.buckets)
            with self._ctx():
                self.state = self._grow(self.state, length=nxt)

    def warmup(self, tables, max_len: Optional[int] = None) -> dict:
        """Compiles every shape `Engine.generate` can meet up to `max_len`
        (default: all) and returns what it compiled: per kind of call, the
        number of shapes and the seconds spent (compiles dominate).

        Per decode cache length S: every batched-prefill shape (rows, chunk)
        with chunk <= S, the slot copy, arming, and decode; seeding a slot
        from a cached prompt and extracting one, per prompt bucket <= S;
        each one-bucket grow. Everything runs on idle slots (padding rows
        write nothing), then the state is reset.
        """
        lengths = [b for b in self.buckets if b <= (max_len or self.max_seq_len)]
        params = SamplingParams(max_new_tokens=1, temperature=0.0)
        report: dict = {}

        timed = warmup_timer(report, lambda: self.state)

        arm = (0, dict(token=0, pos=0, max_new=1, stop_mask=0, params=params, candidate=0))
        self.reset()
        for size in lengths:
            timed("grow", self.ensure_cache_length, size)
            for c in self.chunk_lengths:
                for r in self.row_buckets[c] if c <= size else ():
                    timed("prefill", self.prefill_rows, [], num_rows=r, chunk=c)
            for length in lengths:
                if length <= size:
                    kv = timed("extract", self.extract, 0, length)
                    timed("seed", self.seed_slot, kv, 0)
            timed("copy", self.copy_slots, [(0, 1 % self.num_slots)])
            timed("arm", self.arm, [arm])
            self.free(0)
            timed("decode", lambda: np.asarray(self.decode(tables)))
        self.reset()
        out = {k: {"shapes": n, "seconds": round(t, 3)} for k, (n, t) in report.items()}
        out["total_seconds"] = round(sum(t for _, t in report.values()), 3)
        out["decode_attention"] = paths_used(self.attention_used)  # the path of each traced shape
        log.info("engine warmup: %s", out)
        return out

    def _grow_fn(self, state, *, length):
        pad = length - state["cache"][0][0].shape[2]
        widths = ((0, 0), (0, 0), (0, pad), (0, 0))
        cache = [tuple(jnp.pad(a, widths) for a in kv) for kv in state["cache"]]
        return {**state, "cache": self._constrain_cache(cache)}

    # ----- prefill --------------------------------------------------------
    def prefill_kv(self, ctx: np.ndarray, start: int, prefix_kv, length: int):
        """KV `[1, K, length, Dh]` per layer of the context `ctx` (`[c]` ids).

        Rows `[0, start)` come from `prefix_kv` (a cached prompt sharing them);
        the rest is computed in chunks of `buckets[0]` tokens, so prefill
        compiles once per cache length whatever the prompt and prefix lengths
        (padding in the last chunk writes rows no query ever reads).
        """
        chunk = self.buckets[0]
        with self._ctx():
            if prefix_kv is None:
                cache = self._empty(length=length)
            else:
                cache = self._seed(prefix_kv, length=length)
            for s in range(start, len(ctx), chunk):
                toks = np.zeros((1, chunk), np.int32)
                piece = ctx[s:s + chunk]
                toks[0, : len(piece)] = piece
                cache = self._chunk(self.params, cache, jnp.asarray(toks), jnp.int32(s))
        return cache

    def _empty_fn(self, *, length):
        a = self.arch
        shape = (1, a.num_kv_heads, length, a.head_dim)
        return [(jnp.zeros(shape, a.dtype), jnp.zeros(shape, a.dtype)) for _ in range(a.num_layers)]

    def _seed_fn(self, prefix_kv, *, length):
        """A copy of a cached prompt's KV, padded to `length` rows (never aliased:
        the cached entry must survive the chunks that follow)."""
        cache = self._empty_fn(length=length)
        return [tuple(jax.lax.dynamic_update_slice(buf, p[:, :, :length], (0, 0, 0, 0))
                      for buf, p in zip(layer, pl)) for layer, pl in zip(cache, prefix_kv)]

    def _chunk_fn(self, params, cache, tokens, start):
        policy = nnx.merge(self.graphdef, params)
        positions = start + jnp.arange(tokens.shape[1], dtype=jnp.int32)[None]
        _, cache = policy.model(tokens, positions, cache=cache)
        return _layer_caches(cache)

    # ----- batched prefill straight into slots ------------------------------
    def prefill_rows(self, rows, *, num_rows: Optional[int] = None,
                     chunk: Optional[int] = None) -> None:
        """One device call writing each row's tokens into its slot's cache.

        `rows`: (slot, token ids `[n]`, start position) with distinct slots
        and `n <= max(chunk_lengths)`; rows `[0, start)` of each slot must
        already hold that prompt's KV. Rows are padded to a chunk bucket and
        their number to a row bucket (padding writes nothing), so the call
        compiles once per (rows, chunk, cache length).
        """
        longest = max((len(ids) for _, ids, _ in rows), default=1)
        c = chunk or bucket(longest, self.chunk_lengths)
        r = num_rows or bucket(len(rows), self.row_buckets[c])
        tokens = np.zeros((r, c), np.int32)
        positions = np.full((r, c), PAD_POSITION, np.int32)
        slots = np.full((r,), self.num_slots, np.int32)
        for k, (slot, ids, start) in enumerate(rows):
            tokens[k, : len(ids)] = ids
            positions[k, : len(ids)] = start + np.arange(len(ids))
            slots[k] = slot
        with self._ctx():
            self.state = self._prefill(self.params, self.state, tokens, slots, positions)

    def _prefill_fn(self, params, state, tokens, slots, positions):
        policy = nnx.merge(self.graphdef, params)
        # The hidden states are dead (only the cache is returned): XLA drops the
        # last layer's MLP and the final norm.
        _, cache = policy.model(tokens, positions, cache=state["cache"], slots=slots)
        return {**state, "cache": self._constrain_cache(_layer_caches(cache))}

    def arm(self, entries) -> None:
        """Arms many slots in one call: entries (slot, dict(token, pos, max_new,
        stop_mask, params, candidate)); the slots' KV must be in place."""
        n = self.num_slots
        cols = {k: np.zeros(n, dt) for k, dt in (("token", np.int32), ("pos", np.int32),
                                                  ("max_new", np.int32), ("stop_mask", np.int32),
                                                  ("temperature", np.float32), ("top_p", np.float32),
                                                  ("top_k", np.int32), ("seed", np.int32),
                                                  ("candidate", np.int32))}
        slots = np.full(n, n, np.int32)
        for k, (slot, e) in enumerate(entries):
            p = e["params"]
            slots[k] = slot
            for name in ("token", "pos", "max_new", "stop_mask", "candidate"):
                cols[name][k] = e[name]
            cols["temperature"][k] = p.temperature
            cols["top_p"][k] = p.top_p
            cols["top_k"][k] = p.top_k
            cols["seed"][k] = int(p.seed) & 0x7FFFFFFF
        with self._ctx():
            self.state = self._arm(self.state, slots, cols)

    def _arm_fn(self, state, slots, cols):
        state = dict(state)
        for k, v in cols.items():
            state[k] = state[k].at[slots].set(v.astype(state[k].dtype), mode="drop")
        for k, v in (("count", 0), ("stop_state", 0), ("active", True)):
            state[k] = state[k].at[slots].set(v, mode="drop")
        return state

    def copy_slots(self, pairs) -> None:
        """Copies the whole cache row of `src` into `dst` for each (src, dst):
        the n candidates of a prompt share one prefill (one call for all)."""
        n = self.num_slots
        src, dst = np.zeros(n, np.int32), np.zeros(n, np.int32)
        for k, (a, b) in enumerate(pairs):
            src[k], dst[k] = a, b
        self.copied_bytes += len(pairs) * self._row_bytes(self.cache_length)
        with self._ctx():
            self.state = self._copy(self.state, src, dst, np.int32(len(pairs)))

    def _row_bytes(self, length: int) -> int:
        """Bytes of `length` cache rows of one slot, all layers, keys and values."""
        a = self.arch
        return 2 * a.num_layers * a.num_kv_heads * length * a.head_dim * jnp.dtype(a.dtype).itemsize

    def _copy_fn(self, state, src, dst, count):
        a = self.arch

        def one(k, cache):
            out = []
            for layer in cache:
                pair = []
                for buf in layer:
                    shape = (1, a.num_kv_heads, buf.shape[2], a.head_dim)
                    row = jax.lax.dynamic_slice(buf, (src[k], 0, 0, 0), shape)
                    pair.append(jax.lax.dynamic_update_slice(buf, row, (dst[k], 0, 0, 0)))
                out.append(tuple(pair))
            return out

        cache = jax.lax.fori_loop(0, count, one, _layer_caches(state["cache"]))
        return {**state, "cache": self._constrain_cache(cache)}

    def extract(self, slot: int, length: int):
        """A copy of a slot's KV rows `[0, length)`: `[1, K, length, Dh]` per layer
        (a `Prefill.kv`, for the prefix cache or candidates placed later)."""
        self.copied_bytes += self._row_bytes(length)
        with self._ctx():
            return self._extract(self.state, jnp.int32(slot), length=length)

    def _extract_fn(self, state, slot, *, length):
        a = self.arch
        shape = (1, a.num_kv_heads, length, a.head_dim)
        return [tuple(jax.lax.dynamic_slice(buf, (slot, 0, 0, 0), shape) for buf in layer)
                for layer in state["cache"]]

    def seed_slot(self, kv, slot: int) -> None:
        """Copies a `Prefill.kv` into a slot's first rows (a prefix-cache hit)."""
        self.copied_bytes += self._row_bytes(int(kv[0][0].shape[2]))
        with self._ctx():
            self.state = self._seed_slot(self.state, kv, jnp.int32(slot))

    def _seed_slot_fn(self, state, kv, slot):
        cache = [tuple(jax.lax.dynamic_update_slice(buf, p.astype(buf.dtype), (slot, 0, 0, 0))
                       for buf, p in zip(layer, pl)) for layer, pl in zip(state["cache"], kv)]
        return {**state, "cache": self._constrain_cache(cache)}

    # ----- slots ----------------------------------------------------------
    def insert(self, kv, slot: int, *, token: int, pos: int, max_new: int, stop_mask: int,
               params: SamplingParams, candidate: int) -> None:
        """Puts a prefill's KV into `slot` and arms it to decode from `token` at `pos`."""
        scalars = dict(token=token, pos=pos, max_new=max_new, stop_mask=stop_mask,
                       temperature=float(params.temperature), top_p=float(params.top_p),
                       top_k=int(params.top_k), seed=int(params.seed) & 0x7FFFFFFF,
                       candidate=candidate)
        if kv is not None:
            self.copied_bytes += self._row_bytes(int(kv[0][0].shape[2]))
        with self._ctx():
            self.state = self._insert(self.state, kv, jnp.int32(slot),
                                      {k: jnp.asarray(v) for k, v in scalars.items()})

    def _insert_fn(self, state, kv, slot, scalars):
        state = dict(state)
        if kv is not None:
            cache = []
            for (ck, cv), (pk, pv) in zip(state["cache"], kv):
                cache.append((jax.lax.dynamic_update_slice(ck, pk.astype(ck.dtype), (slot, 0, 0, 0)),
                              jax.lax.dynamic_update_slice(cv, pv.astype(cv.dtype), (slot, 0, 0, 0))))
            state["cache"] = self._constrain_cache(cache)
        for k, v in scalars.items():
            state[k] = state[k].at[slot].set(v.astype(state[k].dtype))
        state["count"] = state["count"].at[slot].set(0)
        state["stop_state"] = state["stop_state"].at[slot].set(0)
        state["active"] = state["active"].at[slot].set(True)
        return state

    def free(self, slot: int) -> None:
        with self._ctx():
            self.state = self._free(self.state, jnp.int32(slot))

    def _free_fn(self, state, slot):
        return {**state, "active": state["active"].at[slot].set(False)}

    # ----- decode ---------------------------------------------------------
    def decode(self, tables) -> jax.Array:
        """Runs `steps` decode steps; returns packed `[N, T, 3]` float32 (token,
        log-prob, end code) still on device, its host copy already started."""
        with self._ctx():
            self.state, packed = self._decode(self.params, self.state, tables,
                                              path=attention_paths.forced_path())
        packed.copy_to_host_async()
        return packed

    def _decode_fn(self, params, state, tables, pages=None, prefill=None, *, path=None):
        """`steps` decode steps. `prefill` (paged layout): (tokens `[R, C]`,
        positions `[R, C]`, page tables `[R, M]`) of prefill chunks that run
        in the first step's forward pass, beside the decode rows."""
        del path  # only the jit key: the trace reads the forced path itself
        next_state, match_bits, eos_ids = tables
        policy = nnx.merge(self.graphdef, params)
        n, steps = self.num_slots, self.steps
        out0 = jnp.zeros((n, steps, 3), jnp.float32)
        # A slot live at step t has drawn t tokens this call (arming happens
        # between calls), so its t-th draw is the one for count + t; rows of
        # idle slots are never used.
        draws = slot_uniforms(state["seed"], state["candidate"], state["count"], steps)

        def forward(st, mixed):
            if not mixed:
                logits, cache = policy(st["token"][:, None], st["pos"][:, None], cache=st["cache"],
                                       pages=pages)
                return logits[:, 0], cache
            tokens, positions, ptables = prefill
            flat = lambda a, b: jnp.concatenate([a.reshape(-1), b])[None]  # noqa: E731
            h, cache = policy.model(flat(tokens, st["token"]), flat(positions, st["pos"]),
                                    cache=st["cache"], pages=(ptables, pages))
            return policy.logits_from_hidden(h[0, tokens.size:, None])[:, 0], cache

        def step(t, carry, mixed=False):
            st, out = carry
            logits, cache = forward(st, mixed)
            tok, lp = sample(logits, None, st["temperature"], st["top_k"], st["top_p"],
                             uniforms=draws[t])
            run = st["active"]
            hit = (match_bits[st["stop_state"], tok] & st["stop_mask"]) != 0
            eos = jnp.any(tok[:, None] == eos_ids[None, :], axis=-1)
            count = st["count"] + run
            length = (count >= st["max_new"]) | (st["pos"] + 2 >= self.max_seq_len)
            code = jnp.where(hit, STOP, jnp.where(eos, EOS, jnp.where(length, LENGTH, TOKEN)))
            code = jnp.where(run, code, IDLE)
            row = jnp.stack([tok.astype(jnp.float32), lp, code.astype(jnp.float32)], -1)
            out = out.at[:, t].set(row)
            st = {**st, "cache": self._constrain_cache(_layer_caches(cache)),
                  "token": jnp.where(run, tok, st["token"]),
                  "pos": st["pos"] + (run & (code == TOKEN)),
                  "count": count,
                  "stop_state": jnp.where(run, next_state[st["stop_state"], tok], st["stop_state"]),
                  "active": run & (code == TOKEN)}
            return st, out

        carry, first = (state, out0), 0
        if prefill is not None:
            carry, first = step(0, carry, mixed=True), 1
        return jax.lax.fori_loop(first, steps, step, carry)


def power_of_two_rows(limit: int) -> List[int]:
    """`[1, 2, 4, ..., limit]`: row counts a prefill call may be padded to."""
    out, r = [], 1
    while r < limit:
        out.append(r)
        r *= 2
    return out + [limit]


def eos_array(tokenizer) -> np.ndarray:
    """The tokenizer's end-of-sequence ids, padded with -1 to a fixed length."""
    ids = []
    eos = getattr(tokenizer, "eos_token_id", None)
    for i in (eos if isinstance(eos, (list, tuple)) else [eos]):
        if i is not None and i not in ids:
            ids.append(int(i))
    ids = ids[:_MAX_EOS]
    return np.asarray(ids + [-1] * (_MAX_EOS - len(ids)), np.int32)


@functools.lru_cache(maxsize=4)
def _cached_token_texts(tokenizer_id: int, tokenizer, vocab_size: int) -> tuple:
    del tokenizer_id
    return tuple(stops_lib.token_texts(tokenizer, vocab_size))


def stop_tables_for(tokenizer, vocab_size: int, stops: List[str], num_states: int):
    texts = _cached_token_texts(id(tokenizer), tokenizer, vocab_size)
    return stops_lib.token_tables(texts, stops, num_states)


def states_needed(stops: Sequence[str]) -> int:
    """Automaton states of `stops`, rounded up to a power of two (>= 16)."""
    n = 1 + sum(len(s) for s in stops)
    size = 16
    while size < n:
        size *= 2
    return size


