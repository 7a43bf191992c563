"""CLI: `rstar-jax config show FILE [overrides...]`, plus the shared
`--config FILE key=value...` argument helpers used by every command."""

from __future__ import annotations

import argparse

from rstar_jax.config.loader import load_config, to_yaml
from rstar_jax.config.schema import Config


def add_config_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Adds `--config FILE` and trailing `key.sub=value` overrides."""
    parser.add_argument("--config", required=required, metavar="FILE",
                        help="YAML config (inherits through base_config:)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="dotted config overrides, e.g. mcts.rollouts=32")


def config_from_args(args: argparse.Namespace) -> Config:
    """Loads the config named by `add_config_arguments` and sets up logging."""
    from rstar_jax.utils.logging import setup_logging

    cfg = load_config(args.config, args.overrides)
    setup_logging(cfg.logging.level)
    return cfg


def _show(args: argparse.Namespace) -> int:
    cfg = load_config(args.file, args.overrides)
    print(to_yaml(cfg), end="")
    return 0


def register(sub) -> None:
    config = sub.add_parser("config", help="inspect configs")
    csub = config.add_subparsers(dest="config_command", metavar="<action>")
    csub.required = True
    show = csub.add_parser("show", help="print the fully resolved config as YAML")
    show.add_argument("file", help="YAML config file")
    show.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted overrides")
    show.set_defaults(handler=_show)
