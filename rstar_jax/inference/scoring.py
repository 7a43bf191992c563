"""PPM batch scoring: many (prompt + partial solution) texts in bucketed calls.

Texts are tokenized, each goes to the length bucket that holds it
(`engine.score_buckets`, else `prefill_buckets`), and each bucket's texts
are cut into batches of `engine.score_batch_size` rows, padded on the right
to the bucket's length. A batch with fewer texts (the last one, or a call
with few texts: the MCTS driver at 1-8 trees in flight scores 4-15 texts a
call) is padded with dummy rows only up to the smallest ROW bucket that
holds it (`engine.score_row_buckets`, else powers of two up to
`score_batch_size`), instead of to the full batch, which made ~90% of such
calls' compute padding. So one compiled function per (row bucket, length
bucket) serves every call; `warmup()` compiles them all up front. Rows are
independent (per-row attention and pooling), so a text's score does not
depend on its batch beyond float32 rounding: XLA may pick another matmul
kernel for another row count (measured on CPU: 1-4 rows differ from 8 by
~4e-7 relative). With a single row bucket every call has one shape per
length bucket and a text's score is bit-identical in any company. The score
is `score_transform(raw, cfg.ppm)`, the same function training uses.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from typing import List, Optional, Sequence

import jax
import numpy as np
from flax import nnx

from rstar_jax.inference.core import bucket

log = logging.getLogger(__name__)


class PPMScorer:
    """`StepScorer` over a PPM model.

    Args:
      ppm_model: a `rstar_jax.models.PPM`.
      tokenizer: a HuggingFace tokenizer.
      cfg: the whole `Config` (uses `engine` and `ppm`).
      mesh, rules: optional mesh and inference rules (batch sharded over rows).
      row_buckets: batch sizes a call may be padded to (default:
        `engine.score_row_buckets`, else powers of two below
        `engine.score_batch_size`, and that size); `[batch]` alone makes
        every call one shape (bit-reproducible scores).

    Over-long texts follow `engine.truncation`: `error` raises, `left` keeps
    the end of the text (the step being scored), `right` keeps its start.
    """

    def __init__(self, ppm_model, tokenizer, cfg, *, mesh=None, rules=None,
                 row_buckets: Optional[Sequence[int]] = None):
        from rstar_jax.models.decoder import score_transform

        self.tokenizer, self.cfg = tokenizer, cfg
        self.max_len = min(cfg.engine.max_seq_len, ppm_model.arch.max_position_embeddings)
        lengths = cfg.engine.score_buckets or cfg.engine.prefill_buckets
        self.buckets = sorted({b for b in lengths if b < self.max_len} | {self.max_len})
        self.batch = cfg.engine.score_batch_size
        if row_buckets is None:
            row_buckets = cfg.engine.score_row_buckets
        self.row_buckets = (power_of_two_buckets(self.batch) if row_buckets is None
                            else sorted({int(r) for r in row_buckets if 0 < r < self.batch} | {self.batch}))
        self.mesh, self.rules = mesh, dict(rules or {})
        self.graphdef, self.params = nnx.split(ppm_model)
        ppm_cfg = cfg.ppm

        def run(params, tokens, lengths):
            model = nnx.merge(self.graphdef, params)
            return score_transform(model(tokens, lengths), ppm_cfg)

        self._run = jax.jit(run)

    def _ctx(self):
        if self.mesh is None:
            return contextlib.nullcontext()
        from rstar_jax.models.sharding import sharding_context

        return sharding_context(self.mesh, self.rules)

    def encode(self, text: str) -> list:
        ids = list(self.tokenizer.encode(text, add_special_tokens=False)) or [0]
        if len(ids) > self.max_len:
            mode = self.cfg.engine.truncation
            if mode == "error":
                raise ValueError(f"text has {len(ids)} tokens, more than max_seq_len {self.max_len}; "
                                 "set engine.truncation=left|right")
            ids = ids[-self.max_len:] if mode == "left" else ids[: self.max_len]
        return ids

    def _call(self, tokens: np.ndarray, lengths: np.ndarray) -> jax.Array:
        """One device call on int32 `tokens [rows, length]`, `lengths [rows]`.

        NumPy arrays go straight to the jitted function: `jnp.asarray` would
        compile a staging function per new shape (JAX 0.10), outside warm-up.
        """
        with self._ctx():
            return self._run(self.params, tokens, lengths)

    def warmup(self) -> None:
        """Compiles every (row bucket, length bucket) shape a call can meet."""
        for rows in self.row_buckets:
            for length in self.buckets:
                self._call(np.zeros((rows, length), np.int32), np.ones(rows, np.int32)).block_until_ready()

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """float32 `[len(texts)]` transformed scores, in the order of `texts`."""
        encoded = [self.encode(t) for t in texts]
        # Each text goes to its own length bucket, never to a longer one
        # because of the company it keeps: its score is then the same
        # whichever other texts share the call (a resumed search scores
        # other batches than the interrupted one, and float rounding that
        # differs with the padded length would change its trees).
        groups = collections.defaultdict(list)
        for i in sorted(range(len(texts)), key=lambda i: len(encoded[i])):
            groups[bucket(len(encoded[i]), self.buckets)].append(i)
        out = np.zeros(len(texts), np.float32)
        pending = []
        calls = [(length, members[start:start + self.batch])
                 for length, members in sorted(groups.items())
                 for start in range(0, len(members), self.batch)]
        for length, rows in calls:
            padded = bucket(len(rows), self.row_buckets)
            tokens = np.zeros((padded, length), np.int32)
            lengths = np.ones(padded, np.int32)
            for r, i in enumerate(rows):
                tokens[r, : len(encoded[i])] = encoded[i]
                lengths[r] = len(encoded[i])
            scores = self._call(tokens, lengths)
            scores.copy_to_host_async()
            pending.append((rows, scores))
        for rows, scores in pending:
            out[rows] = np.asarray(scores)[: len(rows)]
        return out


def power_of_two_buckets(batch: int) -> List[int]:
    """`[1, 2, 4, ..., batch]`: powers of two below `batch`, then `batch`.

    Padding to the next bucket wastes under half a call's rows, and there are
    only log2(batch) + 1 shapes to compile per length bucket.
    """
    out, r = [], 1
    while r < batch:
        out.append(r)
        r *= 2
    return out + [batch]
