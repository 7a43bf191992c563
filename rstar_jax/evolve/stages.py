"""The built-in stage functions: thin adapters from a `StageContext` to library calls.

Each takes `ctx` and returns `{"outputs": {...}, "counts": {...}, "metrics": {...}}`.
They hold no method logic: search, extraction, training and evaluation live in
their packages and resume from their own partial output, which is what makes a
killed stage resumable here.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict

from rstar_jax.evolve.context import StageContext

log = logging.getLogger(__name__)


class StageUnavailable(RuntimeError):
    """The library function behind a stage is not available in this checkout."""


def world(ctx: StageContext) -> Dict[str, Any]:
    """Round 0: the demo world (problems, corpus, tokenizer) under the stage dir."""
    from rstar_jax.data.world import make_world

    counts = make_world(ctx.cfg, ctx.out_dir)
    outputs = {k: ctx.path(f) for k, f in (("train", "train.jsonl"), ("test", "test.jsonl"),
                                          ("corpus", "corpus.jsonl"), ("tokenizer", "tokenizer"))}
    return {"outputs": outputs, "counts": counts}


def problems(ctx: StageContext) -> Dict[str, Any]:
    """The round's train and held-out test problems, frozen to files."""
    from rstar_jax.data.problems import write_problems
    from rstar_jax.data.sources import load_problems

    outputs, counts = {}, {}
    for split in ("train", "test"):
        path = ctx.path(f"{split}.jsonl")
        if not os.path.exists(path):
            write_problems(path, load_problems(ctx.cfg.data, split))
        with open(path, encoding="utf-8") as f:
            counts[split] = sum(1 for line in f if line.strip())
        outputs[split] = path
    return {"outputs": outputs, "counts": counts}


def _unavailable(stage: str, needs: str):
    raise StageUnavailable(
        f"stage '{stage}' needs {needs}, which this checkout does not provide yet; map the stage "
        f"to a function with evolve.stage_functions.{stage}=module:function")


def pretrain(ctx: StageContext) -> Dict[str, Any]:
    """Round 0: the base model trained from scratch on the world's corpus."""
    _unavailable("pretrain", "rstar_jax.training (SFT from a random init)")


def search(ctx: StageContext) -> Dict[str, Any]:
    """MCTS trees for the round's training problems (gold terminal values)."""
    _unavailable("search", "rstar_jax.search (the MCTS driver)")


def extract(ctx: StageContext) -> Dict[str, Any]:
    """SFT and PPM records from the round's trees."""
    _unavailable("extract", "rstar_jax.data.extract")


def sft(ctx: StageContext) -> Dict[str, Any]:
    """The round's policy: SFT from `ctx.sft_init()` on the extracted trajectories."""
    _unavailable("sft", "rstar_jax.training (policy SFT)")


def ppm(ctx: StageContext) -> Dict[str, Any]:
    """The round's PPM from `ctx.ppm_init()` on the extracted pairs."""
    _unavailable("ppm", "rstar_jax.training (PPM training)")


def evaluate(ctx: StageContext) -> Dict[str, Any]:
    """Greedy, MCTS+PPM, majority and PPM-selected accuracy on the test problems."""
    _unavailable("eval", "rstar_jax.evaluation")
