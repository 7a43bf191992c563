"""Helpers for engine tests: the tiny config and a small real BPE tokenizer."""

import functools
import os

from rstar_jax.config import load_config
from rstar_jax.data.prompts import SPECIAL_TOKENS
from rstar_jax.models import ArchConfig
from testutil import REPO

_CORPUS = [
    "Let's think step by step and solve the problem with code.",
    "x = 3 + 4 * 5\nprint(x)\n", "The answer is 23. We compute the sum of the first ten numbers.",
    "def f(n):\n    return n * (n + 1) // 2\n", "Step 1: read the question carefully and write it down.",
    "<end_of_step> <end_of_code> <end_of_answer> <code> <output> <answer>",
    "import math\nprint(math.sqrt(16))\n", "So the total cost is 12 dollars and 50 cents.",
]
_ALPHABET = [chr(c) for c in range(32, 127)] + ["\n"]


@functools.lru_cache(maxsize=1)
def make_tokenizer():
    """A character BPE over printable ASCII (no byte fragments, so every token
    decodes to clean text and decoding is concatenation), with the rStar tags
    as added tokens. Untagged, `<end_of_step>`-like strings span many tokens."""
    from tokenizers import Tokenizer, decoders, models, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<unk>"],
                                  initial_alphabet=_ALPHABET, show_progress=False)
    tok.train_from_iterator(_CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>")
    fast.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return fast


# `RSTAR_TEST_KV_LAYOUT=paged` runs the engine tests over the paged KV layout
# (pages of 8 tokens divide every bucket the tests use); an override wins.
_LAYOUT = os.environ.get("RSTAR_TEST_KV_LAYOUT")
_LAYOUT_OVERRIDES = ([f"engine.kv_layout={_LAYOUT}", "engine.page_size=8"] if _LAYOUT else [])


def tiny_cfg(*overrides):
    """The tiny model config with its vocabulary sized to the test tokenizer."""
    return load_config(str(REPO / "configs/models/tiny.yaml"),
                       [f"model.vocab_size={len(make_tokenizer())}", *_LAYOUT_OVERRIDES, *overrides])


def tiny_arch(cfg=None):
    return ArchConfig.from_model_config((cfg or tiny_cfg()).model)
