"""The MCTS driver: many problems advanced in lockstep on the host.

`trees_in_flight` slots each hold one tree. Each iteration takes one cohort
of slots, walks every tree from its cursor to the leaf to expand (pure
`tree.descend`), sends all those leaves to the engine in ONE call, then
starts the candidates' programs on the executor pool and, while they run,
finishes the other cohort (its programs were started one iteration ago):
children, PPM scores in one call, backups. With two cohorts the pool works
while the device generates; with one (`mcts.overlap_execution=false`) the
steps simply alternate.

A rollout starts at the root and ends when its walk finds no selectable
child or when an expansion produced a final answer (whose value has then
been backed up). Every tree is a pure function of its problem, the config
and the engine's per-request seeds, so the schedule (how many trees in
flight, which cohort) never changes a record.

With `runs=K` every problem is searched K times independently (the
reference's inference protocol: "64 trajectories" are 64 MCTS runs). Each
run is one more tree with its own seed (`tree_seed(problem, k)`) that takes
a slot like any other, so the runs of one problem and of the next are
batched into the same engine calls; the problem is reported once all K
trees are done, in run order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from rstar_jax.data.problems import Problem
from rstar_jax.data.prompts import make_prompt_fn
from rstar_jax.search import tree as T
from rstar_jax.search.expansion import Expander, Hooks, Job, Pending, Timers, request_seed

log = logging.getLogger(__name__)


@dataclass
class ProblemResult:
    """A finished problem: its trees (primary first, then unsolved retries)."""

    problem: Problem
    trees: List[T.Tree]
    seeds: List[int]

    @property
    def solved(self) -> bool:
        return any(T.is_solved(t) for t in self.trees)

    @property
    def rollouts(self) -> int:
        return sum(t.rollouts for t in self.trees)


@dataclass
class _Slot:
    problem: Problem
    tree: T.Tree
    tree_index: int
    budget: int
    done: List[T.Tree] = field(default_factory=list)
    cursor: int = 0
    leaf: Optional[int] = None  # being expanded


def tree_budgets(mcts_cfg) -> List[int]:
    """Rollouts of the primary tree and of each extra tree for unsolved problems."""
    extra = max(mcts_cfg.unsolved_seeds, 1 if mcts_cfg.second_tree_for_unsolved else 0)
    if mcts_cfg.terminal_value != "gold":
        extra = 0  # "unsolved" needs a gold answer
    return [mcts_cfg.rollouts] + [mcts_cfg.unsolved_rollouts or mcts_cfg.rollouts] * extra


def extended_budget(mcts_cfg, budget: int) -> int:
    """Rollouts a tree that used `budget` without solving its problem may go on to.

    Round 4 (spec section 4): 64 rollouts, then up to 128 for an unsolved
    problem (`mcts.unsolved_max_rollouts`), in each of its trees; `budget`
    when there is no extension (or no gold answer to call a problem unsolved).
    """
    if mcts_cfg.terminal_value != "gold":
        return budget
    return max(budget, mcts_cfg.unsolved_max_rollouts)


class MCTSDriver:
    """Runs MCTS for a stream of problems (see module docstring).

    Args:
      cfg: the whole `Config` (uses `cfg.mcts`, `cfg.seed`, `cfg.data.assistant_sep`).
      engine: a `GenerationEngine`; executor: an `Executor`; scorer: a
        `StepScorer` when the config asks for PPM values.
      hooks: program / answer / grading functions (default: rstar_jax.execution).
    """

    def __init__(self, cfg, engine, executor, scorer=None, hooks: Optional[Hooks] = None,
                 *, runs: int = 1):
        self.cfg = cfg
        self.mcts = cfg.mcts
        self.timers = Timers()
        self.expander = Expander(cfg.mcts, engine, executor, scorer, hooks,
                                 assistant_sep=cfg.data.assistant_sep, timers=self.timers,
                                 prompt_fn=make_prompt_fn(cfg))
        self.budgets = tree_budgets(cfg.mcts)
        if runs < 1:
            raise ValueError(f"runs must be >= 1, not {runs}")
        if runs > 1 and len(self.budgets) > 1:
            raise ValueError("independent runs (runs > 1) do not combine with extra trees for "
                             "unsolved problems (mcts.second_tree_for_unsolved / unsolved_seeds)")
        self.runs = runs
        self._runs_done: Dict[str, Dict[int, T.Tree]] = {}
        self.rollouts_done = 0

    def tree_seed(self, problem: Problem, tree_index: int) -> int:
        return request_seed(self.cfg.seed, problem.id, tree_index)

    # -- per-slot pure-ish steps -------------------------------------------------
    def _next_leaf(self, slot: _Slot) -> Optional[int]:
        """Walks from the cursor to a leaf, ending rollouts on the way; None: tree done."""
        while slot.tree.rollouts < slot.budget and not slot.tree.root.terminal:
            from_root = slot.cursor == 0
            leaf = T.descend(slot.tree, slot.cursor, self.mcts.c_puct, backtrack=from_root)
            if leaf is not None:
                return leaf
            if from_root:  # every path is terminal: the tree is exhausted
                break
            self._end_rollout(slot)
        return None

    def _end_rollout(self, slot: _Slot) -> None:
        slot.tree.rollouts += 1
        slot.cursor = 0
        self.rollouts_done += 1

    def _after_expansion(self, slot: _Slot, kids: List[int]) -> None:
        slot.cursor = slot.leaf if slot.leaf is not None else 0
        slot.leaf = None
        if any(slot.tree.nodes[k].terminal_reason == T.FINAL_ANSWER for k in kids):
            self._end_rollout(slot)

    def _job(self, slot: _Slot, leaf: int) -> Job:
        seed = request_seed(self.tree_seed(slot.problem, slot.tree_index), slot.tree.rollouts,
                            slot.tree.nodes[leaf].tag)
        return Job(slot.problem, slot.tree, leaf, seed, self.mcts.candidates)

    # -- the loop ----------------------------------------------------------------
    def run(
        self,
        problems: Iterable[Problem],
        on_done: Callable[[ProblemResult], None],
    ) -> None:
        """Searches every problem; calls `on_done` as each one finishes.

        Completion order depends on the schedule; the results do not.
        """
        queue = self._work(problems)
        width = max(1, self.mcts.trees_in_flight)
        ncoh = 2 if (self.mcts.overlap_execution and width > 1) else 1
        slots: List[Optional[_Slot]] = [None] * width
        pending: List[Optional[Pending]] = [None] * ncoh
        owners: List[List[int]] = [[] for _ in range(ncoh)]
        exhausted = False
        it = 0
        while True:
            c = it % ncoh
            it += 1
            jobs, ids = [], []
            for s in range(c, width, ncoh):
                while True:
                    if slots[s] is None:
                        if exhausted:
                            break
                        item = next(queue, None)
                        if item is None:
                            exhausted = True
                            break
                        p, k = item
                        slots[s] = _Slot(p, T.Tree(), k, self.budgets[0])
                    slot = slots[s]
                    leaf = self._next_leaf(slot)
                    if leaf is not None:
                        slot.leaf = leaf
                        jobs.append(self._job(slot, leaf))
                        ids.append(s)
                        break
                    slots[s] = self._tree_done(slot, on_done)
            outputs = self.expander.generate(jobs)  # device works; other cohort's code runs
            new_pending = self.expander.submit(jobs, outputs) if jobs else None
            other = (c + 1) % ncoh
            if ncoh == 1:
                pending[c], owners[c] = new_pending, ids
                other = c
            if pending[other] is not None:
                kids = self.expander.finish(pending[other])
                for s, k in zip(owners[other], kids):
                    self._after_expansion(slots[s], k)
                pending[other], owners[other] = None, []
            if ncoh > 1:
                pending[c], owners[c] = new_pending, ids
            if not jobs and all(p is None for p in pending) and all(s is None for s in slots):
                return

    def _work(self, problems: Iterable[Problem]) -> Iterator[Tuple[Problem, int]]:
        """(problem, first tree index): one item per problem, or one per run."""
        for p in problems:
            for k in range(self.runs):
                yield p, k

    def _run_done(self, slot: _Slot, on_done) -> None:
        """Keeps a finished run; reports its problem once all runs are in."""
        got = self._runs_done.setdefault(slot.problem.id, {})
        got[slot.tree_index] = slot.tree
        if len(got) < self.runs:
            return
        del self._runs_done[slot.problem.id]
        trees = [got[k] for k in range(self.runs)]
        seeds = [self.tree_seed(slot.problem, k) for k in range(self.runs)]
        on_done(ProblemResult(slot.problem, trees, seeds))

    def _tree_done(self, slot: _Slot, on_done) -> Optional[_Slot]:
        """Extends an unsolved tree that used its budget (`extended_budget`),
        starts the next tree of an unsolved problem, or reports the problem
        (with independent runs: hands the run to `_run_done`)."""
        unsolved = not any(T.is_solved(t) for t in slot.done + [slot.tree])
        more = extended_budget(self.mcts, slot.budget)
        if unsolved and slot.tree.rollouts >= slot.budget and more > slot.budget \
                and not slot.tree.root.terminal:
            slot.budget, slot.cursor = more, 0
            return slot
        if self.runs > 1:
            self._run_done(slot, on_done)
            return None
        slot.done.append(slot.tree)
        nxt = len(slot.done)
        solved = any(T.is_solved(t) for t in slot.done)
        if nxt < len(self.budgets) and not solved:
            return _Slot(slot.problem, T.Tree(), nxt, self.budgets[nxt], slot.done)
        seeds = [self.tree_seed(slot.problem, i) for i in range(len(slot.done))]
        on_done(ProblemResult(slot.problem, slot.done, seeds))
        return None


def run_mcts(cfg, problems, engine, executor, scorer=None, hooks=None,
             on_done: Optional[Callable[[ProblemResult], None]] = None,
             runs: int = 1) -> List[ProblemResult]:
    """Convenience: all results, in problem order; `on_done` (optional) is
    called as each problem finishes (progress bars); `runs` independent
    trees per problem (see module docstring)."""
    out = {}
    driver = MCTSDriver(cfg, engine, executor, scorer, hooks, runs=runs)
    t0 = time.perf_counter()

    def done(r: ProblemResult) -> None:
        out[r.problem.id] = r
        if on_done is not None:
            on_done(r)

    driver.run(problems, done)
    log.info("searched %d problems, %d rollouts in %.1fs", len(out), driver.rollouts_done,
             time.perf_counter() - t0)
    return [out[p.id] for p in problems]
