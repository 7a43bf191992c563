"""The few-shot bootstrap prompt reaches the engine: every request the MCTS
driver and the baselines send is exactly `make_prompt_fn(cfg)(question,
partial)` in the few-shot layout, and the trees equal the zero-shot ones
(the prompt changes what the model sees, not the search)."""

import dataclasses

import pytest
from search.search_helpers import add_problems, make_cfg

from rstar_jax.data import prompts
from rstar_jax.search.baselines import run_baseline
from rstar_jax.search.driver import run_mcts
from rstar_jax.testing.mock import MOCK_HOOKS, FakeExecutor, MockEngine, MockScorer

SUFFIX_HEAD = prompts.FEW_SHOT_SUFFIX.split("{input}")[0]


class FewShotRecorder:
    """Records prompts; answers as the mock would for the zero-shot prompt of
    the same (question, partial)."""

    def __init__(self):
        self.inner = MockEngine(steps=2)
        self.prompts = []

    def generate(self, requests):
        out = []
        for r in requests:
            self.prompts.append(r.prompt)
            tail = r.prompt.rsplit(SUFFIX_HEAD, 1)[1]
            question, partial = tail.split("\n", 1)
            zero = prompts.policy_prompt(question, partial, sep="\n\n")
            out += self.inner.generate([dataclasses.replace(r, prompt=zero)])
        return out


def _few_shot(cfg):
    return dataclasses.replace(cfg, mcts=dataclasses.replace(cfg.mcts, few_shot=True))


def _check_prompts(cfg, recorder, problems):
    build = prompts.make_prompt_fn(cfg)
    questions = {p.question for p in problems}
    assert recorder.prompts
    for prompt in recorder.prompts:
        assert prompt.startswith(prompts.FEW_SHOT_INSTRUCTIONS)
        assert all(d.strip() in prompt for d in prompts.FEW_SHOT_DEMOS)
        tail = prompt.rsplit(SUFFIX_HEAD, 1)[1]
        question, partial = tail.split("\n", 1)
        assert question in questions
        assert prompt == build(question, partial)
    # Root expansions send the bare few-shot prompt; deeper ones carry a partial solution.
    assert any(p.endswith("\n") for p in recorder.prompts)
    assert any(p.rsplit(SUFFIX_HEAD, 1)[1].count(prompts.END_OF_STEP) for p in recorder.prompts)


def test_mcts_driver_sends_the_few_shot_prompt():
    problems = add_problems(3)
    cfg = _few_shot(make_cfg(trees_in_flight=3))
    rec = FewShotRecorder()
    got = run_mcts(cfg, problems, rec, FakeExecutor(), None, MOCK_HOOKS)
    _check_prompts(cfg, rec, problems)
    ref = run_mcts(make_cfg(trees_in_flight=3), problems, MockEngine(steps=2), FakeExecutor(), None,
                   MOCK_HOOKS)
    assert [r.trees[0].to_json() for r in got] == [r.trees[0].to_json() for r in ref]


@pytest.mark.parametrize("mode", ["greedy", "best_of_n"])
def test_baselines_send_the_few_shot_prompt(mode):
    problems = add_problems(2)
    cfg = _few_shot(make_cfg(mode=mode, best_of_n=2))
    rec = FewShotRecorder()
    run_baseline(cfg, problems, rec, FakeExecutor(), MockScorer(), MOCK_HOOKS)
    _check_prompts(cfg, rec, problems)
