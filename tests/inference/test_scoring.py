"""PPM batch scoring equals direct PPM calls, in input order."""

import jax.numpy as jnp
import numpy as np
from inference.inference_helpers import tiny_cfg

from rstar_jax.inference import PPMScorer
from rstar_jax.models import score_transform


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
