"""Pure tree functions: UCT (spec worked example), selection, expansion
filters, terminal rules, backup."""

import math
import random

import pytest

from rstar_jax.search import tree as T


def _tree_with_children(stats, parent_n):
    """Root with children whose (N, W) are given; returns the tree."""
    t = T.Tree()
    t.root.expanded = True
    t.root.N = parent_n
    for n, w in stats:
        ci = T.add_child(t, 0, f"step{len(t.nodes)}")
        t.nodes[ci].N, t.nodes[ci].W = n, w
    return t


def test_uct_worked_example():
    # Spec section 4: parent N=2; A: N=2, Q=-0.2; B: N=1, Q=-0.2.
    a = T.uct(-0.2, 2, 2, 2.0)
    b = T.uct(-0.2, 1, 2, 2.0)
    assert a == pytest.approx(-0.2 + 2 * math.sqrt(math.log(2) / 2))
    assert round(a, 4) == 0.9774
    assert round(b, 4) == 1.4651
    t = _tree_with_children([(2, -0.4), (1, -0.2)], parent_n=2)
    assert T.select_child(t, 0, 2.0) == 2  # B


def test_uct_unvisited_scores_zero_and_parent_zero():
    assert T.uct(0.0, 0, 5, 2.0) == 0.0
    assert T.uct(0.3, 3, 0, 2.0) == 0.3  # N(parent) = 0: no exploration
    assert T.uct(0.5, 1, 1, 2.0) == 0.5  # ln 1 = 0


def test_unvisited_loses_to_positive_beats_negative():
    # Parent N=1 so exploration terms vanish: pure Q against 0.
    t = _tree_with_children([(0, 0.0), (1, 0.3)], parent_n=1)
    assert T.select_child(t, 0, 2.0) == 2
    t = _tree_with_children([(1, -0.3), (0, 0.0)], parent_n=1)
    assert T.select_child(t, 0, 2.0) == 2


def test_ties_go_to_first_child_and_terminals_are_skipped():
    t = _tree_with_children([(0, 0.0), (0, 0.0), (0, 0.0)], parent_n=0)
    assert T.select_child(t, 0, 2.0) == 1
    t.nodes[1].terminal = True
    assert T.select_child(t, 0, 2.0) == 2
    # A terminal child with a huge Q is still skipped.
    t = _tree_with_children([(1, 1.0), (1, -0.5)], parent_n=2)
    t.nodes[1].terminal = True
    assert T.select_child(t, 0, 2.0) == 2


def test_all_terminal_parent_becomes_terminal():
    t = _tree_with_children([(1, 1.0), (1, -1.0)], parent_n=2)
    for i in (1, 2):
        t.nodes[i].terminal = True
    assert T.select_child(t, 0, 2.0) is None
    assert t.root.terminal and t.root.terminal_reason == T.NO_VALID_CHILD


def test_descend_backtracks_past_dead_subtrees():
    # root -> a (expanded; only child terminal), b (unexpanded)
    t = T.Tree()
    t.root.expanded = True
    a = T.add_child(t, 0, "a")
    b = T.add_child(t, 0, "b")
    t.nodes[a].expanded = True
    t.nodes[a].N, t.nodes[a].W = 1, 1.0
    t.root.N = 1
    leaf = T.add_child(t, a, "ans")
    t.nodes[leaf].terminal = True
    # From the root with backtracking: a is selected (Q=1), dead, then b.
    assert T.descend(t, 0, 2.0, backtrack=True) == b
    assert t.nodes[a].terminal
    # Without backtracking a walk from a ends there.
    t2 = T.Tree()
    t2.root.expanded = True
    x = T.add_child(t2, 0, "x")
    t2.nodes[x].expanded = True
    y = T.add_child(t2, x, "y")
    t2.nodes[y].terminal = True
    assert T.descend(t2, x, 2.0) is None
    assert t2.nodes[x].terminal and not t2.root.terminal


def test_filter_candidates_dedup_and_first_answer():
    c = ["a<end_of_step>", "a<end_of_step>", "x \\boxed{1}<end_of_answer>", "b<end_of_step>",
         "y \\boxed{2}<end_of_answer>"]
    # The reference: an answer among the candidates is the node's only child.
    assert T.filter_candidates(c) == [2]
    assert T.filter_candidates(c, "first_answer") == [2]
    assert T.filter_candidates(c, "first_answer_and_steps") == [0, 2, 3]
    assert T.filter_candidates(c, "all") == [0, 2, 3, 4]
    assert T.filter_candidates(c[:2] + c[3:4]) == [0, 2]  # no answer: every distinct step
    with pytest.raises(ValueError, match="answer_expansion"):
        T.filter_candidates(c, "first")


def test_tags_depth_and_error_inheritance():
    t = T.Tree()
    a = T.add_child(t, 0, "a")
    b = T.add_child(t, 0, "b")
    t.nodes[b].consecutive_errors = 1
    c = T.add_child(t, b, "c")
    assert [t.nodes[i].tag for i in (a, b, c)] == ["0.1", "0.2", "0.2.1"]
    assert t.nodes[c].depth == 2
    assert t.partial_solution(c) == "bc"
    # A child starts with its parent's error streak; a sibling's is its own.
    assert t.nodes[c].consecutive_errors == 1 and t.nodes[a].consecutive_errors == 0
    # The streak goes on through a child that errs again (threshold 2: terminal) ...
    t.nodes[c].observation = "NameError: name 'y' is not defined"
    T.apply_terminal_rules(t.nodes[c], t.nodes[b].consecutive_errors, errors_threshold=2,
                           max_depth=16)
    assert t.nodes[c].consecutive_errors == 2 and t.nodes[c].terminal_reason == T.TOO_MANY_CODE_ERRORS
    # ... and ends at one that runs cleanly.
    d = T.add_child(t, b, "d")
    assert t.nodes[d].consecutive_errors == 1
    t.nodes[d].observation = "7"
    T.apply_terminal_rules(t.nodes[d], t.nodes[b].consecutive_errors, errors_threshold=2,
                           max_depth=16)
    assert t.nodes[d].consecutive_errors == 0 and not t.nodes[d].terminal


@pytest.mark.parametrize("threshold,parent_errors,terminal", [(1, 0, True), (2, 0, False), (2, 1, True)])
def test_error_streak(threshold, parent_errors, terminal):
    n = T.Node(tag="0.1", parent=0, depth=1, text="x = 1/0<end_of_step>",
               observation="ZeroDivisionError: division by zero")
    T.apply_terminal_rules(n, parent_errors, errors_threshold=threshold, max_depth=16)
    assert n.consecutive_errors == parent_errors + 1
    assert n.terminal is terminal
    if terminal:
        assert n.terminal_reason == T.TOO_MANY_CODE_ERRORS
        assert (n.N, n.W, n.value) == (1, -1.0, -1.0)
    else:
        assert (n.N, n.W) == (0, 0.0)


def test_error_is_case_insensitive_and_success_resets_streak():
    n = T.Node(tag="0.1", parent=0, depth=1, text="s", observation="some ERROR happened")
    T.apply_terminal_rules(n, 0, errors_threshold=1, max_depth=16)
    assert n.terminal_reason == T.TOO_MANY_CODE_ERRORS
    ok = T.Node(tag="0.1", parent=0, depth=1, text="s", observation="42")
    T.apply_terminal_rules(ok, 1, errors_threshold=2, max_depth=16)
    assert ok.consecutive_errors == 0 and not ok.terminal


def test_final_answer_and_depth_rules():
    n = T.Node(tag="0.1", parent=0, depth=3, text="<answer>\\boxed{4}<end_of_answer>")
    T.apply_terminal_rules(n, 0, errors_threshold=1, max_depth=2)
    assert n.terminal_reason == T.FINAL_ANSWER and n.N == 0  # value comes from the caller
    d = T.Node(tag="0.1", parent=0, depth=3, text="x = 1<end_of_step>")
    T.apply_terminal_rules(d, 0, errors_threshold=1, max_depth=2)
    assert d.terminal_reason == T.TOO_MANY_STEPS and d.Q == -1.0
    ok = T.Node(tag="0.1", parent=0, depth=2, text="x = 1<end_of_step>")
    T.apply_terminal_rules(ok, 0, errors_threshold=1, max_depth=2)
    assert not ok.terminal
    cut = T.Node(tag="0.1", parent=0, depth=1, text="x = 1")
    T.apply_terminal_rules(cut, 0, errors_threshold=1, max_depth=2, complete=False)
    assert cut.terminal_reason == T.INCOMPLETE_STEP


def test_backup_adds_one_visit_to_every_ancestor_only():
    t = T.Tree()
    a = T.add_child(t, 0, "a")
    b = T.add_child(t, 0, "b")
    c = T.add_child(t, a, "c")
    T.backup(t, c, 1.0)
    T.backup(t, c, -1.0)
    T.backup(t, b, -1.0)
    assert [(n.N, n.W) for n in t.nodes] == [(3, -1.0), (2, 0.0), (1, -1.0), (2, 0.0)]
    assert t.nodes[a].Q == 0.0 and t.root.Q == pytest.approx(-1 / 3)


def test_ppm_init_is_local():
    t = T.Tree()
    a = T.add_child(t, 0, "a")
    T.init_value(t.nodes[a], 0.25)
    assert (t.nodes[a].N, t.nodes[a].W, t.nodes[a].ppm_value) == (1, 0.25, 0.25)
    assert (t.root.N, t.root.W) == (0, 0.0)


def test_random_backups_conserve_visits_and_keep_q_bounded():
    rng = random.Random(0)
    t = T.Tree()
    for _ in range(40):
        T.add_child(t, rng.randrange(len(t.nodes)), "s")
    counts = [0] * len(t.nodes)
    for _ in range(300):
        leaf = rng.randrange(1, len(t.nodes))
        v = rng.choice([1.0, -1.0, rng.uniform(-1, 1)])
        T.backup(t, leaf, v)
        for i in [0] + t.path(leaf):
            counts[i] += 1
    assert [n.N for n in t.nodes] == counts
    assert t.root.N == 300
    assert all(-1.0 <= n.Q <= 1.0 for n in t.nodes)


def test_json_round_trip():
    t = _tree_with_children([(2, -0.4), (1, 1.0)], parent_n=3)
    t.nodes[1].observation = "4"
    t.rollouts = 3
    back = T.Tree.from_json(t.to_json())
    assert back.to_json() == t.to_json()
    assert back.nodes[1].Q == pytest.approx(-0.2)
