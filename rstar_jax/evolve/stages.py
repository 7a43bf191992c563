"""The built-in stage functions: thin adapters from a `StageContext` to library calls.

Each takes `ctx` and returns `{"outputs": {...}, "counts": {...}, "metrics": {...}}`.
They hold no method logic: search, extraction, training and evaluation live in
their packages and resume from their own partial output, which is what makes a
killed stage resumable here.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Optional

from rstar_jax.config.schema import Config, replace
from rstar_jax.evolve.context import StageContext

log = logging.getLogger(__name__)


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


def _with_tokenizer(ctx: StageContext, cfg: Optional[Config] = None) -> Config:
    cfg = cfg or ctx.cfg
    tok = ctx.tokenizer_dir()
    if tok and not cfg.model.tokenizer_dir:
        cfg = replace(cfg, model=replace(cfg.model, tokenizer_dir=tok))
    return cfg


def _train_outputs(ctx: StageContext, summary: Dict[str, Any], metrics: Dict[str, Any] = None):
    counts = {k: summary[k] for k in ("steps", "tokens", "examples", "eval_examples") if k in summary}
    return {"outputs": {"model": summary["final"]}, "counts": counts,
            "metrics": {k: v for k, v in (metrics or {}).items() if v is not None}}


def pretrain(ctx: StageContext) -> Dict[str, Any]:
    """Round 0: the base model trained from scratch on the world's corpus.

    The same policy-training function as every round's SFT, from a fresh
    init (`cfg.model`) with `evolve.pretrain` as the optimisation settings.
    """
    from rstar_jax.training import train_policy

    cfg = _with_tokenizer(ctx)
    cfg = replace(cfg, train=replace(cfg.train, sft=cfg.evolve.pretrain))
    corpus = ctx.output(0, "world", "corpus")
    summary = train_policy(cfg, corpus, ctx.path("train"), init_from=None)
    return _train_outputs(ctx, summary, {"pretrain_loss": summary.get("final_loss")})


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
    """The round's policy: SFT from `ctx.sft_init()` on the extracted
    trajectories (this round's, or rounds 1..N's with `evolve.sft_data:
    cumulative`)."""
    data, init = _sft_data(ctx), ctx.sft_init()
    if _empty(data):
        # Search verified nothing: the round keeps its starting policy.
        reason = f"round {ctx.round}: search verified no trajectory; the policy stays {init}"
        log.warning("%s", reason)
        return {"outputs": {"model": init}, "counts": {"examples": 0}, "notes": [reason]}
    from rstar_jax.training import train_policy

    summary = train_policy(_with_tokenizer(ctx), data, ctx.path("train"), init_from=init)
    return _train_outputs(ctx, summary, {"sft_loss": summary.get("final_loss")})


def _sft_data(ctx: StageContext) -> str:
    """The round's SFT file; cumulative: rounds 1..N's records in round
    order, a (query, response) seen in an earlier round dropped."""
    own = ctx.output(ctx.round, "extract", "sft")
    if ctx.cfg.evolve.sft_data != "cumulative" or ctx.round <= 1:
        return own
    from rstar_jax.data.extract import write_jsonl

    seen, recs = set(), []
    for r in range(1, ctx.round + 1):
        path = own if r == ctx.round else ctx.output(r, "extract", "sft")
        with open(path, encoding="utf-8") as f:
            for rec in (json.loads(line) for line in f if line.strip()):
                key = (rec.get("query"), rec.get("response"))
                if key not in seen:
                    seen.add(key)
                    recs.append(rec)
    out = ctx.path("data.jsonl")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    write_jsonl(out, recs)
    return out


def _empty(path: str) -> bool:
    with open(path, encoding="utf-8") as f:
        return not any(line.strip() for line in f)


def ppm(ctx: StageContext) -> Dict[str, Any]:
    """The round's PPM from `ctx.ppm_init()` on the extracted pairs.

    `ppm_pair_acc` is the pair accuracy on held-out pairs when
    `train.eval_fraction` holds some out, else on the last training window.
    """
    data = ctx.output(ctx.round, "extract", "ppm")
    if _empty(data):
        previous = ctx.output(ctx.round - 1, "ppm", "model", required=False) if ctx.round > 1 else None
        # No problem had both a correct and a wrong answer. Keep the previous
        # PPM; with none, the PPM's initialisation (a policy checkpoint, which
        # the loader gives a fresh, seeded value head) stands in, untrained.
        kept = previous or ctx.ppm_init()
        reason = (f"round {ctx.round}: search produced no preference pair; the PPM stays {kept}"
                  + ("" if previous else " (untrained value head)"))
        log.warning("%s", reason)
        return {"outputs": {"model": kept}, "counts": {"examples": 0},
                "metrics": {}, "notes": [reason]}
    from rstar_jax.training import train_ppm

    summary = train_ppm(_with_tokenizer(ctx), data, ctx.path("train"), init_from=ctx.ppm_init())
    held = (summary.get("eval") or {}).get("pair_accuracy")
    acc = held if held is not None else summary.get("pair_accuracy")
    return _train_outputs(ctx, summary, {"ppm_pair_acc": acc, "ppm_loss": summary.get("final_loss")})


def _frac(summary: Dict[str, Any], key: str) -> Optional[float]:
    v = summary.get(key)
    return None if v is None else float(v) / 100.0


def evaluate(ctx: StageContext) -> Dict[str, Any]:
    """Held-out test accuracy: greedy; MCTS+PPM; PPM-selected vs majority.

    Round 0 measures the base model's greedy accuracy only. Later rounds run
    greedy, best-of-k (`eval.k` sampled trajectories: the PPM's top-scored
    answer and the majority vote over the *same* trajectories) and MCTS
    with the round's PPM, through `rstar_jax.evaluation.evaluate_methods`,
    under the one protocol of `inference_eval` (zero-shot prompts). The
    manifest's `details` state that protocol and, per level, how the PPM
    scores right against wrong answers (`evaluation.report.ppm_margins`).
    """
    from rstar_jax.data.problems import read_problems
    from rstar_jax.evaluation.harness import evaluate_methods
    from rstar_jax.evaluation.methods import protocol

    if ctx.round == 0:
        test = ctx.output(0, "world", "test", required=False)
        problems_ = read_problems(test) if test else _test_problems(ctx)
        cfg = model_overrides(ctx.cfg, ctx.policy(), ctx.tokenizer_dir())
        res = evaluate_methods(cfg, problems_, ["greedy"], ctx.out_dir)
        return {"counts": {"test": len(problems_)},
                "metrics": {"greedy_acc": _frac(res["greedy"], "accuracy")}}
    problems_ = read_problems(ctx.problems("test"))
    cfg = with_ppm(model_overrides(ctx.cfg, ctx.policy(), ctx.tokenizer_dir()), ctx.ppm())
    scored = ("best_of_n", "mcts_ppm")
    res = evaluate_methods(cfg, problems_, ["greedy", *scored], ctx.out_dir)
    bon = res["best_of_n"]
    metrics = {
        "greedy_acc": _frac(res["greedy"], "accuracy"),
        "mcts_ppm_acc": _frac(res["mcts_ppm"], "accuracy"),
        "ppm_selected_acc": _frac(bon, "best@k"),
        "majority_acc": _frac(bon, "maj@k"),
        "trajectories": bon.get("k") or ctx.cfg.eval.k,
    }
    details = {"protocol": protocol(cfg),
               "ppm_margins": {m: _margins(ctx, cfg, m) for m in scored}}
    return {"counts": {"test": len(problems_)}, "metrics": metrics, "details": details}


def _margins(ctx: StageContext, cfg: Config, method: str) -> Dict[str, Any]:
    """Per-level PPM margins of `method`'s stored candidates (evaluation/report.py)."""
    import functools

    from rstar_jax.evaluation.report import ppm_margins
    from rstar_jax.evaluation.results import ResultStore
    from rstar_jax.execution.grading import grade

    results = ResultStore(os.path.join(ctx.out_dir, method, "test", "results.jsonl")).load()
    return ppm_margins(list(results.values()),
                       functools.partial(grade, timeout_s=cfg.eval.grade_timeout_s))


def _test_problems(ctx: StageContext):
    from rstar_jax.data.sources import load_problems

    return load_problems(ctx.cfg.data, "test")
