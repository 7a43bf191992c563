"""Loading configs: YAML `base_config:` chains + dotted overrides, validated.

OmegaConf does the parsing and merging against the structured schema; this
module adds the inheritance chain, the error messages users see (nearest
valid key, full dotted path with the expected type) and the conversion to
the frozen `Config` dataclass.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from typing import Any, Iterable, List, Optional, Sequence

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    ConfigTypeError,
    OmegaConfBaseException,
    ValidationError,
)

from rstar_jax.config.ranges import RANGES, range_error
from rstar_jax.config.schema import CHOICES, Config

BASE_KEY = "base_config"
_MAX_CHAIN = 32


class ConfigError(ValueError):
    """A config file or override is invalid. The CLI exits with status 2."""


def _schema_keys(cls=Config, prefix: str = "") -> List[str]:
    """Every valid dotted key of the schema (sections and leaves)."""
    keys = []
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        keys.append(name)
        sub = _dataclass_type(cls, f)
        if sub is not None:
            keys.extend(_schema_keys(sub, name + "."))
    return keys


def _dataclass_type(cls, f: dataclasses.Field):
    hint = typing.get_type_hints(cls)[f.name]
    return hint if dataclasses.is_dataclass(hint) else None


def _expected_type(full_key: str) -> Optional[str]:
    """The schema's type annotation for a dotted key, as text."""
    cls: Any = Config
    parts = full_key.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            return None
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        hint = hints[part]
        if i == len(parts) - 1:
            return _type_name(hint)
        cls = hint
    return None


def _type_name(hint) -> str:
    origin = typing.get_origin(hint)
    if origin is None:
        return getattr(hint, "__name__", str(hint))
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is typing.Union:
        return f"optional {_type_name(args[0])}" if len(args) == 1 else str(hint)
    name = getattr(origin, "__name__", str(origin))
    return f"{name}[{', '.join(_type_name(a) for a in args)}]"


def nearest_key(full_key: str) -> Optional[str]:
    """The valid dotted key closest to a misspelt one."""
    keys = _schema_keys()
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    # Prefer siblings in the same section, then anything.
    siblings = [k for k in keys if k.rsplit(".", 1)[0] == parent] if parent else keys
    for pool in (siblings, keys):
        match = difflib.get_close_matches(full_key, pool, n=1, cutoff=0.5)
        if match:
            return match[0]
    return None


def _explain(err: OmegaConfBaseException, where: str) -> ConfigError:
    key = getattr(err, "full_key", None) or ""
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)) and key:
        near = nearest_key(key)
        hint = f"; did you mean '{near}'?" if near else ""
        return ConfigError(f"unknown config key '{key}' in {where}{hint}")
    if isinstance(err, (ValidationError, ConfigTypeError)) and key:
        expected = _expected_type(key)
        msg = str(err).splitlines()[0]
        exp = f"expected {expected}" if expected else "wrong type"
        return ConfigError(f"bad value for '{key}' in {where}: {exp} ({msg})")
    return ConfigError(f"invalid config in {where}: {str(err).splitlines()[0]}")


def _read_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; give a YAML file") from None
    except PermissionError:
        raise ConfigError(f"config file {path} cannot be read (permission denied)") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start}); "
                          "give a YAML file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(e).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    return data


def config_chain(path: str) -> List[str]:
    """The files of an inheritance chain, most basic first.

    `base_config:` holds one path or a list of paths (relative to the file).
    A list is linearised depth first, in order, each file kept at its first
    appearance, so a shared ancestor (say `base.yaml`) is merged once, before
    everything that inherits it, and never re-applied over a later mixin.
    """
    order: List[str] = []
    _walk_chain(os.path.abspath(path), order, stack=[])
    return order


def _walk_chain(current: str, order: List[str], stack: List[str]) -> None:
    if current in stack:
        raise ConfigError(f"config inheritance loops through {current}")
    if len(stack) >= _MAX_CHAIN:
        raise ConfigError(f"config inheritance deeper than {_MAX_CHAIN} files at {current}")
    base = _read_yaml(current).get(BASE_KEY)
    if base is None:
        bases: List[str] = []
    elif isinstance(base, str):
        bases = [base]
    elif isinstance(base, list) and all(isinstance(b, str) for b in base):
        bases = base
    else:
        raise ConfigError(f"{BASE_KEY} in {current} must be a path or a list of paths")
    for b in bases:
        _walk_chain(os.path.normpath(os.path.join(os.path.dirname(current), b)),
                    order, stack + [current])
    if current not in order:
        order.append(current)


def _check_choices(node) -> None:
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(node, key)
        if OmegaConf.is_list(value):  # a list key: each item from the set
            value = next((v for v in value if v not in allowed), None)
            if value is None:
                continue
        if value not in allowed:
            raise ConfigError(
                f"bad value for '{key}': {value!r}; expected one of {', '.join(map(str, allowed))}"
            )


def _check_round_methods(node) -> None:
    """Beyond `CHOICES` (each item known): no repeats, and greedy, which
    every comparison of the report needs."""
    methods = list(OmegaConf.select(node, "eval.round_methods") or [])
    if "greedy" not in methods or len(set(methods)) != len(methods):
        raise ConfigError(f"bad value for 'eval.round_methods': {methods!r}; expected distinct "
                          f"names of {', '.join(CHOICES['eval.round_methods'])}, greedy included")


def _check_engine(node) -> None:
    """Keys that only one KV layout reads."""
    if OmegaConf.select(node, "engine.mixed_prefill") and OmegaConf.select(node, "engine.kv_layout") != "paged":
        raise ConfigError("bad value for 'engine.mixed_prefill': true needs engine.kv_layout=paged "
                          "(the dense layout runs every prefill in a call of its own)")


def _check_ranges(node) -> None:
    for key, rng in RANGES.items():
        value = OmegaConf.select(node, key)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value)
        err = range_error(key, value, rng)
        if err:
            raise ConfigError(err)


def check_section(section: str, cfg, **values) -> None:
    """Checks one built section (e.g. an `ExecutorConfig` made in Python,
    not loaded from a file) against `RANGES`; `values` override its fields.

    Raises:
      ConfigError: naming the key, the value and the valid range.
    """
    for f in dataclasses.fields(cfg):
        key = f"{section}.{f.name}"
        if key in RANGES:
            err = range_error(key, values.get(f.name, getattr(cfg, f.name)), RANGES[key])
            if err:
                raise ConfigError(err)


def check_value(key: str, value) -> None:
    """Checks one value (a command-line flag standing for `key`) against `RANGES`."""
    err = range_error(key, value, RANGES[key])
    if err:
        raise ConfigError(err)


def _check_mesh(node) -> None:
    sizes = [node.mesh.data, node.mesh.fsdp, node.mesh.tensor]
    if sum(1 for s in sizes if s == -1) > 1:
        raise ConfigError("bad value for 'mesh': at most one of data/fsdp/tensor may be -1")
    if any(s == 0 or s < -1 for s in sizes):
        raise ConfigError("bad value for 'mesh': axis sizes must be positive or -1")


def load_config(
    path: Optional[str] = None, overrides: Sequence[str] = ()
) -> Config:
    """Loads `path` (following `base_config:`), applies `key.sub=value`
    overrides, validates, and returns the frozen `Config`.

    Raises:
      ConfigError: with a message naming the file, the dotted key and the
        nearest valid key or the expected type.
    """
    node = OmegaConf.structured(Config)
    for file in config_chain(path) if path else []:
        data = _read_yaml(file)
        data.pop(BASE_KEY, None)
        _resolve_file_paths(data, file)
        try:
            node = OmegaConf.merge(node, data)
        except OmegaConfBaseException as e:
            raise _explain(e, file) from None
    node = apply_overrides(node, overrides)
    _check_choices(node)
    _check_round_methods(node)
    _check_engine(node)
    _check_ranges(node)
    _check_mesh(node)
    return OmegaConf.to_object(node)


# Keys whose relative paths, written in a config file, name files beside that
# config (as `base_config:` and `evolve.rounds` do), so a config that ships
# with its model (the demo's base) works from any directory. On the command
# line they stay relative to the working directory.
FILE_RELATIVE_KEYS = ("evolve.base_policy", "evolve.bootstrap_policy")


def _resolve_file_paths(data: dict, file: str) -> None:
    for key in FILE_RELATIVE_KEYS:
        section, name = key.split(".")
        block = data.get(section)
        if isinstance(block, dict) and isinstance(block.get(name), str) and block[name] \
                and not os.path.isabs(os.path.expanduser(block[name])):
            block[name] = os.path.normpath(os.path.join(os.path.dirname(file), block[name]))


def apply_overrides(node, overrides: Iterable[str]):
    """Merges dotted `key=value` overrides (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override '{item}' names no key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        patch: dict = {}
        cursor = patch
        parts = key.split(".")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = value
        try:
            node = OmegaConf.merge(node, patch)
        except OmegaConfBaseException as e:
            raise _explain(e, f"override '{item}'") from None
    return node


def to_yaml(cfg: Config) -> str:
    """The fully resolved config as YAML text."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Config) -> dict:
    """The config as plain Python containers (for manifests and metadata)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def from_dict(data: dict) -> Config:
    """Rebuilds a `Config` saved with `to_dict` (validated like a file)."""
    try:
        node = OmegaConf.merge(OmegaConf.structured(Config), data)
    except OmegaConfBaseException as e:
        raise _explain(e, "saved config") from None
    _check_choices(node)
    _check_round_methods(node)
    _check_engine(node)
    _check_ranges(node)
    return OmegaConf.to_object(node)
