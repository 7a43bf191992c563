"""Runs the planned stages in order: skip the finished, run the rest, report.

The loop is deliberately plain: for each selected stage, a manifest means
done; otherwise look the stage function up (built-in table, overridable per
stage by `evolve.stage_functions`), call it with a `StageContext`, then write
the manifest last. A killed run leaves no manifest for the interrupted stage,
so the same command reruns exactly that stage, whose function resumes from
its own partial output. After the last stage of each round (and at the end)
the report is rebuilt from all manifests.
"""

from __future__ import annotations

import datetime
import importlib
import logging
import os
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from rstar_jax.config.loader import ConfigError, to_dict
from rstar_jax.evolve.context import StageContext, stage_dir
from rstar_jax.evolve.manifest import config_hash, git_revision, read_manifest, write_manifest
from rstar_jax.evolve.plan import StageSpec, build_plan, select

log = logging.getLogger(__name__)

StageFn = Callable[[StageContext], Mapping[str, Any]]

# The built-in stage functions (imported only when a stage runs).
BUILTIN_STAGES: Dict[str, str] = {
    "world": "rstar_jax.evolve.stages:world",
    "pretrain": "rstar_jax.evolve.stages:pretrain",
    "problems": "rstar_jax.evolve.stages:problems",
    "search": "rstar_jax.evolve.stages:search",
    "extract": "rstar_jax.evolve.stages:extract",
    "sft": "rstar_jax.evolve.stages:sft",
    "ppm": "rstar_jax.evolve.stages:ppm",
    "eval": "rstar_jax.evolve.stages:evaluate",
}


def resolve_stage(name: str, overrides: Mapping[str, str]) -> StageFn:
    """The function of stage `name` ("module:function" from the config or the table)."""
    target = overrides.get(name) or BUILTIN_STAGES.get(name)
    if target is None:
        raise ConfigError(f"unknown stage {name!r}; known: {', '.join(sorted(BUILTIN_STAGES))} "
                          "(or map it in evolve.stage_functions)")
    module, _, attr = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"stage {name!r}: cannot load {target!r}: {e}") from None
    return fn


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _relative(outputs: Mapping[str, str], base: str) -> Dict[str, str]:
    rel = {}
    for key, path in outputs.items():
        path = os.path.abspath(path)
        inside = os.path.commonpath([path, os.path.abspath(base)]) == os.path.abspath(base)
        rel[key] = os.path.relpath(path, base) if inside else path
    return rel


def _process() -> tuple:
    """(index, count) of this JAX process; (0, 1) when JAX was never imported."""
    jax = sys.modules.get("jax")
    if jax is None:
        return 0, 1
    return jax.process_index(), jax.process_count()


def _barrier(name: str) -> None:
    """Waits for every process of a multi-host run (no-op on one process)."""
    if _process()[1] > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def run_stage(spec: StageSpec, run_dir: str, revision: Optional[str]) -> Dict[str, Any]:
    """Runs one stage and writes its manifest; returns the manifest."""
    ctx = StageContext(cfg=spec.cfg, run_dir=run_dir, round=spec.round, stage=spec.name)
    fn = resolve_stage(spec.name, spec.cfg.evolve.stage_functions)
    os.makedirs(ctx.out_dir, exist_ok=True)
    started, t0 = _now(), time.perf_counter()
    log.info("%s: running (%s)", spec.id, ctx.out_dir)
    result = dict(fn(ctx) or {})
    wall = time.perf_counter() - t0
    config = to_dict(spec.cfg)
    manifest = {
        "stage": spec.name,
        "round": spec.round,
        "config_file": spec.config_file,
        "config_hash": config_hash(config),
        "config": config,
        "inputs": ctx.inputs,
        "outputs": _relative(result.get("outputs", {}), ctx.out_dir),
        "counts": dict(result.get("counts", {})),
        "metrics": dict(result.get("metrics", {})),
        "notes": list(result.get("notes", [])),
        # Structured results beyond flat metrics (eval: protocol, PPM margins).
        "details": dict(result.get("details", {})),
        "timings": {"started": started, "finished": _now(), "wall_s": round(wall, 3)},
        "git_revision": revision,
    }
    # On a pod every process runs the stage on its shard; the stage is done
    # when all are, and process 0 alone records it.
    _barrier(f"{spec.id}:finished")
    if _process()[0] == 0:
        write_manifest(ctx.out_dir, manifest)
    _barrier(f"{spec.id}:recorded")
    log.info("%s: done in %.1f s %s", spec.id, wall, manifest["counts"])
    return manifest


# Config keys whose change cannot change what a stage produced: how it
# logs and where compiled programs are cached. Any other change makes a
# finished stage another run's.
RESULT_NEUTRAL_KEYS = ("logging.", "evolve.compile_cache", "engine.compilation_cache_dir",
                       "checkpoint.async_save", "train.tensorboard")


def _flat(d: Any, prefix: str = "") -> Dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix[:-1]: d}
    out: Dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[str]:
    """The dotted keys whose values differ between two configs (as dicts),
    the result-neutral ones (`RESULT_NEUTRAL_KEYS`) left out."""
    a, b = _flat(dict(old)), _flat(dict(new))
    return sorted(k for k in set(a) | set(b)
                  if a.get(k) != b.get(k) and not k.startswith(RESULT_NEUTRAL_KEYS))


def _check_finished(spec: StageSpec, done: Mapping[str, Any], run_dir: str) -> None:
    """A finished stage is kept only if it was made under this config (bar
    result-neutral keys): a rerun after a config edit must not mix two
    runs' results in one report."""
    new = to_dict(spec.cfg)
    if done.get("config_hash") == config_hash(new):
        return
    old = done.get("config")
    if isinstance(old, dict):
        diff = changed_keys(old, new)
        before, after = _flat(old), _flat(new)
        shown = ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in diff[:6])
    else:
        diff = ["(the config it recorded is unreadable)"]
        shown = diff[0]
    where = stage_dir(run_dir, spec.round, spec.name)
    if not diff:
        log.info("%s: finished under a config that differs only in logging/caching keys; kept",
                 spec.id)
        return
    more = f" (+{len(diff) - 6} more)" if len(diff) > 6 else ""
    raise ConfigError(f"{spec.id} finished under another config ({shown}{more}); rerun with the "
                      f"config it was made with, or delete {where} and the stages after it to "
                      "redo them under this one")


def _round_ends(selected: Sequence[StageSpec], plan: Sequence[StageSpec]) -> set:
    """Stage ids after which a round is complete (report time)."""
    last = {}
    for s in plan:
        last[s.round] = s.id
    return {s.id for s in selected if last.get(s.round) == s.id}


def run_evolve(
    config_file: str,
    run_dir: str,
    overrides: Sequence[str] = (),
    only: Optional[str] = None,
    start: Optional[str] = None,
    echo: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Runs (or resumes) a self-evolution run; returns the report dict.

    Args:
      config_file: an evolve config (with `evolve.rounds`) or one round's config.
      run_dir: where every stage writes `round_N/<stage>/`.
      overrides: dotted `key=value` overrides applied to every round's config.
      only: comma-separated `roundN[.stage]` names to run (nothing else).
      start: a `roundN[.stage]` to start from (earlier stages must be done).
      echo: where the per-round tables go (the terminal).
    """
    from rstar_jax.evolve.report import write_report

    plan = build_plan(config_file, overrides)
    selected = select(plan, only, start)
    os.makedirs(run_dir, exist_ok=True)
    cache = plan[0].cfg.evolve.compile_cache if plan else None
    if cache:
        from rstar_jax.utils.compile_cache import enable_compile_cache

        enable_compile_cache(os.path.join(run_dir, cache))
    revision = git_revision()
    ends = _round_ends(selected, plan)
    ran: List[str] = []
    for spec in selected:
        done = read_manifest(stage_dir(run_dir, spec.round, spec.name))
        if done is not None:
            _check_finished(spec, done, run_dir)
            log.info("%s: already finished, skipped", spec.id)
        else:
            run_stage(spec, run_dir, revision)
            ran.append(spec.id)
        if spec.id in ends:
            write_report(run_dir, plan, echo=echo if ran else None)
    return write_report(run_dir, plan, echo=echo)
