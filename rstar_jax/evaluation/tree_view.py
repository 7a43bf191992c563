"""Looking at search trees: a drawing with N, Q and PPM values per node, and
the step values of correct vs wrong trajectories.

Used by `notebooks/search_trees.ipynb`. Trees come from the search
package's tree files (`rstar_jax.search.treefile`).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from rstar_jax.search import tree as T


def layout(tree: T.Tree) -> Dict[int, Tuple[float, float]]:
    """(x, y) per node: leaves on successive x in depth-first order, a
    parent centred over its children, y = -depth."""
    pos: Dict[int, Tuple[float, float]] = {}
    next_x = [0.0]

    def place(i: int) -> float:
        node = tree.nodes[i]
        if not node.children:
            x = next_x[0]
            next_x[0] += 1.0
        else:
            xs = [place(c) for c in node.children]
            x = (xs[0] + xs[-1]) / 2.0
        pos[i] = (x, -float(node.depth))
        return x

    place(0)
    return pos


def node_label(node: T.Node) -> str:
    """`N`, `Q` and (when scored) the PPM value, one per line."""
    lines = [f"N={node.N}", f"Q={node.Q:.2f}"]
    if node.ppm_value is not None:
        lines.append(f"ppm={node.ppm_value:.2f}")
    return "\n".join(lines)


def draw_tree(tree: T.Tree, ax=None, *, labels: bool = True, cmap: str = "coolwarm_r"):
    """Draws the tree: colour = Q in [-1, 1]; answer leaves outlined green
    (correct) or red (wrong); code-error / depth terminals as crosses."""
    import matplotlib.pyplot as plt

    pos = layout(tree)
    if ax is None:
        width = max(4.0, 0.9 * sum(1 for n in tree.nodes if not n.children))
        _, ax = plt.subplots(figsize=(min(width, 30.0), 1.2 * (max_depth(tree) + 2)))
    for i, node in enumerate(tree.nodes):
        if node.parent is not None:
            (x0, y0), (x1, y1) = pos[node.parent], pos[i]
            ax.plot([x0, x1], [y0, y1], color="0.7", lw=0.8, zorder=1)
    xs = [pos[i][0] for i in range(len(tree.nodes))]
    ys = [pos[i][1] for i in range(len(tree.nodes))]
    qs = [max(-1.0, min(1.0, n.Q)) for n in tree.nodes]
    edge = []
    for n in tree.nodes:
        if n.terminal_reason == T.FINAL_ANSWER:
            edge.append("green" if n.correct else "red" if n.correct is False else "black")
        else:
            edge.append("none")
    sc = ax.scatter(xs, ys, c=qs, cmap=cmap, vmin=-1, vmax=1, s=120, edgecolors=edge,
                    linewidths=2, zorder=2)
    for i, n in enumerate(tree.nodes):
        if n.terminal and n.terminal_reason != T.FINAL_ANSWER:
            ax.scatter([pos[i][0]], [pos[i][1]], marker="x", color="black", s=40, zorder=3)
        if labels:
            ax.annotate(node_label(n), pos[i], textcoords="offset points", xytext=(8, -4),
                        fontsize=6, va="top")
    ax.figure.colorbar(sc, ax=ax, label="Q")
    ax.set_axis_off()
    return ax


def max_depth(tree: T.Tree) -> int:
    return max(n.depth for n in tree.nodes)


def step_values(trees, value: str = "Q") -> Dict[str, List[float]]:
    """Values of every step on the path to each graded final answer, split by
    whether that answer is correct.

    Args:
      trees: iterable of `Tree`s.
      value: "Q" (visit-averaged value) or "ppm" (the PPM's step score;
        unscored steps are skipped).

    Returns:
      {"correct": [...], "wrong": [...]} flat lists of step values.
    """
    out: Dict[str, List[float]] = {"correct": [], "wrong": []}
    for tree in trees:
        for leaf in T.answer_nodes(tree):
            correct: Optional[bool] = tree.nodes[leaf].correct
            if correct is None:
                continue
            for i in tree.path(leaf):
                n = tree.nodes[i]
                v = n.Q if value == "Q" else n.ppm_value
                if v is not None:
                    out["correct" if correct else "wrong"].append(float(v))
    return out


def plot_value_distributions(values: Dict[str, List[float]], ax=None, *, bins: int = 20,
                             title: str = "step values"):
    """Overlaid histograms of correct vs wrong trajectories' step values."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    for key, color in (("correct", "tab:green"), ("wrong", "tab:red")):
        if values.get(key):
            ax.hist(values[key], bins=bins, range=(-1, 1), alpha=0.5, color=color,
                    label=f"{key} ({len(values[key])} steps)", density=True)
    ax.set_xlabel("value")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax
