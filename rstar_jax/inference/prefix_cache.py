"""A bounded LRU of prompt KV caches, looked up by longest shared token prefix.

In the search, a child's prompt is its parent's prompt plus one step, so
the KV of the parent's prompt (computed when the parent's candidates were
generated) covers most of the child's prompt. An entry holds the KV of one
prompt (`[1, K, S_bucket, Dh]` per layer, on device) and its token ids.

Any entry sharing the first `m` tokens with a new prompt can seed it: rows
`[0, m)` are exact, and rows at or past `m` are overwritten by the new
tokens before any query reads them (the decoder masks keys by position).
Because re-tokenizing `parent + step` may change the parent's last token or
two, an entry is indexed under its full length, a few lengths just below
it, and every multiple of `stride`; a lookup tries the indexed lengths
longest first, so at most `stride` reusable tokens are ever missed.
Prefix hashes are polynomial rolling hashes; a hit is verified token by
token, so a hash collision only costs a lookup.

On a CPU this per-prompt copy is the simple choice that pays: one prompt's
KV at SmolLM2 size is ~90 KiB per token, copying it is a memcpy, while paged
KV would add a gather to every attention read of every decode step.
"""

from __future__ import annotations

import collections
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

_MOD = (1 << 61) - 1
_BASE = 1_000_003


def prefix_hashes(tokens: Sequence[int]) -> list[int]:
    """`h[i]` hashes `tokens[:i]`, for i in 0..len(tokens)."""
    h = [0]
    acc = 0
    for t in tokens:
        acc = (acc * _BASE + int(t) + 1) % _MOD
        h.append(acc)
    return h


class PrefixCache:
    """LRU of (token ids -> KV) entries bounded by cached tokens."""

    def __init__(self, max_tokens: int, *, stride: int = 32, tail: int = 4, min_reuse: int = 16):
        self.max_tokens, self.min_reuse = max_tokens, min_reuse
        self.stride, self.tail = stride, tail
        self._entries: collections.OrderedDict[int, Tuple[np.ndarray, Any, int]] = (
            collections.OrderedDict())
        self._index: Dict[Tuple[int, int], int] = {}
        self._keys: Dict[int, list] = {}
        self._lengths: collections.Counter = collections.Counter()
        self._next_id = 0
        self.tokens = 0
        self.hits = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, tokens: Sequence[int]) -> Optional[Tuple[Any, int]]:
        """The entry sharing the longest indexed prefix with `tokens`.

        Returns (kv, m): `kv` is valid for `tokens[:m]`, `min_reuse <= m <= len(tokens)`
        (reusing a handful of tokens is not worth copying an entry).
        """
        if not self._entries:
            return None
        toks = np.asarray(tokens)
        h = prefix_hashes(toks)
        for m in sorted((m for m in self._lengths if m <= len(toks)), reverse=True):
            entry_id = self._index.get((m, h[m]))
            if entry_id is None:
                continue
            key, kv, _ = self._entries[entry_id]
            if np.array_equal(key[:m], toks[:m]):
                self._entries.move_to_end(entry_id)
                self.hits += 1
                self.reused_tokens += m
                return kv, m
        return None

    def insert(self, tokens: Sequence[int], kv: Any, cost: int) -> None:
        """Stores `kv` (valid for all of `tokens`); `cost` counts its cache rows."""
        if cost > self.max_tokens or not len(tokens):
            return
        while self.tokens + cost > self.max_tokens:
            self._evict()
        key = np.asarray(tokens)
        entry_id, self._next_id = self._next_id, self._next_id + 1
        self._entries[entry_id] = (key, kv, cost)
        self.tokens += cost
        h = prefix_hashes(key)
        n = len(key)
        lengths = set(range(max(self.min_reuse, n - self.tail), n + 1)) | set(range(self.stride, n + 1, self.stride))
        keys = []
        for m in lengths:
            self._index[(m, h[m])] = entry_id  # newest wins: it is likeliest reused
            self._lengths[m] += 1
            keys.append((m, h[m]))
        self._keys[entry_id] = keys

    def _evict(self) -> None:
        entry_id, (_, _, cost) = self._entries.popitem(last=False)
        self.tokens -= cost
        for k in self._keys.pop(entry_id):
            if self._index.get(k) == entry_id:
                del self._index[k]
            self._lengths[k[0]] -= 1
            if not self._lengths[k[0]]:
                del self._lengths[k[0]]

    def clear(self) -> None:
        self._entries.clear()
        self._index.clear()
        self._keys.clear()
        self._lengths.clear()
        self.tokens = 0


class _Node:
    __slots__ = ("id", "parent", "tokens", "page", "children")

    def __init__(self, node_id, parent, tokens, page):
        self.id, self.parent, self.tokens, self.page = node_id, parent, tokens, page
        self.children: Dict[tuple, int] = {}


class PagePrefixCache:
    """The paged layout's prefix cache: a tree over pages holding references.

    A node is one page of a cached prompt, keyed by its parent node and its
    tokens (a full page, or the partly filled last page of a prompt as a
    leaf), so the chain of full pages from the root is the exact prefix: a
    lookup walks full pages while they match, then takes the child of the
    last match sharing the longest start with the rest of the prompt as a
    partial page (the caller copies it: its later rows belong to someone
    else). Pages are shared, never copied; the cache holds one reference
    per node (`pool.incref`), and evicting a leaf (least recently used
    first) releases it. Bounded by `max_pages`; `evict_one` also frees pages
    when the pool is full.
    """

    def __init__(self, pool, page_size: int, max_pages: int):
        self.pool, self.page_size, self.max_pages = pool, page_size, max_pages
        self._nodes: collections.OrderedDict[int, _Node] = collections.OrderedDict()
        self._root: Dict[tuple, int] = {}
        self._next_id = 1
        self.hits = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def tokens(self) -> int:
        return sum(len(n.tokens) for n in self._nodes.values())

    def _children(self, parent: int) -> Dict[tuple, int]:
        return self._root if parent == 0 else self._nodes[parent].children

    def lookup(self, tokens: Sequence[int]) -> Optional[Tuple[list, Optional[Tuple[int, int]], int]]:
        """(full pages, partial, m): `tokens[:m]` are in the full pages and then
        the first `n` rows of page `partial = (page, n)` (None: no partial);
        None when not even one token matches."""
        ps = self.page_size
        toks = tuple(int(t) for t in tokens)
        parent, pages, path = 0, [], []
        while len(pages) < len(toks) // ps:
            key = toks[len(pages) * ps: (len(pages) + 1) * ps]
            node_id = self._children(parent).get(key)
            if node_id is None:
                break
            pages.append(self._nodes[node_id].page)
            path.append(node_id)
            parent = node_id
        rest = toks[len(pages) * ps:]
        best, best_n = None, 0
        for key, node_id in self._children(parent).items():
            n = 0
            while n < min(len(key), len(rest)) and key[n] == rest[n]:
                n += 1
            if n > best_n:
                best, best_n = node_id, n
        partial = None
        if best is not None:
            path.append(best)
            partial = (self._nodes[best].page, best_n)
        m = len(pages) * ps + best_n
        if not m:
            return None
        for node_id in path:
            self._nodes.move_to_end(node_id)
        self.hits += 1
        self.reused_tokens += m
        return pages, partial, m

    def insert(self, tokens: Sequence[int], pages: Sequence[int]) -> None:
        """Indexes `tokens` held by `pages` (ceil(len / page_size) of them, the
        last possibly partly filled), taking a reference to each new node's page."""
        ps = self.page_size
        toks = tuple(int(t) for t in tokens)
        parent = 0
        for i in range(0, len(toks), ps):
            key = toks[i: i + ps]
            children = self._children(parent)
            node_id = children.get(key)
            if node_id is None:
                if len(self._nodes) >= self.max_pages and not self.evict_one(keep=parent):
                    return
                node_id, self._next_id = self._next_id, self._next_id + 1
                page = int(pages[i // ps])
                self.pool.incref([page])
                self._nodes[node_id] = _Node(node_id, parent, key, page)
                self._children(parent)[key] = node_id
            self._nodes.move_to_end(node_id)
            parent = node_id

    def evict_one(self, keep: int = 0) -> bool:
        """Drops the least recently used leaf (never `keep`, the node an insert
        is extending); False when there is none."""
        for node_id, node in self._nodes.items():
            if not node.children and node_id != keep:
                del self._nodes[node_id]
                del self._children(node.parent)[node.tokens]
                self.pool.release([node.page])
                return True
        return False

    def clear(self) -> None:
        while self.evict_one():
            pass
