"""Greedy, best-of-N and step-level beam search on the mock engine."""

import pytest
from search.search_helpers import add_problems, make_cfg

from rstar_jax.search import tree as T
from rstar_jax.search.baselines import best_answer, run_baseline
from rstar_jax.search.expansion import request_seed
from rstar_jax.testing.mock import MOCK_HOOKS, FakeExecutor, MockEngine, MockScorer


def _run(cfg, probs, scorer=None, engine=None):
    return run_baseline(cfg, probs, engine or MockEngine(steps=2, seeded=True), FakeExecutor(),
                        scorer, MOCK_HOOKS)


def test_greedy_step_mode_one_path_temperature_zero():
    engine = MockEngine(steps=2, seeded=True)
    res = _run(make_cfg(mode="greedy", greedy_mode="step", trees_in_flight=4), add_problems(3),
               engine=engine)
    for r, gold in zip(res, ("7", "8", "9")):
        tree = r.trees[0]
        assert [n.tag for n in tree.nodes] == ["0", "0.1", "0.1.1", "0.1.1.1"]
        assert best_answer(tree)[1] == gold and r.solved
        assert tree.root.N == 0  # nothing is backed up without a scorer
    assert engine.calls == [3, 3, 3]  # the three problems share every step


def test_best_of_n_paths_follow_their_seeds():
    cfg = make_cfg(seed=3, mode="best_of_n", best_of_n=4, temperature=0.8)
    (r,) = _run(cfg, add_problems(1), MockScorer())
    tree = r.trees[0]
    ts = request_seed(cfg.seed, "p0", 0)
    offsets = [request_seed(ts, k, 0) % 2 for k in range(4)]
    assert 0 in offsets and 1 in offsets  # the fixture exercises both outcomes
    answers = [tree.nodes[i].final_answer for i in T.answer_nodes(tree)]
    assert sorted(answers) == sorted(str(7 + o) for o in offsets)
    assert len(tree.root.children) == 4  # one child per path, duplicates included
    # Mock PPM: even answers score 0.9, so 8 wins though 7 is right.
    assert best_answer(tree)[1] == "8"
    assert all(tree.nodes[i].ppm_value == pytest.approx(0.9 if tree.nodes[i].final_answer == "8"
                                                        else -0.9) for i in T.answer_nodes(tree))


def test_beam_search_keeps_the_best_by_ppm():
    engine = MockEngine(steps=2)
    cfg = make_cfg(mode="beam", beam_width=1, beam_expand=2)
    (r,) = _run(cfg, add_problems(1), MockScorer(), engine)
    tree = r.trees[0]
    # Width 1: 0.1 (x = 3 + 0, PPM 0.5) beats 0.2 (-0.5); only 0.1 goes on.
    assert [n.tag for n in tree.nodes] == ["0", "0.1", "0.2", "0.1.1", "0.1.1.1"]
    assert (tree.nodes[1].ppm_value, tree.nodes[2].ppm_value) == (0.5, -0.5)
    assert best_answer(tree)[1] == "7"
    assert engine.calls == [1, 1, 1]
    cfg2 = make_cfg(mode="beam", beam_width=2, beam_expand=2)
    (r2,) = _run(cfg2, add_problems(1), MockScorer(), MockEngine(steps=2))
    answers = {r2.trees[0].nodes[i].final_answer for i in T.answer_nodes(r2.trees[0])}
    assert answers == {"7", "8"} and best_answer(r2.trees[0])[1] == "8"


def test_scored_modes_need_a_scorer():
    with pytest.raises(ValueError, match="scorer"):
        _run(make_cfg(mode="beam"), add_problems(1))


class _Recorder(MockEngine):
    """The mock engine, keeping every request it was sent."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.requests = []

    def generate(self, requests):
        self.requests.extend(requests)
        return super().generate(requests)


def test_greedy_whole_solution_is_the_default_two_calls():
    """The reference's greedy (config/sft_eval_greedy.yaml, issue 25 point 4):
    one call writes the whole solution up to `<end_of_code>`, its code runs,
    a second call writes the answer after the output."""
    from rstar_jax.data.prompts import END_OF_ANSWER, END_OF_CODE

    cfg = make_cfg(mode="greedy", trees_in_flight=4)
    assert cfg.mcts.greedy_mode == "whole_solution" and cfg.mcts.greedy_errors_threshold == 3
    engine = _Recorder(steps=3, seeded=True)
    res = _run(cfg, add_problems(3), engine=engine)
    assert engine.calls == [3, 3]
    assert {r.params.stop for r in engine.requests} == {(END_OF_CODE, END_OF_ANSWER)}
    assert {r.params.max_new_tokens for r in engine.requests} == {cfg.mcts.greedy_max_new_tokens}
    assert {r.params.temperature for r in engine.requests} == {0.0}
    for r, gold in zip(res, ("7", "8", "9")):
        tree = r.trees[0]
        assert [n.tag for n in tree.nodes] == ["0", "0.1", "0.1.1"]
        first = tree.nodes[1]
        assert first.text.count("<end_of_step>") == 2 and "<output>" + gold in first.text
        assert tree.nodes[2].text.endswith(END_OF_ANSWER)
        assert best_answer(tree)[1] == gold and r.solved


def test_greedy_whole_solution_still_answers_after_a_code_error():
    """A code error in the whole solution's output does not end the path
    (threshold 3, the reference's); the step mode at threshold 1 stops there."""
    cfg = make_cfg(mode="greedy", errors_threshold=1)
    (r,) = _run(cfg, add_problems(1), engine=MockEngine(steps=2, error_offset=0))
    tree = r.trees[0]
    assert T.is_code_error(tree.nodes[1].observation) and not tree.nodes[1].terminal
    assert tree.nodes[2].terminal_reason == T.FINAL_ANSWER and best_answer(tree)[0] == 2
    (s,) = _run(make_cfg(mode="greedy", greedy_mode="step", errors_threshold=1), add_problems(1),
                engine=MockEngine(steps=2, error_offset=0))
    assert s.trees[0].nodes[-1].terminal_reason == T.TOO_MANY_CODE_ERRORS
    assert best_answer(s.trees[0])[0] is None


def test_greedy_whole_solution_stops_after_its_second_call():
    """A second call that writes more code instead of the answer ends the
    path without an answer, as the reference's two-step greedy loop does."""
    class MoreCode(MockEngine):
        def step_text(self, prompt, offset, j):
            return "<code>\nprint(1)\n<end_of_code>"

    (r,) = _run(make_cfg(mode="greedy"), add_problems(1), engine=MoreCode(steps=2))
    tree = r.trees[0]
    assert [n.tag for n in tree.nodes] == ["0", "0.1", "0.1.1"]
    assert tree.nodes[2].terminal_reason == T.TOO_MANY_STEPS and best_answer(tree)[0] is None


def test_a_prompt_that_fills_the_context_ends_its_path_instead_of_the_search():
    """The whole-solution greedy's answer call after a solution that filled
    `engine.max_seq_len` (found by the SmolLM2 run): the engine would refuse
    the prompt; the leaf becomes a local -1 terminal ("context full"), the
    problem ends without an answer and the other problems are unaffected."""
    class Short(_Recorder):
        def prompt_fits(self, prompt):  # the first call's prompts fit, the answer call's not
            return "<output>" not in prompt

    engine = Short(steps=3, seeded=True)
    res = _run(make_cfg(mode="greedy", trees_in_flight=4), add_problems(2), engine=engine)
    assert engine.calls == [2]  # no second engine call: nothing fitted
    for r in res:
        tree = r.trees[0]
        assert [n.tag for n in tree.nodes] == ["0", "0.1"]
        leaf = tree.nodes[1]
        assert leaf.terminal and leaf.terminal_reason == T.CONTEXT_FULL and leaf.value == -1.0
        assert best_answer(tree)[0] is None and not r.solved
