"""Batch plans: seeded and deterministic, every example once per epoch,
bucketed row lengths, packing with segment ids, per-process row slices."""

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from rstar_jax.training import pipeline
from rstar_jax.training.records import LMExample


def _lm(n, start=1):
    a = np.arange(start, start + n, dtype=np.int32)
    return LMExample(a, a + 100, np.ones(n, np.float32))


def test_bucket_plan_is_seeded_and_covers_each_epoch():
    lengths = [5, 40, 7, 100, 33, 2, 64, 9, 12, 70]
    kw = dict(batch=4, epochs=2.0, buckets=[16, 64, 128], seq_len=128)
    a = pipeline.bucket_plan(lengths, seed=0, **kw)
    assert a == pipeline.bucket_plan(lengths, seed=0, **kw)
    assert a.steps != pipeline.bucket_plan(lengths, seed=1, **kw).steps
    assert a.steps_per_epoch == 3 and len(a.steps) == 6
    for epoch in (a.steps[:3], a.steps[3:]):
        seen = [i for s in epoch for i in s]
        assert len(seen) == 12 and set(seen) == set(range(10))  # 2 wrap-around fillers
    for s, n in zip(a.steps, a.lengths):
        longest = max(lengths[i] for i in s)
        assert n == min(b for b in (16, 64, 128) if b >= longest)
    # buckets pad far less than rows of the full seq_len (1 - 34.2/128 = 0.73)
    assert pipeline.padding_fraction(a, lengths) < 0.6


def test_pack_plan_and_collate_keep_examples_apart():
    exs = [_lm(n, 10 * i) for i, n in enumerate([3, 5, 2, 4, 6])]
    plan = pipeline.pack_plan([e.length for e in exs], batch=2, epochs=1.0, seed=0, seq_len=8)
    rows = [r for s in plan.steps for r in s]
    assert all(sum(exs[i].length for i in r) <= 8 for r in rows)
    assert set(i for r in rows for i in r) == set(range(5))
    b = pipeline.collate_lm(exs, [[1, 2]], 8, packed=True)
    np.testing.assert_array_equal(b["inputs"][0], [10, 11, 12, 13, 14, 20, 21, 0])
    np.testing.assert_array_equal(b["targets"][0], [110, 111, 112, 113, 114, 120, 121, 0])
    np.testing.assert_array_equal(b["segment_ids"][0], [1, 1, 1, 1, 1, 2, 2, 0])
    np.testing.assert_array_equal(b["positions"][0], [0, 1, 2, 3, 4, 0, 1, 0])
    np.testing.assert_array_equal(b["weights"][0], [1, 1, 1, 1, 1, 1, 1, 0])


def test_dataset_serves_plan_steps_and_row_slices():
    exs = [_lm(n) for n in (3, 4, 5, 6)]
    plan = pipeline.bucket_plan([e.length for e in exs], batch=4, epochs=1.0, seed=3,
                                buckets=[8], seq_len=8)
    full = pipeline.make_dataset(exs, plan, kind="lm")[0]
    half = pipeline.make_dataset(exs, plan, kind="lm", rows=slice(2, 4))[0]
    assert full["inputs"].shape == (4, 8)
    np.testing.assert_array_equal(full["inputs"][2:], half["inputs"])
    mesh = jax.make_mesh((2, 4), ("data", "tensor"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    sh = NamedSharding(mesh, PartitionSpec("data"))
    assert pipeline.local_rows(sh, 8) == slice(0, 8)  # one process holds every row
    arr = pipeline.to_global(full, {k: sh for k in full}, 4)
    np.testing.assert_array_equal(np.asarray(arr["inputs"]), full["inputs"])
