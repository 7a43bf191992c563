"""CLI: `rstar-jax make-world --config FILE --out DIR [overrides]`."""

from __future__ import annotations

import argparse
import sys

from rstar_jax.config.commands import add_config_arguments, check_out_dir, config_from_args


def _make_world(args: argparse.Namespace) -> int:
    check_out_dir(args.out)
    cfg = config_from_args(args)
    if cfg.data.source != "arith":
        print(f"rstar-jax make-world: data.source is {cfg.data.source!r}; the world is made "
              "from the arith generator (set data.source=arith)", file=sys.stderr)
        return 2
    from rstar_jax.data.world import make_world

    try:
        counts = make_world(cfg, args.out)
    except ValueError as e:
        print(f"rstar-jax make-world: {e}", file=sys.stderr)
        return 2
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def register(sub) -> None:
    """Adds `make-world`."""
    p = sub.add_parser(
        "make-world",
        help="write the demo world: train/test problems, corpus, tokenizer",
        description="Writes DIR/train.jsonl, DIR/test.jsonl, DIR/corpus.jsonl and "
        "DIR/tokenizer/ from the arith generator; files that exist are kept.",
    )
    add_config_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.set_defaults(handler=_make_world)
