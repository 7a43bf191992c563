"""The search tree and the pure functions of MCTS (spec section 4).

The tree is a flat list of `Node`s addressed by index (root = 0), so it is
cheap to copy, serialise and inspect; the functions here read or update
one tree and never touch an engine, an executor or a clock. The driver
(`driver.py`) batches the expensive work of many trees around them.

Values and visits follow the reference: `N` visits, `W` value sum,
`Q = W / N` (0 when unvisited). Selection is UCT without a prior:
`Q(s) + c * sqrt(ln N(parent) / N(s))`, the exploration term being 0 when
`N(s) == 0` or `N(parent) == 0`, so an unvisited child scores exactly 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from rstar_jax.data.prompts import END_OF_ANSWER, OUTPUT

# Terminal reasons (the strings stored in tree files).
FINAL_ANSWER = "final answer"
TOO_MANY_CODE_ERRORS = "too many code errors"
TOO_MANY_STEPS = "too many steps"
NO_VALID_CHILD = "no valid child"
INCOMPLETE_STEP = "incomplete step"  # the generation ended without a stop string
CONTEXT_FULL = "context full"  # the node's prompt no longer fits the engine's context

# Terminals whose -1 stays on the node (spec: "not back-propagated").
LOCAL_TERMINALS = (TOO_MANY_CODE_ERRORS, TOO_MANY_STEPS, INCOMPLETE_STEP, CONTEXT_FULL)


@dataclass
class Node:
    """One step of a solution. `text` is what the model wrote plus, after a
    step ending with `<end_of_code>`, the system's `<output>` suffix; the
    concatenation of texts from the root is the partial solution."""

    tag: str
    parent: Optional[int]
    depth: int
    text: str = ""
    code: Optional[str] = None  # this step's own code (`program.step_code`)
    program: Optional[str] = None  # what ran: the code block so far (spec section 3)
    observation: Optional[str] = None
    final_answer: Optional[str] = None
    children: List[int] = field(default_factory=list)
    expanded: bool = False
    terminal: bool = False
    terminal_reason: Optional[str] = None
    consecutive_errors: int = 0
    N: int = 0
    W: float = 0.0
    ppm_value: Optional[float] = None  # the PPM's score of this step, if asked
    value: Optional[float] = None  # terminal value (+1/-1 gold, PPM score, -1 local)
    correct: Optional[bool] = None  # final answer graded against the gold answer

    @property
    def Q(self) -> float:  # noqa: N802 - the paper's name
        return self.W / self.N if self.N else 0.0

    def to_json(self) -> Dict[str, Any]:
        d = {k: getattr(self, k) for k in _NODE_FIELDS}
        d["Q"] = self.Q
        return d

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> Node:
        return cls(**{k: d[k] for k in _NODE_FIELDS if k in d})


_NODE_FIELDS = (
    "tag", "parent", "depth", "text", "code", "program", "observation", "final_answer", "children",
    "expanded", "terminal", "terminal_reason", "consecutive_errors", "N", "W", "ppm_value",
    "value", "correct",
)


@dataclass
class Tree:
    """A search tree for one problem; `nodes[0]` is the root (the question)."""

    nodes: List[Node] = field(default_factory=lambda: [Node(tag="0", parent=None, depth=0)])
    rollouts: int = 0  # completed rollouts

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def path(self, index: int) -> List[int]:
        """Indices from the root's first child down to `index` (root excluded)."""
        out = []
        while index != 0:
            out.append(index)
            index = self.nodes[index].parent  # type: ignore[assignment]
        return out[::-1]

    def partial_solution(self, index: int) -> str:
        """The concatenated step texts from the root to `index`."""
        return "".join(self.nodes[i].text for i in self.path(index))

    def step_texts(self, index: int) -> List[str]:
        return [self.nodes[i].text for i in self.path(index)]

    def to_json(self) -> Dict[str, Any]:
        return {"rollouts": self.rollouts, "nodes": [n.to_json() for n in self.nodes]}

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> Tree:
        return cls(nodes=[Node.from_json(n) for n in d["nodes"]], rollouts=d.get("rollouts", 0))


# --- selection -----------------------------------------------------------------


def uct(q: float, n: int, parent_n: int, c: float) -> float:
    """The spec's UCT score; no prior, exploration 0 for N == 0 or N(parent) == 0.

    Worked example (spec): parent N=2, A (N=2, Q=-0.2) -> 0.9774,
    B (N=1, Q=-0.2) -> 1.4651.
    """
    if n == 0 or parent_n == 0:
        return q
    return q + c * math.sqrt(math.log(parent_n) / n)


def select_child(tree: Tree, index: int, c: float) -> Optional[int]:
    """The best non-terminal child of `index` (first one on ties), or None.

    When every child is terminal the node itself becomes terminal
    ("no valid child"), so later descents stop above it.
    """
    node = tree.nodes[index]
    best, best_score = None, -math.inf
    for ci in node.children:
        child = tree.nodes[ci]
        if child.terminal:
            continue
        s = uct(child.Q, child.N, node.N, c)
        if s > best_score:  # strict: ties keep the first child
            best, best_score = ci, s
    if best is None and node.children:
        node.terminal = True
        node.terminal_reason = NO_VALID_CHILD
    return best


def descend(tree: Tree, index: int, c: float, *, backtrack: bool = False) -> Optional[int]:
    """From `index`, follows `select_child` to an unexpanded non-terminal node.

    A node whose children are all terminal becomes terminal on the way.
    Without `backtrack` the walk then ends (None: "no selectable child").
    With it (a walk from the root) the walk steps back to the parent and
    selects again, so marking dead subtrees never costs a rollout; None then
    means every node below `index` is terminal.
    """
    start = index
    while True:
        node = tree.nodes[index]
        if node.terminal and index == start:
            return None
        if not node.expanded:
            return index
        nxt = select_child(tree, index, c)
        if nxt is None:
            node.terminal = True  # also when it expanded into nothing
            node.terminal_reason = node.terminal_reason or NO_VALID_CHILD
            if not backtrack or index == start:
                return None
            index = node.parent  # type: ignore[assignment]
            continue
        index = nxt


# --- expansion -----------------------------------------------------------------


# How a node's candidates are kept when some end with a final answer
# (`mcts.answer_expansion`): the reference keeps only the first answer and
# drops every other sibling; `first_answer_and_steps` also keeps the
# non-answer steps; `all` keeps every distinct candidate.
ANSWER_EXPANSIONS = ("first_answer", "first_answer_and_steps", "all")


def filter_candidates(texts: Sequence[str], answer_expansion: str = "first_answer") -> List[int]:
    """Indices of the candidates to keep (exact duplicates dropped).

    `first_answer` (the reference's rule): if any candidate ends with
    `<end_of_answer>`, that first answer is the only child.
    `first_answer_and_steps`: the first answer and the non-answer steps.
    `all`: every distinct candidate.
    """
    if answer_expansion not in ANSWER_EXPANSIONS:
        raise ValueError(f"answer_expansion must be one of {ANSWER_EXPANSIONS}, "
                         f"not {answer_expansion!r}")
    seen, keep, answer_seen = set(), [], False
    for i, t in enumerate(texts):
        if t in seen:
            continue
        seen.add(t)
        if answer_expansion != "all" and t.rstrip().endswith(END_OF_ANSWER):
            if answer_seen:
                continue
            answer_seen = True
            if answer_expansion == "first_answer":
                return [i]
        keep.append(i)
    return keep


def add_child(tree: Tree, parent: int, text: str) -> int:
    """Appends a child (tag `parent.tag + "." + k`, k from 1) and returns its index."""
    p = tree.nodes[parent]
    child = Node(
        tag=f"{p.tag}.{len(p.children) + 1}",
        parent=parent,
        depth=p.depth + 1,
        text=text,
        consecutive_errors=p.consecutive_errors,
    )
    tree.nodes.append(child)
    ci = len(tree.nodes) - 1
    p.children.append(ci)
    return ci


def is_code_error(observation: Optional[str]) -> bool:
    """Spec section 3: an observation containing "error" (any case)."""
    return observation is not None and "error" in observation.lower()


def apply_terminal_rules(
    node: Node,
    parent_errors: int,
    *,
    errors_threshold: int,
    max_depth: int,
    complete: bool = True,
) -> None:
    """Marks `node` terminal (or not) from its text, observation and depth.

    Order: code-error streak, final answer (the text the model wrote, before
    any appended `<output>`, contains "boxed"), depth
    beyond `max_depth`, and a step the engine cut off without a stop string.
    Local terminals get value -1 on the node itself (N=1, W=-1), never on
    its ancestors. Final answers get their value from the caller.
    """
    if is_code_error(node.observation):
        node.consecutive_errors = parent_errors + 1
    else:
        node.consecutive_errors = 0
    reason = None
    if node.consecutive_errors >= errors_threshold and is_code_error(node.observation):
        reason = TOO_MANY_CODE_ERRORS
    elif "boxed" in node.text.split(OUTPUT, 1)[0]:  # the model's text, never the program's output
        node.terminal, node.terminal_reason = True, FINAL_ANSWER
        return
    elif node.depth > max_depth:
        reason = TOO_MANY_STEPS
    elif not complete:
        reason = INCOMPLETE_STEP
    if reason is not None:
        node.terminal, node.terminal_reason = True, reason
        node.value = -1.0
        node.N, node.W = 1, -1.0


def mark_context_full(node: Node) -> None:
    """A leaf whose prompt the engine cannot take (`engine.truncation=error`
    and the prompt fills `max_seq_len`): a local -1 terminal, like a path
    past `max_depth`, so the search goes on elsewhere instead of failing."""
    node.terminal, node.terminal_reason = True, CONTEXT_FULL
    node.value = -1.0


def init_value(node: Node, score: float) -> None:
    """PPM-augmented search: a new child's first update (N=1, W=score), local."""
    node.ppm_value = float(score)
    node.N, node.W = 1, float(score)


# --- backup --------------------------------------------------------------------


def backup(tree: Tree, index: int, value: float) -> None:
    """Adds one visit and `value` to `index` and every ancestor up to the root."""
    i: Optional[int] = index
    while i is not None:
        n = tree.nodes[i]
        n.N += 1
        n.W += value
        i = n.parent


def answer_nodes(tree: Tree) -> List[int]:
    """Indices of final-answer terminals, in creation order."""
    return [i for i, n in enumerate(tree.nodes) if n.terminal_reason == FINAL_ANSWER]


def is_solved(tree: Tree) -> bool:
    return any(tree.nodes[i].correct for i in answer_nodes(tree))
