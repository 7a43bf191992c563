"""Batched expansion: the expensive half of a search step, shared by MCTS and
the baselines.

One expansion of many leaves (from many trees) is three batched calls:
one `GenerationEngine.generate` for all leaves (n candidates each), one
`Executor.submit` for all candidate programs (deduplicated), and at most one
`StepScorer.score` for the new children that need a PPM value. The split
into `generate` / `submit` / `finish` lets the MCTS driver run a batch's code
while the device generates the next batch.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from rstar_jax.data.problems import Problem
from rstar_jax.data.prompts import END_OF_CODE, STEP_STOPS, observation_suffix, policy_prompt
from rstar_jax.inference.types import Completion, GenerationRequest, SamplingParams
from rstar_jax.search import tree as T

log = logging.getLogger(__name__)


def request_seed(*parts: object) -> int:
    """A 31-bit seed from (base seed, problem id, tree, rollout, node tag...).

    Hash-derived so a request's seed never depends on what else is in the
    batch or on how far a previous (killed) run got.
    """
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class Hooks:
    """The executor-side pure functions the search needs (injectable for tests).

    `cumulative_program(step_texts)`: the program to run for the last step
    (spec section 3), None when the step has no code. `extract_answer(text)`:
    the boxed answer. `grade(pred, gold)`: mathematical equivalence.
    `step_code(text)`: one step's own code (recorded in tree files).
    """

    cumulative_program: Callable[[Sequence[str]], Optional[str]]
    extract_answer: Callable[[str], Optional[str]]
    grade: Callable[[Optional[str], str], bool]
    step_code: Optional[Callable[[str], str]] = None


def default_hooks() -> Hooks:
    """The real functions from `rstar_jax.execution` (imported lazily)."""
    from rstar_jax.execution import answers, grading, program

    return Hooks(program.cumulative_program, answers.extract_answer, grading.grade,
                 program.step_code)


@dataclass
class Job:
    """One leaf to expand: which problem, which tree, which node."""

    problem: Problem
    tree: T.Tree
    leaf: int
    seed: int
    n: int


@dataclass
class Pending:
    """Jobs whose candidates are generated and whose programs are running."""

    jobs: List[Job]
    texts: List[List[str]]  # kept candidate texts per job
    complete: List[List[bool]]
    programs: List[List[Optional[str]]]
    future: object  # ExecFuture or None
    unique: List[str]


@dataclass
class Timers:
    """Seconds spent waiting on each external part (for host-overhead figures)."""

    engine_s: float = 0.0
    exec_wait_s: float = 0.0
    scorer_s: float = 0.0
    engine_calls: int = 0
    requests: int = 0
    context_full: int = 0  # leaves made terminal because their prompt no longer fits
    extra: Dict[str, float] = field(default_factory=dict)


def gold_values(answer) -> Tuple[str, ...]:
    if answer is None:
        return ()
    return tuple(answer) if isinstance(answer, (tuple, list)) else (str(answer),)


class Expander:
    """Creates children for batches of leaves (see module docstring)."""

    def __init__(self, mcts_cfg, engine, executor, scorer=None, hooks: Optional[Hooks] = None,
                 *, assistant_sep: str = "\n\n", timers: Optional[Timers] = None,
                 prompt_fn=None, stops: Sequence[str] = STEP_STOPS):
        self.cfg = mcts_cfg
        # Where a generation call ends: every step (the search), or only the
        # end of the code block / the answer (the whole-solution greedy).
        self.stops = tuple(stops)
        self.engine = engine
        self.executor = executor
        self.scorer = scorer
        self.hooks = hooks or default_hooks()
        self.sep = assistant_sep
        # (question, partial) -> prompt; data.prompts.make_prompt_fn(cfg) for few-shot.
        self.prompt_fn = prompt_fn
        self.timers = timers or Timers()
        if (mcts_cfg.ppm_init_value or mcts_cfg.terminal_value == "ppm") and scorer is None:
            raise ValueError("mcts.ppm_init_value / terminal_value=ppm need a PPM scorer")

    # -- prompts -----------------------------------------------------------------
    def prompt(self, problem: Problem, tree: T.Tree, index: int) -> str:
        if self.prompt_fn is not None:
            return self.prompt_fn(problem.question, tree.partial_solution(index))
        return policy_prompt(problem.question, tree.partial_solution(index), sep=self.sep)

    def params(self, n: int, seed: int, temperature: Optional[float] = None) -> SamplingParams:
        c = self.cfg
        return SamplingParams(
            n=n, max_new_tokens=c.max_new_tokens_per_step,
            temperature=c.temperature if temperature is None else temperature,
            top_p=c.top_p, top_k=c.top_k, stop=self.stops, seed=seed,
        )

    # -- the three phases ------------------------------------------------------
    def generate(self, jobs: Sequence[Job], temperature: Optional[float] = None) -> List[List[Completion]]:
        """One engine call for all jobs; `[len(jobs)][n]` completions."""
        if not jobs:
            return []
        reqs = [GenerationRequest(self.prompt(j.problem, j.tree, j.leaf),
                                  self.params(j.n, j.seed, temperature)) for j in jobs]
        # A leaf whose prompt no longer fits the context (a long path, or the
        # whole-solution greedy's answer call after a solution that filled
        # it) gets no completions and becomes a -1 terminal, not an error
        # that ends the whole search.
        fits = getattr(self.engine, "prompt_fits", None)
        send = [i for i, r in enumerate(reqs) if fits is None or fits(r.prompt)]
        full = sorted(set(range(len(jobs))) - set(send))
        for i in full:
            T.mark_context_full(jobs[i].tree.nodes[jobs[i].leaf])
        if full:
            self.timers.context_full += len(full)
            log.warning("%d leaf prompt(s) no longer fit the engine's context (engine.max_seq_len); "
                        "marked terminal (%s), %d so far", len(full), T.CONTEXT_FULL,
                        self.timers.context_full)
        out: List[List[Completion]] = [[] for _ in jobs]
        if not send:
            return out
        t0 = time.perf_counter()
        got = self.engine.generate([reqs[i] for i in send])
        self.timers.engine_s += time.perf_counter() - t0
        self.timers.engine_calls += 1
        self.timers.requests += len(send)
        if len(got) != len(send):
            raise RuntimeError(f"engine returned {len(got)} results for {len(send)} requests")
        for i, comps in zip(send, got):
            out[i] = comps
        return out

    def submit(self, jobs: Sequence[Job], outputs: Sequence[Sequence[Completion]]) -> Pending:
        """Filters candidates and starts their programs (deduplicated) on the pool."""
        texts, complete, programs = [], [], []
        uniq: Dict[str, int] = {}
        for job, comps in zip(jobs, outputs):
            cand = [c.text for c in comps]
            keep = T.filter_candidates(cand, self.cfg.answer_expansion)
            texts.append([cand[k] for k in keep])
            # A step cut off without a stop string is a -1 terminal only with
            # `mcts.incomplete_step_terminal` (the reference has no such rule).
            complete.append([comps[k].stop_reason == "stop" or "boxed" in cand[k]
                             or not self.cfg.incomplete_step_terminal for k in keep])
            prefix = job.tree.step_texts(job.leaf)
            progs = [self.hooks.cumulative_program(prefix + [cand[k]]) for k in keep]
            for p in progs:
                if p is not None and p not in uniq:
                    uniq[p] = len(uniq)
            programs.append(progs)
        unique = list(uniq)
        future = self.executor.submit(unique) if unique else None
        return Pending(list(jobs), texts, complete, programs, future, unique)

    def finish(self, pending: Pending) -> List[List[int]]:
        """Waits for the programs, creates and scores children, backs up answers.

        Returns the new child indices per job. Each final-answer child backs
        up its value (gold +1/-1, or the PPM score at inference) to the root.
        """
        results: Dict[str, object] = {}
        if pending.future is not None:
            t0 = time.perf_counter()
            res = pending.future.result()
            self.timers.exec_wait_s += time.perf_counter() - t0
            results = dict(zip(pending.unique, res))
        new: List[List[int]] = []
        to_score: List[Tuple[Job, int, str]] = []  # (job, child, "init"|"answer")
        for job, texts, complete, progs in zip(pending.jobs, pending.texts, pending.complete,
                                               pending.programs):
            tree, parent = job.tree, job.tree.nodes[job.leaf]
            parent.expanded = True
            kids = []
            for text, ok, prog in zip(texts, complete, progs):
                obs = results[prog].observation if prog is not None else None
                full = text + observation_suffix(obs or "") if text.rstrip().endswith(END_OF_CODE) else text
                ci = T.add_child(tree, job.leaf, full)
                child = tree.nodes[ci]
                child.program, child.observation = prog, obs
                if self.hooks.step_code is not None:
                    child.code = self.hooks.step_code(text) or None
                T.apply_terminal_rules(child, parent.consecutive_errors,
                                       errors_threshold=self.cfg.errors_threshold,
                                       max_depth=self.cfg.max_depth, complete=ok)
                if child.terminal_reason == T.FINAL_ANSWER:
                    child.final_answer = self.hooks.extract_answer(text)  # the step text, not its output
                    golds = gold_values(job.problem.answer)
                    if golds:
                        child.correct = child.final_answer is not None and any(
                            self.hooks.grade(child.final_answer, g) for g in golds)
                    if self.cfg.terminal_value == "ppm":
                        to_score.append((job, ci, "answer"))
                    elif self.cfg.terminal_value == "gold":
                        if not golds:
                            raise ValueError(f"problem {job.problem.id} has no gold answer "
                                             "(use mcts.terminal_value=ppm at inference)")
                        child.value = 1.0 if child.correct else -1.0
                elif not child.terminal and self.cfg.ppm_init_value:
                    to_score.append((job, ci, "init"))
                kids.append(ci)
            new.append(kids)
        self._score(to_score)
        for job, kids in zip(pending.jobs, new):
            for ci in kids:  # back up in child order, after every score is known
                child = job.tree.nodes[ci]
                if child.terminal_reason == T.FINAL_ANSWER and child.value is not None:
                    T.backup(job.tree, ci, child.value)
        return new

    def _score(self, items: Sequence[Tuple[Job, int, str]]) -> None:
        if not items:
            return
        texts = [self.prompt(j.problem, j.tree, ci) for j, ci, _ in items]
        t0 = time.perf_counter()
        scores = self.scorer.score(texts)
        self.timers.scorer_s += time.perf_counter() - t0
        for (job, ci, kind), s in zip(items, scores):
            child = job.tree.nodes[ci]
            if kind == "init":
                T.init_value(child, float(s))
            else:
                child.ppm_value = float(s)
                child.value = float(s)

    def expand(self, jobs: Sequence[Job], temperature: Optional[float] = None) -> List[List[int]]:
        """Synchronous generate + submit + finish (the baselines' path)."""
        return self.finish(self.submit(jobs, self.generate(jobs, temperature)))
