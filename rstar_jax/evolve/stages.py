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

from rstar_jax.config.schema import CHOICES, Config, replace
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
    """The round's train and held-out test problems, frozen to files (no test
    file when the data has no test split: `eval.benchmarks` are then the
    round's only evaluation)."""
    from rstar_jax.data.problems import write_problems
    from rstar_jax.data.sources import load_problems

    outputs, counts = {}, {}
    splits = ("train", "test") if has_test_split(ctx.cfg.data) else ("train",)
    for split in splits:
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
    from rstar_jax.models.loading import is_hf_dir

    model = cfg.model
    if path:
        if is_hf_dir(path):
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

    `evolve.ppm_heldout` of the round's problems (seeded by `train.seed`)
    keep their pairs out of training; `ppm_pair_acc` is the share of those
    held-out pairs the trained PPM ranks right (scored as the search scores,
    `_heldout_accuracy`). Whole problems are held out, not single pairs:
    pairs of one problem share prompts and steps, so a pair whose twin was
    trained on says little about unseen problems. With no held-out problem
    (`ppm_heldout: 0`, or one problem) it is the training loop's figure:
    held-out records under `train.eval_fraction`, else the last training
    window, and the details say which.
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

    cfg = _with_tokenizer(ctx)
    train_path, held_path, held_ids = split_pairs(data, ctx.path("pairs"), cfg.evolve.ppm_heldout,
                                                  cfg.train.seed)
    if held_ids:  # the held-out problems replace the loop's own held-out records
        cfg = replace(cfg, train=replace(cfg.train, eval_fraction=0.0))
    summary = train_ppm(cfg, train_path, ctx.path("train"), init_from=ctx.ppm_init())
    if held_ids:
        acc, pairs = _heldout_accuracy(with_ppm(cfg, summary["final"]), held_path)
        source = {"measured_on": "held_out_problems", "problems": len(held_ids), "pairs": pairs}
    else:
        held = (summary.get("eval") or {}).get("pair_accuracy")
        acc = held if held is not None else summary.get("pair_accuracy")
        source = {"measured_on": "held_out_records" if held is not None else "training_window",
                  "problems": None, "pairs": summary.get("eval_examples") if held is not None else None}
    out = _train_outputs(ctx, summary, {"ppm_pair_acc": acc, "ppm_loss": summary.get("final_loss")})
    out["details"] = {"ppm_pairs": {"heldout_share": ctx.cfg.evolve.ppm_heldout, **source}}
    return out


def split_pairs(path: str, out_dir: str, share: float, seed: int):
    """(train file, held-out file or None, held-out problem ids) of a PPM pair file.

    `share` of its problems (by the records' `id`; at least one when
    `share > 0`, never all), chosen by a seeded permutation of the sorted
    ids, so a rerun holds out the same problems. With nothing held out the
    file itself is the training file.
    """
    import numpy as np

    from rstar_jax.data.extract import write_jsonl

    with open(path, encoding="utf-8") as f:
        recs = [json.loads(line) for line in f if line.strip()]
    ids = sorted({str(r.get("id", r.get("prompt"))) for r in recs})
    n_held = 0 if share <= 0 or len(ids) < 2 else min(len(ids) - 1, max(1, round(share * len(ids))))
    if not n_held:
        return path, None, []
    order = np.random.default_rng(seed + 29).permutation(len(ids))
    held = sorted(ids[i] for i in order[:n_held])
    keep = set(held)
    os.makedirs(out_dir, exist_ok=True)
    train_path, held_path = os.path.join(out_dir, "train.jsonl"), os.path.join(out_dir, "heldout.jsonl")
    write_jsonl(train_path, [r for r in recs if str(r.get("id", r.get("prompt"))) not in keep])
    write_jsonl(held_path, [r for r in recs if str(r.get("id", r.get("prompt"))) in keep])
    return train_path, held_path, held


def _heldout_accuracy(cfg: Config, held_path: str):
    """(share of pairs whose chosen text outscores the rejected one, pairs).

    Scored by the PPM scorer the search and evaluation use (prompt +
    continuation, `ppm.score_transform`); a tie counts as wrong.
    """
    from rstar_jax.inference import load_ppm_scorer

    with open(held_path, encoding="utf-8") as f:
        recs = [json.loads(line) for line in f if line.strip()]
    scorer = load_ppm_scorer(cfg)
    texts = [r["prompt"] + r[side] for r in recs for side in ("pos", "neg")]
    scores = scorer.score(texts)
    wins = [float(scores[2 * i]) > float(scores[2 * i + 1]) for i in range(len(recs))]
    return (sum(wins) / len(wins) if wins else None), len(wins)


def _frac(summary: Dict[str, Any], key: str) -> Optional[float]:
    v = summary.get(key)
    return None if v is None else float(v) / 100.0


# What a round's eval can run, in this order (`eval.round_methods` picks);
# round 0 (the base model) runs greedy only.
ROUND_METHODS = CHOICES["eval.round_methods"]
# Per-problem correctness kept per method (best_of_n gives two: the PPM's
# top-scored answer and the majority vote over the same trajectories), and
# the ceilings of answer choice: any of best_of_n's k trajectories correct,
# any answer of the MCTS+PPM tree correct (what a perfect selector would get).
CORRECTNESS_KEYS = ("greedy", "mcts_ppm", "ppm_selected", "majority", "any_of_k", "mcts_any")


def evaluate(ctx: StageContext) -> Dict[str, Any]:
    """Held-out accuracy per evaluation set: greedy; MCTS+PPM; PPM-selected vs majority.

    The sets are the round's own held-out test split (`test`, from the
    problems stage; round 0: the world's, or `data`'s test split) when the
    data has one, then every name of `eval.benchmarks` (the paper's table;
    the demo sets none). Round 0 measures the base model's greedy accuracy
    only. Later rounds run greedy, best-of-k (`eval.k` sampled trajectories:
    the PPM's top-scored answer and the majority vote over the *same*
    trajectories) and MCTS with the round's PPM, through the evaluation
    harness (resumable: each finished problem is stored), under the one
    protocol of `inference_eval`.

    Flat `metrics` are the first set's (`test` when there is one); the
    details hold every set's (`benchmarks`), the protocol and the first
    set's PPM margins. `correctness.json` keeps each method's per-problem
    0/1 correctness per set: the report's paired comparisons (round N vs
    the base, MCTS+PPM vs greedy, PPM-selected vs majority) resample it.
    """
    from rstar_jax.evaluation.methods import protocol

    test = _test_problems(ctx)
    given = {"test": test} if test else {}
    names = (["test"] if test else []) + list(ctx.cfg.eval.benchmarks)
    if not names:
        raise ValueError(f"round {ctx.round} eval: nothing to evaluate: the data has no test split "
                         "and eval.benchmarks is empty")
    if ctx.round == 0:
        cfg, methods = model_overrides(ctx.cfg, ctx.policy(), ctx.tokenizer_dir()), ("greedy",)
    else:
        cfg = with_ppm(model_overrides(ctx.cfg, ctx.policy(), ctx.tokenizer_dir()), ctx.ppm())
        methods = tuple(m for m in ROUND_METHODS if m in ctx.cfg.eval.round_methods)
    by_set = _run_methods(ctx, cfg, names, given, methods)
    sets = {name: _set_metrics(res) for name, res in by_set.items()}
    first_name = next(iter(by_set))  # canonical names: "aime" is "aime2024" here
    first = sets[first_name]
    correctness = ctx.path("correctness.json")
    _write_correctness(ctx, cfg, list(by_set), methods, correctness)
    counts = {name: v["n"] for name, v in sets.items()}  # problems per set
    outputs = {"correctness": correctness}
    if ctx.round == 0:
        return {"outputs": outputs, "counts": counts,
                "metrics": {"greedy_acc": first["greedy_acc"]},
                "details": {"benchmarks": sets}}
    metrics = {k: first[k] for k in ("greedy_acc", "mcts_ppm_acc", "ppm_selected_acc", "majority_acc")}
    metrics["trajectories"] = first.get("trajectories") or ctx.cfg.eval.k
    scored = tuple(m for m in ("best_of_n", "mcts_ppm") if m in methods)
    # The MCTS protocol only where MCTS+PPM ran (eval.round_methods).
    details = {"protocol": protocol(cfg) if "mcts_ppm" in methods else None, "benchmarks": sets,
               "ppm_margins": {m: _margins(ctx, cfg, m, first_name) for m in scored}}
    return {"outputs": outputs, "counts": counts, "metrics": metrics, "details": details}


def _run_methods(ctx: StageContext, cfg: Config, names, given, methods) -> Dict[str, Dict[str, Any]]:
    """{set name: {method: harness summary}}, sets in `names` order; each
    method's results under `ctx.out_dir/<method>/<set>/`."""
    from rstar_jax.evaluation.harness import evaluate as run_eval
    from rstar_jax.evaluation.methods import close_session

    out: Dict[str, Dict[str, Any]] = {}
    try:
        for m in methods:
            res = run_eval(cfg, names, m, os.path.join(ctx.out_dir, m), problems=given)
            for summary in res["summaries"]:
                out.setdefault(summary["benchmark"], {})[m] = summary
    finally:
        close_session()
    return out


def _set_metrics(res: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """One set's accuracies (fractions; None for a method not run) and n."""
    bon = res.get("best_of_n") or {}
    return {"n": res["greedy"].get("n"),
            "greedy_acc": _frac(res["greedy"], "accuracy"),
            "mcts_ppm_acc": _frac(res["mcts_ppm"], "accuracy") if "mcts_ppm" in res else None,
            "ppm_selected_acc": _frac(bon, "best@k"),
            "majority_acc": _frac(bon, "maj@k"),
            "trajectories": bon.get("k"),
            # MCTS+PPM compute per problem, measured (the protocol's budget
            # is an upper bound: a run stops early when its root is terminal).
            "mcts_avg_rollouts": (res.get("mcts_ppm") or {}).get("avg_rollouts"),
            "mcts_avg_tokens": (res.get("mcts_ppm") or {}).get("avg_generated_tokens")}


def _write_correctness(ctx: StageContext, cfg: Config, sets, methods, path: str) -> None:
    """`path`: {"sets": {set: {"ids", "digests", <CORRECTNESS_KEYS>: [0/1 per problem]}}}.

    Graded from the stored results as the harness's summary grades them
    (the `chosen` answer; best_of_n's maj@k and best@k among its first
    `eval.k` trajectories); problems without a gold answer are left out.
    `digests` (of the question) let the report pair problems across rounds
    only when id and question both match.
    """
    import functools
    import hashlib

    from rstar_jax.evaluation import metrics as M
    from rstar_jax.evaluation.results import ResultStore
    from rstar_jax.evolve.manifest import atomic_write_json
    from rstar_jax.execution.grading import grade

    cg = M.CachedGrader(functools.partial(grade, timeout_s=cfg.eval.grade_timeout_s))
    out: Dict[str, Any] = {}
    for name in sets:
        per: Dict[str, Dict[str, Any]] = {}
        for m in methods:
            stored = ResultStore(os.path.join(ctx.out_dir, m, name, "results.jsonl")).load()
            for pid, r in stored.items():
                if r.gold is None:
                    continue
                row = per.setdefault(pid, {"digest": hashlib.sha256(r.question.encode()).hexdigest()[:16]})
                gold = tuple(r.gold) if isinstance(r.gold, list) else r.gold
                any_right = functools.partial(_any_right, cg, gold)
                if m == "best_of_n":
                    scores = None if r.scores is None else tuple(float(x) for x in r.scores)
                    pm = M.problem_metrics(M.Samples(gold, tuple(r.preds), scores), cfg.eval.k, cg)
                    row["ppm_selected"], row["majority"] = pm["best@k"], pm["maj@k"]
                    row["any_of_k"] = any_right(r.preds[: cfg.eval.k])
                else:
                    row[m] = float(cg(r.chosen, gold))
                    if m == "mcts_ppm":
                        row["mcts_any"] = any_right(r.preds)
        # A problem counts when every method graded it (a None best@k: no scores).
        ids = sorted(p for p, row in per.items()
                     if all(row.get(k) is not None for k in _keys_for(methods)))
        out[name] = {"ids": ids, "digests": [per[p]["digest"] for p in ids],
                     **{k: [per[p][k] for p in ids] for k in _keys_for(methods)}}
    atomic_write_json(path, {"sets": out})


def _any_right(grader, gold, preds) -> float:
    """1.0 when any of `preds` is right (a ceiling of answer choice), else 0.0."""
    return float(any(grader(p, gold) for p in preds))


def _keys_for(methods) -> tuple:
    keys = {"greedy": ("greedy",), "mcts_ppm": ("mcts_ppm", "mcts_any"),
            "best_of_n": ("ppm_selected", "majority", "any_of_k")}
    return tuple(k for m in methods for k in keys[m])


def _margins(ctx: StageContext, cfg: Config, method: str, name: str) -> Dict[str, Any]:
    """Per-level PPM margins of `method`'s stored candidates on set `name`
    (evaluation/report.py)."""
    import functools

    from rstar_jax.evaluation.report import ppm_margins
    from rstar_jax.evaluation.results import ResultStore
    from rstar_jax.execution.grading import grade

    results = ResultStore(os.path.join(ctx.out_dir, method, name, "results.jsonl")).load()
    return ppm_margins(list(results.values()),
                       functools.partial(grade, timeout_s=cfg.eval.grade_timeout_s))


def has_test_split(data_cfg) -> bool:
    """Whether `data` names held-out test problems (a jsonl source needs
    `data.test_path`; arith and tfds always have them)."""
    return data_cfg.source != "jsonl" or bool(data_cfg.test_path)


def _test_problems(ctx: StageContext):
    """The round's held-out test problems, or None when the data has none:
    round 0 the world's test file (else `data`'s test split), later rounds
    the problems stage's."""
    from rstar_jax.data.problems import read_problems

    if ctx.round > 0:
        path = ctx.output(ctx.round, "problems", "test", required=False)
        return read_problems(path) if path else None
    path = ctx.output(0, "world", "test", required=False)
    if path:
        return read_problems(path)
    if not has_test_split(ctx.cfg.data):
        return None
    from rstar_jax.data.sources import load_problems

    return load_problems(ctx.cfg.data, "test")
