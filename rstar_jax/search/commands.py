"""CLI: `rstar-jax search`, `rstar-jax extract`, `rstar-jax merge-trees`.

Handlers import JAX, the engine and the executor pool lazily so that
`rstar-jax --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys

from rstar_jax.config.commands import (
    MODEL_PATH_KEYS,
    add_config_arguments,
    check_input,
    check_model_paths,
    check_out_dir,
    config_from_args,
    ranged,
)
from rstar_jax.config.ranges import ONE_UP


def _fail(msg: str) -> int:
    print(f"rstar-jax: {msg}", file=sys.stderr)
    return 2


def needs_scorer(mcts_cfg) -> bool:
    """Whether the configured search reads PPM scores."""
    return (mcts_cfg.ppm_init_value or mcts_cfg.terminal_value == "ppm"
            or mcts_cfg.mode in ("best_of_n", "beam"))


def local_mesh_config(mesh_cfg):
    """`mesh_cfg` for one process's devices: the `data` axis, which a
    multi-host config sizes across hosts, takes what `fsdp` and `tensor`
    leave (1 when one of them is already -1). Every other setting is kept.
    """
    import dataclasses

    other_free = -1 in (mesh_cfg.fsdp, mesh_cfg.tensor)
    return dataclasses.replace(mesh_cfg, data=1 if other_free else -1)


def local_mesh(cfg):
    """The mesh of this process's own devices when there are several processes.

    Processes search different problems, so their engines never run the
    same computation: a mesh spanning every host would make each device
    call a collective that the other hosts never join. On one process this
    returns None and the factories use `cfg.mesh` over all devices.
    """
    import jax

    if jax.process_count() == 1:
        return None
    from rstar_jax.models.mesh import make_mesh

    return make_mesh(local_mesh_config(cfg.mesh), devices=jax.local_devices())


def _search(args: argparse.Namespace) -> int:
    from rstar_jax.data.problems import ProblemFileError, read_problems

    check_out_dir(args.out)
    check_input(args.problems, "--problems", directory=False)
    cfg = config_from_args(args)
    check_model_paths(cfg, MODEL_PATH_KEYS + (("ppm.checkpoint",) if needs_scorer(cfg.mcts) else ()),
                      tokenizer=False)
    try:
        problems = read_problems(args.problems, limit=args.limit)
    except ProblemFileError as e:
        return _fail(str(e))
    if cfg.mcts.mode == "mcts" and cfg.mcts.terminal_value == "gold":
        missing = [p.id for p in problems if p.answer is None]
        if missing:
            return _fail(f"{len(missing)} problems have no gold answer (first: {missing[0]}); "
                         "terminal_value=gold needs them (use mcts.terminal_value=ppm to infer)")
    from rstar_jax.utils.fingerprint import (
        FingerprintMismatch,
        check_output_dir,
        file_digest,
        make_fingerprint,
    )

    # Before any model loads: a rerun into OUT must be the run that made it.
    try:
        fingerprint = make_fingerprint(cfg, command="search", with_ppm=needs_scorer(cfg.mcts),
                                       problems={"problems": file_digest(args.problems)})
        check_output_dir(args.out, fingerprint, cfg, force=args.force, merge_problems=False)
    except (FingerprintMismatch, FileNotFoundError) as e:
        return _fail(str(e))
    try:
        from rstar_jax.execution.pool import ExecutorPool
        from rstar_jax.inference import load_policy_engine, load_ppm_scorer
    except ImportError as e:
        return _fail(f"the engine or executor is not available in this install: {e}")
    from rstar_jax.models.mesh import maybe_initialize_distributed
    from rstar_jax.search.run import ResumeMismatch, search_to_dir

    # Before anything touches a device: each process then searches its own
    # shard of the problems (search_to_dir) on its own devices.
    maybe_initialize_distributed(cfg.mesh.distributed)
    kw = {}
    try:
        mesh = local_mesh(cfg)
        if mesh is not None:
            kw["mesh"] = mesh
        engine = load_policy_engine(cfg, **kw)
        scorer = load_ppm_scorer(cfg, **kw) if needs_scorer(cfg.mcts) else None
    except (ValueError, FileNotFoundError) as e:
        return _fail(f"cannot load the models: {e}")
    executor = ExecutorPool(cfg.executor)
    try:
        summary = search_to_dir(cfg, problems, args.out, engine, executor, scorer)
    except ResumeMismatch as e:
        return _fail(str(e))
    finally:
        close = getattr(executor, "close", None)
        if close is not None:
            close()
    print(json.dumps(summary))
    return 0


def _extract(args: argparse.Namespace) -> int:
    from rstar_jax.config.loader import load_config
    from rstar_jax.data.extract import extract_to_dir
    from rstar_jax.utils.logging import setup_logging

    check_out_dir(args.out)
    check_input(args.trees, "--trees")
    cfg = load_config(args.config, args.overrides) if args.config else load_config(None, args.overrides)
    setup_logging(cfg.logging.level)
    try:
        summary = extract_to_dir(args.trees, args.out, cfg)
    except (FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    print(json.dumps(summary, indent=2))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from rstar_jax.search.treefile import merge_tree_files

    try:
        counts = merge_tree_files(args.trees, args.out)
    except (FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    print(json.dumps(counts))
    return 0


def register(sub) -> None:
    """Adds this subpackage's subcommands to the `rstar-jax` parser."""
    p = sub.add_parser(
        "search",
        help="MCTS (or greedy / best-of-N / beam) over a problem file into tree files",
        description="Searches every problem into OUT/trees.<process>.jsonl (one JSON record per "
        "problem). Rerun the same command to resume. Generation or inference is chosen by the "
        "config: mcts.terminal_value=gold (training data) or ppm (inference); mcts.mode picks "
        "mcts | greedy | best_of_n | beam.",
    )
    add_config_arguments(p)
    p.add_argument("--problems", required=True, metavar="FILE", help="JSON / JSONL problem file")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the tree files")
    p.add_argument("--limit", type=ranged(int, ONE_UP), default=None, metavar="N",
                   help="only the first N problems")
    p.add_argument("--force", action="store_true",
                   help="when --out holds another run's trees, set them aside in OUT/superseded/ "
                        "and start again (default: refuse)")
    p.set_defaults(handler=_search)

    e = sub.add_parser(
        "extract",
        help="SFT records and PPM pairs from tree files (spec section 5)",
        description="Writes OUT/sft.jsonl, OUT/ppm.jsonl, OUT/dropped.jsonl and OUT/summary.json.",
    )
    add_config_arguments(e, required=False)
    e.add_argument("--trees", required=True, metavar="DIR",
                   help="directory of trees.jsonl or trees.<process>.jsonl (or one file)")
    e.add_argument("--out", required=True, metavar="DIR")
    e.set_defaults(handler=_extract)

    m = sub.add_parser("merge-trees", help="combine trees.<process>.jsonl shards into trees.jsonl")
    m.add_argument("--trees", required=True, metavar="DIR")
    m.add_argument("--out", default=None, metavar="FILE", help="default: DIR/trees.jsonl")
    m.set_defaults(handler=_merge)
