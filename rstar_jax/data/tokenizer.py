"""Tokenizers: train the demo's small BPE, and load any HF tokenizer with the rStar tags.

`train_tokenizer` builds a byte-level BPE with HF `tokenizers` (digits split
one per token, so a tiny model copies numbers digit by digit instead of
memorising multi-digit symbols) and saves it as an ordinary HF tokenizer
directory (`tokenizer.json`, `tokenizer_config.json`,
`special_tokens_map.json`) that `transformers.AutoTokenizer.from_pretrained`
loads offline. The rStar step tags and `<|user|>`/`<|assistant|>` (spec
section 2) are single special tokens, as are pad and eos.

`load_tokenizer` is the one loader every model path uses: it opens any HF
tokenizer directory and adds whichever rStar tags are missing, returning how
many it added so the embedding table can be resized by exactly that much.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Iterable, List, Tuple

from rstar_jax.data import prompts

log = logging.getLogger(__name__)

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"
DEMO_SPECIAL_TOKENS: Tuple[str, ...] = (PAD_TOKEN, EOS_TOKEN) + tuple(prompts.SPECIAL_TOKENS)


def train_tokenizer(texts: Iterable[str], out_dir: str, vocab_size: int = 512,
                    min_frequency: int = 2):
    """Trains a byte-level BPE on `texts` and saves an HF tokenizer dir.

    Args:
      texts: training text (corpus responses and questions).
      out_dir: the directory to write (created; files overwritten).
      vocab_size: total size including the special tokens.
      min_frequency: a pair must occur this often to be merged.

    Returns:
      The `transformers` fast tokenizer, as loaded back from `out_dir`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency,
        special_tokens=list(DEMO_SPECIAL_TOKENS), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN,
        additional_special_tokens=list(prompts.SPECIAL_TOKENS),
    )
    os.makedirs(out_dir, exist_ok=True)
    fast.save_pretrained(out_dir)
    # transformers 5 folds this file into tokenizer_config.json; older
    # readers (and people) still look for it.
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump({"pad_token": PAD_TOKEN, "eos_token": EOS_TOKEN,
                   "additional_special_tokens": list(prompts.SPECIAL_TOKENS)}, f, indent=2)
    log.info("tokenizer: %d tokens saved to %s", len(fast), out_dir)
    return load_tokenizer(out_dir)[0]


def missing_special_tokens(tokenizer) -> List[str]:
    """The rStar tags (spec section 2) that `tokenizer` lacks as single tokens."""
    vocab = tokenizer.get_vocab()
    return [t for t in prompts.SPECIAL_TOKENS if t not in vocab]


def load_tokenizer(path: str, add_special_tokens: bool = True):
    """Loads any HF tokenizer directory, offline.

    Args:
      path: a directory with `tokenizer.json` or the files of a slow tokenizer.
      add_special_tokens: add the rStar tags it lacks as special tokens.

    Returns:
      `(tokenizer, num_added)`: the caller grows the embedding table by
      `num_added` rows (new ids are `len(tokenizer) - num_added` onwards).
    """
    from transformers import AutoTokenizer

    if not os.path.isdir(path):
        raise FileNotFoundError(f"tokenizer directory not found: {path}")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not add_special_tokens:
        return tokenizer, 0
    missing = missing_special_tokens(tokenizer)
    if not missing:
        return tokenizer, 0
    from tokenizers import AddedToken

    added = tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True
    )
    log.info("added %d rStar special token(s) to the tokenizer from %s", added, path)
    return tokenizer, int(added)
