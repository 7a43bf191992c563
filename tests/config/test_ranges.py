"""Every numeric config key has a valid range, checked when a config loads."""

import dataclasses
import math
import typing

import pytest

from rstar_jax.config import ConfigError, load_config
from rstar_jax.config.loader import check_section
from rstar_jax.config.ranges import RANGES, Range
from rstar_jax.config.schema import Config, ExecutorConfig


def _numeric(hint) -> bool:
    """int / float, or an Optional / List / Dict holding them (bool excluded)."""
    if hint in (int, float):
        return True
    return any(_numeric(a) for a in typing.get_args(hint))


def _numeric_keys(cls=Config, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _numeric_keys(hint, f"{prefix}{f.name}.")
        elif _numeric(hint):
            yield f"{prefix}{f.name}"


def test_every_numeric_key_has_a_range():
    keys = set(_numeric_keys())
    assert len(keys) > 100  # the walk sees the nested sections (train.sft.*, ...)
    missing = sorted(keys - set(RANGES))
    assert not missing, f"numeric config keys without a range in config/ranges.py: {missing}"
    stale = sorted(set(RANGES) - keys)
    assert not stale, f"ranges for keys the schema does not have: {stale}"


def test_defaults_are_in_range():
    load_config(None, [])  # raises if a default breaks its own range


def test_range_bounds_and_text():
    r = Range(0.0, 1.0, lo_open=True)
    assert not r.contains(0.0) and r.contains(1.0) and r.contains(0.5)
    assert str(r) == "(0, 1]"
    assert str(Range(lo=1)) == "[1, inf)"
    for bad in (math.nan, math.inf, -math.inf, True, "3"):
        assert not Range().contains(bad)


@pytest.mark.parametrize("override, needle", [
    ("mcts.rollouts=0", "'mcts.rollouts': 0; expected a number in [1, inf)"),
    ("mcts.rollouts=-1", "'mcts.rollouts': -1; expected a number in [1, inf)"),
    ("mcts.max_depth=-3", "'mcts.max_depth': -3; expected a number in [1, inf)"),
    ("mcts.candidates=0", "'mcts.candidates': 0; expected a number in [1, inf)"),
    ("train.sft.batch_size=-4", "'train.sft.batch_size': -4; expected a number in [1, inf)"),
    ("evolve.pretrain.epochs=0", "'evolve.pretrain.epochs': 0.0; expected a number in (0, inf)"),
    ("data.arith_count=-5", "'data.arith_count': -5; expected a number in [1, inf)"),
    ("executor.timeout_s=nan", "'executor.timeout_s': nan; expected a number in (0, 86400]"),
    ("executor.timeout_s=.inf", "'executor.timeout_s': inf; expected a number in (0, 86400]"),
    ("executor.timeout_s=1e300", "'executor.timeout_s': 1e+300; expected a number in (0, 86400]"),
    ("executor.timeout_s=0", "'executor.timeout_s': 0.0; expected a number in (0, 86400]"),
    ("executor.timeout_s=-1", "'executor.timeout_s': -1.0; expected a number in (0, 86400]"),
    ("executor.num_workers=-3", "'executor.num_workers': -3; expected a number in [1, 1024]"),
    ("executor.memory_limit_mb=1", "'executor.memory_limit_mb': 1; expected a number in [256, inf)"),
    ("data.arith_levels=[1,7]", "'data.arith_levels': 7 in [1, 7]; expected a number in [1, 4]"),
    ("data.arith_habits={add: 1.5}", "'data.arith_habits': 1.5 in {'add': 1.5}"),
    ("engine.prefill_buckets=[128,0]", "'engine.prefill_buckets': 0 in [128, 0]"),
    ("logging.progress_every_s=-1", "'logging.progress_every_s': -1.0; expected a number in [0, "),
])
def test_out_of_range_values_name_key_value_and_range(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_optional_numeric_keys_accept_null():
    cfg = load_config(None, ["eval.limit=null", "train.sft.max_steps=null"])
    assert cfg.eval.limit is None and cfg.train.sft.max_steps is None


def test_sections_built_in_python_are_checked_too():
    check_section("executor", ExecutorConfig())
    with pytest.raises(ConfigError, match=r"'executor.timeout_s': nan"):
        check_section("executor", ExecutorConfig(timeout_s=math.nan))
    with pytest.raises(ConfigError, match=r"'executor.timeout_s': inf"):
        check_section("executor", ExecutorConfig(), timeout_s=math.inf)


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e300, 0.0, -1.0])
def test_executor_pool_refuses_a_bad_timeout_before_starting_workers(value):
    from rstar_jax.execution.pool import ExecutorPool

    with pytest.raises(ConfigError, match=r"'executor.timeout_s'"):
        ExecutorPool(ExecutorConfig(timeout_s=value))
    with pytest.raises(ConfigError, match=r"'executor.timeout_s'"):
        ExecutorPool(ExecutorConfig(), timeout_s=value)
