"""`rstar-jax <command>`: the one entry point.

Thin by design: each subpackage's `commands.py` registers its subcommands
(parse arguments, load the config, call one library function). Command
modules import heavy libraries (JAX, transformers) inside their handlers,
and only the module of the command being run is imported, so that `--help`,
config commands and the refusal of a bad value stay fast: every argument
and config value is checked before any model loads.

A user's mistake (a bad flag or config value, a missing file) prints one
line on stderr and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from rstar_jax import __version__
from rstar_jax.config import ConfigError
from rstar_jax.config.commands import UsageError

# Command -> the module that registers it (in `rstar-jax --help` order).
COMMANDS = {
    "config": "rstar_jax.config.commands",
    "convert": "rstar_jax.models.commands",
    "sample": "rstar_jax.inference.commands",
    "exec": "rstar_jax.execution.commands",
    "grade": "rstar_jax.execution.commands",
    "search": "rstar_jax.search.commands",
    "extract": "rstar_jax.search.commands",
    "merge-trees": "rstar_jax.search.commands",
    "train-policy": "rstar_jax.training.commands",
    "train-ppm": "rstar_jax.training.commands",
    "make-world": "rstar_jax.data.commands",
    "aggregate": "rstar_jax.evaluation.commands",
    "evaluate": "rstar_jax.evaluation.commands",
    "evaluate-ppm": "rstar_jax.evaluation.commands",
    "evolve": "rstar_jax.evolve.commands",
}
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of every command, or of `command` alone (a faster start:
    the other subpackages, some of which import JAX, are not imported)."""
    parser = Parser(
        prog="rstar-jax",
        description="rStar-Math in JAX: MCTS over code-augmented steps, a policy and a PPM, "
        "four rounds of self-evolution.",
    )
    parser.add_argument("--version", action="version", version=f"rstar-jax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=Parser)
    sub.required = True
    modules = (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def _command_in(argv: List[str]) -> Optional[str]:
    return next((a for a in argv if not a.startswith("-")), None)


def _is_override(arg: str) -> bool:
    return "=" in arg and not arg.startswith("-") and arg.split("=", 1)[0].strip() != ""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parses `argv`, accepting `key.sub=value` overrides anywhere on the
    line (`... a=1 --limit 2 b=2`), in the order given."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    if command is None and "--version" in argv:
        command = "config"  # any light module: the version needs no command
    parser = build_parser(command)
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all(_is_override(a) for a in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    name = f"rstar-jax {args.command}"
    try:
        return int(args.handler(args) or 0)
    except ConfigError as e:
        print(f"{name}: config error: {e}", file=sys.stderr)
        return 2
    except UsageError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
