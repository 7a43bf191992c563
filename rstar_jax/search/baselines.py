"""The paper's comparison searches, built from the same parts as MCTS.

Every mode grows a `Tree` (so tree files, extraction and answer selection
treat all modes alike) through the same batched `Expander`, advancing a
chunk of `trees_in_flight` problems in lockstep with one engine call per
step:

- greedy: one path, temperature 0, one candidate per call. By default
  (`mcts.greedy_mode=whole_solution`) as the reference's greedy config: a
  call ends only at `<end_of_code>` or `<end_of_answer>`, so the first writes
  the whole solution; its code runs and a second call, after the output,
  writes the answer, an error in the output included (error threshold
  `greedy_errors_threshold`, 3). A second call that does not answer ends
  the path with no answer, as the reference's two-step loop does. `step`:
  one step per call, stopping at `<end_of_step>` too, like the search.
- best_of_n: `best_of_n` independent sampled paths (one candidate per step
  each, seeds per path), final answers scored by the PPM (or an outcome
  model behind the same `StepScorer` interface).
- beam: step-level beam search; each of `beam_width` partial solutions
  samples `beam_expand` (default `candidates`) next steps, the PPM scores
  them, the best `beam_width` non-terminal ones go on.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from rstar_jax.data.problems import Problem
from rstar_jax.data.prompts import END_OF_ANSWER, END_OF_CODE, STEP_STOPS, make_prompt_fn
from rstar_jax.search import tree as T
from rstar_jax.search.driver import ProblemResult
from rstar_jax.search.expansion import Expander, Hooks, Job, Timers, request_seed

# The whole-solution greedy's calls: the solution up to `<end_of_code>`, then
# the answer after the code's output (the reference's greedy max_depth 2).
WHOLE_SOLUTION_CALLS = 2
WHOLE_SOLUTION_STOPS = (END_OF_CODE, END_OF_ANSWER)


def _expander(cfg, engine, executor, scorer, hooks, timers, *, init: bool) -> Expander:
    """Answers are scored by the PPM when there is one; never by the gold answer."""
    m = dataclasses.replace(
        cfg.mcts,
        terminal_value="ppm" if scorer is not None else "none",
        ppm_init_value=bool(init and scorer is not None),
    )
    stops = STEP_STOPS
    if m.mode == "greedy" and m.greedy_mode == "whole_solution":
        # A node deeper than max_depth that does not answer is a "too many
        # steps" terminal, so max_depth = calls - 1 ends the path after the
        # last call whatever it wrote.
        m = dataclasses.replace(m, errors_threshold=cfg.mcts.greedy_errors_threshold,
                                max_depth=WHOLE_SOLUTION_CALLS - 1,
                                max_new_tokens_per_step=cfg.mcts.greedy_max_new_tokens)
        stops = WHOLE_SOLUTION_STOPS
    return Expander(m, engine, executor, scorer, hooks, assistant_sep=cfg.data.assistant_sep,
                    timers=timers, prompt_fn=make_prompt_fn(cfg), stops=stops)


def _paths_search(cfg, problems, expander: Expander, n_paths: int, temperature: float,
                  tree_seeds: Sequence[int]) -> List[T.Tree]:
    """`n_paths` independent one-candidate paths per problem, in lockstep."""
    trees = [T.Tree() for _ in problems]
    # cursors[p][k]: the node path k of problem p stands on (None: finished).
    cursors: List[List[Optional[int]]] = [[0] * n_paths for _ in problems]
    while True:
        jobs, where = [], []
        for p, (prob, tree) in enumerate(zip(problems, trees)):
            for k, cur in enumerate(cursors[p]):
                if cur is None:
                    continue
                seed = request_seed(tree_seeds[p], k, tree.nodes[cur].depth)
                jobs.append(Job(prob, tree, cur, seed, 1))
                where.append((p, k))
        if not jobs:
            return trees
        # Paths standing on the same node each add their own child.
        kids = expander.expand(jobs, temperature)
        for (p, k), new in zip(where, kids):
            child = new[0] if new else None
            tree = trees[p]
            if child is None or tree.nodes[child].terminal:
                cursors[p][k] = None
            else:
                cursors[p][k] = child
        for p, tree in enumerate(trees):
            tree.rollouts = sum(1 for c in cursors[p] if c is None)


def _beam_search(cfg, problems, expander: Expander, tree_seeds: Sequence[int]) -> List[T.Tree]:
    width = max(1, cfg.mcts.beam_width)
    n = cfg.mcts.beam_expand or cfg.mcts.candidates
    trees = [T.Tree() for _ in problems]
    beams: List[List[int]] = [[0] for _ in problems]
    while any(beams):
        jobs, where = [], []
        for p, (prob, tree) in enumerate(zip(problems, trees)):
            for node in beams[p]:
                seed = request_seed(tree_seeds[p], tree.nodes[node].tag)
                jobs.append(Job(prob, tree, node, seed, n))
                where.append(p)
        kids = expander.expand(jobs)
        pool: Dict[int, List[int]] = {p: [] for p in range(len(problems))}
        for p, new in zip(where, kids):
            pool[p].extend(c for c in new if not trees[p].nodes[c].terminal)
        for p, tree in enumerate(trees):
            ranked = sorted(pool[p], key=lambda c: -(tree.nodes[c].ppm_value or 0.0))
            beams[p] = ranked[:width]
            if not beams[p]:
                tree.rollouts = len(T.answer_nodes(tree))
    return trees


def best_answer(tree: T.Tree) -> Tuple[Optional[int], Optional[str]]:
    """The final-answer node with the highest PPM score (first on ties)."""
    best, best_s = None, None
    for i in T.answer_nodes(tree):
        s = tree.nodes[i].ppm_value
        s = float("-inf") if s is None else s
        if best is None or s > best_s:
            best, best_s = i, s
    return best, (tree.nodes[best].final_answer if best is not None else None)


def run_baseline(cfg, problems: Sequence[Problem], engine, executor, scorer=None,
                 hooks: Optional[Hooks] = None, on_done: Optional[Callable] = None,
                 timers: Optional[Timers] = None,
                 tree_seed: Optional[Callable[[Problem], int]] = None) -> List[ProblemResult]:
    """Runs `cfg.mcts.mode` (greedy | best_of_n | beam) over chunks of problems."""
    mode = cfg.mcts.mode
    if mode in ("best_of_n", "beam") and scorer is None:
        raise ValueError(f"mcts.mode={mode} needs a PPM (or outcome model) scorer")
    timers = timers or Timers()
    exp = _expander(cfg, engine, executor, scorer, hooks, timers, init=(mode == "beam"))
    seed_of = tree_seed or (lambda p: request_seed(cfg.seed, p.id, 0))
    chunk = max(1, cfg.mcts.trees_in_flight)
    out: List[ProblemResult] = []
    for start in range(0, len(problems), chunk):
        probs = list(problems[start:start + chunk])
        seeds = [seed_of(p) for p in probs]
        if mode == "greedy":
            trees = _paths_search(cfg, probs, exp, 1, 0.0, seeds)
        elif mode == "best_of_n":
            trees = _paths_search(cfg, probs, exp, cfg.mcts.best_of_n, cfg.mcts.temperature, seeds)
        elif mode == "beam":
            trees = _beam_search(cfg, probs, exp, seeds)
        else:
            raise ValueError(f"not a baseline mode: {mode}")
        for p, t, s in zip(probs, trees, seeds):
            r = ProblemResult(p, [t], [s])
            out.append(r)
            if on_done is not None:
                on_done(r)
    return out
