"""`rstar-jax evaluate`: run a method over benchmarks, resumably, and report.

The method itself is a pluggable function

    run_method(method, problems, cfg) -> list[ProblemResult]

(one result per problem, same ids); `rstar_jax.evaluation.methods` holds the
real ones (greedy, majority@k, best-of-N by PPM, step beam search, MCTS+PPM
over the search package). Everything else -- loading, chunking, appending
finished problems, skipping them on rerun, answer choice, metrics, report --
lives here and is tested with fixed predictions.

Layout of `out_dir`: `run.json` (method and settings, checked on rerun),
`<benchmark>/results.jsonl` (per-problem prompts, raw outputs, answers,
scores, tokens), `summary.json`, `report.md`, `accuracy.png`,
`<benchmark>/trajectories.png`, `math500/breakdown.png`.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence

from rstar_jax.data.benchmarks import canonical_name, load_benchmark
from rstar_jax.data.problems import Problem
from rstar_jax.evaluation import metrics, report
from rstar_jax.evaluation.methods import NEEDS_PPM, protocol
from rstar_jax.evaluation.results import (  # noqa: F401  (result_for: re-exported)
    ProblemResult,
    ResultStore,
    result_for,
    write_json_atomic,
)
from rstar_jax.search import selection
from rstar_jax.utils.fingerprint import FingerprintMismatch, check_output_dir, make_fingerprint
from rstar_jax.utils.logging import MetricsLog, progress

log = logging.getLogger(__name__)

MethodRunner = Callable[[str, Sequence[Problem], object], List[ProblemResult]]
METHODS = ("greedy", "majority", "best_of_n", "beam", "mcts_ppm")
# How each method chooses its answer among its candidates (spec section 4).
# mcts_ppm follows `eval.mcts_selection` (the paper: top score).
METHOD_SELECTION = {"greedy": "first", "majority": "majority", "best_of_n": "top_score",
                    "beam": "top_score"}


class EvaluationError(ValueError):
    """Bad evaluation input: unknown method, a mismatched rerun, bad results."""


def selection_for(method: str, cfg) -> str:
    if method not in METHODS:
        raise EvaluationError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    return METHOD_SELECTION.get(method) or cfg.eval.mcts_selection


def choose(result: ProblemResult, sel: str, cfg, equiv=None) -> Optional[str]:
    """The method's final answer unless the runner already set one."""
    if result.chosen is not None:
        return result.chosen
    if not any(p is not None for p in result.preds):
        return None
    scores = result.scores
    if sel != "first" and sel != "majority" and scores is None:
        raise EvaluationError(f"{result.id}: selection {sel!r} needs scores, the runner gave none")
    return selection.select(sel, result.preds, scores, k=cfg.eval.top_k_vote, equiv=equiv)


def _check_run(out_dir: str, settings: Dict[str, object]) -> None:
    """A rerun into the same directory must be the same method and k."""
    path = os.path.join(out_dir, "run.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        for key in ("method", "k", "selection"):
            if old.get(key) != settings.get(key):
                raise EvaluationError(
                    f"{out_dir} holds a {key}={old.get(key)!r} run, not {settings.get(key)!r}; "
                    "use another --out")
        settings = {**old, "benchmarks": sorted(set(old.get("benchmarks", []))
                                                | set(settings["benchmarks"]))}
    os.makedirs(out_dir, exist_ok=True)
    write_json_atomic(path, settings)


def ppm_is_trained(cfg) -> bool:
    """Whether a PPM method would score with trained weights: `ppm.checkpoint`,
    or an HF `model.hf_dir` carrying the reference's value head."""
    if cfg.ppm.checkpoint:
        return True
    m = cfg.model
    if m.hf_dir and not m.checkpoint:
        from rstar_jax.models.convert import HFTensors, has_value_head

        return has_value_head(HFTensors(m.hf_dir))
    return False


def _untrained_ppm_note(method: str, cfg) -> Optional[str]:
    """None, or the report's note for a PPM method run with a fresh value head;
    refused unless `eval.allow_untrained_ppm` (its scores are noise)."""
    if method not in NEEDS_PPM or ppm_is_trained(cfg):
        return None
    if not cfg.eval.allow_untrained_ppm:
        raise EvaluationError(
            f"method {method} scores with a PPM but none is trained: set ppm.checkpoint=DIR "
            "(the ppm stage's export), or eval.allow_untrained_ppm=true to score with a "
            "fresh, untrained value head")
    note = (f"{method} scored with an untrained PPM value head (no ppm.checkpoint; "
            "eval.allow_untrained_ppm=true): its choices are noise")
    log.warning(note)
    return note


def problem_digests(names, given, cfg) -> Dict[str, str]:
    """{benchmark: content digest} of each benchmark's problems file.

    Given (in-memory) problems are digested as JSON; a tfds benchmark by its
    name only (its files are tfds's own)."""
    import hashlib

    from rstar_jax.data.benchmarks import BENCHMARKS
    from rstar_jax.utils.fingerprint import file_digest

    out = {}
    for name in names:
        key = os.path.splitext(os.path.basename(name))[0] if os.path.isfile(name) else name
        bdir = cfg.eval.benchmark_dir
        if key in given:
            rows = [[p.id, p.question, p.answer] for p in given[key]]
            out[key] = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
        elif os.path.isfile(name):
            out[key] = file_digest(name)
        elif bdir and os.path.isfile(bdir) and cfg.eval.data_dir is None:
            out[key] = file_digest(bdir)
        elif bdir and os.path.isdir(bdir) and key in BENCHMARKS and os.path.isfile(
                os.path.join(bdir, BENCHMARKS[key][0])):
            out[key] = file_digest(os.path.join(bdir, BENCHMARKS[key][0]))
    return out


def levels_table(cfg) -> Optional[Dict[str, Dict[str, object]]]:
    """MATH500 level/subject table from `eval.levels_path`, or from
    `math500_levels.jsonl` beside the benchmark files; None if neither."""
    path = cfg.eval.levels_path
    if path is None and cfg.eval.benchmark_dir:
        cand = os.path.join(cfg.eval.benchmark_dir, "math500_levels.jsonl")
        path = cand if os.path.isfile(cand) else None
    return metrics.load_levels(path) if path else None


def _takes_on_done(run_method) -> bool:
    """Whether a runner reports each finished problem (`on_done=`): the real
    runners do, so bars move per problem; simple test runners need not."""
    try:
        return "on_done" in inspect.signature(run_method).parameters
    except (TypeError, ValueError):
        return False


def run_benchmark(
    name: str,
    problems: Sequence[Problem],
    method: str,
    cfg,
    out_dir: str,
    run_method: MethodRunner,
    *,
    equiv=None,
    chunk_size: int = 16,
    grade: Optional[metrics.Grade] = None,
) -> List[ProblemResult]:
    """Runs the pending problems of one benchmark chunk by chunk, appending
    each finished chunk; returns the results of all `problems`, in order.

    Progress (bar or log lines, see `utils.logging`) and one row per chunk
    in `out_dir/metrics.jsonl` report the accuracy so far of the problems
    run in this call (graded with `grade`, when given).
    """
    store = ResultStore(os.path.join(out_dir, name, "results.jsonl"))
    done = store.load()
    changed = [p.id for p in problems if p.id in done and done[p.id].question != p.question]
    if changed:  # never resume by id alone: the same id may name another question
        raise EvaluationError(
            f"{name}: {len(changed)} problem(s) in {store.path} have another question under "
            f"the same id (first: {changed[0]}); use a new --out, or --force")
    pending = [p for p in problems if p.id not in done]
    if done:
        log.info("%s: %d of %d problems already done, resuming", name,
                 len(problems) - len(pending), len(problems))
    sel = selection_for(method, cfg)
    bar = progress(total=len(problems), initial=len(problems) - len(pending),
                   desc=f"evaluate {name} {method}", unit="problem", enabled=cfg.logging.progress,
                   every_s=cfg.logging.progress_every_s)
    log_rows = MetricsLog(os.path.join(out_dir, "metrics.jsonl"), cfg.logging.jsonl)
    ran = correct = 0
    per_problem = _takes_on_done(run_method)
    for start in range(0, len(pending), max(1, chunk_size)):
        chunk = pending[start:start + chunk_size]
        ticked = [0, len(chunk)]  # problems of this chunk the bar has counted, of

        def tick(_result, ticked=ticked) -> None:
            if ticked[0] < ticked[1]:
                ticked[0] += 1
                bar.update(1)

        got = (run_method(method, chunk, cfg, on_done=tick) if per_problem
               else run_method(method, chunk, cfg))
        by_id = {r.id: r for r in got}
        if set(by_id) != {p.id for p in chunk}:
            raise EvaluationError(f"{name}: the {method} runner returned ids "
                                  f"{sorted(by_id)[:5]}... for {[p.id for p in chunk][:5]}...")
        ordered = []
        for p in chunk:
            r = by_id[p.id]
            r.benchmark, r.method = name, method
            r.chosen = choose(r, sel, cfg, equiv)
            ordered.append(r)
        store.append(ordered)
        done.update(by_id)
        ran += len(ordered)
        figures = {}
        if grade is not None:
            correct += sum(r.chosen is not None and bool(grade(r.chosen, r.gold)) for r in ordered)
            figures["accuracy"] = f"{100.0 * correct / ran:.1f}%"
        bar.update(len(chunk) - ticked[0], **figures)
        log_rows.write({"benchmark": name, "method": method, "done": bar.n, "total": len(problems),
                        "ran": ran, "correct": correct if grade is not None else None,
                        "accuracy": 100.0 * correct / ran if grade is not None else None,
                        "elapsed_s": round(bar.elapsed(), 3)})
    bar.close()
    log_rows.close()
    return [done[p.id] for p in problems]


def evaluate(
    cfg,
    benchmarks: Sequence[str],
    method: str,
    out_dir: str,
    *,
    run_method: Optional[MethodRunner] = None,
    grade: Optional[metrics.Grade] = None,
    equiv: Optional[metrics.Equiv] = None,
    problems: Optional[Dict[str, Sequence[Problem]]] = None,
    force: bool = False,
) -> Dict[str, object]:
    """Evaluates `method` on each benchmark and writes the report.

    `out_dir` records what produced it (`utils.fingerprint`: the config keys
    that change results, the models' identities, the problems files'
    digests); a rerun that differs is refused before any model loads,
    unless `force` sets the old results aside.

    Args:
      benchmarks: names (aliases allowed) or JSON/JSONL problem files.
      run_method: the method seam; default `methods.run_method` (real models).
      problems: pre-loaded problems by benchmark name (tests, notebooks);
        others are loaded with `load_benchmark` from `eval.benchmark_dir` /
        `eval.data_dir`, capped at `eval.limit`.

    Returns:
      {"summaries": [per-benchmark summary], "paths": {report files}}.
    """
    sel = selection_for(method, cfg)
    note = _untrained_ppm_note(method, cfg) if run_method is None else None
    if grade is None:
        from rstar_jax.execution.grading import grade as real_grade

        grade = functools.partial(real_grade, timeout_s=cfg.eval.grade_timeout_s)
    if run_method is None:
        from rstar_jax.evaluation.methods import run_method as default_runner

        run_method = default_runner
    given = problems or {}
    names = [b if b in given or os.path.isfile(b) else canonical_name(b) for b in benchmarks]
    fingerprint = make_fingerprint(cfg, command="evaluate", with_ppm=method in NEEDS_PPM,
                                   problems=problem_digests(names, given, cfg),
                                   extra={"eval.method": method})
    try:
        check_output_dir(out_dir, fingerprint, cfg, force=force)
    except (FingerprintMismatch, FileNotFoundError) as e:
        raise EvaluationError(str(e)) from None
    _check_run(out_dir, {"method": method, "k": cfg.eval.k, "selection": sel,
                         "benchmarks": [os.path.basename(n) for n in names]})
    levels = None
    summaries = []
    for name in names:
        key = os.path.splitext(os.path.basename(name))[0] if os.path.isfile(name) else name
        probs = given.get(key)
        if probs is None:
            probs = load_benchmark(name, data_dir=cfg.eval.data_dir,
                                   path=cfg.eval.benchmark_dir, limit=cfg.eval.limit)
        results = run_benchmark(key, probs, method, cfg, out_dir, run_method, equiv=equiv,
                                chunk_size=cfg.eval.chunk_size, grade=grade)
        if key == "math500" and levels is None:
            levels = levels_table(cfg)
        summaries.append(report.benchmark_summary(
            key, method, results, k=cfg.eval.k, grade=grade, equiv=equiv,
            levels=levels if key == "math500" else None,
            bootstrap_samples=cfg.eval.bootstrap_samples, seed=cfg.seed))
        # The budget behind the figures (runs x rollouts x candidates, sampling).
        summaries[-1]["protocol"] = protocol(cfg)
        if note:
            summaries[-1]["warnings"].insert(0, note)
        for warning in summaries[-1]["warnings"]:
            log.warning("%s %s: %s", key, method, warning)
        log.info("%s %s: accuracy %s (n=%d)", key, method, summaries[-1]["accuracy"],
                 summaries[-1]["n"])
    paths = report.write_report(out_dir, summaries)
    return {"summaries": summaries, "paths": paths}


def evaluate_methods(
    cfg,
    problems: Sequence[Problem],
    methods_: Sequence[str],
    out_dir: str,
    *,
    name: str = "test",
    run_method: Optional[MethodRunner] = None,
    grade: Optional[metrics.Grade] = None,
    equiv: Optional[metrics.Equiv] = None,
    force: bool = False,
) -> Dict[str, Dict[str, object]]:
    """Several methods on one problem set (e.g. an evolve round's test
    split), each in `out_dir/<method>/`, sharing the loaded models.

    Returns:
      {method: the benchmark summary of `name`}.
    """
    out = {}
    try:
        for m in methods_:
            res = evaluate(cfg, [name], m, os.path.join(out_dir, m), run_method=run_method,
                           grade=grade, equiv=equiv, problems={name: problems}, force=force)
            out[m] = res["summaries"][0]
    finally:
        if run_method is None:
            from rstar_jax.evaluation.methods import close_session

            close_session()
    return out
