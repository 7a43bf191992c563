"""CLI: `rstar-jax aggregate`, `rstar-jax evaluate`, `rstar-jax evaluate-ppm`.

Heavy imports (JAX, models, tfds, matplotlib) happen inside the handlers so
that `rstar-jax --help` stays fast. Bad input (unknown benchmark or method,
missing files, a mismatched rerun) prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from rstar_jax.config.commands import (
    MODEL_PATH_KEYS,
    add_config_arguments,
    check_model_paths,
    check_out_dir,
    config_from_args,
    ranged,
)
from rstar_jax.config.ranges import ONE_UP

PPM_METHODS = ("best_of_n", "beam", "mcts_ppm")


def _aggregate(args: argparse.Namespace) -> int:
    from rstar_jax.evaluation import aggregate

    return aggregate.run(sys.stdin, sys.stdout, sys.stderr, k=args.k)


def _fail(command: str, e: Exception) -> int:
    print(f"rstar-jax {command}: {e}", file=sys.stderr)
    return 2


def _evaluate(args: argparse.Namespace, run_method=None) -> int:
    check_out_dir(args.out)
    cfg = config_from_args(args)
    method = args.method or cfg.eval.method
    if run_method is None:  # the real models: their paths must exist
        ppm = ("ppm.checkpoint",) if method in PPM_METHODS else ()
        check_model_paths(cfg, MODEL_PATH_KEYS + ppm, tokenizer=False)
    from rstar_jax.config.schema import replace
    from rstar_jax.data.benchmarks import BenchmarkError
    from rstar_jax.data.problems import ProblemFileError
    from rstar_jax.evaluation import harness
    from rstar_jax.evaluation.methods import MethodUnavailable
    from rstar_jax.evaluation.report import markdown_table

    if args.limit is not None:
        cfg = replace(cfg, eval=replace(cfg.eval, limit=args.limit))
    names = [b for b in (args.benchmark or ",".join(cfg.eval.benchmarks)).split(",") if b.strip()]
    if not names:
        return _fail("evaluate", ValueError("no benchmark given"))
    try:
        out = harness.evaluate(cfg, names, method, args.out, run_method=run_method,
                               force=getattr(args, "force", False))
    except (BenchmarkError, ProblemFileError, harness.EvaluationError, MethodUnavailable,
            FileNotFoundError) as e:
        return _fail("evaluate", e)
    finally:
        if run_method is None:
            from rstar_jax.evaluation.methods import close_session

            close_session()
    print(markdown_table(out["summaries"]), end="")
    print(f"report: {out['paths']['markdown']}", file=sys.stderr)
    return 0


def load_scorer(cfg):
    """The PPM scorer factory (`rstar_jax.inference.load_ppm_scorer`), lazily."""
    from rstar_jax.inference import load_ppm_scorer

    return load_ppm_scorer(cfg)


def _evaluate_ppm(args: argparse.Namespace, scorer=None) -> int:
    import os

    from rstar_jax.data.processbench import ProcessBenchError, load_processbench
    from rstar_jax.evaluation.processbench import evaluate_processbench
    from rstar_jax.evaluation.results import write_json_atomic

    if args.out:
        check_out_dir(args.out)
    cfg = config_from_args(args)
    if scorer is None:
        check_model_paths(cfg, MODEL_PATH_KEYS + ("ppm.checkpoint",), tokenizer=False)
    if args.benchmark.lower() != "processbench":
        return _fail("evaluate-ppm", ValueError(
            f"unknown benchmark {args.benchmark!r}; only 'processbench' is supported"))
    directory = args.data or cfg.eval.processbench_dir
    if not directory:
        return _fail("evaluate-ppm", ValueError(
            "no ProcessBench directory: pass --data DIR or set eval.processbench_dir"))
    subsets = [s for s in args.subsets.split(",") if s] if args.subsets else None
    try:
        data = load_processbench(directory, subsets, args.limit)
    except ProcessBenchError as e:
        return _fail("evaluate-ppm", e)
    tune = cfg.eval.processbench_tune_subset
    if cfg.eval.processbench_threshold is None and tune not in data:
        return _fail("evaluate-ppm", ValueError(
            f"threshold tuning subset {tune!r} is not among the loaded subsets {sorted(data)}"))
    if scorer is None:
        try:
            scorer = load_scorer(cfg)
        except ImportError as e:
            return _fail("evaluate-ppm", ImportError(f"no PPM scorer available: {e}"))
    result = evaluate_processbench(data, scorer, tune_subset=tune,
                                   threshold=cfg.eval.processbench_threshold,
                                   batch_size=cfg.engine.score_batch_size,
                                   sep=cfg.data.assistant_sep)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        write_json_atomic(os.path.join(args.out, "processbench.json"), result)
    print(json.dumps(result))
    return 0


def register(sub) -> None:
    agg = sub.add_parser(
        "aggregate",
        help="re-score saved samples (JSON Lines on stdin) without rerunning a model",
        description='Reads one problem per line: {"gold": "..." or [...], "preds": [...], '
        '"scores": [...]} (scores optional) and prints one JSON object with accuracy in percent '
        "for first, maj@k, best@k, weighted@k and unbiased pass@k. Malformed lines are reported "
        "on stderr and not counted; exit status 2 when no line is usable.",
    )
    agg.add_argument("--k", type=ranged(int, ONE_UP), default=None, metavar="K",
                     help="samples per problem used by maj@k/best@k/weighted@k and pass@k "
                     "(default: all; capped at each line's number of preds)")
    agg.set_defaults(handler=_aggregate)

    ev = sub.add_parser(
        "evaluate",
        help="run a method over benchmarks; JSON + markdown + PNG report; reruns resume",
        description="Methods: greedy, majority (majority@k), best_of_n (best-of-N by PPM), "
        "beam (step beam search), mcts_ppm (MCTS + PPM). Benchmarks: math500, gsm8k, aime2024, "
        "amc23, olympiadbench, collegemath, gaokao2023en, omnimath, math, or a JSON/JSONL file.",
    )
    add_config_arguments(ev)
    ev.add_argument("--benchmark", default=None, metavar="NAME[,NAME...]",
                    help="benchmarks (default: eval.benchmarks)")
    ev.add_argument("--method", default=None,
                    choices=("greedy", "majority", "best_of_n", "beam", "mcts_ppm"),
                    help="default: eval.method")
    ev.add_argument("--out", required=True, metavar="DIR", help="output directory (resumable)")
    ev.add_argument("--limit", type=ranged(int, ONE_UP), default=None, metavar="N",
                    help="first N problems of each benchmark (default: eval.limit)")
    ev.add_argument("--force", action="store_true",
                    help="when --out holds another run's results, set them aside in "
                         "OUT/superseded/ and start again (default: refuse)")
    ev.set_defaults(handler=_evaluate)

    ppm = sub.add_parser(
        "evaluate-ppm",
        help="the PPM's ProcessBench F1 per subset (threshold tuned on one subset)",
    )
    add_config_arguments(ppm)
    ppm.add_argument("--benchmark", default="processbench", help="only 'processbench'")
    ppm.add_argument("--data", default=None, metavar="DIR",
                     help="ProcessBench directory (default: eval.processbench_dir)")
    ppm.add_argument("--subsets", default=None, metavar="A,B",
                     help="subsets to load (default: all four)")
    ppm.add_argument("--limit", type=ranged(int, ONE_UP), default=None, metavar="N",
                     help="first N samples of each subset")
    ppm.add_argument("--out", default=None, metavar="DIR", help="also write processbench.json")
    ppm.set_defaults(handler=_evaluate_ppm)
