"""The paged layout's half of `Engine`'s scheduling: which slot holds which
pages (issue 24; the device side is `paged.PagedCore`).

A candidate is placed only with every page it can write (its context's
full pages shared, the rest fresh), so a running slot never waits for a
page and a full pool makes new candidates wait in `pending`; the prefix
cache's pages are evicted first when the pool runs short.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np


class PagedScheduling:
    """Mixed into `Engine`: needs `core` (a `PagedCore`), `prefix_cache` (a
    `PagePrefixCache` or None), `max_seq_len`, `free_slots`, `slot_jobs`,
    `_slot_pages` and `_new_task`."""

    def _pages_needed(self, prompt_len: int, max_new: int) -> int:
        """Pages one candidate writes: context, its last prompt token and up to
        `max_new` tokens, capped at max_seq_len (all reserved when placed, so
        a running slot never waits for a page)."""
        tokens = min(prompt_len - 1 + max_new, self.max_seq_len)
        return -(-tokens // self.core.page_size)

    def _alloc(self, n: int) -> Optional[List[int]]:
        """`n` fresh pages, evicting prefix-cache pages while the pool is short."""
        pool = self.core.pool
        while pool.free < n and self.prefix_cache is not None and self.prefix_cache.evict_one():
            pass
        return pool.alloc(n)

    def _give_pages(self, slot: int, pages: List[int]) -> None:
        self._slot_pages[slot] = list(pages)
        self.core.set_pages(slot, pages)

    def _release_slot(self, slot: int) -> None:
        pages = self._slot_pages.pop(slot, None)
        if pages:
            self.core.pool.release(pages)
        self.core.set_pages(slot, [])
        self.core.armed[slot] = False

    def _place_paged(self, run) -> None:
        """`_place` for the paged layout: a candidate gets a slot only with its
        pages (else it waits in `pending` until running slots free some). Its
        context's full pages are shared (the lead's, a saved wave's or the
        prefix cache's); the partly filled last page is copied (now from the
        cache or a saved wave, or when the lead's prefill is done)."""
        ps, pool = self.core.page_size, self.core.pool
        copies: list = []
        unpin: list = []
        while run.pending and self.free_slots:
            i, j = run.pending[0]
            ids = run.encoded[i]
            ctx_len = len(ids) - 1
            full = ctx_len // ps
            total = self._pages_needed(len(ids), run.reqs[i].params.max_new_tokens)
            hit, partial, done = None, None, 0
            if i in run.tasks:
                shared = [int(p) for p in self.core.table[run.tasks[i].slot, :full]]
            elif i in run.saved:
                shared = run.saved[i][:full]
                partial = (run.saved[i][full], ctx_len - full * ps) if ctx_len % ps else None
            else:
                shared = []
                if self.prefix_cache is not None and ctx_len:
                    hit = self.prefix_cache.lookup(ids[:-1])
                if hit is not None:
                    shared, partial, done = hit
            pin = list(shared) + ([partial[0]] if partial else [])
            pool.incref(pin)  # before `_alloc`: its evictions must not free them
            fresh = self._alloc(total - len(shared))
            if fresh is None:
                pool.release(pin)
                if hit is not None:
                    self.prefix_cache.hits -= 1
                    self.prefix_cache.reused_tokens -= done
                if not (self.slot_jobs or run.tasks or run.ready or copies):
                    raise RuntimeError(f"page pool of {pool.num_pages - 1} pages cannot place a candidate "
                                       f"needing {total - len(shared)}: {pool.free} free with nothing "
                                       "running (raise engine.num_pages)")
                break  # waits for running slots to free pages
            run.pending.popleft()
            run.remaining[i] -= 1
            slot = self.free_slots.pop(0)
            self._give_pages(slot, shared + fresh)
            unpin.extend(pin[len(shared):])  # the shared pages' references now belong to the slot
            if partial:
                copies.append((partial[0], fresh[0]))
            if i in run.tasks:
                run.tasks[i].members.append((slot, j))
            elif i in run.saved:
                run.ready.append((slot, i, j))
                if not run.remaining[i]:
                    unpin.extend(run.saved.pop(i))
            else:
                task = self._new_task(i, slot, np.asarray(ids[:-1], np.int32), done, [(slot, j)])
                task.cached = bool(ctx_len) and done == ctx_len
                run.tasks[i] = task
                run.queue.append(task)
        if copies:
            self.core.copy_pages(copies)
        pool.release(unpin)  # after the copies that read them are queued

    def _finish_tasks_paged(self, run, tasks) -> None:
        ps = self.core.page_size
        pairs = []
        for task in tasks:
            i = task.request
            del run.tasks[i]
            lead = self._slot_pages[task.slot]
            ctx_len, full = len(task.ctx), len(task.ctx) // ps
            used = lead[: -(-ctx_len // ps)]
            if self.prefix_cache is not None and ctx_len and not task.cached:
                self.prefix_cache.insert(task.ctx, used)
            if run.remaining[i]:
                self.core.pool.incref(used)  # pinned for the candidates of later waves
                run.saved[i] = list(used)
            if ctx_len % ps:
                pairs.extend((lead[full], self._slot_pages[slot][full]) for slot, _ in task.members[1:])
            run.ready.extend((slot, i, j) for slot, j in task.members)
        if pairs:
            self.core.copy_pages(pairs)
