"""The lockstep MCTS driver against the arithmetic mock engine and the fake
executor: trees written out by hand from the mock's documented behaviour."""

import dataclasses
import json

import pytest
from search.search_helpers import add_problems, make_cfg, summary

from rstar_jax.data.problems import Problem
from rstar_jax.search import tree as T
from rstar_jax.search.driver import run_mcts
from rstar_jax.search.expansion import request_seed
from rstar_jax.testing.mock import MOCK_HOOKS, FakeExecutor, MockEngine, MockScorer

# "What is 3 + 4?" with 2 candidates per step (offsets 0 and 1), 2 tool steps:
# 0.1 x = 3 + 0 / 0.2 x = 3 + 1; then print(x + 4) (both candidates equal,
# deduplicated); then the answer (second candidate dropped: first answer only).
# Rollout 1: root -> 0.1 -> 0.1.1 (output 7) -> 0.1.1.1 boxed{7}: +1 backed up.
# Rollout 2: 0.1 (Q=1) is selected, its subtree is all terminal, the walk
# backtracks to 0.2 -> 0.2.1 (output 8) -> 0.2.1.1 boxed{8}: -1 backed up.
# Then every path is terminal: the tree is exhausted after 2 rollouts.
EXPECTED_GOLD = [
    ("0", 2, 0.0, T.NO_VALID_CHILD),
    ("0.1", 1, 1.0, T.NO_VALID_CHILD),
    ("0.2", 1, -1.0, T.NO_VALID_CHILD),
    ("0.1.1", 1, 1.0, T.NO_VALID_CHILD),
    ("0.1.1.1", 1, 1.0, T.FINAL_ANSWER),
    ("0.2.1", 1, -1.0, T.NO_VALID_CHILD),
    ("0.2.1.1", 1, -1.0, T.FINAL_ANSWER),
]


def _run(cfg, problems, engine=None, scorer=None, executor=None):
    return run_mcts(cfg, problems, engine or MockEngine(steps=2), executor or FakeExecutor(),
                    scorer, MOCK_HOOKS)


def test_hand_written_tree_gold_rewards():
    engine, ex = MockEngine(steps=2), FakeExecutor()
    (res,) = _run(make_cfg(), add_problems(1), engine, executor=ex)
    tree = res.trees[0]
    assert summary(tree) == EXPECTED_GOLD
    assert tree.rollouts == 2 and res.solved
    n = {x.tag: x for x in tree.nodes}
    assert n["0.1.1"].text.endswith("<end_of_code>\n<output>7<end_of_output>")
    assert n["0.1.1"].program == "x = 3 + 0\nprint(x + 4)"  # the block so far
    assert n["0.1.1"].code == "print(x + 4)"  # the step's own code
    assert n["0.1.1.1"].final_answer == "7" and n["0.1.1.1"].correct is True
    assert n["0.2.1.1"].final_answer == "8" and n["0.2.1.1"].correct is False
    assert n["0.1.1.1"].program is None and n["0.1.1.1"].code is None  # answers run nothing
    # One engine call per expansion: root, 0.1, 0.1.1, 0.2, 0.2.1.
    assert engine.calls == [1] * 5
    # The answer step's duplicate-free candidates: first answer only.
    assert len(n["0.1.1"].children) == 1


def test_batching_and_overlap_do_not_change_trees():
    probs = add_problems(5)
    ref = [r.trees[0].to_json() for r in _run(make_cfg(trees_in_flight=1), probs)]
    for width, overlap in [(2, False), (4, True), (8, True)]:
        engine = MockEngine(steps=2)
        got = _run(make_cfg(trees_in_flight=width, overlap_execution=overlap), probs, engine)
        assert [r.trees[0].to_json() for r in got] == ref
        assert max(engine.calls) <= width
    # Lockstep without overlap: all five trees share each engine call.
    engine = MockEngine(steps=2)
    _run(make_cfg(trees_in_flight=8, overlap_execution=False), probs, engine)
    assert engine.calls == [5] * 5


def test_code_errors_terminal_threshold_one():
    # Offset 1 writes x = 3 / 0: ZeroDivisionError, threshold 1 -> terminal at once,
    # value -1 on the node only.
    eng = MockEngine(steps=2, error_offset=1)
    (res,) = _run(make_cfg(errors_threshold=1), add_problems(1), eng)
    n = {x.tag: x for x in res.trees[0].nodes}
    assert n["0.2"].terminal_reason == T.TOO_MANY_CODE_ERRORS
    assert n["0.2"].observation == "ZeroDivisionError: division by zero"
    assert (n["0.2"].N, n["0.2"].W, n["0.2"].consecutive_errors) == (1, -1.0, 1)
    assert (n["0"].N, n["0"].W) == (1, 1.0)  # only the correct answer was backed up
    assert res.trees[0].rollouts == 1


def test_code_errors_streak_threshold_two():
    eng = MockEngine(steps=2, error_offset=1)
    (res,) = _run(make_cfg(errors_threshold=2), add_problems(1), eng)
    n = {x.tag: x for x in res.trees[0].nodes}
    assert not n["0.2"].terminal or n["0.2"].terminal_reason == T.NO_VALID_CHILD
    assert n["0.2"].consecutive_errors == 1 and n["0.2"].N == 0
    # Its child re-runs the failing prefix: the second error in a row is terminal.
    assert n["0.2.1"].program == "x = 3 / 0\nprint(x + 4)"
    assert n["0.2.1"].consecutive_errors == 2
    assert n["0.2.1"].terminal_reason == T.TOO_MANY_CODE_ERRORS
    assert (n["0"].N, n["0"].W) == (1, 1.0)
    assert res.trees[0].rollouts == 2


def test_depth_limit():
    # 3 tool steps need depth 4 for the answer; max_depth 2 cuts at depth 3.
    (res,) = _run(make_cfg(max_depth=2, candidates=1), add_problems(1), MockEngine(steps=3))
    tags = {x.tag: x for x in res.trees[0].nodes}
    assert tags["0.1.1.1"].terminal_reason == T.TOO_MANY_STEPS
    assert tags["0.1.1.1"].Q == -1.0 and tags["0"].N == 0
    assert not T.answer_nodes(res.trees[0])


def test_ppm_initial_values_are_local_and_gold_still_backs_up():
    scorer = MockScorer()
    (res,) = _run(make_cfg(ppm_init_value=True, rollouts=1), add_problems(1), scorer=scorer)
    n = {x.tag: x for x in res.trees[0].nodes}
    assert (n["0.1"].ppm_value, n["0.2"].ppm_value) == (0.5, -0.5)
    # 0.1: init (1, 0.5) + gold backup (1, 1) ; root: backup only.
    assert (n["0.1"].N, n["0.1"].W) == (2, 1.5)
    assert (n["0.1.1"].N, n["0.1.1"].W) == (2, 1.5)
    assert (n["0.1.1.1"].N, n["0.1.1.1"].W) == (1, 1.0)
    assert (n["0"].N, n["0"].W) == (1, 1.0)
    assert (n["0.2"].N, n["0.2"].W) == (1, -0.5)
    assert scorer.calls == [2, 1]  # one batched call per expansion with new non-terminals


def test_inference_ppm_terminal_values():
    scorer = MockScorer()
    prob = [Problem(id="q", question="What is 3 + 4?", answer=None)]
    (res,) = _run(make_cfg(terminal_value="ppm"), prob, scorer=scorer)
    n = {x.tag: x for x in res.trees[0].nodes}
    # boxed{7} is odd -> -0.9, boxed{8} even -> +0.9, each backed up.
    assert n["0.1.1.1"].value == pytest.approx(-0.9) and n["0.1.1.1"].correct is None
    assert n["0.1"].W == pytest.approx(-0.9)
    assert n["0.2"].W == pytest.approx(0.9)
    assert n["0"].N == 2 and n["0"].W == pytest.approx(0.0, abs=1e-6)


def test_gold_mode_refuses_problem_without_answer():
    prob = [Problem(id="q", question="What is 3 + 4?", answer=None)]
    with pytest.raises(ValueError, match="no gold answer"):
        _run(make_cfg(), prob)


def test_second_tree_for_unsolved_problems():
    probs = [Problem(id="u", question="What is 3 + 4?", answer="100")] + add_problems(1)
    cfg = make_cfg(second_tree_for_unsolved=True, unsolved_rollouts=1, trees_in_flight=2)
    unsolved, solved = _run(cfg, probs, MockEngine(steps=2, seeded=True))
    assert len(unsolved.trees) == 2 and not unsolved.solved
    assert unsolved.trees[1].rollouts == 1 and unsolved.seeds[0] != unsolved.seeds[1]
    assert len(solved.trees) == 1 and solved.solved


def test_round4_budget_unsolved_trees_go_on_to_the_extended_budget():
    """Round 4 (spec section 4): `rollouts`, then up to `unsolved_max_rollouts`
    while unsolved, in each of the problem's seeds; a solved one stops at `rollouts`."""
    probs = [Problem(id="u", question="What is 3 + 4?", answer="100")] + add_problems(1)
    cfg = make_cfg(candidates=3, rollouts=2, unsolved_max_rollouts=5, unsolved_seeds=1,
                   trees_in_flight=2)
    unsolved, solved = _run(cfg, probs, MockEngine(steps=3))
    assert [t.rollouts for t in unsolved.trees] == [5, 5] and not unsolved.solved
    assert unsolved.seeds[0] != unsolved.seeds[1]
    assert [t.rollouts for t in solved.trees] == [2] and solved.solved


def test_same_seed_same_trees_other_seed_other_trees():
    probs = add_problems(3)
    cfg = dict(candidates=3, rollouts=3, trees_in_flight=2)
    a = [r.trees[0].to_json() for r in _run(make_cfg(seed=0, **cfg), probs, MockEngine(seeded=True))]
    b = [r.trees[0].to_json() for r in _run(make_cfg(seed=0, **cfg), probs, MockEngine(seeded=True))]
    c = [r.trees[0].to_json() for r in _run(make_cfg(seed=1, **cfg), probs, MockEngine(seeded=True))]
    assert a == b
    assert a != c


def test_visits_and_q_invariants_on_a_bigger_search():
    probs = add_problems(4)
    cfg = make_cfg(candidates=4, rollouts=12, trees_in_flight=4, ppm_init_value=True)
    for r in _run(cfg, probs, MockEngine(steps=4, seeded=True, error_offset=3), MockScorer(hashed=True)):
        tree = r.trees[0]
        for node in tree.nodes:
            assert -1.0 <= node.Q <= 1.0
        answers = T.answer_nodes(tree)
        # Every root visit is one backed-up final answer.
        assert tree.root.N == len(answers)
        for i, node in enumerate(tree.nodes):
            # A node's visits: its own local update (PPM init / local terminal)
            # plus one per final answer at or below it.
            local = int(node.ppm_value is not None and node.terminal_reason != T.FINAL_ANSWER
                        or node.terminal_reason in T.LOCAL_TERMINALS)
            below = sum(1 for a in answers if i == a or i in tree.path(a) or i == 0)
            assert node.N == local + below, node.tag


def test_real_execution_hooks_give_the_same_tree():
    # rstar_jax.execution's program assembly, answer extraction and grading
    # in place of the mock hooks: same tree, programs carry the comments.
    from rstar_jax.search.expansion import default_hooks

    (res,) = run_mcts(make_cfg(), add_problems(1), MockEngine(steps=2), FakeExecutor(), None,
                      default_hooks())
    assert summary(res.trees[0]) == EXPECTED_GOLD
    n = {x.tag: x for x in res.trees[0].nodes}
    assert n["0.1.1"].program == "# Step 1: start\nx = 3 + 0\n# Now print the final answer\nprint(x + 4)"
    assert n["0.1.1"].code == "# Now print the final answer\nprint(x + 4)"
    assert n["0.1.1.1"].final_answer == "7" and n["0.1.1.1"].correct is True


class _CutFirstStep:
    """MockEngine whose first steps come back cut off (no stop string)."""

    def __init__(self):
        self.inner = MockEngine(steps=2)

    def generate(self, requests):
        out = self.inner.generate(requests)
        for r, comps in zip(requests, out):
            if "<code>" not in r.prompt.split("<|assistant|>")[-1]:
                for i, c in enumerate(comps):
                    comps[i] = dataclasses.replace(c, text=c.text[:-len("<end_of_step>")],
                                                   stop_reason="length", stop_string=None)
        return out


@pytest.mark.parametrize("rule", [False, True])
def test_a_step_without_stop_string_is_terminal_only_with_the_switch(rule):
    (res,) = _run(make_cfg(incomplete_step_terminal=rule), add_problems(1), _CutFirstStep())
    first = [res.trees[0].nodes[i] for i in res.trees[0].root.children]
    assert first
    if rule:  # ours: a -1 terminal, the tree dies at its first level
        assert all(n.terminal_reason == T.INCOMPLETE_STEP and n.value == -1.0 for n in first)
        assert not res.solved
    else:  # the reference: an ordinary step, the search goes on below it
        assert not any(n.terminal for n in first if not n.children) and res.solved


class _AnswerAmongSteps:
    """Root candidates: a step, an answer, another answer; below: the answer."""

    def generate(self, requests):
        from rstar_jax.inference.types import Completion

        step = Completion(text="<code>\n# Step 1\nx = 7\n<end_of_step>", token_ids=(),
                          stop_reason="stop", stop_string="<end_of_step>")
        answers = [Completion(text=f"<answer>\\boxed{{{v}}}<end_of_answer>", token_ids=(),
                              stop_reason="stop", stop_string="<end_of_answer>") for v in (7, 8)]
        out = []
        for r in requests:
            at_root = "<code>" not in r.prompt.split("<|assistant|>")[-1]
            out.append([step] + answers if at_root else answers[:1] * r.params.n)
        return out


@pytest.mark.parametrize("rule,kept", [("first_answer", ["<answer>\\boxed{7}<end_of_answer>"]),
                                       ("first_answer_and_steps",
                                        ["<code>\n# Step 1\nx = 7\n<end_of_step>",
                                         "<answer>\\boxed{7}<end_of_answer>"])])
def test_answer_expansion_keeps_only_the_first_answer_by_default(rule, kept):
    cfg = make_cfg(candidates=3, rollouts=1, answer_expansion=rule)
    (res,) = _run(cfg, add_problems(1), _AnswerAmongSteps())
    tree = res.trees[0]
    assert [tree.nodes[i].text for i in tree.root.children] == kept


def test_independent_runs_are_seeded_trees_batched_together():
    """The reference's inference protocol: K independent MCTS runs per
    problem (issue 25, point 1). Each run is a tree with its own seed; the
    runs of a problem share engine calls; run 0 is the one-tree search and
    no run depends on the schedule."""
    probs = [Problem(id=f"q{i}", question=f"What is {3 + i} + 4?", answer=None) for i in range(2)]
    cfg = make_cfg(terminal_value="ppm", candidates=3, rollouts=3, trees_in_flight=8,
                   overlap_execution=False)
    engine = MockEngine(seeded=True)
    res = run_mcts(cfg, probs, engine, FakeExecutor(), MockScorer(), MOCK_HOOKS, runs=4)
    assert [r.problem.id for r in res] == ["q0", "q1"]
    for r in res:
        assert len(r.trees) == 4 and all(t.rollouts == 3 for t in r.trees)
        assert r.seeds == [request_seed(cfg.seed, r.problem.id, k) for k in range(4)]
        assert len({json.dumps(t.to_json()) for t in r.trees}) > 1  # the runs differ
    assert engine.calls[0] == 8  # both problems' 4 runs in one engine call
    (one,) = _run(cfg, probs[:1], MockEngine(seeded=True), MockScorer())
    assert one.trees[0].to_json() == res[0].trees[0].to_json()
    narrow = run_mcts(dataclasses.replace(cfg, mcts=dataclasses.replace(
        cfg.mcts, trees_in_flight=3, overlap_execution=True)), probs, MockEngine(seeded=True),
        FakeExecutor(), MockScorer(), MOCK_HOOKS, runs=4)
    assert [[t.to_json() for t in r.trees] for r in narrow] == \
        [[t.to_json() for t in r.trees] for r in res]


def test_independent_runs_refuse_extra_trees_for_unsolved():
    cfg = make_cfg(second_tree_for_unsolved=True)
    with pytest.raises(ValueError, match="independent runs"):
        run_mcts(cfg, add_problems(1), MockEngine(), FakeExecutor(), None, MOCK_HOOKS, runs=2)
