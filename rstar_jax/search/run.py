"""Search a problem file into a directory of tree files, resumably.

`search_to_dir` is what `rstar-jax search` calls once the engine, scorer and
executor are built: it takes this JAX process's shard of the problems, skips
the ones already in its tree file, runs the configured mode and appends one
record per finished problem. Rerunning the same command after a crash
finishes the rest and leaves exactly the records of an uninterrupted run.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

from rstar_jax.data.problems import Problem
from rstar_jax.search import selection, treefile
from rstar_jax.search import tree as T
from rstar_jax.search.baselines import best_answer, run_baseline
from rstar_jax.search.driver import MCTSDriver, ProblemResult
from rstar_jax.search.expansion import Hooks, Timers
from rstar_jax.utils.logging import MetricsLog, progress

log = logging.getLogger(__name__)


class ResumeMismatch(ValueError):
    """A tree file holds records of other problems under the same ids."""


def process_shard() -> tuple:
    """(process_index, process_count) of this JAX process; (0, 1) without JAX."""
    try:
        import jax
    except ImportError:  # pragma: no cover - jax is a dependency
        return 0, 1
    return jax.process_index(), jax.process_count()


def answer_candidates(trees: Sequence[T.Tree]) -> List[Tuple[int, int]]:
    """(tree, node) of every final-answer node of every tree, in creation order."""
    return [(ti, i) for ti, t in enumerate(trees) for i in T.answer_nodes(t)]


def choose_answer(trees: Sequence[T.Tree], method: str = "top_score", k: int = 4,
                  equiv=None) -> Optional[Tuple[int, int, str]]:
    """The final answer of an inference search, pooled over all its trees.

    `method` is one of `selection.SELECTORS` (the config's
    `mcts.answer_selection`); a node without a PPM score counts as scoring
    minus infinity. Returns (tree, node, answer) of the first candidate
    carrying the chosen answer string (a class is named by its first member,
    so the string is always some node's), or None when no node has an answer.
    """
    cands = answer_candidates(trees)
    answers = [trees[ti].nodes[i].final_answer for ti, i in cands]
    scores = [_score_or_nan(trees[ti].nodes[i].ppm_value) for ti, i in cands]
    chosen = selection.select(method, answers, scores, k=k, equiv=equiv)
    if chosen is None:
        return None
    ti, i = next(c for c, a in zip(cands, answers) if a == chosen)
    return ti, i, chosen


def _score_or_nan(v: Optional[float]) -> float:
    return math.nan if v is None else float(v)


def result_record(result: ProblemResult, mode: str, predict: bool = True, *,
                  answer_selection: Optional[str] = None, top_k: int = 4, equiv=None) -> Dict:
    """The tree-file record of a result.

    With `predict` it also carries the prediction: for MCTS with an
    `answer_selection` method, the answer chosen by
    `choose_answer` over all trees; for the baselines, the top-PPM-score
    answer of the first tree that has one. `prediction_correct` is the
    chosen node's grade against the gold answer (None without one).
    """
    extra: Dict = {}
    if predict and answer_selection is not None:
        found = choose_answer(result.trees, answer_selection, top_k, equiv)
        extra = {"prediction": None, "prediction_tag": None, "prediction_correct": None,
                 "prediction_tree": None, "answer_selection": answer_selection,
                 "answer_candidates": len(answer_candidates(result.trees))}
        if found is not None:
            ti, idx, ans = found
            node = result.trees[ti].nodes[idx]
            extra.update(prediction=ans, prediction_tag=node.tag, prediction_tree=ti,
                         prediction_correct=node.correct)
    elif predict:
        for t in result.trees:
            idx, ans = best_answer(t)
            if idx is not None:
                node = t.nodes[idx]
                extra = {"prediction": ans, "prediction_tag": node.tag,
                         "prediction_correct": node.correct}
                break
    return treefile.make_record(result.problem, result.trees, result.seeds, mode=mode, extra=extra)


def search_to_dir(
    cfg,
    problems: Sequence[Problem],
    out_dir: str,
    engine,
    executor,
    scorer=None,
    hooks: Optional[Hooks] = None,
    *,
    process_index: Optional[int] = None,
    process_count: Optional[int] = None,
) -> Dict:
    """Searches this process's shard of `problems` into `out_dir/trees.<p>.jsonl`.

    Returns a summary: problems in the shard, skipped (already done),
    searched, solved, rollouts, wall seconds and the seconds spent in the
    engine, the PPM scorer and waiting on the executor.
    """
    if process_index is None or process_count is None:
        process_index, process_count = process_shard()
    mine = treefile.shard_problems(problems, process_index, process_count)
    path = treefile.shard_path(out_dir, process_index)
    writer = treefile.TreeWriter(path)
    changed = [p.id for p in mine if p.id in writer.done and writer.questions[p.id] != p.question]
    if changed:  # never resume by id alone: the same id may name another question
        writer.close()
        raise ResumeMismatch(f"{path}: {len(changed)} problem(s) have another question under the "
                             f"same id (first: {changed[0]}); use a new output directory")
    todo = [p for p in mine if p.id not in writer.done]
    mode = cfg.mcts.mode
    stats = {"searched": 0, "solved": 0, "rollouts": 0}
    # Gold-rewarded MCTS generates training data: no prediction to make.
    predict = mode != "mcts" or cfg.mcts.terminal_value == "ppm"
    chooser = cfg.mcts.answer_selection if mode == "mcts" else None
    # Votes group answers with the same grader that marks them correct.
    equiv = hooks.grade if hooks is not None else None
    bar = progress(total=len(mine), initial=len(mine) - len(todo), desc=f"search[{mode}]",
                   unit="problem", enabled=cfg.logging.progress,
                   every_s=cfg.logging.progress_every_s)
    metrics = MetricsLog(os.path.join(out_dir, f"metrics.{process_index}.jsonl"), cfg.logging.jsonl)
    t0 = time.perf_counter()

    def on_done(r: ProblemResult) -> None:
        writer.write(result_record(r, mode, predict, answer_selection=chooser,
                                   top_k=cfg.mcts.answer_top_k, equiv=equiv))
        stats["searched"] += 1
        stats["solved"] += int(r.solved)
        stats["rollouts"] += r.rollouts
        el = max(time.perf_counter() - t0, 1e-9)
        share = stats["solved"] / stats["searched"]
        bar.update(1, solved=f"{share:.0%}", rollouts_s=round(stats["rollouts"] / el, 2))
        metrics.write({"problem": r.problem.id, "done": bar.n, "total": len(mine),
                       "problem_solved": bool(r.solved), "problem_rollouts": r.rollouts, **stats,
                       "solved_share": share, "elapsed_s": round(el, 3),
                       "problems_per_s": stats["searched"] / el})

    timers = Timers()
    try:
        if mode == "mcts":
            driver = MCTSDriver(cfg, engine, executor, scorer, hooks)
            timers = driver.timers
            driver.run(todo, on_done)
        else:
            run_baseline(cfg, todo, engine, executor, scorer, hooks, on_done=on_done, timers=timers)
    finally:
        bar.close()
        writer.close()
        metrics.close()
    wall = time.perf_counter() - t0
    summary = {
        "path": path, "shard": [process_index, process_count], "problems": len(mine),
        "skipped": len(mine) - len(todo), **stats, "wall_s": wall,
        "engine_s": timers.engine_s, "scorer_s": timers.scorer_s, "exec_wait_s": timers.exec_wait_s,
        "engine_calls": timers.engine_calls,
    }
    log.info("search done: %s", summary)
    return summary
