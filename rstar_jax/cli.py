"""`rstar-jax <command>`: the one entry point.

Thin by design: each subpackage's `commands.py` registers its subcommands
(parse arguments, load the config, call one library function). Command
modules import heavy libraries (JAX, transformers) inside their handlers so
that `--help` and config commands stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from rstar_jax.config import ConfigError

COMMAND_MODULES = (
    "rstar_jax.config.commands",
    "rstar_jax.models.commands",
    "rstar_jax.inference.commands",
    "rstar_jax.execution.commands",
    "rstar_jax.search.commands",
    "rstar_jax.training.commands",
    "rstar_jax.data.commands",
    "rstar_jax.evaluation.commands",
    "rstar_jax.evolve.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rstar-jax",
        description="rStar-Math in JAX: MCTS over code-augmented steps, a policy and a PPM, "
        "four rounds of self-evolution.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as e:
        print(f"rstar-jax: config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rstar-jax: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
