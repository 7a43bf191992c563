"""The real evaluation methods behind `harness.MethodRunner`.

Each method is one search-package entry point under a method-specific view
of the config (spec section 4):

  greedy     `mcts.mode=greedy`: one temperature-0 path; by default the
             reference's whole solution in one call (`mcts.greedy_mode`,
             search/baselines.py).
  majority   `mcts.mode=best_of_n` with `eval.k` sampled paths, no PPM; the
             harness votes (majority@k).
  best_of_n  the same paths scored by the PPM; the top-scored answer wins.
  beam       `mcts.mode=beam`: step-level beam search guided by the PPM.
  mcts_ppm   `mcts.mode=mcts`, `mcts.terminal_value=ppm`: MCTS whose answer
             steps are valued by the PPM. By default (`inference_eval.mode:
             runs`, the reference's protocol) `inference_eval.runs`
             independent runs per problem, each keeping its best trajectory
             by PPM score; the answer is chosen among those per
             `eval.mcts_selection`. `single_tree`: one tree, every answer a
             candidate.

Every method searches under `inference_eval` (rollouts, candidates per step,
sampling, PPM leaf values, error threshold), the same in every round, with
the zero-shot prompt.

Every final-answer or dead-end leaf of the trees is a candidate: its text is
the partial solution, its answer the node's `final_answer` (None for a
dead end), its score the node's PPM value. Generated tokens are counted by
wrapping the engine and attributing each request to its problem by the
question in the prompt.

`run_method` builds the engine, executor pool and PPM scorer once per
process; `make_runner` takes them ready-made (tests pass the search
package's mock engine, fake executor and mock scorer).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Dict, List, Sequence

import numpy as np

from rstar_jax.data.problems import Problem
from rstar_jax.data.prompts import ASSISTANT, USER
from rstar_jax.evaluation.results import ProblemResult, result_for

log = logging.getLogger(__name__)

NEEDS_PPM = ("best_of_n", "beam", "mcts_ppm")


class MethodUnavailable(RuntimeError):
    """The method's model-side pieces are not available in this install."""


def method_config(method: str, cfg):
    """`cfg` with the `mcts` section set for `method` (see module docstring).

    Budgets, sampling and the PPM's role come from `cfg.inference_eval`, the
    one inference protocol of every round, never from the round's
    training-data search settings; prompts are zero-shot (the few-shot
    prompt belongs to the round-1 bootstrap search only) unless
    `inference_eval.few_shot` asks for the search's few-shot prompt (an
    un-fine-tuned pretrained model, which has never seen the step format).
    """
    from rstar_jax.config.schema import replace

    p = cfg.inference_eval
    shots = dict(few_shot=cfg.mcts.few_shot, few_shot_path=cfg.mcts.few_shot_path) if p.few_shot \
        else dict(few_shot=False, few_shot_path=None)
    m = replace(cfg.mcts, **shots, candidates=p.candidates,
                rollouts=p.rollouts, ppm_init_value=False, errors_threshold=p.errors_threshold,
                temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
                second_tree_for_unsolved=False, unsolved_seeds=0, unsolved_rollouts=0,
                unsolved_max_rollouts=0)
    if method == "greedy":
        m = replace(m, mode="greedy")
    elif method in ("majority", "best_of_n"):
        m = replace(m, mode="best_of_n", best_of_n=cfg.eval.k)
    elif method == "beam":
        m = replace(m, mode="beam")
    elif method == "mcts_ppm":
        m = replace(m, mode="mcts", terminal_value="ppm", ppm_init_value=p.ppm_init_value)
    else:
        raise ValueError(f"unknown method {method!r}")
    return replace(cfg, mcts=m)


def mcts_runs(cfg) -> int:
    """Independent MCTS runs per problem of `mcts_ppm` (1: one tree)."""
    p = cfg.inference_eval
    return p.runs if p.mode == "runs" else 1


def protocol(cfg) -> Dict[str, object]:
    """The evaluation protocol as stated in reports (`method_config`'s inputs).

    `rollouts_per_problem` is the MCTS+PPM budget of one test problem (runs
    x rollouts, each expansion `candidates` generations); the measured
    rollouts and generated tokens per problem are in each evaluation's
    summary (`avg_rollouts`, `avg_generated_tokens`).
    """
    p = cfg.inference_eval
    runs = mcts_runs(cfg)
    return {"mode": p.mode, "runs": runs, "rollouts": p.rollouts,
            "rollouts_per_problem": runs * p.rollouts, "candidates": p.candidates,
            "ppm_init_value": p.ppm_init_value, "errors_threshold": p.errors_threshold,
            "temperature": p.temperature, "top_p": p.top_p, "top_k": p.top_k,
            "trajectories": cfg.eval.k, "selection": cfg.eval.mcts_selection,
            "max_depth": cfg.mcts.max_depth, "max_new_tokens_per_step": cfg.mcts.max_new_tokens_per_step,
            "prompt": "few-shot" if p.few_shot and cfg.mcts.few_shot else "zero-shot",
            "greedy": cfg.mcts.greedy_mode}


class CountingEngine:
    """Wraps a GenerationEngine and counts generated tokens per question.

    A prompt is attributed by its zero-shot layout (`<|user|>:\nQ{sep}<|assistant|>`)
    or, for any other layout (the few-shot bootstrap prompt), by which of the
    `questions` it contains.
    """

    def __init__(self, engine, sep: str = "\n\n", questions: Sequence[str] = ()):
        self.engine = engine
        self.sep = sep
        self.questions = set(questions)
        self.tokens: Dict[str, int] = defaultdict(int)

    def question_of(self, prompt: str) -> str:
        head = prompt.split(f"{self.sep}{ASSISTANT}", 1)[0]
        q = head[len(f"{USER}:\n"):] if head.startswith(f"{USER}:\n") else head
        if q in self.questions or not self.questions:
            return q
        found = [c for c in self.questions if c in prompt]
        return max(found, key=len) if found else q

    def generate(self, requests):
        out = self.engine.generate(requests)
        for r, comps in zip(requests, out):
            self.tokens[self.question_of(r.prompt)] += sum(
                len(c.token_ids) for c in comps)
        return out

    def __getattr__(self, name):  # anything else the search asks of the engine
        return getattr(self.engine, name)


class ConstantScorer:
    """A StepScorer giving every text 0: majority@k samples paths like
    best-of-N but must not depend on a PPM."""

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return np.zeros(len(texts), dtype=np.float32)


def candidates(trees) -> List[tuple]:
    """(text, answer, score) of every leaf that ends a trajectory, over all
    trees in order: final answers and terminal dead ends."""
    from rstar_jax.search import tree as T

    out = []
    for t in trees:
        for i, node in enumerate(t.nodes):
            if i == 0 or node.children:
                continue
            if not (node.terminal or node.final_answer is not None):
                continue
            answer = node.final_answer if node.terminal_reason == T.FINAL_ANSWER else None
            score = node.ppm_value if node.ppm_value is not None else float("nan")
            out.append((t.partial_solution(i), answer, score))
    return out


def run_bests(trees) -> List[tuple]:
    """(text, answer, score) of each independent run's best trajectory: the
    final-answer node with the top PPM score (first on ties), as the
    reference keeps one per run; a run without an answer gives none."""
    from rstar_jax.search.baselines import best_answer

    out = []
    for t in trees:
        i, answer = best_answer(t)
        if i is not None:
            s = t.nodes[i].ppm_value
            out.append((t.partial_solution(i), answer, float("nan") if s is None else s))
    return out


def to_result(problem: Problem, trees, method: str, tokens: int, prompt: str,
              scored: bool, per_run: bool = False) -> ProblemResult:
    """A search result's trees -> the harness's ProblemResult.

    `per_run`: the trees are independent runs and each gives one candidate,
    its best trajectory (`run_bests`); else every ending leaf is one.
    """
    cands = (run_bests(trees) if per_run else []) or candidates(trees) \
        or [("", None, float("nan"))]
    scores = None
    if scored:
        scores = [(-1.0 if np.isnan(s) else float(s)) for _, _, s in cands]
    return result_for(problem, "", method, prompt=prompt,
                      outputs=[c[0] for c in cands], preds=[c[1] for c in cands],
                      scores=scores, generated_tokens=int(tokens),
                      meta={"rollouts": sum(getattr(t, "rollouts", 0) for t in trees),
                            "trees": len(trees), "nodes": sum(len(t.nodes) for t in trees)})


def make_runner(engine, executor, scorer=None, hooks=None):
    """A `MethodRunner` over ready-made engine / executor / scorer."""

    def run(method: str, problems: Sequence[Problem], cfg, on_done=None) -> List[ProblemResult]:
        from rstar_jax.data.prompts import make_prompt_fn
        from rstar_jax.search.baselines import run_baseline
        from rstar_jax.search.driver import run_mcts

        if method in NEEDS_PPM and scorer is None:
            raise MethodUnavailable(f"method {method!r} needs a PPM scorer")
        mcfg = method_config(method, cfg)
        counter = CountingEngine(engine, cfg.data.assistant_sep, [p.question for p in problems])
        prompt_of = make_prompt_fn(mcfg)
        use_scorer = scorer if method in NEEDS_PPM else (
            ConstantScorer() if method == "majority" else None)
        runs = mcts_runs(cfg) if mcfg.mcts.mode == "mcts" else 1
        per_run = mcfg.mcts.mode == "mcts" and cfg.inference_eval.mode == "runs"
        if mcfg.mcts.mode == "mcts":
            found = run_mcts(mcfg, problems, counter, executor, use_scorer, hooks, on_done=on_done,
                             runs=runs)
        else:
            found = run_baseline(mcfg, problems, counter, executor, use_scorer, hooks,
                                 on_done=on_done)
        by_id = {r.problem.id: r for r in found}
        return [to_result(p, by_id[p.id].trees, method, counter.tokens.get(p.question, 0),
                          prompt_of(p.question),
                          scored=method in NEEDS_PPM, per_run=per_run)
                for p in problems]

    return run


_SESSION: Dict[str, object] = {}


def _session(cfg, need_scorer: bool):
    """Engine, executor and (when asked) scorer, built once per process and
    rebuilt when the model, engine, executor, mesh or PPM settings change."""
    try:
        from rstar_jax.execution.pool import ExecutorPool
        from rstar_jax.inference import load_policy_engine, load_ppm_scorer
    except ImportError as e:
        raise MethodUnavailable(f"the engine or executor is not available: {e}") from None
    key = (cfg.model, cfg.engine, cfg.executor, cfg.mesh)
    if _SESSION.get("key") != key:  # another model or engine: start over
        close_session()
    if _SESSION.get("ppm_key") != (cfg.ppm, cfg.model):
        _SESSION.pop("scorer", None)
    if "engine" not in _SESSION:
        _SESSION["key"] = key
        _SESSION["engine"] = load_policy_engine(cfg)
        _SESSION["executor"] = ExecutorPool(cfg.executor)
    if need_scorer and _SESSION.get("scorer") is None:
        _SESSION["ppm_key"] = (cfg.ppm, cfg.model)
        _SESSION["scorer"] = load_ppm_scorer(cfg)
    return _SESSION["engine"], _SESSION["executor"], _SESSION.get("scorer")


def close_session() -> None:
    """Shuts the executor pool down (the evaluate command calls this)."""
    ex = _SESSION.pop("executor", None)
    close = getattr(ex, "close", None)
    if close is not None:
        close()
    _SESSION.clear()


def run_method(method: str, problems: Sequence[Problem], cfg, on_done=None) -> List[ProblemResult]:
    """Runs `method` on `problems` with the configured models; `on_done`
    (optional) is called with each problem's search result as it finishes."""
    engine, executor, scorer = _session(cfg, method in NEEDS_PPM)
    return make_runner(engine, executor, scorer)(method, problems, cfg, on_done)

