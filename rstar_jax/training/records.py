"""Training records -> tokenised examples (SFT, plain text, PPM pairs).

Three record kinds, one file each (JSON Lines, or one JSON list):
- SFT `{"query", "response"}`: the spec's policy prompt (`policy_prompt`,
  the same template search uses) followed by the response and EOS; the loss
  is on the response tokens and EOS only.
- plain text `{"text"}` (pretraining the demo's base model): loss on every
  token; texts longer than the sequence are cut into sequence-sized pieces.
- PPM pairs `{"prompt", "pos", "neg", "pos_count", "neg_count"}`: two
  sequences, prompt + pos and prompt + neg. A record is one pair of a step
  that has `pos_count` positives and `neg_count` negatives, so that step has
  `pos_count * neg_count` pairs; weighting each by `1 / (pos_count *
  neg_count)` averages the loss over a step's pairs (spec section 6), and
  every step counts once however many pairs it yielded. Optional
  `q_pos`/`q_neg` (the names extraction writes, `data/extract.py`) give the
  Q targets of the PQM ablation (default +1/-1).

A malformed record (bad JSON, missing or empty fields, bad counts) is
counted by reason, logged and skipped; a file with no usable record is an
error. Tokenisation is per field (prompt and continuation separately, as the
search engine sees them).

A record longer than `seq_len` (`overlong`, `train.overlong`): `truncate`
keeps its first `seq_len` tokens, as the reference's SFT and RM scripts do
(their tokenizers truncate on the right): an SFT response loses its end and
EOS, a pair's sequences their ends (a PPM scores the last kept token); an
SFT record whose prompt alone fills `seq_len` has nothing left to train and
is skipped. `skip` drops every over-long record. Truncated records are
counted in the log.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from rstar_jax.data.prompts import policy_prompt

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LMExample:
    """One causal-LM example, already shifted: predict `targets[t]` from
    `inputs[:t+1]`; `weights[t]` is 1 on trained targets. All `[L]`."""

    inputs: np.ndarray
    targets: np.ndarray
    weights: np.ndarray

    @property
    def length(self) -> int:
        return int(self.inputs.shape[0])


@dataclasses.dataclass(frozen=True)
class PairExample:
    """A PPM preference pair: two token sequences sharing the prompt."""

    pos: np.ndarray  # [Lp] int32
    neg: np.ndarray  # [Ln] int32
    weight: float
    pos_q: float = 1.0
    neg_q: float = -1.0

    @property
    def length(self) -> int:
        return int(max(self.pos.shape[0], self.neg.shape[0]))


class NoUsableRecords(ValueError):
    """Raised when a data file yields no usable example."""


def read_records(path: str) -> Iterator[Tuple[int, object, Optional[str]]]:
    """Yields (record number, parsed record or None, parse error or None).

    Accepts JSON Lines or a single JSON list (the rStar fixtures).
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise NoUsableRecords(f"{path}: not valid JSON ({e})") from e
        for i, row in enumerate(rows):
            yield i, row, None
        return
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line), None
        except json.JSONDecodeError as e:
            yield i, None, f"bad JSON ({e.msg})"


def _ids(tokenizer, text: str) -> List[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _eos(tokenizer) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token; SFT appends EOS to every response")
    return int(eos)


def _lm_example(tokens: List[int], n_prompt: int) -> LMExample:
    arr = np.asarray(tokens, np.int32)
    w = np.zeros(len(tokens) - 1, np.float32)
    w[max(n_prompt - 1, 0):] = 1.0
    return LMExample(arr[:-1], arr[1:], w)


OVERLONG = ("truncate", "skip")
TRUNCATED = "truncated to seq_len"


def _check_overlong(overlong: str) -> None:
    if overlong not in OVERLONG:
        raise ValueError(f"unknown overlong mode {overlong!r}; expected one of {OVERLONG}")


def _sft(rec: dict, tokenizer, seq_len: int, sep: str,
         overlong: str = "truncate") -> Tuple[List[LMExample], Optional[str]]:
    q, r = rec.get("query"), rec.get("response")
    if not isinstance(q, str) or not q.strip():
        return [], "missing or empty 'query'"
    if not isinstance(r, str) or not r.strip():
        return [], "missing or empty 'response'"
    prompt = _ids(tokenizer, policy_prompt(q, "", sep=sep))
    tokens = prompt + _ids(tokenizer, r) + [_eos(tokenizer)]
    if len(tokens) - 1 <= seq_len:
        return [_lm_example(tokens, len(prompt))], None
    if overlong == "skip":
        return [], f"longer than seq_len ({len(tokens) - 1} > {seq_len})"
    if len(prompt) > seq_len:  # no response token left to predict
        return [], f"prompt longer than seq_len ({len(prompt)} > {seq_len})"
    return [_lm_example(tokens[:seq_len + 1], len(prompt))], TRUNCATED


def _text(rec: dict, tokenizer, seq_len: int) -> Tuple[List[LMExample], Optional[str]]:
    t = rec.get("text")
    if not isinstance(t, str) or not t.strip():
        return [], "missing or empty 'text'"
    tokens = _ids(tokenizer, t) + [_eos(tokenizer)]
    out = []
    for start in range(0, max(len(tokens) - 1, 1), seq_len):
        piece = tokens[start:start + seq_len + 1]
        if len(piece) >= 2:
            out.append(_lm_example(piece, 0))
    return out, (None if out else "text too short")


def _count(rec: dict, key: str) -> Optional[int]:
    v = rec.get(key, 1)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        return None
    return v


def _pair(rec: dict, tokenizer, seq_len: int,
          overlong: str = "truncate") -> Tuple[List[PairExample], Optional[str]]:
    for key in ("prompt", "pos", "neg"):
        if not isinstance(rec.get(key), str) or (key != "prompt" and not rec[key].strip()):
            return [], f"missing or empty {key!r}"
    pc, nc = _count(rec, "pos_count"), _count(rec, "neg_count")
    if pc is None or nc is None:
        return [], "pos_count/neg_count must be positive integers"
    prompt = _ids(tokenizer, rec["prompt"])
    pos = np.asarray(prompt + _ids(tokenizer, rec["pos"]), np.int32)
    neg = np.asarray(prompt + _ids(tokenizer, rec["neg"]), np.int32)
    note = None
    if max(len(pos), len(neg)) > seq_len:
        if overlong == "skip":
            return [], f"longer than seq_len ({max(len(pos), len(neg))} > {seq_len})"
        pos, neg, note = pos[:seq_len], neg[:seq_len], TRUNCATED
    try:
        pq, nq = float(rec.get("q_pos", 1.0)), float(rec.get("q_neg", -1.0))
    except (TypeError, ValueError):
        return [], "q_pos/q_neg must be numbers"
    return [PairExample(pos, neg, pair_weight(pc, nc), pq, nq)], note


def pair_weight(pos_count: int, neg_count: int) -> float:
    """1 / (pairs of this step): the step's loss is the mean over its pairs."""
    return 1.0 / float(pos_count * neg_count)


def load_examples(path: str, tokenizer, *, kind: str, seq_len: int, sep: str = "\n\n",
                  overlong: str = "truncate"):
    """Reads and tokenises a record file.

    Args:
      kind: `lm` (SFT or plain-text records, mixed freely) or `ppm`.
      overlong: `truncate` or `skip` a record longer than `seq_len` (module
        docstring; plain text is always cut into pieces).
    Returns:
      (examples, skipped) with `skipped` a {reason: count} dict.
    Raises:
      NoUsableRecords: when not one record is usable.
    """
    _check_overlong(overlong)
    examples: list = []
    skipped: Dict[str, int] = collections.Counter()
    truncated = 0
    for i, rec, err in read_records(path):
        if err is None and not isinstance(rec, dict):
            err = "not a JSON object"
        if err is None:
            if kind == "ppm":
                got, err = _pair(rec, tokenizer, seq_len, overlong)
            elif "text" in rec and "response" not in rec:
                got, err = _text(rec, tokenizer, seq_len)
            else:
                got, err = _sft(rec, tokenizer, seq_len, sep, overlong)
            examples.extend(got)
            if err == TRUNCATED:
                truncated, err = truncated + 1, None
        if err is not None:
            skipped[err.split(" (")[0]] += 1
            log.warning("%s: record %d skipped: %s", path, i, err)
    if not examples:
        raise NoUsableRecords(f"{path}: no usable {kind} record ({dict(skipped) or 'empty file'})")
    if skipped:
        log.warning("%s: %d records skipped: %s", path, sum(skipped.values()), dict(skipped))
    if truncated:
        log.warning("%s: %d records longer than seq_len %d truncated to it (train.overlong)",
                    path, truncated, seq_len)
    return examples, dict(skipped)
