"""CLI: `rstar-jax config show FILE [overrides...]`, plus the helpers every
command shares: `--config FILE key=value...` arguments, numeric flags
checked against a range, and up-front checks of output and model paths.

Every check here runs before a model loads, so a user's mistake costs a
second, not the minute a model takes to load.
"""

from __future__ import annotations

import argparse
import os
from typing import Callable, Iterable, Optional, Union

from rstar_jax.config.loader import load_config, to_yaml
from rstar_jax.config.ranges import RANGES, Range, range_error
from rstar_jax.config.schema import Config


class UsageError(ValueError):
    """A bad argument or a missing input: the CLI prints one line, exits 2."""


def add_config_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Adds `--config FILE` and `key.sub=value` overrides (anywhere on the line)."""
    parser.add_argument("--config", required=required, metavar="FILE",
                        help="YAML config (inherits through base_config:)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="dotted config overrides, e.g. mcts.rollouts=32")


def ranged(kind: type, valid: Union[str, Range]) -> Callable[[str], Union[int, float]]:
    """An argparse `type` that parses `kind` and checks it against a range
    (a `Range`, or the dotted config key whose range the flag shares)."""
    rng = RANGES[valid] if isinstance(valid, str) else valid

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        err = range_error("", value, rng)
        if err:
            raise argparse.ArgumentTypeError(f"{value!r}; expected a number in {rng}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def config_from_args(args: argparse.Namespace) -> Config:
    """Loads the config named by `add_config_arguments` and sets up logging."""
    from rstar_jax.utils.logging import setup_logging

    cfg = load_config(args.config, args.overrides)
    setup_logging(cfg.logging.level)
    return cfg


def check_out_dir(path: str, flag: str = "--out") -> None:
    """An output directory may exist (a rerun resumes) but must not be a file."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a file; give a directory")


def check_input(path: str, flag: str, *, directory: Optional[bool] = None) -> None:
    """Refuses a missing input path (or one of the wrong kind)."""
    if not os.path.exists(path):
        raise UsageError(f"{flag} {path}: no such {'directory' if directory else 'file'}")
    if directory is True and not os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a file; give a directory")
    if directory is False and os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a directory; give a file")


MODEL_PATH_KEYS = ("model.checkpoint", "model.hf_dir", "model.tokenizer_dir")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def check_model_paths(cfg: Config, keys: Iterable[str] = MODEL_PATH_KEYS, *,
                      tokenizer: bool = True) -> None:
    """Refuses, before anything loads, a config naming a model, PPM or
    tokenizer directory that does not exist, or (`tokenizer`) one that
    names no tokenizer at all."""
    for key in keys:
        section, name = key.split(".")
        path = getattr(getattr(cfg, section), name)
        if path is not None and not os.path.isdir(path):
            what = "no such directory" if not os.path.exists(path) else "not a directory"
            raise UsageError(f"{key}={path}: {what}")
    m = cfg.model
    if m.tokenizer_dir and not any(os.path.isfile(os.path.join(m.tokenizer_dir, f))
                                   for f in TOKENIZER_FILES):
        raise UsageError(f"model.tokenizer_dir={m.tokenizer_dir} holds no tokenizer "
                         f"(none of {', '.join(TOKENIZER_FILES)})")
    if tokenizer and not (m.tokenizer_dir or m.hf_dir or m.checkpoint):
        raise UsageError("no tokenizer: set model.tokenizer_dir or model.hf_dir, or "
                         "model.checkpoint (a checkpoint that saved one)")


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
