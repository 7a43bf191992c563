"""PPM batch scoring equals direct PPM calls, in input order."""

import jax.numpy as jnp
import numpy as np
from inference.inference_helpers import tiny_cfg

from rstar_jax.inference import PPMScorer
from rstar_jax.models import score_transform
from testutil import count_compiles


def test_scorer_equals_direct_ppm_calls(ppm, tokenizer):
    cfg = tiny_cfg("engine.max_seq_len=64", "engine.prefill_buckets=[8,16,32]",
                   "engine.score_batch_size=3", "ppm.score_transform=tanh_scaled")
    texts = ["x = 3 + 4", "The answer is 23. We compute the sum of the first ten numbers.",
             "def f(n):", "print(x)\n<end_of_step>", "So the total cost is 12 dollars", "a"]
    scorer = PPMScorer(ppm, tokenizer, cfg)
    got = scorer.score(texts)
    assert got.dtype == np.float32 and got.shape == (6,)
    for text, score in zip(texts, got):
        ids = tokenizer.encode(text, add_special_tokens=False)
        raw = ppm(jnp.asarray([ids], jnp.int32), jnp.asarray([len(ids)]))
        want = float(score_transform(raw, cfg.ppm)[0])
        np.testing.assert_allclose(score, want, rtol=1e-5, atol=1e-6)
    assert len(set(np.round(got, 6))) == 6
    np.testing.assert_array_equal(scorer.score(texts[::-1]), got[::-1])


TEXTS = ["x = 3 + 4", "The answer is 23. We compute the sum of the first ten numbers.", "def f(n):",
         "print(x)\n<end_of_step>", "So the total cost is 12 dollars", "a", "import math",
         "Step 1: read the question carefully", "n * (n + 1) // 2", "<code>\nprint(7)", "b = 2"]


def _shapes(scorer):
    """Records the (rows, length) of every device call the scorer makes."""
    seen, run = [], scorer._run

    def spy(params, tokens, lengths):
        seen.append(tuple(tokens.shape))
        return run(params, tokens, lengths)

    scorer._run = spy
    return seen


def test_row_buckets_pad_small_calls_less_and_score_the_same(ppm, tokenizer):
    cfg = tiny_cfg("engine.max_seq_len=64", "engine.prefill_buckets=[8,16,32]",
                   "engine.score_batch_size=8", "ppm.score_transform=tanh_scaled")
    bucketed = PPMScorer(ppm, tokenizer, cfg)
    full = PPMScorer(ppm, tokenizer, cfg, row_buckets=[8])  # the old always-full padding
    assert bucketed.row_buckets == [1, 2, 4, 8] and full.row_buckets == [8]
    seen = _shapes(bucketed)
    got = {n: bucketed.score(TEXTS[:n]) for n in (1, 3, 5, 11)}
    # 1 text -> 1 row, 3 -> 4, 5 -> 8, 11 -> one full batch of 8 plus 3 texts in 4 rows.
    assert [r for r, _ in seen] == [1, 4, 8, 8, 4]
    # Equal up to float32 rounding: XLA's CPU matmul for 1-4 rows is another
    # kernel than for 8 (measured: 1e-7 absolute, 4.6e-7 relative).
    for n, scores in got.items():
        np.testing.assert_allclose(scores, full.score(TEXTS[:n]), rtol=2e-6, atol=0)
    alone = np.concatenate([bucketed.score([t]) for t in TEXTS])
    np.testing.assert_allclose(got[11], alone, rtol=2e-6, atol=0)
    assert len(set(got[11].tolist())) == 11


def test_scorer_warmup_compiles_every_shape_once(ppm, tokenizer):

    cfg = tiny_cfg("engine.max_seq_len=64", "engine.prefill_buckets=[8,16,32]",
                   "engine.score_batch_size=4", "ppm.score_transform=tanh_scaled")
    scorer = PPMScorer(ppm, tokenizer, cfg)
    with count_compiles() as compiles:
        scorer.warmup()
        warm = len(compiles)
        for n in (1, 2, 3, 4, 7, 11):  # every row bucket, every length bucket
            scorer.score([t * 3 for t in TEXTS[:n]])
            scorer.score(TEXTS[-n:])
    assert warm >= len(scorer.row_buckets) * len(scorer.buckets) == 3 * 4
    assert len(compiles) == warm


def test_score_buckets_replace_the_prefill_buckets(ppm, tokenizer):
    base = ("engine.max_seq_len=64", "engine.prefill_buckets=[8,16,32]", "engine.score_batch_size=4",
            "ppm.score_transform=tanh_scaled")
    fine = PPMScorer(ppm, tokenizer, tiny_cfg(*base, "engine.score_buckets=[8,12,16,24,32,48]"))
    coarse = PPMScorer(ppm, tokenizer, tiny_cfg(*base))
    assert fine.buckets == [8, 12, 16, 24, 32, 48, 64] and coarse.buckets == [8, 16, 32, 64]
    seen = _shapes(fine)
    texts = [t * 2 for t in TEXTS[:4]]
    lengths = [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]
    got = fine.score(texts)
    # The four texts fall in one length bucket: one call of 4 rows at that bucket.
    assert seen == [(4, min(b for b in fine.buckets if b >= max(lengths)))]
    np.testing.assert_allclose(got, coarse.score(texts), rtol=2e-6, atol=1e-7)


def test_one_row_bucket_scores_a_text_the_same_in_any_company(ppm, tokenizer):
    # Every call [4, bucket of the text's own length]: bit-identical scores
    # however the texts are grouped (what a resumed search relies on).
    cfg = tiny_cfg("engine.max_seq_len=64", "engine.prefill_buckets=[8,16,32]",
                   "engine.score_batch_size=4", "engine.score_row_buckets=[4]",
                   "ppm.score_transform=tanh_scaled")
    scorer = PPMScorer(ppm, tokenizer, cfg)
    assert scorer.row_buckets == [4]
    texts = TEXTS + [t * 3 for t in TEXTS]
    together = scorer.score(texts)
    for start, size in ((0, 1), (3, 2), (5, 7), (11, 11), (2, 17)):
        part = list(range(start, min(start + size, len(texts))))
        np.testing.assert_array_equal(scorer.score([texts[i] for i in part]), together[part])
    np.testing.assert_array_equal(np.concatenate([scorer.score([t]) for t in texts]), together)
