"""Tree drawing helpers and the search-trees notebook on a hand-made tree."""

import pytest

from rstar_jax.data.problems import Problem
from rstar_jax.evaluation import tree_view
from rstar_jax.search import tree as T
from rstar_jax.search import treefile


def hand_tree():
    """root -> 1 -> {3 correct answer, 4 wrong answer}; root -> 2 -> 5 code error."""
    n = [T.Node("0", None, 0, N=3, W=-1.0, expanded=True),
         T.Node("0.1", 0, 1, text="a", N=2, W=0.0, ppm_value=0.5, expanded=True),
         T.Node("0.2", 0, 1, text="b", N=1, W=-1.0, expanded=True),
         T.Node("0.1.1", 1, 2, text="c", N=1, W=1.0, ppm_value=0.9, terminal=True,
                terminal_reason=T.FINAL_ANSWER, final_answer="7", correct=True),
         T.Node("0.1.2", 1, 2, text="d", N=1, W=-1.0, ppm_value=-0.2, terminal=True,
                terminal_reason=T.FINAL_ANSWER, final_answer="8", correct=False),
         T.Node("0.2.1", 2, 2, text="e", terminal=True, terminal_reason=T.TOO_MANY_CODE_ERRORS)]
    n[0].children, n[1].children, n[2].children = [1, 2], [3, 4], [5]
    return T.Tree(nodes=n, rollouts=3)


def test_layout_by_hand():
    pos = tree_view.layout(hand_tree())
    assert pos == {3: (0.0, -2.0), 4: (1.0, -2.0), 1: (0.5, -1.0), 5: (2.0, -2.0),
                   2: (2.0, -1.0), 0: (1.25, 0.0)}


def test_step_values_by_hand():
    t = hand_tree()
    assert tree_view.step_values([t], "Q") == {"correct": [0.0, 1.0], "wrong": [0.0, -1.0]}
    ppm = tree_view.step_values([t], "ppm")
    assert ppm["correct"] == [0.5, 0.9] and ppm["wrong"] == pytest.approx([0.5, -0.2])
    assert tree_view.node_label(t.nodes[1]) == "N=2\nQ=0.00\nppm=0.50"


def test_search_trees_notebook(tmp_path, monkeypatch):
    from evaluation.test_notebooks import outputs_text, run_notebook

    path = tmp_path / "trees.0.jsonl"
    with treefile.TreeWriter(str(path)) as w:
        for i in range(2):
            w.write(treefile.make_record(Problem(f"p{i}", f"What is {i}?", "7"), [hand_tree()],
                                         [i]))
    nb = run_notebook("search_trees.ipynb", tmp_path, monkeypatch,
                      RSTAR_TREE_DIR=str(tmp_path), RSTAR_TREE_INDEX="1")
    text = outputs_text(nb)
    assert "2 problems, 2 trees, 2 solved" in text
    assert "What is 1?" in text
    assert "{'correct': 4, 'wrong': 4}" in text
    pngs = [o for c in nb.cells for o in c.get("outputs", []) if o.get("data", {}).get("image/png")]
    assert len(pngs) == 2
