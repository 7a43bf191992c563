"""The generation engine: explicit slot API plus continuous-batching `generate`.

The explicit API, for callers that schedule slots themselves:
  * `encode(prompt) -> ids` (with the configured truncation),
  * `prefill(ids) -> Prefill` (bucketed; reuses a cached shared prefix),
  * `insert(prefill, slot, params, candidate)` / `clone(prefill, slots, params)`
    (the n candidates of a node share one prefill),
  * `decode() -> packed [N, T, 3]` (T = `decode_steps_per_call` steps of every
    slot in one device call), `free(slot)`.

`generate(requests)` (the `GenerationEngine` protocol) runs any number of
requests through the fixed slots: each request's prompt is prefilled once,
in batched calls with other prompts straight into its first slot (long
prompts chunk by chunk, one call per decode call while other slots run),
copied into the slots of its other candidates, and a finished slot is
refilled at once (continuous batching).
The host reads step k's packed results while the device runs step k+1.

Over-long prompts: a prompt must leave room for one new token
(`len(ids) <= max_seq_len - 1`). `engine.truncation` decides what happens to
a longer one: `error` raises `PromptTooLongError`, `left` keeps its last
tokens (the end of the prompt, where generation continues), `right` keeps
its first tokens. Completions that reach `max_seq_len` end with `length`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Dict, List, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from rstar_jax.config.schema import EngineConfig
from rstar_jax.inference import stops as stops_lib
from rstar_jax.inference.core import (
    EOS,
    LENGTH,
    STOP,
    DecodeCore,
    Prefill,
    bucket,
    eos_array,
    states_needed,
    stop_tables_for,
)
from rstar_jax.inference.paged import PagedCore, PoolFullError
from rstar_jax.inference.paged_schedule import PagedScheduling
from rstar_jax.inference.prefix_cache import PagePrefixCache, PrefixCache
from rstar_jax.inference.types import Completion, GenerationRequest, SamplingParams

log = logging.getLogger(__name__)


# Prompts `prompt_fits` tokenized and `generate` has not yet taken, kept at most.
_ASKED_KEPT = 4096


class PromptTooLongError(ValueError):
    """A prompt does not fit the context and `engine.truncation` is `error`."""


@dataclasses.dataclass
class _Job:
    """Host record of one candidate in a slot."""

    request: int
    candidate: int
    prompt_len: int
    stops: tuple
    tokens: list = dataclasses.field(default_factory=list)
    logprob: float = 0.0
    max_new: int = 0
    dispatched: int = 0  # decode steps sent to the device for this job
    done: bool = False


@dataclasses.dataclass
class _Task:
    """A prompt going into its first slot, one chunk per prefill call.

    `done` context tokens are in the slot (a prefix-cache hit seeds some);
    `members` are the (slot, candidate) pairs that will decode it, the first
    being the slot prefilled; the others get a copy of it when done.
    """

    request: int
    slot: int
    ctx: np.ndarray
    done: int
    members: list
    cached: bool = False  # the whole context came from the prefix cache


class _Run:
    """Host state of one `generate` call's scheduling."""

    def __init__(self, reqs, encoded, masks):
        self.reqs, self.encoded, self.masks = reqs, encoded, masks
        self.pending = collections.deque((i, j) for i, r in enumerate(reqs) for j in range(r.params.n))
        self.remaining = collections.Counter(i for i, _ in self.pending)
        self.tasks: Dict[int, _Task] = {}
        self.queue: List[_Task] = []
        # KV kept for candidates placed in later waves: a Prefill (dense), or
        # the pinned pages of the context (paged).
        self.saved: Dict[int, Union[Prefill, List[int]]] = {}
        self.ready: list = []  # (slot, request, candidate) with KV in place, to arm
        # Prefill rows ((slot, ids, start) each) that ride the next decode call
        # (`engine.mixed_prefill`), and the tasks they finish.
        self.riding: list = []
        self.finishing: list = []


def enable_compilation_cache(path: str) -> None:
    """Keeps every compiled engine shape in XLA's persistent cache at `path`, so
    a later process with the same model, config and JAX skips the compiles."""
    import os

    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def check_params(p: SamplingParams) -> None:
    """Rejects sampling parameters that would silently do something else."""
    problems = []
    if p.n < 1:
        problems.append(f"n={p.n} (need >= 1)")
    if p.max_new_tokens < 1:
        problems.append(f"max_new_tokens={p.max_new_tokens} (need >= 1)")
    if p.temperature < 0:
        problems.append(f"temperature={p.temperature} (need >= 0)")
    if not 0 < p.top_p <= 1:
        problems.append(f"top_p={p.top_p} (need 0 < top_p <= 1)")
    if p.top_k < 0:
        problems.append(f"top_k={p.top_k} (need >= 0; 0 is off)")
    if problems:
        raise ValueError("bad sampling parameters: " + ", ".join(problems))


class Engine(PagedScheduling):
    """Batched KV-cache generation for one policy model.

    Args:
      policy: a `rstar_jax.models.Policy`.
      tokenizer: any HuggingFace tokenizer (`encode`, `decode`, `batch_decode`).
      cfg: the `engine` config section.
      mesh, rules: optional device mesh and the inference rule table
        (`cfg.mesh.inference_rules`); without a mesh everything sits on one device.
    """

    def __init__(self, policy, tokenizer, cfg: EngineConfig, *, mesh=None, rules=None):
        self.cfg, self.tokenizer = cfg, tokenizer
        self.vocab_size = policy.arch.vocab_size
        max_seq_len = min(cfg.max_seq_len, policy.arch.max_position_embeddings)
        if cfg.compilation_cache_dir:
            enable_compilation_cache(cfg.compilation_cache_dir)
        core_kw = dict(num_slots=cfg.num_slots, max_seq_len=max_seq_len,
                       buckets=cfg.prefill_buckets, steps_per_call=cfg.decode_steps_per_call,
                       mesh=mesh, rules=rules, prefill_tokens=cfg.prefill_tokens,
                       prefill_chunk=cfg.prefill_chunk, prefill_rows=cfg.prefill_row_buckets)
        self.paged = cfg.kv_layout == "paged"
        self._slot_pages: Dict[int, List[int]] = {}  # paged: the pages each slot holds
        if self.paged:
            self.core = PagedCore(policy, page_size=cfg.page_size, num_pages=cfg.num_pages, **core_kw)
            self.prefix_cache = (PagePrefixCache(self.core.pool, cfg.page_size,
                                                 max(1, cfg.prefix_cache_tokens // cfg.page_size))
                                 if cfg.prefix_cache else None)
        else:
            self.core = DecodeCore(policy, **core_kw)
            self.prefix_cache = PrefixCache(cfg.prefix_cache_tokens) if cfg.prefix_cache else None
        # Once per engine, so every command that generates (search, evaluate,
        # sample) says at start which attention its decode runs.
        log.info("engine: %s KV layout%s, decode attention %s", cfg.kv_layout,
                 " (prefill chunks ride decode calls)" if self.paged and cfg.mixed_prefill else "",
                 self.core.planned_attention())
        self._eos = eos_array(tokenizer)
        self._stops: List[str] = []
        self._tables = None
        self._set_tables()
        self._asked: collections.OrderedDict[str, List[int]] = collections.OrderedDict()
        self.free_slots: List[int] = list(range(cfg.num_slots))
        self.slot_jobs: Dict[int, _Job] = {}

    @property
    def num_slots(self) -> int:
        return self.core.num_slots

    @property
    def max_seq_len(self) -> int:
        return self.core.max_seq_len

    # ----- stop strings ---------------------------------------------------
    def _set_tables(self) -> None:
        nxt, bits = stop_tables_for(self.tokenizer, self.vocab_size, self._stops,
                                    states_needed(self._stops))
        arrays = (nxt, bits, self._eos)
        if self.core.mesh is not None:
            from jax.sharding import NamedSharding, PartitionSpec

            rep = NamedSharding(self.core.mesh, PartitionSpec())
            self._tables = tuple(jax.device_put(a, rep) for a in arrays)
        else:
            self._tables = tuple(jnp.asarray(a) for a in arrays)

    def stop_mask(self, stops: Sequence[str]) -> int:
        """The bitmask of `stops`, registering strings not seen before."""
        new = [s for s in dict.fromkeys(stops) if s not in self._stops]
        if new:
            if any(not s for s in new):
                raise ValueError("empty stop string")
            if len(self._stops) + len(new) > stops_lib.MAX_STOPS:
                raise ValueError(f"more than {stops_lib.MAX_STOPS} distinct stop strings")
            self._stops.extend(new)
            self._set_tables()
        mask = 0
        for s in stops:
            mask |= 1 << self._stops.index(s)
        return mask

    # ----- explicit API ---------------------------------------------------
    def prompt_fits(self, prompt: str) -> bool:
        """Whether `generate` takes `prompt`: it leaves room for a token in
        `max_seq_len`, or `engine.truncation` cuts it (searches ask first and
        end a path whose prompt filled the context instead of failing)."""
        if self.cfg.truncation != "error":
            return True
        ids = self._tokenize(prompt)
        if len(ids) > self.max_seq_len - 1:
            return False
        # Kept for the `generate` that usually follows (a search asks of every
        # leaf prompt, then generates from it): one tokenization, not two.
        self._asked[prompt] = ids
        while len(self._asked) > _ASKED_KEPT:
            self._asked.popitem(last=False)
        return True

    def _tokenize(self, prompt: str) -> List[int]:
        return list(self.tokenizer.encode(prompt, add_special_tokens=False))

    def encode(self, prompt: str) -> List[int]:
        """Token ids of `prompt` (no special tokens added), truncated per config."""
        ids = self._asked.pop(prompt, None)
        if ids is None:
            ids = self._tokenize(prompt)
        if not ids:
            raise ValueError("empty prompt: nothing to continue from")
        limit = self.max_seq_len - 1
        if len(ids) > limit:
            mode = self.cfg.truncation
            if mode == "error":
                raise PromptTooLongError(
                    f"prompt has {len(ids)} tokens but max_seq_len {self.max_seq_len} leaves room "
                    f"for {limit}; set engine.truncation=left|right or raise engine.max_seq_len")
            log.warning("truncating a %d-token prompt to %d tokens (%s)", len(ids), limit, mode)
            ids = ids[-limit:] if mode == "left" else ids[:limit]
        return ids

    def prefill(self, token_ids: Sequence[int]) -> Prefill:
        """The KV of `token_ids[:-1]`, reusing the longest cached shared prefix
        (dense layout; the paged layout's prefix cache serves `generate`)."""
        ids = tuple(int(t) for t in token_ids)
        ctx = ids[:-1]
        if not ctx:
            return Prefill(ids, None)
        start, prefix_kv = 0, None
        if self.prefix_cache is not None and not self.paged:  # paged: `generate` shares pages
            hit = self.prefix_cache.lookup(ctx)
            if hit is not None:
                prefix_kv, start = hit
                if start == len(ctx):
                    return Prefill(ids, prefix_kv)
        length = bucket(len(ctx), self.core.buckets)
        if prefix_kv is not None:
            length = max(length, int(prefix_kv[0][0].shape[2]))
        kv = self.core.prefill_kv(np.asarray(ctx, np.int32), start, prefix_kv, length)
        if self.prefix_cache is not None and not self.paged:
            self.prefix_cache.insert(ctx, kv, cost=length)
        return Prefill(ids, kv)

    def insert(self, prefill: Prefill, slot: int, params: SamplingParams, candidate: int = 0,
               *, stop_mask: Optional[int] = None) -> None:
        """Arms `slot` to continue `prefill`'s prompt as candidate `candidate`."""
        mask = self.stop_mask(params.stop) if stop_mask is None else stop_mask
        self.core.ensure_cache_length(max(prefill.length, prefill.num_tokens))
        if self.paged:  # the explicit API copies the prefill into the slot's own pages
            self._release_slot(slot)
            need = max(prefill.length // self.core.page_size,
                       self._pages_needed(prefill.num_tokens, params.max_new_tokens))
            pages = self._alloc(need)
            if pages is None:
                raise PoolFullError(f"slot {slot} needs {need} pages; the pool has {self.core.pool.free} "
                                    f"free of {self.core.num_pages - 1} (engine.num_pages)")
            self._give_pages(slot, pages)
            if prefill.kv is not None:
                self.core.write_kv(prefill.kv, pages)
        self.core.insert(prefill.kv, slot, token=prefill.token_ids[-1], pos=prefill.num_tokens - 1,
                         max_new=params.max_new_tokens, stop_mask=mask, params=params,
                         candidate=candidate)

    def clone(self, prefill: Prefill, slots: Sequence[int], params: SamplingParams,
              first_candidate: int = 0) -> None:
        """One prefill into several slots: candidates `first_candidate + i`."""
        mask = self.stop_mask(params.stop)
        for i, slot in enumerate(slots):
            self.insert(prefill, slot, params, first_candidate + i, stop_mask=mask)

    def prefill_into_slots(self, prompts_ids: Sequence[Sequence[int]], params: SamplingParams) -> List[int]:
        """Batched prefill of many prompts (token ids) into free slots, each armed
        to continue as candidate 0 under `params`; returns their slots. What
        `generate` does before decoding, for callers and benchmarks that drive
        `decode` themselves."""
        if len(prompts_ids) > len(self.free_slots):
            raise ValueError(f"{len(prompts_ids)} prompts for {len(self.free_slots)} free slots")
        mask = self.stop_mask(params.stop)
        reqs = [GenerationRequest("", dataclasses.replace(params, n=1)) for _ in prompts_ids]
        run = _Run(reqs, [list(map(int, ids)) for ids in prompts_ids], [mask] * len(reqs))
        slots = self.free_slots[: len(reqs)]
        self._place(run)
        if run.pending:  # paged: the pool cannot hold them all
            raise PoolFullError(f"{len(run.pending)} of {len(reqs)} prompts did not fit the page pool "
                                f"({self.core.pool.free} pages free); free slots or raise engine.num_pages")
        self._prefill_some(run, busy=False)
        for slot in slots:  # the caller reads `decode` itself: no host job records
            self.slot_jobs.pop(slot, None)
        return slots

    def warmup(self, max_len: Optional[int] = None, stops: Sequence[str] = ()) -> dict:
        """Compiles every shape `generate` can meet (see `DecodeCore.warmup`), so
        that no later call compiles. Worth it before timing or a long search.

        `stops`: the stop strings the run will use (the search's step tags),
        registered first: more strings can enlarge the stop tables, which
        changes the decode's shapes. Returns per kind of call the shapes
        compiled and the seconds taken.
        """
        if stops:
            self.stop_mask(stops)
        if self.paged:
            return self.core.warmup(self._tables, max_len, mixed=self.cfg.mixed_prefill)
        return self.core.warmup(self._tables, max_len)

    def attention_paths(self) -> dict:
        """`{path: [shapes]}` of the decode attention this engine traced."""
        return self.core.attention_paths_used()

    def decode(self) -> np.ndarray:
        """One device call of `decode_steps_per_call` steps; packed `[N, T, 3]`
        float32 rows (token id, log-prob, end code; see `core`)."""
        return np.asarray(self.core.decode(self._tables))

    def free(self, slot: int) -> None:
        self.core.free(slot)
        if self.paged:
            self._release_slot(slot)
        self.slot_jobs.pop(slot, None)
        if slot not in self.free_slots:
            self.free_slots.append(slot)

    # ----- high level -----------------------------------------------------
    def generate(self, requests: Sequence[Union[GenerationRequest, str]], n: int = 1,
                 max_new_tokens: Optional[int] = None, stop: Sequence[str] = (),
                 temperature: float = 0.7, top_p: float = 1.0, top_k: int = 0,
                 seed: int = 0) -> List[List[Completion]]:
        """Per request, `params.n` completions in candidate order.

        `requests` are `GenerationRequest`s, or plain prompt strings that take
        the keyword arguments (prompt i gets seed `seed + i`).
        """
        reqs = [r if isinstance(r, GenerationRequest) else GenerationRequest(
            r, SamplingParams(n=n, max_new_tokens=max_new_tokens or self.cfg.max_new_tokens,
                              temperature=temperature, top_p=top_p, top_k=top_k,
                              stop=tuple(stop), seed=seed + i))
                for i, r in enumerate(requests)]
        for r in reqs:
            check_params(r.params)
        encoded = [self.encode(r.prompt) for r in reqs]
        if self.paged:
            usable = self.core.num_pages - 1
            for ids, r in zip(encoded, reqs):
                need = self._pages_needed(len(ids), r.params.max_new_tokens)
                if need > usable:
                    raise ValueError(f"a candidate of a {len(ids)}-token prompt with max_new_tokens="
                                     f"{r.params.max_new_tokens} needs {need} pages; the pool has "
                                     f"{usable} (raise engine.num_pages)")
        masks = [self.stop_mask(r.params.stop) for r in reqs]
        results: List[List[Optional[Completion]]] = [[None] * r.params.n for r in reqs]
        run = _Run(reqs, encoded, masks)
        inflight: collections.deque = collections.deque()
        steps = self.core.steps
        while run.pending or self.slot_jobs or run.queue or inflight:
            self._place(run)
            self._prefill_some(run, busy=bool(self.slot_jobs))
            if not self.slot_jobs or (
                    inflight and all(job.dispatched >= job.max_new for job in self.slot_jobs.values())):
                # Nothing to decode, or every slot ends within the calls already in
                # flight: read those, not another call of idle steps.
                self._land_riding(run, decode=False)
                while inflight:
                    self._consume(*inflight.popleft(), results)
                continue
            needed = max(job.prompt_len + job.dispatched + steps for job in self.slot_jobs.values())
            self.core.ensure_cache_length(needed)
            for job in self.slot_jobs.values():
                job.dispatched += steps
            inflight.append((self._land_riding(run, decode=True), dict(self.slot_jobs)))
            if len(inflight) > 1:
                self._consume(*inflight.popleft(), results)
        if self.core.cache_length > self.core.buckets[0]:
            self.core.reset()  # the next call starts small and grows the same way
        return results  # type: ignore[return-value]

    # ----- scheduling of batched prefills ----------------------------------
    def _place(self, run: _Run) -> None:
        """Gives free slots to pending candidates. A request's first slot gets a
        prefill task (seeded from the prefix cache when it can be); its other
        candidates placed meanwhile follow it (a copy of the slot once the
        prompt is in); later ones are seeded from a saved copy of its KV."""
        if self.paged:
            self._place_paged(run)
            return
        while run.pending and self.free_slots:
            i, j = run.pending.popleft()
            run.remaining[i] -= 1
            slot = self.free_slots.pop(0)
            if i in run.tasks:
                run.tasks[i].members.append((slot, j))
            elif i in run.saved:
                saved = run.saved[i]
                if saved.kv is not None:
                    self.core.ensure_cache_length(saved.length)
                    self.core.seed_slot(saved.kv, slot)
                run.ready.append((slot, i, j))
                if not run.remaining[i]:
                    del run.saved[i]
            else:
                ids = encoded_ids = run.encoded[i]
                ctx = np.asarray(encoded_ids[:-1], np.int32)
                task = _Task(i, slot, ctx, 0, [(slot, j)])
                if self.prefix_cache is not None and len(ctx):
                    hit = self.prefix_cache.lookup(tuple(int(t) for t in ctx))
                    if hit is not None:
                        kv, task.done = hit
                        task.cached = task.done == len(ctx)
                        self.core.ensure_cache_length(max(len(ids), int(kv[0][0].shape[2])))
                        self.core.seed_slot(kv, slot)
                run.tasks[i] = task
                run.queue.append(task)

    @staticmethod
    def _new_task(request, slot, ctx, done, members) -> _Task:
        return _Task(request, slot, ctx, done, members)

    def _prefill_some(self, run: _Run, busy: bool) -> None:
        """Batched prefill calls over the queued tasks: one call while other
        slots are decoding (so a long prompt does not stall them), else until
        the queue is empty; then clones, saves and arms the finished prompts.
        With `engine.mixed_prefill` (paged layout) the one call while slots
        are decoding is not made here: its rows ride the next decode call
        (`_land_riding`), and the prompts it finishes are armed after it."""
        limit = max(self.core.chunk_lengths)
        budget = self.cfg.prefill_tokens
        ride = busy and self.paged and self.cfg.mixed_prefill
        finished = []
        while run.queue:
            # One chunk bucket per call, the oldest task's: rows of other lengths
            # wait for the next call rather than be padded up to this one.
            pieces = [(t, min(len(t.ctx) - t.done, limit)) for t in run.queue]
            pieces = [(t, p) for t, p in pieces if p]
            rows: list = []
            if pieces:
                c = bucket(pieces[0][1], self.core.chunk_lengths)
                most = min(max(self.core.row_buckets[c]), max(1, budget // c))
                rows = [(t, p) for t, p in pieces if bucket(p, self.core.chunk_lengths) == c][:most]
            if rows:
                self.core.ensure_cache_length(max(t.done + p for t, p in rows))
                spec = [(t.slot, t.ctx[t.done:t.done + p], t.done) for t, p in rows]
                if ride:
                    run.riding = spec
                else:
                    self.core.prefill_rows(spec)
                for t, p in rows:
                    t.done += p
            for task in [t for t in run.queue if t.done == len(t.ctx)]:
                run.queue.remove(task)
                finished.append(task)
            if busy and rows:
                break
        if ride and run.riding:
            # Finished after the decode call they ride; arm now only the
            # candidates placed from saved pages (their KV is already in).
            run.finishing, finished = finished, []
        self._finish_and_arm(run, finished)

    def _finish_and_arm(self, run: _Run, finished) -> None:
        if finished:
            self._finish_tasks(run, finished)
        if run.ready:
            self._arm(run)

    def _land_riding(self, run: _Run, decode: bool):
        """Runs the rows riding this turn: inside the decode call (`decode`;
        returns its result) or else in a prefill call of their own; then
        finishes and arms the prompts they complete."""
        rows, run.riding = run.riding, []
        out = None
        if decode:
            out = self.core.decode(self._tables, rows) if rows else self.core.decode(self._tables)
        elif rows:
            self.core.prefill_rows(rows)
        if rows:
            finished, run.finishing = run.finishing, []
            self._finish_and_arm(run, finished)
        return out

    def _finish_tasks(self, run: _Run, tasks) -> None:
        if self.paged:
            self._finish_tasks_paged(run, tasks)
            return
        pairs = []
        for task in tasks:
            i = task.request
            del run.tasks[i]
            kv = None
            if len(task.ctx) and (run.remaining[i] or (self.prefix_cache is not None and not task.cached)):
                length = bucket(len(task.ctx), self.core.buckets)
                kv = self.core.extract(task.slot, length)
                if self.prefix_cache is not None and not task.cached:
                    self.prefix_cache.insert(tuple(int(t) for t in task.ctx), kv, cost=length)
            if run.remaining[i]:
                run.saved[i] = Prefill(tuple(run.encoded[i]), kv)
            pairs.extend((task.slot, slot) for slot, _ in task.members[1:])
            run.ready.extend((slot, i, j) for slot, j in task.members)
        if pairs:
            self.core.copy_slots(pairs)

    def _arm(self, run: _Run) -> None:
        entries = []
        for slot, i, j in run.ready:
            ids, params = run.encoded[i], run.reqs[i].params
            entries.append((slot, dict(token=ids[-1], pos=len(ids) - 1, max_new=params.max_new_tokens,
                                       stop_mask=run.masks[i], params=params, candidate=j)))
            self.slot_jobs[slot] = _Job(i, j, len(ids), tuple(params.stop), max_new=params.max_new_tokens)
        self.core.ensure_cache_length(max(len(run.encoded[i]) for _, i, _ in run.ready))
        self.core.arm(entries)
        run.ready.clear()

    def _consume(self, packed, jobs: Dict[int, _Job], results) -> None:
        arr = np.asarray(packed)
        for slot, job in jobs.items():
            if job.done:
                continue
            row = arr[slot]
            codes = row[:, 2].astype(np.int32)
            sel = codes > 0
            job.tokens.extend(int(t) for t in row[sel, 0])
            job.logprob += float(row[sel, 1].astype(np.float64).sum())
            ends = codes[sel]
            if len(ends) and ends[-1] >= STOP:
                job.done = True
                results[job.request][job.candidate] = self._completion(job, int(ends[-1]))
                del self.slot_jobs[slot]
                if self.paged:
                    self._release_slot(slot)
                self.free_slots.append(slot)

    def _decode_text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False)

    def _completion(self, job: _Job, code: int) -> Completion:
        """Confirms the device's stop in text and trims exactly after it."""
        tokens = job.tokens
        text_ids = tokens[:-1] if code == EOS else tokens
        text = self._decode_text(text_ids)
        reason = {STOP: "stop", EOS: "eos", LENGTH: "length"}[code]
        found = stops_lib.find_stop(text, job.stops) if job.stops else None
        stop_string = None
        if found is not None:
            end, stop_string = found
            if code != STOP:  # missed on device (see stops.py): cut the tokens too
                k = next(k for k in range(1, len(text_ids) + 1)
                         if stops_lib.find_stop(self._decode_text(text_ids[:k]), job.stops))
                tokens = tokens[:k]
            text, reason = text[:end], "stop"
        elif code == STOP:
            log.warning("device matched a stop string the decoded text lacks: %r", text[-40:])
        return Completion(text=text, token_ids=tuple(tokens), stop_reason=reason,
                          stop_string=stop_string, logprob=job.logprob,
                          num_prompt_tokens=job.prompt_len)
