"""SFT and PPM extraction on hand-built trees with known best trajectories and pairs."""

import dataclasses
import json

import pytest

from rstar_jax.config.schema import Config
from rstar_jax.data import extract as X
from rstar_jax.data.prompts import policy_prompt
from rstar_jax.search import tree as T
from rstar_jax.search import treefile

Q = "What is 3 + 4?"
SEP = "\n\n"


def build(spec):
    """spec: (parent_tag, text, q, kind) rows, kind in step | ans+ | ans- | err.
    Tags are assigned in order, like the search does."""
    t = T.Tree()
    by_tag = {"0": 0}
    for parent_tag, text, q, kind in spec:
        p = by_tag[parent_tag]
        t.nodes[p].expanded = True
        ci = T.add_child(t, p, text)
        n = t.nodes[ci]
        n.N, n.W = 1, q
        if kind.startswith("ans"):
            n.terminal, n.terminal_reason, n.correct = True, T.FINAL_ANSWER, kind == "ans+"
        elif kind == "err":
            n.terminal, n.terminal_reason = True, T.TOO_MANY_CODE_ERRORS
        by_tag[n.tag] = ci
    return t


def ans(v, extra=""):
    return f"\n<answer>{extra}The answer is \\boxed{{{v}}}.<end_of_answer>"


MAIN = build([
    ("0", "<code>\n# Step 1: a\n<end_of_step>", 0.5, "step"),     # 0.1
    ("0", "<code>\n# Step 1: b\n<end_of_step>", 0.25, "step"),    # 0.2
    ("0", "<code>\n# Step 1: c\n<end_of_step>", -0.75, "step"),   # 0.3
    ("0", "<code>\nx = 1/0\n<end_of_step>", -1.0, "err"),         # 0.4 code-error leaf
    ("0", "<code>\n# Step 1: e\n<end_of_step>", 0.5, "step"),     # 0.5
    ("0", "<code>\n# Step 1: f\n<end_of_step>", 0.75, "step"),    # 0.6
    ("0.1", ans(7), 1.0, "ans+"),                                 # T1 mean .75 min .5
    ("0.2", "\n\n# Step 2: b1\n<end_of_step>", 0.5, "step"),      # 0.2.1
    ("0.2", "\n\n# Step 2: b2\n<end_of_step>", -0.5, "step"),     # 0.2.2
    ("0.3", ans(9), -1.0, "ans-"),                                # T4 mean -.875
    ("0.5", ans(7, "Ignoring the ZeroDivisionError, "), 1.0, "ans+"),  # T5 mean .75, has "error"
    ("0.6", ans(7), 0.75, "ans+"),                                # T6 mean .75 min .75
    ("0.2.1", ans(7), 1.0, "ans+"),                               # T2 mean .5833
    ("0.2.2", ans(8), -1.0, "ans-"),                              # T3 mean -.4167
])


def cfg(**mcts):
    c = Config()
    return dataclasses.replace(c, mcts=dataclasses.replace(c.mcts, **mcts))


def record(trees, pid="p", question=Q):
    return {"id": pid, "question": question, "answer": "7",
            "trees": [dict(seed=0, **t.to_json()) for t in trees]}


def tags_of(tree, node_ids):
    return [tree.nodes[i].tag for i in node_ids]


def test_trajectories_mean_and_min_q():
    trajs = {t.tag: t for t in X.trajectories([MAIN])}
    assert set(trajs) == {"0.1.1", "0.3.1", "0.5.1", "0.6.1", "0.2.1.1", "0.2.2.1"}
    assert (trajs["0.1.1"].mean_q, trajs["0.1.1"].min_q) == (0.75, 0.5)
    assert trajs["0.2.1.1"].mean_q == pytest.approx((0.25 + 0.5 + 1.0) / 3)
    assert trajs["0.2.2.1"].correct is False
    assert trajs["0.1.1"].text == MAIN.nodes[1].text + ans(7)


def test_sft_top2_by_mean_q_then_min_q_and_error_filter():
    # T6 and T1 tie on mean Q 0.75; T6 has the higher min Q. T5 (also 0.75,
    # min .5, after T1 in creation order) mentions an error; T2 is fourth.
    for order, t5 in (("top_k_first", X.BELOW_TOP_K), ("filter_first", X.CONTAINS_ERROR)):
        ex = X.extract_records([record([MAIN])], cfg(extract_sft_order=order).mcts, SEP)
        assert [(r["tag"], r["rank"]) for r in ex.sft] == [("0.6.1", 0), ("0.1.1", 1)]
        r = ex.sft[0]
        assert r["query"] == Q
        assert r["response"] == "<code>\n# Step 1: f\n<end_of_step>" + ans(7)
        sft_drops = {(d["tag"], d["reason"]) for d in ex.dropped if d["kind"] == "sft"}
        assert sft_drops == {("0.5.1", t5), ("0.2.1.1", X.BELOW_TOP_K)}


def test_sft_takes_the_top2_before_dropping_error_responses():
    """The reference's order: an "error" response among the best two leaves
    one record; `filter_first` fills its place with the third best."""
    t = build([("0", "s1<end_of_step>", 0.9, "step"), ("0", "s2<end_of_step>", 0.5, "step"),
               ("0", "s3<end_of_step>", 0.1, "step"),
               ("0.1", ans(7, "No error here. "), 1.0, "ans+"),
               ("0.2", ans(7), 1.0, "ans+"), ("0.3", ans(7), 1.0, "ans+")])
    ref = X.extract_records([record([t])], cfg().mcts, SEP)
    assert [r["tag"] for r in ref.sft] == ["0.2.1"]
    assert sorted((d["tag"], d["reason"]) for d in ref.dropped if d["kind"] == "sft") == [
        ("0.1.1", X.CONTAINS_ERROR), ("0.3.1", X.BELOW_TOP_K)]
    ours = X.extract_records([record([t])], cfg(extract_sft_order="filter_first").mcts, SEP)
    assert [(r["tag"], r["rank"]) for r in ours.sft] == [("0.2.1", 0), ("0.3.1", 1)]


def test_sft_problem_filters():
    half_wrong = build([("0", "s1<end_of_step>", 0.0, "step"), ("0", "s2<end_of_step>", 0.0, "step"),
                        ("0", "s3<end_of_step>", 0.0, "step"),
                        ("0.1", ans(7), 1.0, "ans+"), ("0.2", ans(8), -1.0, "ans-"),
                        ("0.3", ans(9), -1.0, "ans-")])
    all_wrong = build([("0", "s1<end_of_step>", 0.0, "step"), ("0.1", ans(8), -1.0, "ans-")])
    errors_only = build([("0", "x<end_of_step>", -1.0, "err")])
    exactly_half = build([("0", "s1<end_of_step>", 0.0, "step"), ("0", "s2<end_of_step>", 0.0, "step"),
                          ("0.1", ans(7), 1.0, "ans+"), ("0.2", ans(8), -1.0, "ans-")])
    ex = X.extract_records([record([half_wrong], "a"), record([all_wrong], "b"),
                            record([errors_only], "c"), record([exactly_half], "d")], cfg().mcts, SEP)
    reasons = {d["id"]: d["reason"] for d in ex.dropped if d["kind"] == "sft" and d["tag"] is None}
    assert reasons == {"a": X.LOW_CORRECT_SHARE, "b": X.NO_CORRECT, "c": X.NO_TRAJECTORY}
    assert [r["id"] for r in ex.sft] == ["d"]  # 50% correct is not "< 50%"


def test_sft_pools_trees_and_drops_duplicates():
    t = build([("0", "s1<end_of_step>", 0.5, "step"), ("0.1", ans(7), 1.0, "ans+")])
    ex = X.extract_records([record([t, t])], cfg(extract_sft_order="filter_first").mcts, SEP)
    assert len(ex.sft) == 1
    assert [d["reason"] for d in ex.dropped if d["kind"] == "sft"] == [X.DUPLICATE]
    # The reference keeps a response found in two trees twice.
    ref = X.extract_records([record([t, t])], cfg().mcts, SEP)
    assert [(r["tree"], r["response"]) for r in ref.sft] == [(0, t.partial_solution(2)),
                                                             (1, t.partial_solution(2))]


def test_step_pairs_known_pairs():
    ex = X.extract_records([record([MAIN])], cfg().mcts, SEP)
    steps = [r for r in ex.ppm if r["kind"] == "step"]
    got = [(r["group"], r["pos_tag"], r["neg_tag"], r["pos_count"], r["neg_count"]) for r in steps]
    # Root: positives 0.6 (Q .75), 0.1 (.5, before 0.5 on the tie); negatives
    # 0.3 (-.75), 0.2 (.25, has a wrong answer below). 0.4 is a code-error
    # leaf: not a negative. Node 0.2: one each.
    assert got == [
        ("p/0/0", "0.6", "0.3", 2, 2), ("p/0/0", "0.6", "0.2", 2, 2),
        ("p/0/0", "0.1", "0.3", 2, 2), ("p/0/0", "0.1", "0.2", 2, 2),
        ("p/0/0.2", "0.2.1", "0.2.2", 1, 1),
    ]
    root_pair, deep = steps[0], steps[4]
    assert root_pair["prompt"] == policy_prompt(Q, "", sep=SEP)
    assert root_pair["pos"] == "<code>\n# Step 1: f\n<end_of_step>"
    assert deep["prompt"] == policy_prompt(Q, "<code>\n# Step 1: b\n<end_of_step>", sep=SEP)
    assert deep["pos"] == "\n\n# Step 2: b1\n<end_of_step>"
    assert deep["neg"] == "\n\n# Step 2: b2\n<end_of_step>"
    assert deep["prompt"] + deep["pos"] == policy_prompt(Q, MAIN.partial_solution(MAIN.nodes[8].parent
                                                                                    ) + deep["pos"],
                                                         sep=SEP)


def test_four_of_one_side_when_other_has_one_and_q_filter():
    spec = [("0", f"g{i}<end_of_step>", q, "step") for i, q in enumerate([0.9, 0.8, 0.7, 0.6, 0.5])]
    spec += [("0", "bad<end_of_step>", 0.55, "step")]
    spec += [(f"0.{i}", ans(7), 1.0, "ans+") for i in range(1, 6)] + [("0.6", ans(8), -1.0, "ans-")]
    t = build(spec)
    ex = X.extract_records([record([t])], cfg().mcts, SEP)
    steps = [r for r in ex.ppm if r["kind"] == "step"]
    # 4 positives (highest Q) against the single negative (Q .55): the one at
    # 0.5 is not picked; all four picked have Q > .55.
    assert [(r["pos_tag"], r["neg_tag"], r["pos_count"], r["neg_count"]) for r in steps] == [
        ("0.1", "0.6", 4, 1), ("0.2", "0.6", 4, 1), ("0.3", "0.6", 4, 1), ("0.4", "0.6", 4, 1)]
    # With 2 per side only when both sides have 2+: shrink the set to see the Q filter.
    t2 = build([("0", "g<end_of_step>", 0.1, "step"), ("0", "b<end_of_step>", 0.3, "step"),
                ("0.1", ans(7), 1.0, "ans+"), ("0.2", ans(8), -1.0, "ans-")])
    ex2 = X.extract_records([record([t2])], cfg().mcts, SEP)
    assert not [r for r in ex2.ppm if r["kind"] == "step"]
    assert [(d["reason"], d["pair"]) for d in ex2.dropped if d["kind"] == "ppm"] == [
        (X.Q_NOT_GREATER, "step")]


def test_final_answer_pairs_are_whole_trajectories():
    ex = X.extract_records([record([MAIN])], cfg().mcts, SEP)
    finals = [r for r in ex.ppm if r["kind"] == "final"]
    # Correct by mean Q: T6 (.75, min .75), T1 (.75, min .5); wrong, lowest first:
    # T4 (-.875), T3 (-.4167).
    assert [(r["pos_tag"], r["neg_tag"]) for r in finals] == [
        ("0:0.6.1", "0:0.3.1"), ("0:0.6.1", "0:0.2.2.1"), ("0:0.1.1", "0:0.3.1"), ("0:0.1.1", "0:0.2.2.1")]
    f = finals[0]
    assert f["prompt"] == "<|user|>:\n" + Q
    assert f["pos"] == SEP + "<|assistant|>: Let's think step by step and solve the problem with code." \
        + MAIN.partial_solution(12)
    assert f["prompt"] + f["neg"] == policy_prompt(Q, MAIN.partial_solution(10), sep=SEP)
    assert (f["pos_count"], f["neg_count"]) == (2, 2)


def test_reference_filters_margin_and_edit_distance():
    assert X.edit_distance_at_least("kitten", "sitting", 3)
    assert not X.edit_distance_at_least("kitten", "sitting", 4)
    assert X.edit_distance_at_least("a" * 50, "b" * 50, 20)
    assert not X.edit_distance_at_least("x" * 100 + "abc", "x" * 100 + "abd", 2)
    t = build([("0", "step one is here<end_of_step>", 0.9, "step"),
               ("0", "step one is hers<end_of_step>", 0.0, "step"),  # edit distance 1
               ("0", "a completely different step text, long enough<end_of_step>", 0.6, "step"),
               ("0.1", ans(7), 1.0, "ans+"), ("0.2", ans(8), -1.0, "ans-"), ("0.3", ans(9), -1.0, "ans-")])
    plain = X.extract_records([record([t])], cfg().mcts, SEP)
    assert len([r for r in plain.ppm if r["kind"] == "step"]) == 2
    ref = X.extract_records([record([t])], cfg(ppm_reference_filters=True).mcts, SEP)
    assert [r for r in ref.ppm if r["kind"] == "step"] == []
    reasons = sorted(d["reason"] for d in ref.dropped if d.get("pair") == "step")
    assert reasons == sorted([X.SMALL_EDIT, X.SMALL_MARGIN])  # .9-.0 close text; .9-.6 margin


# A positive step (0.1, Q .2) whose only correct continuation is poor against
# a negative step (0.2, Q .1) that fails only late after good steps.
LATE = build([
    ("0", "p<end_of_step>", 0.2, "step"),          # 0.1
    ("0", "n<end_of_step>", 0.1, "step"),          # 0.2
    ("0.1", "p-low<end_of_step>", -0.9, "step"),   # 0.1.1: leads to the correct answer
    ("0.1", "p-high<end_of_step>", 0.9, "step"),   # 0.1.2: only a wrong answer below
    ("0.2", "n-good<end_of_step>", 0.6, "step"),   # 0.2.1: wrong answer below, Q .6
    ("0.2", "n-bad<end_of_step>", 0.7, "step"),    # 0.2.2: wrong answer below, Q .7
    ("0.1.1", ans(7), 0.1, "ans+"),
    ("0.1.2", ans(8), -1.0, "ans-"),
    ("0.2.1", ans(9), 0.3, "ans-"),
    ("0.2.2", ans(6), -1.0, "ans-"),
])


def test_continuation_mean_q_follows_the_best_and_the_worst_child():
    good, bad = X.answers_below(LATE)
    node = {n.tag: i for i, n in enumerate(LATE.nodes)}
    # Positive: 0.1 -> 0.1.1 (the one child with a correct answer below,
    # though 0.1.2 has the higher Q) -> its answer.
    assert X.continuation_mean_q(LATE, node["0.1"], good, True) == pytest.approx((0.2 - 0.9 + 0.1) / 3)
    # Negative: 0.2 -> 0.2.1 (lowest Q of the children with a wrong answer
    # below) -> its answer; the descent stops at the leaf.
    assert X.continuation_mean_q(LATE, node["0.2"], bad, False) == pytest.approx((0.1 + 0.6 + 0.3) / 3)
    # Best-first from the negative picks 0.2.2 instead.
    assert X.continuation_mean_q(LATE, node["0.2"], bad, True) == pytest.approx((0.1 + 0.7 - 1.0) / 3)
    # A leaf is its own path.
    assert X.continuation_mean_q(LATE, node["0.1.1.1"], good, True) == pytest.approx(0.1)


def test_continuation_q_drops_a_pair_the_step_q_alone_keeps():
    ex = X.extract_records([record([LATE])], cfg().mcts, SEP)
    root = [r for r in ex.ppm if r["kind"] == "step" and r["group"] == "p/0/0"]
    assert root == []  # Q .2 > .1, but continuation means -.2 <= .333
    drops = [(d["tag"], d["reason"]) for d in ex.dropped if d.get("pair") == "step"]
    assert ("0", X.CONTINUATION_Q) in drops
    off = X.extract_records([record([LATE])], cfg(ppm_continuation_q=False).mcts, SEP)
    root = [r for r in off.ppm if r["kind"] == "step" and r["group"] == "p/0/0"]
    assert [(r["pos_tag"], r["neg_tag"]) for r in root] == [("0.1", "0.2")]
    assert "cont_q_pos" not in root[0]
    # Node 0.1 (pos 0.1.1 Q -.9 vs neg 0.1.2 Q .9) fails on the step Q first,
    # under either setting.
    for e in (ex, off):
        assert ("0.1", X.Q_NOT_GREATER) in [(d["tag"], d["reason"]) for d in e.dropped
                                            if d.get("pair") == "step"]


def test_step_pairs_record_their_continuation_means():
    ex = X.extract_records([record([MAIN])], cfg().mcts, SEP)
    deep = [r for r in ex.ppm if r["group"] == "p/0/0.2"][0]
    assert deep["cont_q_pos"] == pytest.approx((0.5 + 1.0) / 2)
    assert deep["cont_q_neg"] == pytest.approx((-0.5 - 1.0) / 2)


def test_extract_to_dir_writes_files_and_summary(tmp_path):
    trees_dir = tmp_path / "trees"
    with treefile.TreeWriter(str(trees_dir / "trees.0.jsonl")) as w:
        w.write(record([MAIN], "p0"))
    with treefile.TreeWriter(str(trees_dir / "trees.1.jsonl")) as w:
        w.write(record([build([("0", "s<end_of_step>", 0.0, "step"), ("0.1", ans(8), -1.0, "ans-")])],
                       "p1"))
    summary = X.extract_to_dir(str(trees_dir), str(tmp_path / "out"), Config())
    assert summary["problems"] == 2 and summary["sft_records"] == 2 and summary["sft_problems"] == 1
    assert summary["ppm_step_pairs"] == 5 and summary["ppm_final_pairs"] == 4
    assert summary["dropped"]["sft: " + X.NO_CORRECT] == 1
    sft = [json.loads(x) for x in (tmp_path / "out" / "sft.jsonl").read_text().splitlines()]
    assert set(sft[0]) >= {"query", "response"}
    ppm = [json.loads(x) for x in (tmp_path / "out" / "ppm.jsonl").read_text().splitlines()]
    assert set(ppm[0]) >= {"prompt", "pos", "neg", "pos_count", "neg_count"}
    dropped = (tmp_path / "out" / "dropped.jsonl").read_text().splitlines()
    assert len(dropped) == sum(summary["dropped"].values())


def test_missing_tree_dir_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        X.extract_to_dir(str(tmp_path), str(tmp_path / "o"), Config())


def test_tags_in_records_name_the_nodes_they_came_from():
    """Every PPM record's tags point back at its tree: a step pair's pos/neg
    tags name the nodes whose texts it holds, children of the node its group
    names, whose partial solution ends the prompt; a final pair's tags name
    answer leaves whose root-to-leaf texts follow the question."""
    by_tag = {n.tag: i for i, n in enumerate(MAIN.nodes)}
    ex = X.extract_records([record([MAIN])], cfg().mcts, SEP)
    steps = [r for r in ex.ppm if r["kind"] == "step"]
    finals = [r for r in ex.ppm if r["kind"] == "final"]
    assert steps and finals
    for r in steps:
        parent = by_tag[r["group"].split("/")[-1]]
        p, n = by_tag[r["pos_tag"]], by_tag[r["neg_tag"]]
        assert (MAIN.nodes[p].text, MAIN.nodes[n].text) == (r["pos"], r["neg"])
        assert MAIN.nodes[p].parent == parent == MAIN.nodes[n].parent
        assert r["prompt"] == policy_prompt(Q, MAIN.partial_solution(parent), sep=SEP)
    for r in finals:
        for side in ("pos", "neg"):
            tree_index, tag = r[f"{side}_tag"].split(":")
            leaf = by_tag[tag]
            assert tree_index == "0" and MAIN.nodes[leaf].terminal_reason == T.FINAL_ANSWER
            assert MAIN.nodes[leaf].correct is (side == "pos")
            assert r["prompt"] + r[side] == policy_prompt(Q, MAIN.partial_solution(leaf), sep=SEP)


def test_extract_to_dir_is_independent_of_the_order_trees_were_written(tmp_path):
    # A resumed (or multi-host) search writes the same trees in another order.
    conf = cfg()
    recs = [record([MAIN], pid=f"arith-0-{i}") for i in (10, 2, 1)]
    outs = []
    for name, order in (("a", recs), ("b", recs[::-1])):
        d = tmp_path / name
        d.mkdir()
        with open(d / "trees.0.jsonl", "w") as f:
            for r in order:
                f.write(json.dumps(r) + "\n")
        X.extract_to_dir(str(d), str(tmp_path / f"out_{name}"), conf)
        outs.append(tmp_path / f"out_{name}")
    for f in ("sft.jsonl", "ppm.jsonl", "dropped.jsonl"):
        assert (outs[0] / f).read_text() == (outs[1] / f).read_text()
    ids = [json.loads(line)["id"] for line in (outs[0] / "sft.jsonl").read_text().splitlines()]
    assert ids == sorted(ids, key=lambda s: int(s.split("-")[-1])) and len(set(ids)) == 3
