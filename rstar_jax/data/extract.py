"""Training data from search trees (spec section 5): SFT records and PPM pairs.

Trajectories are root-to-leaf paths that end in a final answer, pooled over
every tree of a problem (the primary tree and any retries). Code-error and
depth leaves are not trajectories: they are neither correct nor wrong.

Policy SFT, per problem:
  * the problem is dropped when fewer than `extract_min_correct_share` (0.5)
    of its trajectories are correct;
  * the best `extract_top_k` (2) correct trajectories by mean step Q, ties
    by min step Q, are taken, then those whose response contains "error"
    (any case) are dropped, which may leave fewer than 2 (the reference's
    sample_sft_data, `extract_sft_order=top_k_first`; a response found in
    two trees is kept twice, as there); `filter_first` drops error and
    duplicate responses first and takes the best 2 of the rest, so a
    problem keeps 2 when it has them.
  Records: `{"query", "response", ...}` as in the reference's
  sft_data_examples.json (response = the concatenated step texts).

PPM pairs, per expanded node, over its non-answer children:
  * positives: up to 2 children with a correct answer below them, highest Q
    first; negatives: up to 2 with a wrong answer below them, lowest Q first
    (4 of one side when the other has only 1); code-error leaves are not
    negatives (they have no answer below them);
  * every positive x negative pair with Q(pos) - Q(neg) > 0 is kept (the
    paper), when also (the reference's extraction, `ppm_continuation_q`,
    on by default) the mean Q of the positive's best continuation exceeds
    that of the negative's worst: from the positive, step down to the child
    with a correct answer below it of the highest Q, until a leaf; from the
    negative, to the child with a wrong answer below it of the lowest Q; the
    mean is over the nodes of that path, the pos / neg step itself to the
    leaf (`continuation_mean_q`). The reference's later filters, margin
    >= 0.5 and edit distance >= 20, sit behind `ppm_reference_filters`
    (off: the paper states neither). The prompt is the policy prompt with the
    shared prefix; pos / neg are the two differing steps.
  Final-answer steps are compared as whole trajectories, per problem: the 2
  correct with the highest mean Q against the 2 wrong with the lowest;
  prompt `<|user|>:\\n{question}`, pos / neg the rest of the full text, as in
  rm_data_examples.json. Records: `{"prompt", "pos", "neg", "pos_count",
  "neg_count", ...}`; `group` names the node the pairs share.

Every dropped candidate is reported with its reason.
"""

from __future__ import annotations

import collections
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from rstar_jax.data.prompts import USER, policy_prompt
from rstar_jax.search import tree as T

# Drop reasons (summary keys).
NO_TRAJECTORY = "no final-answer trajectory"
LOW_CORRECT_SHARE = "correct share below threshold"
NO_CORRECT = "no correct trajectory"
CONTAINS_ERROR = "response contains 'error'"
DUPLICATE = "duplicate response"
BELOW_TOP_K = "not in the top-k by mean Q"
NO_POSITIVE = "no positive child"
NO_NEGATIVE = "no negative child"
Q_NOT_GREATER = "Q(pos) - Q(neg) <= 0"
CONTINUATION_Q = "continuation mean Q(pos) <= continuation mean Q(neg)"
SMALL_MARGIN = "Q margin below minimum"
SMALL_EDIT = "edit distance below minimum"
FINAL_NO_CORRECT = "final pairs: no correct trajectory"
FINAL_NO_WRONG = "final pairs: no wrong trajectory"


@dataclass
class Trajectory:
    """A root-to-answer path of one tree."""

    tree: int
    leaf: int
    tag: str
    text: str
    correct: bool
    mean_q: float
    min_q: float


@dataclass
class Extraction:
    sft: List[Dict[str, Any]] = field(default_factory=list)
    ppm: List[Dict[str, Any]] = field(default_factory=list)
    dropped: List[Dict[str, Any]] = field(default_factory=list)

    def drop(self, kind: str, pid: str, reason: str, tag: Optional[str] = None, **kw) -> None:
        self.dropped.append({"kind": kind, "id": pid, "tag": tag, "reason": reason, **kw})

    def summary(self, problems: int) -> Dict[str, Any]:
        reasons = collections.Counter(f"{d['kind']}: {d['reason']}" for d in self.dropped)
        kinds = collections.Counter(r["kind"] for r in self.ppm)
        return {
            "problems": problems,
            "sft_records": len(self.sft),
            "sft_problems": len({r["id"] for r in self.sft}),
            "ppm_pairs": len(self.ppm),
            "ppm_step_pairs": kinds.get("step", 0),
            "ppm_final_pairs": kinds.get("final", 0),
            "dropped": dict(sorted(reasons.items())),
        }


def trajectories(trees: Sequence[T.Tree]) -> List[Trajectory]:
    """Every root-to-final-answer path of the trees, in creation order."""
    out = []
    for ti, tree in enumerate(trees):
        for leaf in T.answer_nodes(tree):
            qs = [tree.nodes[i].Q for i in tree.path(leaf)]
            out.append(Trajectory(ti, leaf, tree.nodes[leaf].tag, tree.partial_solution(leaf),
                                  bool(tree.nodes[leaf].correct), sum(qs) / len(qs), min(qs)))
    return out


def _best_first(trajs: Iterable[Trajectory]) -> List[Trajectory]:
    """Highest mean Q first, ties by higher min Q, then creation order (stable)."""
    return sorted(trajs, key=lambda t: (-t.mean_q, -t.min_q))


def sft_records(pid: str, question: str, trajs: Sequence[Trajectory], mcts_cfg,
                ex: Extraction) -> None:
    if not trajs:
        ex.drop("sft", pid, NO_TRAJECTORY)
        return
    correct = [t for t in trajs if t.correct]
    share = len(correct) / len(trajs)
    if not correct:
        ex.drop("sft", pid, NO_CORRECT, correct_share=share)
        return
    if share < mcts_cfg.extract_min_correct_share:
        ex.drop("sft", pid, LOW_CORRECT_SHARE, correct_share=share)
        return
    seen, keep = set(), []
    ranked = _best_first(correct)
    if mcts_cfg.extract_sft_order == "top_k_first":
        for t in ranked[mcts_cfg.extract_top_k:]:
            ex.drop("sft", pid, BELOW_TOP_K, t.tag, tree=t.tree)
        ranked = ranked[:mcts_cfg.extract_top_k]
    for t in ranked:
        if "error" in t.text.lower():
            ex.drop("sft", pid, CONTAINS_ERROR, t.tag, tree=t.tree)
        elif t.text in seen and mcts_cfg.extract_sft_order == "filter_first":
            ex.drop("sft", pid, DUPLICATE, t.tag, tree=t.tree)
        elif len(keep) >= mcts_cfg.extract_top_k:
            ex.drop("sft", pid, BELOW_TOP_K, t.tag, tree=t.tree)
        else:
            seen.add(t.text)
            keep.append(t)
    for rank, t in enumerate(keep):
        ex.sft.append({"query": question, "response": t.text, "id": pid, "tree": t.tree,
                       "tag": t.tag, "rank": rank, "mean_q": t.mean_q, "min_q": t.min_q})


def answers_below(tree: T.Tree) -> Tuple[List[bool], List[bool]]:
    """(has a correct answer at or below, has a wrong answer at or below) per node."""
    good = [False] * len(tree.nodes)
    bad = [False] * len(tree.nodes)
    for i in range(len(tree.nodes) - 1, -1, -1):  # children come after parents
        n = tree.nodes[i]
        if n.terminal_reason == T.FINAL_ANSWER:
            good[i], bad[i] = bool(n.correct), not n.correct
        for c in n.children:
            good[i] = good[i] or good[c]
            bad[i] = bad[i] or bad[c]
    return good, bad


def edit_distance_at_least(a: str, b: str, k: int) -> bool:
    """Whether Levenshtein(a, b) >= k, by a DP banded to width k (O(k * len))."""
    if k <= 0 or abs(len(a) - len(b)) >= k:
        return True
    big = k  # any value >= k means "far enough"
    prev = {j: j for j in range(0, min(len(b), k) + 1)}
    for i in range(1, len(a) + 1):
        cur = {}
        lo, hi = max(0, i - k), min(len(b), i + k)
        for j in range(lo, hi + 1):
            if j == 0:
                cur[j] = i
                continue
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev.get(j, big) + 1, cur.get(j - 1, big) + 1, prev.get(j - 1, big) + cost)
        if min(cur.values()) >= k:
            return True
        prev = cur
    return prev.get(len(b), big) >= k


def continuation_mean_q(tree: T.Tree, node: int, below: Sequence[bool], best: bool) -> float:
    """Mean Q of the path from `node` down its best (or worst) continuation.

    At each node the path goes on to the child with an answer of the pair's
    side below it (`below`: `answers_below`'s correct flags for a positive,
    wrong flags for a negative) of the highest Q (`best`) or the lowest, the
    first in creation order on a tie, until no child qualifies; the mean is
    over every node of the path, `node` included. The reference's extraction
    keeps a step pair only when the positive's value exceeds the negative's,
    so a positive step whose only correct continuations are poor, or a
    negative one whose failures come late after good steps, makes no pair.
    """
    qs = [tree.nodes[node].Q]
    while True:
        kids = [c for c in tree.nodes[node].children if below[c]]
        if not kids:
            return sum(qs) / len(qs)
        pick = max if best else min
        node = pick(kids, key=lambda c: tree.nodes[c].Q)
        qs.append(tree.nodes[node].Q)


def _pair_ok(pid, tag, q_pos, q_neg, pos, neg, mcts_cfg, ex: Extraction, kind: str,
             cont: Optional[Tuple[float, float]] = None) -> bool:
    """Whether a pair passes the filters; `cont`: the continuation means of
    pos and neg (step pairs with `ppm_continuation_q`), else not compared."""
    if q_pos - q_neg <= 0:
        reason = Q_NOT_GREATER
    elif cont is not None and cont[0] <= cont[1]:
        reason = CONTINUATION_Q
    elif mcts_cfg.ppm_reference_filters and q_pos - q_neg < mcts_cfg.ppm_min_margin:
        reason = SMALL_MARGIN
    elif mcts_cfg.ppm_reference_filters and not edit_distance_at_least(
            pos, neg, mcts_cfg.ppm_min_edit_distance):
        reason = SMALL_EDIT
    else:
        return True
    ex.drop("ppm", pid, reason, tag, pair=kind, q_pos=q_pos, q_neg=q_neg)
    return False


def _pick_sides(pos: List[int], neg: List[int], mcts_cfg) -> Tuple[List[int], List[int]]:
    k, k1 = mcts_cfg.ppm_pairs_per_side, mcts_cfg.ppm_pairs_one_side_max
    np_, nn_ = (k1 if len(neg) == 1 else k), (k1 if len(pos) == 1 else k)
    return pos[:np_], neg[:nn_]


def step_pairs(pid: str, question: str, tree: T.Tree, ti: int, mcts_cfg, sep: str,
               ex: Extraction) -> None:
    """Sibling-step pairs of every expanded node (answer children excluded)."""
    good, bad = answers_below(tree)
    for i, node in enumerate(tree.nodes):
        kids = [c for c in node.children if tree.nodes[c].terminal_reason != T.FINAL_ANSWER]
        if not kids or not (any(good[c] for c in kids) or any(bad[c] for c in kids)):
            continue
        tag = node.tag
        pos = sorted((c for c in kids if good[c]), key=lambda c: -tree.nodes[c].Q)
        neg = sorted((c for c in kids if bad[c]), key=lambda c: tree.nodes[c].Q)
        if not pos:
            ex.drop("ppm", pid, NO_POSITIVE, tag, tree=ti)
            continue
        if not neg:
            ex.drop("ppm", pid, NO_NEGATIVE, tag, tree=ti)
            continue
        pos, neg = _pick_sides(pos, neg, mcts_cfg)
        prompt = policy_prompt(question, tree.partial_solution(i), sep=sep)
        for p in pos:
            for n in neg:
                qp, qn = tree.nodes[p].Q, tree.nodes[n].Q
                tp, tn = tree.nodes[p].text, tree.nodes[n].text
                cont = ((continuation_mean_q(tree, p, good, True),
                         continuation_mean_q(tree, n, bad, False))
                        if mcts_cfg.ppm_continuation_q else None)
                if p == n or not _pair_ok(pid, tag, qp, qn, tp, tn, mcts_cfg, ex, "step", cont):
                    continue
                ex.ppm.append({"prompt": prompt, "pos": tp, "neg": tn, "pos_count": len(pos),
                               "neg_count": len(neg), "id": pid, "kind": "step",
                               "group": f"{pid}/{ti}/{tag}", "q_pos": qp, "q_neg": qn,
                               "pos_tag": tree.nodes[p].tag, "neg_tag": tree.nodes[n].tag,
                               **({"cont_q_pos": cont[0], "cont_q_neg": cont[1]} if cont else {})})


def final_pairs(pid: str, question: str, trajs: Sequence[Trajectory], mcts_cfg, sep: str,
                ex: Extraction) -> None:
    """Whole-trajectory pairs: top correct by mean Q against bottom wrong."""
    if not trajs:
        return
    correct = _best_first(t for t in trajs if t.correct)
    wrong = sorted((t for t in trajs if not t.correct), key=lambda t: (t.mean_q, t.min_q))
    if not correct:
        ex.drop("ppm", pid, FINAL_NO_CORRECT)
        return
    if not wrong:
        ex.drop("ppm", pid, FINAL_NO_WRONG)
        return
    k = mcts_cfg.ppm_pairs_per_side
    correct, wrong = correct[:k], wrong[:k]
    head = f"{USER}:\n{question}"
    for p in correct:
        for n in wrong:
            tp = policy_prompt(question, p.text, sep=sep)[len(head):]
            tn = policy_prompt(question, n.text, sep=sep)[len(head):]
            if not _pair_ok(pid, f"{p.tag}|{n.tag}", p.mean_q, n.mean_q, tp, tn, mcts_cfg, ex, "final"):
                continue
            ex.ppm.append({"prompt": head, "pos": tp, "neg": tn, "pos_count": len(correct),
                           "neg_count": len(wrong), "id": pid, "kind": "final",
                           "group": f"{pid}/final", "q_pos": p.mean_q, "q_neg": n.mean_q,
                           "pos_tag": f"{p.tree}:{p.tag}", "neg_tag": f"{n.tree}:{n.tag}"})


def extract_records(records: Iterable[Dict[str, Any]], mcts_cfg, sep: str = "\n\n") -> Extraction:
    """SFT records and PPM pairs from tree-file records (module docstring)."""
    ex = Extraction()
    for rec in records:
        pid, question = str(rec["id"]), rec["question"]
        trees = [T.Tree.from_json(t) for t in rec["trees"]]
        trajs = trajectories(trees)
        sft_records(pid, question, trajs, mcts_cfg, ex)
        for ti, tree in enumerate(trees):
            step_pairs(pid, question, tree, ti, mcts_cfg, sep, ex)
        final_pairs(pid, question, trajs, mcts_cfg, sep, ex)
    return ex


def write_jsonl(path: str, rows: Iterable[Dict[str, Any]]) -> int:
    n = 0
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def extract_to_dir(tree_dir: str, out_dir: str, cfg) -> Dict[str, Any]:
    """Reads the tree files of `tree_dir`; writes sft.jsonl, ppm.jsonl,
    dropped.jsonl and summary.json into `out_dir`. Returns the summary."""
    from rstar_jax.search.treefile import id_order_key, load_records, tree_files

    if not tree_files(tree_dir):
        raise FileNotFoundError(f"no tree files in {tree_dir}")
    # Problem-id order, not the files' (the order searches finished in): a
    # resumed or multi-host search writes the same trees in another order,
    # and the records' order is the training data's.
    records = sorted(load_records(tree_dir), key=lambda r: id_order_key(r["id"]))
    ex = extract_records(records, cfg.mcts, cfg.data.assistant_sep)
    os.makedirs(out_dir, exist_ok=True)
    write_jsonl(os.path.join(out_dir, "sft.jsonl"), ex.sft)
    write_jsonl(os.path.join(out_dir, "ppm.jsonl"), ex.ppm)
    write_jsonl(os.path.join(out_dir, "dropped.jsonl"), ex.dropped)
    summary = ex.summary(len(records))
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary
