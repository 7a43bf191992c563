"""The plan of a self-evolution run: which stage of which round, under which config.

An evolve config lists per-round config files in `evolve.rounds` (paths
relative to its own directory); the evolve config itself is round 0's config
(`evolve.base_stages`, e.g. the demo's world / base pretraining / base
evaluation). A config with no `evolve.rounds` is one round's config and plans
only that round (`evolve.round`). Command-line overrides apply to every
round's config.

Stages are named `round{N}.{stage}`; `--only` takes a comma-separated list of
such names or whole rounds (`round3`), `--from` a name to start at.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

from rstar_jax.config.loader import ConfigError, load_config
from rstar_jax.config.schema import Config

_STAGE_ID = re.compile(r"^round(\d+)(?:\.([a-z_]+))?$")


@dataclass(frozen=True)
class StageSpec:
    """One stage of the plan."""

    round: int
    name: str
    cfg: Config
    config_file: Optional[str]

    @property
    def id(self) -> str:
        return f"round{self.round}.{self.name}"


def build_plan(config_file: str, overrides: Sequence[str] = ()) -> List[StageSpec]:
    """Every stage of the run in execution order.

    Raises:
      ConfigError: a round file is missing or invalid, or rounds are numbered
        out of order.
    """
    top = load_config(config_file, overrides)
    if "pretrain" in top.evolve.base_stages and top.evolve.base_policy:
        # The base model would be evolve.base_policy and the pretraining's
        # output read by nothing: say so rather than train it in vain.
        raise ConfigError(f"evolve.base_stages has 'pretrain' and evolve.base_policy is set "
                          f"({top.evolve.base_policy}); pretrain the base (evolve.base_policy=null) "
                          "or start from that model (drop 'pretrain')")
    plan = [StageSpec(0, s, top, config_file) for s in top.evolve.base_stages]
    if not top.evolve.rounds:
        plan += [StageSpec(top.evolve.round, s, top, config_file) for s in top.evolve.stages]
        return plan
    base_dir = os.path.dirname(os.path.abspath(config_file))
    previous = 0
    for rel in top.evolve.rounds:
        path = os.path.normpath(os.path.join(base_dir, rel))
        cfg = load_config(path, overrides)
        n = cfg.evolve.round
        if n <= previous:
            raise ConfigError(f"round files must have increasing evolve.round; {path} has round {n} "
                              f"after round {previous}")
        previous = n
        plan += [StageSpec(n, s, cfg, path) for s in cfg.evolve.stages]
    return plan


def _parse_id(text: str) -> tuple:
    m = _STAGE_ID.match(text.strip())
    if not m:
        raise ConfigError(f"bad stage name {text!r}; expected roundN or roundN.stage (e.g. round3.search)")
    return int(m.group(1)), m.group(2)


def select(plan: List[StageSpec], only: Optional[str] = None,
           start: Optional[str] = None) -> List[StageSpec]:
    """The stages `--only` / `--from` pick, in plan order.

    Raises:
      ConfigError: a name that matches no stage of the plan.
    """
    chosen = plan
    if start:
        rnd, name = _parse_id(start)
        idx = next((i for i, s in enumerate(plan) if s.round == rnd and (name is None or s.name == name)),
                   None)
        if idx is None:
            raise ConfigError(f"--from {start}: no such stage; stages: {', '.join(s.id for s in plan)}")
        chosen = plan[idx:]
    if only:
        wanted = [_parse_id(x) for x in only.split(",") if x.strip()]
        for rnd, name in wanted:
            if not any(s.round == rnd and (name is None or s.name == name) for s in chosen):
                label = f"round{rnd}" + (f".{name}" if name else "")
                raise ConfigError(f"--only {label}: no such stage; stages: "
                                  f"{', '.join(s.id for s in chosen)}")
        chosen = [s for s in chosen
                  if any(s.round == r and (n is None or s.name == n) for r, n in wanted)]
    return chosen
