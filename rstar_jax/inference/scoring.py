"""PPM batch scoring: many (prompt + partial solution) texts in bucketed calls.

Texts are tokenized, sorted by length, grouped into batches of
`engine.score_batch_size` and padded on the right to a `prefill_buckets`
length, so one compiled function per bucket serves every call (the last
batch is padded with dummy rows rather than shrunk). The score is
`score_transform(raw, cfg.ppm)`, the same function training uses.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Sequence

import jax
import jax.numpy as jnp
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

    Over-long texts follow `engine.truncation`: `error` raises, `left` keeps
    the end of the text (the step being scored), `right` keeps its start.
    """

    def __init__(self, ppm_model, tokenizer, cfg, *, mesh=None, rules=None):
        from rstar_jax.models.decoder import score_transform

        self.tokenizer, self.cfg = tokenizer, cfg
        self.max_len = min(cfg.engine.max_seq_len, ppm_model.arch.max_position_embeddings)
        self.buckets = sorted({b for b in cfg.engine.prefill_buckets if b < self.max_len} | {self.max_len})
        self.batch = cfg.engine.score_batch_size
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

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """float32 `[len(texts)]` transformed scores, in the order of `texts`."""
        encoded = [self.encode(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        out = np.zeros(len(texts), np.float32)
        pending = []
        for start in range(0, len(order), self.batch):
            rows = order[start:start + self.batch]
            length = bucket(max(len(encoded[i]) for i in rows), self.buckets)
            tokens = np.zeros((self.batch, length), np.int32)
            lengths = np.ones(self.batch, np.int32)
            for r, i in enumerate(rows):
                tokens[r, : len(encoded[i])] = encoded[i]
                lengths[r] = len(encoded[i])
            with self._ctx():
                scores = self._run(self.params, jnp.asarray(tokens), jnp.asarray(lengths))
            scores.copy_to_host_async()
            pending.append((rows, scores))
        for rows, scores in pending:
            out[rows] = np.asarray(scores)[: len(rows)]
        return out
