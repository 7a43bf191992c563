"""The paged KV layout of the engine (issue 24, `engine.kv_layout=paged`).

Every layer's cache is a pool of pages `[K, P, page_size, Dh]` (heads first:
the layout of jax's paged-attention kernels, so no step transposes the pool); slot s reads
and writes position p in page `table[s, p // page_size]`. The host owns the
page tables and a reference count per page (`PagePool`): a node's n
candidates point at their prompt's full pages (one reference each) and get
a private copy only of the partly filled last page (copy-on-write: the only
KV a clone moves); the prefix cache (`PagePrefixCache`) holds references to
pages instead of copies. Memory is bounded by the pool, not by
slots x max_seq_len, so a search with short steps fits many more live
sequences in the same bytes.

Page 0 is the null page: never handed out, the target of every table entry
past a slot's pages and of every row of an unarmed slot in a decode call, so
an idle or half-prefilled slot's decode writes land there and nowhere else.
A page is written only by the slot that allocated it (shared pages are full
and past their writer's prefill; a partial page a cache entry or a later
wave pins is only ever written past the rows they read).

The decode and prefill run the dense engine's attention over each row's
pages gathered into its dense layout of the same length (`gather_pages`), so
tokens are bit-identical to the dense engine's; `page_size` must therefore
divide every cache bucket.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rstar_jax.inference.core import PAD_POSITION, DecodeCore, bucket, warmup_timer
from rstar_jax.inference.types import SamplingParams
from rstar_jax.models import decode_attention as attention_paths
from rstar_jax.models.decode_attention import paths_used


class PoolFullError(RuntimeError):
    """The explicit API asked for pages the pool does not have."""


class PagePool:
    """Host-side reference counts of the device page pool (page 0 is null)."""

    def __init__(self, num_pages: int):
        if num_pages < 2:
            raise ValueError(f"a page pool needs at least 2 pages (one is the null page), got {num_pages}")
        self.num_pages = num_pages
        self.refs = np.zeros(num_pages, np.int32)
        self._free = list(range(num_pages - 1, 0, -1))  # pop() hands out low ids first

    @property
    def free(self) -> int:
        return len(self._free)

    @property
    def used(self) -> int:
        return self.num_pages - 1 - len(self._free)

    def alloc(self, n: int) -> Optional[List[int]]:
        """`n` fresh pages with one reference each, or None (nothing taken)."""
        if n > len(self._free):
            return None
        out = [self._free.pop() for _ in range(n)]
        self.refs[out] = 1
        return out

    def incref(self, pages: Sequence[int]) -> None:
        for p in pages:
            if p <= 0 or self.refs[p] <= 0:
                raise AssertionError(f"reference to unowned page {p}")
            self.refs[p] += 1

    def release(self, pages: Sequence[int]) -> None:
        for p in pages:
            if p <= 0 or self.refs[p] <= 0:
                raise AssertionError(f"release of unowned page {p}")
            self.refs[p] -= 1
            if not self.refs[p]:
                self._free.append(p)


def check_page_size(page_size: int, buckets: Sequence[int], max_seq_len: int) -> None:
    """Every cache length must be whole pages (see the module doc)."""
    lengths = sorted({b for b in buckets if b < max_seq_len} | {max_seq_len})
    bad = [b for b in lengths if b % page_size]
    if bad:
        raise ValueError(f"engine.page_size={page_size} must divide every prefill bucket and "
                         f"max_seq_len (cache lengths {lengths}; not {bad})")


class PagedCore(DecodeCore):
    """`DecodeCore` over a page pool; the host half (`table`, `armed`) is here,
    the allocation policy in `Engine`."""

    def __init__(self, policy, *, page_size: int, num_pages: int = 0, **kw):
        check_page_size(page_size, kw["buckets"], kw["max_seq_len"])
        self.page_size = page_size
        self.num_pages = num_pages or kw["num_slots"] * kw["max_seq_len"] // page_size + 1
        self.pool = PagePool(self.num_pages)
        self.table = np.zeros((kw["num_slots"], kw["max_seq_len"] // page_size), np.int32)
        self.armed = np.zeros(kw["num_slots"], bool)
        self.view_length = 0
        self.mixed_calls = 0  # decode calls that carried prefill rows
        super().__init__(policy, **kw)
        self.view_length = self.buckets[0]
        self._pprefill = jax.jit(self._pprefill_fn, donate_argnums=(1,))
        self._copy_pages = jax.jit(self._copy_pages_fn, donate_argnums=(0,))
        self._write_kv = jax.jit(self._write_kv_fn, donate_argnums=(0,))

    # ----- layout ---------------------------------------------------------
    @property
    def page_bytes(self) -> int:
        """Bytes of one page over all layers, keys and values."""
        a = self.arch
        return 2 * a.num_layers * a.num_kv_heads * self.page_size * a.head_dim * jnp.dtype(a.dtype).itemsize

    def _constrain_cache(self, cache):
        if self.mesh is None:
            return cache
        axes = ("cache_heads", None, None, "cache_head_dim")
        return [tuple(jax.lax.with_sharding_constraint(a, self._sharding(axes, a.shape)) for a in kv)
                for kv in cache]

    def _zeros_fn(self, *, length):
        del length  # the pool's size is fixed; the view grows on the host
        state = super()._zeros_fn(length=self.page_size)
        a = self.arch
        shape = (a.num_kv_heads, self.num_pages, self.page_size, a.head_dim)
        pool = [(jnp.zeros(shape, a.dtype), jnp.zeros(shape, a.dtype)) for _ in range(a.num_layers)]
        return {**state, "cache": self._constrain_cache(pool)}

    def reset(self) -> None:
        """Shrinks the view to the smallest bucket; the pool (and the prefix
        cache's pages in it) stays."""
        self.view_length = self.buckets[0]

    @property
    def cache_length(self) -> int:
        return self.view_length

    def ensure_cache_length(self, needed: int) -> None:
        """Widens every table view to the bucket holding `needed` positions (no
        device work: the pool does not move)."""
        needed = min(needed, self.max_seq_len)
        if needed > self.view_length:
            self.view_length = bucket(needed, self.buckets)

    def _view(self, rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(rows[:, : self.view_length // self.page_size])

    def set_pages(self, slot: int, pages: Sequence[int]) -> None:
        self.table[slot] = 0
        self.table[slot, : len(pages)] = pages

    def planned_attention(self) -> str:
        a = self.arch
        q = (self.num_slots, a.num_kv_heads, a.num_heads // a.num_kv_heads, a.head_dim)
        with self._ctx():
            return attention_paths.planned_path(
                q, a.dtype, pool_shape=(a.num_kv_heads, self.num_pages, self.page_size, a.head_dim),
                pages_shape=self.table.shape)

    # ----- device calls ---------------------------------------------------
    def prefill_arrays(self, rows, *, num_rows: Optional[int] = None,
                       chunk: Optional[int] = None) -> tuple:
        """(tokens, positions, page tables) of a prefill call over `rows`
        ((slot, ids, start) each), padded to the bucketed shape."""
        longest = max((len(ids) for _, ids, _ in rows), default=1)
        c = chunk or bucket(longest, self.chunk_lengths)
        r = num_rows or bucket(len(rows), self.row_buckets[c])
        tokens = np.zeros((r, c), np.int32)
        positions = np.full((r, c), PAD_POSITION, np.int32)
        tables = np.zeros((r, self.table.shape[1]), np.int32)
        for k, (slot, ids, start) in enumerate(rows):
            tokens[k, : len(ids)] = ids
            positions[k, : len(ids)] = start + np.arange(len(ids))
            tables[k] = self.table[slot]
        return tokens, positions, self._view(tables)

    def prefill_rows(self, rows, *, num_rows: Optional[int] = None,
                     chunk: Optional[int] = None) -> None:
        """As `DecodeCore.prefill_rows`, through each slot's page table."""
        arrays = self.prefill_arrays(rows, num_rows=num_rows, chunk=chunk)
        with self._ctx():
            self.state = self._pprefill(self.params, self.state, *arrays)

    def _pprefill_fn(self, params, state, tokens, positions, tables):
        policy = nnx.merge(self.graphdef, params)
        _, cache = policy.model(tokens, positions, cache=state["cache"], pages=tables)
        return {**state, "cache": self._constrain_cache([tuple(kv) for kv in cache])}

    def copy_pages(self, pairs) -> None:
        """Copies page `src` to page `dst` for each (src, dst), `num_slots` pairs a call."""
        n = self.num_slots
        for at in range(0, len(pairs), n):
            part = pairs[at: at + n]
            src, dst = np.zeros(n, np.int32), np.full(n, self.num_pages, np.int32)
            for k, (a, b) in enumerate(part):
                src[k], dst[k] = a, b
            self.copied_bytes += len(part) * self.page_bytes
            with self._ctx():
                self.state = self._copy_pages(self.state, src, dst)

    def _copy_pages_fn(self, state, src, dst):
        cache = [tuple(buf.at[:, dst].set(jnp.take(buf, src, axis=1, mode="clip"), mode="drop")
                       for buf in layer) for layer in state["cache"]]
        return {**state, "cache": self._constrain_cache(cache)}

    def write_kv(self, kv, pages: Sequence[int]) -> None:
        """Writes a `Prefill.kv` (`[1, K, L, Dh]` per layer, L whole pages) into
        `pages` (the explicit API's `insert`)."""
        width = int(kv[0][0].shape[2]) // self.page_size
        ids = np.zeros(width, np.int32)
        ids[: min(width, len(pages))] = pages[:width]
        self.copied_bytes += width * self.page_bytes
        with self._ctx():
            self.state = self._write_kv(self.state, kv, ids)

    def _write_kv_fn(self, state, kv, ids):
        a, ps = self.arch, self.page_size
        cache = []
        for layer, pl in zip(state["cache"], kv):
            pair = []
            for buf, p in zip(layer, pl):
                rows = p[0].reshape(a.num_kv_heads, -1, ps, a.head_dim)
                pair.append(buf.at[:, ids].set(rows.astype(buf.dtype), mode="drop"))
            cache.append(tuple(pair))
        return {**state, "cache": self._constrain_cache(cache)}

    def arm(self, entries) -> None:
        super().arm(entries)
        for slot, _ in entries:
            self.armed[slot] = True

    def insert(self, kv, slot: int, **kw) -> None:
        """Arms `slot` (its pages must already hold the prompt: `write_kv`)."""
        del kv
        super().insert(None, slot, **kw)
        self.armed[slot] = True

    def free(self, slot: int) -> None:
        self.armed[slot] = False
        super().free(slot)

    def decode(self, tables, prefill=None, **kw) -> jax.Array:
        """As `DecodeCore.decode`; unarmed slots read and write the null page.
        `prefill`: rows ((slot, ids, start) each) of prefill chunks to run in
        the first step's forward pass (a mixed call; `prefill_arrays`'s
        `num_rows` / `chunk` in `kw`)."""
        pages = self._view(np.where(self.armed[:, None], self.table, 0))
        extra = None if prefill is None else self.prefill_arrays(prefill, **kw)
        self.mixed_calls += extra is not None
        with self._ctx():
            self.state, packed = self._decode(self.params, self.state, tables, pages, extra,
                                              path=attention_paths.forced_path())
        packed.copy_to_host_async()
        return packed

    def _decode_now(self, tables, prefill=None, **kw) -> np.ndarray:
        return np.asarray(self.decode(tables, prefill, **kw))

    def warmup(self, tables, max_len: Optional[int] = None, mixed: bool = False) -> dict:
        """Compiles every shape `Engine.generate` meets up to `max_len` (see
        `DecodeCore.warmup`): per view length every prefill shape and the
        decode (with `mixed`, also the decode carrying each prefill shape);
        the page copy and arming once. Touches only the null page."""
        lengths = [b for b in self.buckets if b <= (max_len or self.max_seq_len)]
        params = SamplingParams(max_new_tokens=1, temperature=0.0)
        report: dict = {}

        timed = warmup_timer(report, lambda: self.state)

        busy = [s for s in range(self.num_slots) if self.armed[s]]
        if busy:
            raise RuntimeError(f"warmup with armed slots {busy}")
        copied = self.copied_bytes
        timed("copy", self.copy_pages, [(0, 0)])
        timed("arm", self.arm, [(0, dict(token=0, pos=0, max_new=1, stop_mask=0, params=params,
                                         candidate=0))])
        self.free(0)
        saved = self.table.copy()
        self.table[:] = 0
        for size in lengths:
            self.view_length = size
            for c in self.chunk_lengths:
                for r in self.row_buckets[c] if c <= size else ():
                    timed("prefill", self.prefill_rows, [], num_rows=r, chunk=c)
                    if mixed:
                        timed("mixed", self._decode_now, tables, [], num_rows=r, chunk=c)
            timed("decode", lambda: np.asarray(self.decode(tables)))
        self.table[:] = saved
        self.copied_bytes = copied
        self.reset()
        out = {k: {"shapes": n, "seconds": round(t, 3)} for k, (n, t) in report.items()}
        out["total_seconds"] = round(sum(t for _, t in report.values()), 3)
        out["decode_attention"] = paths_used(self.attention_used)
        return out
