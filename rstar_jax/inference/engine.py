"""The generation engine: explicit slot API plus continuous-batching `generate`.

The explicit API, for callers that schedule slots themselves:
  * `encode(prompt) -> ids` (with the configured truncation),
  * `prefill(ids) -> Prefill` (bucketed; reuses a cached shared prefix),
  * `insert(prefill, slot, params, candidate)` / `clone(prefill, slots, params)`
    (the n candidates of a node share one prefill),
  * `decode() -> packed [N, T, 3]` (T = `decode_steps_per_call` steps of every
    slot in one device call), `free(slot)`.

`generate(requests)` (the `GenerationEngine` protocol) runs any number of
requests through the fixed slots: each request is prefilled once, cloned into
free slots, and a finished slot is refilled at once (continuous batching).
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
from rstar_jax.inference.prefix_cache import PrefixCache
from rstar_jax.inference.types import Completion, GenerationRequest, SamplingParams

log = logging.getLogger(__name__)


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


class Engine:
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
        self.core = DecodeCore(policy, num_slots=cfg.num_slots, max_seq_len=max_seq_len,
                               buckets=cfg.prefill_buckets, steps_per_call=cfg.decode_steps_per_call,
                               mesh=mesh, rules=rules)
        self.prefix_cache = PrefixCache(cfg.prefix_cache_tokens) if cfg.prefix_cache else None
        self._eos = eos_array(tokenizer)
        self._stops: List[str] = []
        self._tables = None
        self._set_tables()
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
    def encode(self, prompt: str) -> List[int]:
        """Token ids of `prompt` (no special tokens added), truncated per config."""
        ids = list(self.tokenizer.encode(prompt, add_special_tokens=False))
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
        """The KV of `token_ids[:-1]`, reusing the longest cached shared prefix."""
        ids = tuple(int(t) for t in token_ids)
        ctx = ids[:-1]
        if not ctx:
            return Prefill(ids, None)
        start, prefix_kv = 0, None
        if self.prefix_cache is not None:
            hit = self.prefix_cache.lookup(ctx)
            if hit is not None:
                prefix_kv, start = hit
                if start == len(ctx):
                    return Prefill(ids, prefix_kv)
        length = bucket(len(ctx), self.core.buckets)
        if prefix_kv is not None:
            length = max(length, int(prefix_kv[0][0].shape[2]))
        kv = self.core.prefill_kv(np.asarray(ctx, np.int32), start, prefix_kv, length)
        if self.prefix_cache is not None:
            self.prefix_cache.insert(ctx, kv, cost=length)
        return Prefill(ids, kv)

    def insert(self, prefill: Prefill, slot: int, params: SamplingParams, candidate: int = 0,
               *, stop_mask: Optional[int] = None) -> None:
        """Arms `slot` to continue `prefill`'s prompt as candidate `candidate`."""
        mask = self.stop_mask(params.stop) if stop_mask is None else stop_mask
        self.core.ensure_cache_length(max(prefill.length, prefill.num_tokens))
        self.core.insert(prefill.kv, slot, token=prefill.token_ids[-1], pos=prefill.num_tokens - 1,
                         max_new=params.max_new_tokens, stop_mask=mask, params=params,
                         candidate=candidate)

    def clone(self, prefill: Prefill, slots: Sequence[int], params: SamplingParams,
              first_candidate: int = 0) -> None:
        """One prefill into several slots: candidates `first_candidate + i`."""
        mask = self.stop_mask(params.stop)
        for i, slot in enumerate(slots):
            self.insert(prefill, slot, params, first_candidate + i, stop_mask=mask)

    def warmup(self, max_len: Optional[int] = None) -> None:
        """Compiles every shape generation can meet (see `DecodeCore.warmup`), so
        that no later call compiles. Worth it before timing or a long search."""
        self.core.warmup(self._tables, max_len)

    def decode(self) -> np.ndarray:
        """One device call of `decode_steps_per_call` steps; packed `[N, T, 3]`
        float32 rows (token id, log-prob, end code; see `core`)."""
        return np.asarray(self.core.decode(self._tables))

    def free(self, slot: int) -> None:
        self.core.free(slot)
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
        masks = [self.stop_mask(r.params.stop) for r in reqs]
        results: List[List[Optional[Completion]]] = [[None] * r.params.n for r in reqs]
        pending = collections.deque((i, j) for i, r in enumerate(reqs) for j in range(r.params.n))
        prefills: Dict[int, Prefill] = {}
        inflight: collections.deque = collections.deque()
        steps = self.core.steps
        while pending or self.slot_jobs:
            while pending and self.free_slots:
                i, j = pending.popleft()
                if i not in prefills:
                    prefills[i] = self.prefill(encoded[i])
                slot = self.free_slots.pop(0)
                self.insert(prefills[i], slot, reqs[i].params, j, stop_mask=masks[i])
                self.slot_jobs[slot] = _Job(i, j, len(encoded[i]), tuple(reqs[i].params.stop),
                                            max_new=reqs[i].params.max_new_tokens)
                if j == reqs[i].params.n - 1:
                    del prefills[i]
            if inflight and all(job.dispatched >= job.max_new for job in self.slot_jobs.values()):
                # Every slot ends within the calls already in flight: read them, not
                # another call of idle steps.
                while inflight:
                    self._consume(*inflight.popleft(), results)
                continue
            needed = max(job.prompt_len + job.dispatched + steps for job in self.slot_jobs.values())
            self.core.ensure_cache_length(needed)
            for job in self.slot_jobs.values():
                job.dispatched += steps
            inflight.append((self.core.decode(self._tables), dict(self.slot_jobs)))
            if len(inflight) > 1:
                self._consume(*inflight.popleft(), results)
        while inflight:
            self._consume(*inflight.popleft(), results)
        if self.core.cache_length > self.core.buckets[0]:
            self.core.reset()  # the next call starts small and grows the same way
        return results  # type: ignore[return-value]

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
