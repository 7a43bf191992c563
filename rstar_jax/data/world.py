"""The demo world on disk: train/test problems, the pretraining corpus, a tokenizer.

`make_world(cfg, out_dir)` writes

  out_dir/train.jsonl      problems of `data.arith_seed` (what search sees)
  out_dir/test.jsonl       problems of `data.arith_test_seed` (held out)
  out_dir/corpus.jsonl     imperfect step-format solutions of
                           `data.arith_corpus_seed` (base-model pretraining)
  out_dir/tokenizer/       the BPE trained on corpus + questions (HF format)

Each file is written atomically and skipped when it already exists, so a
rerun after an interruption finishes the rest and changes nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Dict

from rstar_jax.config.schema import Config
from rstar_jax.data import prompts
from rstar_jax.data.problems import write_problems

log = logging.getLogger(__name__)

WORLD_FILES = ("train.jsonl", "test.jsonl", "corpus.jsonl", "tokenizer")


def _write_jsonl(path: str, records) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def read_corpus(path: str):
    """The corpus records written by `make_world` (list of dicts)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def make_world(cfg: Config, out_dir: str) -> Dict[str, int]:
    """Writes the missing world files under `out_dir`; returns their counts.

    The problem streams come from `data.arith_*`; the tokenizer is trained
    on the corpus texts in the policy-prompt layout plus the train and test
    questions (questions only: no test answer leaks into it).
    """
    from rstar_jax.data.arith import generate_problems
    from rstar_jax.data.corpus import make_corpus
    from rstar_jax.data.tokenizer import load_tokenizer, train_tokenizer

    d = cfg.data
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, name) for name in WORLD_FILES}
    train = generate_problems(d.arith_seed, d.arith_count, d.arith_levels, d.arith_final_mod_share)
    test = generate_problems(d.arith_test_seed, d.arith_test_count, d.arith_levels,
                             d.arith_final_mod_share)
    for name, problems in (("train.jsonl", train), ("test.jsonl", test)):
        if not os.path.exists(paths[name]):
            write_problems(paths[name], problems)
    if not os.path.exists(paths["corpus.jsonl"]):
        corpus = make_corpus(d.arith_corpus_seed, d.arith_corpus_count, d.arith_levels,
                             d.arith_error_rates, d.arith_habits, d.arith_final_mod_share)
        _write_jsonl(paths["corpus.jsonl"], corpus)
    corpus = read_corpus(paths["corpus.jsonl"])
    if not os.path.exists(paths["tokenizer"]):
        texts = [prompts.policy_prompt(r["query"], r["response"], sep=d.assistant_sep) for r in corpus]
        texts += [p.question for p in train + test]
        tmp = paths["tokenizer"] + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        train_tokenizer(texts, tmp, vocab_size=d.tokenizer_vocab_size)
        os.replace(tmp, paths["tokenizer"])
    tokenizer, _ = load_tokenizer(paths["tokenizer"])
    if len(tokenizer) > cfg.model.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but model.vocab_size is "
                         f"{cfg.model.vocab_size}; raise model.vocab_size")
    counts = {"train": len(train), "test": len(test), "corpus": len(corpus),
              "corpus_correct": sum(bool(r["correct"]) for r in corpus), "vocab": len(tokenizer)}
    log.info("world in %s: %s", out_dir, counts)
    return counts
