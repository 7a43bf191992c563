"""Input pipelines: tokenised examples -> fixed-shape global batches.

A *plan* fixes, for every step of the run, which examples form its batch
and how long its rows are. It depends only on the example lengths, the
batch size and the seed, so every process computes the same plan, and a
resumed run continues from step `k` of the same plan: the iterator state is
just the next step number (saved with the checkpoint).

Two layouts:
- `bucket`: each epoch is a seeded permutation; windows of 8 batches are
  sorted by length and cut into batches, whose rows are padded to the
  smallest configured bucket that fits (few shapes, so few compiles, and
  little padding); batch order is then shuffled.
- `pack` (LM only): examples are packed first-fit into rows of `seq_len`
  with `segment_ids` (attention stays inside an example) and per-example
  positions. One shape, almost no padding, but every row pays attention
  over the whole `seq_len`.

The plan is served through a `grain.MapDataset` (random access: step `k`
is `dataset[k]`), which maps each step to its collated numpy batch. In a
multi-process run each process collates only the rows its devices hold
and `to_global` assembles the global array with
`jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Sequence

import grain
import numpy as np

from rstar_jax.training.records import LMExample, PairExample

WINDOW = 8  # batches per sort window (bucketing)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Per step: example indices `[B]` (or rows of them when packed) and a
    row length."""

    steps: List[List]  # bucket: [B] ints; pack: [B] lists of ints
    lengths: List[int]
    packed: bool
    steps_per_epoch: int


def _bucket_for(n: int, buckets: Sequence[int], seq_len: int) -> int:
    for b in sorted(buckets):
        if b >= n and b <= seq_len:
            return b
    return seq_len


def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """A seeded permutation of range(n) from grain's deterministic shuffle."""
    ds = grain.MapDataset.range(n).shuffle(seed=(seed * 1_000_003 + epoch) % (1 << 32))
    return np.fromiter((ds[i] for i in range(n)), np.int64, n)


def _epoch_batches(order: np.ndarray, lengths: np.ndarray, batch: int) -> List[np.ndarray]:
    """Sort windows by length, cut into full batches (the last one wraps
    around to the epoch's first examples so every batch is full)."""
    n = len(order)
    nb = max(1, math.ceil(n / batch))
    padded = np.concatenate([order, np.resize(order, nb * batch - n)]) if nb * batch > n else order
    out = []
    for w in range(0, nb, WINDOW):
        win = padded[w * batch:(w + WINDOW) * batch]
        win = win[np.argsort(lengths[win], kind="stable")]
        out.extend(win[i:i + batch] for i in range(0, len(win), batch))
    return out


def bucket_plan(lengths: Sequence[int], *, batch: int, epochs: float, seed: int,
                buckets: Sequence[int], seq_len: int) -> Plan:
    """The bucketed plan for `epochs` passes (fractional epochs truncate)."""
    lens = np.asarray(lengths)
    per_epoch = max(1, math.ceil(len(lens) / batch))
    total = max(1, int(round(epochs * per_epoch)))
    steps, row_lens = [], []
    epoch = 0
    while len(steps) < total:
        batches = _epoch_batches(_permutation(len(lens), seed, epoch), lens, batch)
        shuffle = _permutation(len(batches), seed + 7919, epoch)
        for j in shuffle:
            steps.append([int(i) for i in batches[j]])
            row_lens.append(_bucket_for(int(lens[batches[j]].max()), buckets, seq_len))
        epoch += 1
    return Plan(steps[:total], row_lens[:total], False, per_epoch)


def pack_plan(lengths: Sequence[int], *, batch: int, epochs: float, seed: int, seq_len: int) -> Plan:
    """Packed rows of `seq_len` (first fit over a seeded order), `batch` rows a step."""
    lens = np.asarray(lengths)
    steps = []
    epoch = 0
    per_epoch = None
    total = None
    while total is None or len(steps) < total:
        rows: List[List[int]] = []
        room: List[int] = []
        for i in _permutation(len(lens), seed, epoch):
            n = int(lens[i])
            for r, free in enumerate(room):
                if free >= n:
                    rows[r].append(int(i))
                    room[r] -= n
                    break
            else:
                rows.append([int(i)])
                room.append(seq_len - n)
        nb = max(1, math.ceil(len(rows) / batch))
        rows = rows + rows[:nb * batch - len(rows)] if nb * batch > len(rows) else rows
        while len(rows) < nb * batch:  # fewer rows than one batch: repeat
            rows = rows + rows[:nb * batch - len(rows)]
        if per_epoch is None:
            per_epoch = nb
            total = max(1, int(round(epochs * per_epoch)))
        order = _permutation(nb, seed + 7919, epoch)
        steps.extend(rows[j * batch:(j + 1) * batch] for j in order)
        epoch += 1
    return Plan(steps[:total], [seq_len] * total, True, per_epoch)


def collate_lm(examples: Sequence[LMExample], rows: Sequence, length: int, packed: bool,
               pad_id: int = 0) -> Dict[str, np.ndarray]:
    """LM batch: inputs/targets `[R, T]` int32, weights `[R, T]` float32,
    positions `[R, T]` int32 and, when packed, segment_ids `[R, T]` int32
    (0 on padding)."""
    r = len(rows)
    out = {
        "inputs": np.full((r, length), pad_id, np.int32),
        "targets": np.zeros((r, length), np.int32),
        "weights": np.zeros((r, length), np.float32),
        "positions": np.zeros((r, length), np.int32),
    }
    if packed:
        out["segment_ids"] = np.zeros((r, length), np.int32)
    for i, row in enumerate(rows):
        members = row if packed else [row]
        t = 0
        for s, idx in enumerate(members):
            ex = examples[idx]
            n = ex.length
            out["inputs"][i, t:t + n] = ex.inputs
            out["targets"][i, t:t + n] = ex.targets
            out["weights"][i, t:t + n] = ex.weights
            out["positions"][i, t:t + n] = np.arange(n)
            if packed:
                out["segment_ids"][i, t:t + n] = s + 1
            t += n
        if not packed:
            out["positions"][i, t:] = np.arange(t, length)
    return out


def collate_pairs(examples: Sequence[PairExample], rows: Sequence[int], length: int,
                  pad_id: int = 0) -> Dict[str, np.ndarray]:
    """PPM batch of R pairs: tokens `[R, 2, T]` (pos, neg), lengths `[R, 2]`,
    weights `[R]`, q `[R, 2]` (PQM targets)."""
    r = len(rows)
    tokens = np.full((r, 2, length), pad_id, np.int32)
    lengths = np.zeros((r, 2), np.int32)
    weights = np.zeros((r,), np.float32)
    q = np.zeros((r, 2), np.float32)
    for i, idx in enumerate(rows):
        ex = examples[idx]
        for j, seq in enumerate((ex.pos, ex.neg)):
            tokens[i, j, :len(seq)] = seq
            lengths[i, j] = len(seq)
        weights[i] = ex.weight
        q[i] = (ex.pos_q, ex.neg_q)
    return {"tokens": tokens, "lengths": lengths, "weights": weights, "q": q}


def make_dataset(examples: Sequence, plan: Plan, *, kind: str, rows: slice = slice(None),
                 pad_id: int = 0) -> grain.MapDataset:
    """`dataset[k]` = the numpy batch of step `k` (only `rows` of it)."""
    def collate(k: int) -> Dict[str, np.ndarray]:
        members = plan.steps[k][rows]
        if kind == "ppm":
            return collate_pairs(examples, members, plan.lengths[k], pad_id)
        return collate_lm(examples, members, plan.lengths[k], plan.packed, pad_id)

    return grain.MapDataset.range(len(plan.steps)).map(collate)


def local_rows(sharding, global_batch: int) -> slice:
    """The contiguous batch rows this process's devices hold under `sharding`
    (dim 0 of a `[global_batch, ...]` array)."""
    idx = sharding.addressable_devices_indices_map((global_batch,))
    starts = [s[0].start or 0 for s in idx.values()]
    stops = [global_batch if s[0].stop is None else s[0].stop for s in idx.values()]
    return slice(min(starts), max(stops))


def to_global(batch: Dict[str, np.ndarray], shardings: Dict, global_batch: int) -> Dict:
    """Process-local rows -> global `jax.Array`s with the given shardings."""
    import jax

    return {
        k: jax.make_array_from_process_local_data(shardings[k], v, (global_batch,) + v.shape[1:])
        for k, v in batch.items()
    }


def padding_fraction(plan: Plan, lengths: Sequence[int]) -> float:
    """Fraction of row slots that are padding over the whole plan."""
    lens = np.asarray(lengths)
    used = total = 0
    for step, n in zip(plan.steps, plan.lengths):
        for row in step:
            used += int(lens[row].sum()) if plan.packed else int(lens[row])
            total += n
    return 1.0 - used / max(total, 1)
