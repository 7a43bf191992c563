"""CLI: `rstar-jax train-policy` and `rstar-jax train-ppm`.

    rstar-jax train-policy --config FILE --data SFT.jsonl --out DIR [--init-from EXPORT] [k=v ...]
    rstar-jax train-ppm    --config FILE --data PAIRS.jsonl --out DIR [--init-from EXPORT] [k=v ...]

Rerunning the same command resumes from the latest checkpoint in DIR/ckpt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from rstar_jax.config.commands import (
    add_config_arguments,
    check_model_paths,
    check_out_dir,
    config_from_args,
)


def _run(args: argparse.Namespace, kind: str) -> int:
    check_out_dir(args.out)
    cfg = config_from_args(args)
    if not os.path.isfile(args.data):
        print(f"rstar-jax: no such data file: {args.data}", file=sys.stderr)
        return 2
    if args.init_from and not os.path.isdir(args.init_from):
        print(f"rstar-jax: --init-from {args.init_from}: no such directory", file=sys.stderr)
        return 2
    check_model_paths(cfg, tokenizer=False)
    from rstar_jax.training.loop import train_policy, train_ppm
    from rstar_jax.training.records import NoUsableRecords

    fn = train_ppm if kind == "ppm" else train_policy
    try:
        summary = fn(cfg, args.data, args.out, init_from=args.init_from, force=args.force)
    except (NoUsableRecords, ValueError, FileNotFoundError) as e:
        print(f"rstar-jax {args.command}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


def _add(sub, name: str, kind: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text)
    add_config_arguments(p)
    p.add_argument("--data", required=True, metavar="FILE", help="JSONL (or JSON list) records")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output dir: ckpt/, metrics.jsonl, final/, summary.json")
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="model to start from: an export (DIR/final of an earlier run) or a "
                        "checkpoint dir; default: the config's model")
    p.add_argument("--force", action="store_true",
                   help="when DIR/ckpt holds a run made with other data or settings, discard it "
                        "and start over (default: refuse, saying what changed)")
    p.set_defaults(handler=lambda a: _run(a, kind))


def register(sub) -> None:
    """Adds `train-policy` and `train-ppm` to the `rstar-jax` parser."""
    _add(sub, "train-policy", "lm",
         "policy SFT on {query, response} records (or pretraining on {text})")
    _add(sub, "train-ppm", "ppm", "PPM training on {prompt, pos, neg, ...} preference pairs")
