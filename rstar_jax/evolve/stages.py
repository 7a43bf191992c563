"""The built-in stage functions: thin adapters from a `StageContext` to library calls.

Each takes `ctx` and returns `{"outputs": {...}, "counts": {...}, "metrics": {...}}`.
They hold no method logic: search, extraction, training and evaluation live in
their packages and resume from their own partial output, which is what makes a
killed stage resumable here.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional

from rstar_jax.config.schema import Config, replace
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


def model_overrides(cfg: Config, path: Optional[str], tokenizer_dir: Optional[str]) -> Config:
    """`cfg` with its model weights at `path`: an HF directory (config.json) or our checkpoint."""
    model = cfg.model
    if path:
        if os.path.isfile(os.path.join(path, "config.json")) and not os.path.isdir(
                os.path.join(path, "params")):
            model = replace(model, hf_dir=path, checkpoint=None)
        else:
            model = replace(model, checkpoint=path)
    if tokenizer_dir and not model.tokenizer_dir:
        model = replace(model, tokenizer_dir=tokenizer_dir)
    return replace(cfg, model=model)


def with_ppm(cfg: Config, path: Optional[str]) -> Config:
    """`cfg` whose PPM checkpoint is `path` (None: unchanged)."""
    return cfg if not path else replace(cfg, ppm=replace(cfg.ppm, checkpoint=path))


def _needs_scorer(cfg: Config) -> bool:
    m = cfg.mcts
    return m.ppm_init_value or m.terminal_value == "ppm" or m.mode in ("best_of_n", "beam")


def search(ctx: StageContext) -> Dict[str, Any]:
    """MCTS trees for the round's training problems (gold terminal values).

    The policy is `ctx.search_policy()`; rounds with `mcts.ppm_init_value`
    score new nodes with the previous round's PPM. The search resumes from
    the tree files already in the stage directory; on a pod each process
    searches its own shard.
    """
    from rstar_jax.data.problems import read_problems
    from rstar_jax.execution.pool import ExecutorPool
    from rstar_jax.inference import load_policy_engine, load_ppm_scorer
    from rstar_jax.search.run import search_to_dir

    problems = read_problems(ctx.problems("train"))
    cfg = model_overrides(ctx.cfg, ctx.search_policy(), ctx.tokenizer_dir())
    cfg = with_ppm(cfg, ctx.search_ppm())
    engine = load_policy_engine(cfg)
    scorer = load_ppm_scorer(cfg) if _needs_scorer(cfg) else None
    executor = ExecutorPool(cfg.executor)
    try:
        summary = search_to_dir(cfg, problems, ctx.path("trees"), engine, executor, scorer)
    finally:
        executor.close()
    solved, total = _count_solved(ctx.path("trees"))
    counts = {"problems": total, "solved": solved, "rollouts": summary.get("rollouts", 0)}
    return {"outputs": {"trees": ctx.path("trees")}, "counts": counts,
            "metrics": {"solved_share": solved / total if total else 0.0}}


def _count_solved(tree_dir: str):
    """(solved, total) over every shard's tree file (all processes' work)."""
    from rstar_jax.search.treefile import load_records

    records = load_records(tree_dir)
    return sum(bool(r.get("solved")) for r in records), len(records)


def extract(ctx: StageContext) -> Dict[str, Any]:
    """SFT and PPM records from the round's trees (spec section 5)."""
    from rstar_jax.data.extract import extract_to_dir

    summary = extract_to_dir(ctx.output(ctx.round, "search", "trees"), ctx.out_dir, ctx.cfg)
    counts = {k: v for k, v in summary.items() if isinstance(v, int)}
    return {"outputs": {"sft": ctx.path("sft.jsonl"), "ppm": ctx.path("ppm.jsonl")}, "counts": counts}


def sft(ctx: StageContext) -> Dict[str, Any]:
    """The round's policy: SFT from `ctx.sft_init()` on the extracted trajectories."""
    _unavailable("sft", "rstar_jax.training (policy SFT)")


def ppm(ctx: StageContext) -> Dict[str, Any]:
    """The round's PPM from `ctx.ppm_init()` on the extracted pairs."""
    _unavailable("ppm", "rstar_jax.training (PPM training)")


def evaluate(ctx: StageContext) -> Dict[str, Any]:
    """Greedy, MCTS+PPM, majority and PPM-selected accuracy on the test problems."""
    _unavailable("eval", "rstar_jax.evaluation")
