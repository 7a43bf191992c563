"""CLI: `rstar-jax aggregate`, `rstar-jax evaluate`, `rstar-jax evaluate-ppm`.

Heavy imports (JAX, models, tfds) happen inside the handlers so that
`rstar-jax --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from rstar_jax.config.commands import add_config_arguments


def _aggregate(args: argparse.Namespace) -> int:
    from rstar_jax.evaluation import aggregate

    return aggregate.run(sys.stdin, sys.stdout, sys.stderr, k=args.k)


def register(sub) -> None:
    agg = sub.add_parser(
        "aggregate",
        help="re-score saved samples (JSON Lines on stdin) without rerunning a model",
        description='Reads one problem per line: {"gold": "..." or [...], "preds": [...], '
        '"scores": [...]} (scores optional) and prints one JSON object with accuracy in percent '
        "for first, maj@k, best@k, weighted@k and unbiased pass@k. Malformed lines are reported "
        "on stderr and not counted; exit status 2 when no line is usable.",
    )
    agg.add_argument("--k", type=int, default=None, metavar="K",
                     help="samples per problem used by maj@k/best@k/weighted@k and pass@k "
                     "(default: all; capped at each line's number of preds)")
    agg.set_defaults(handler=_aggregate)
    _ = add_config_arguments  # used by evaluate / evaluate-ppm below
