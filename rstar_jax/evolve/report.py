"""The run report, rebuilt from the stage manifests: terminal table, report.md/json, PNGs.

Per round (the paper's Tables 2, 3 and 6): the share of training problems
solved by search, the policy's greedy accuracy and MCTS+PPM accuracy on the
held-out test set, the PPM's pair accuracy, and PPM-selected answers vs
majority vote vs greedy at equal trajectory counts. `report.json`:

  {"base": {"greedy_acc": ...},
   "rounds": [{"round": 1, "solved_share": ..., "greedy_acc": ..., "mcts_ppm_acc": ...,
               "ppm_pair_acc": ..., "majority_acc": ..., "ppm_selected_acc": ...,
               "trajectories": ...}, ...],
   "wall_s": ...,
   "notes": ["round 1: search produced no preference pair; ...", ...]}

Accuracies are fractions in [0, 1]; a value no stage produced is null.
`notes` are the reasons stages logged for carrying a model over (a round
whose search verified nothing keeps its policy; one without preference pairs
keeps its PPM). Metrics are merged over a round's stages in plan order (search gives
`solved_share`, ppm `ppm_pair_acc`, eval the accuracies).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

from rstar_jax.evolve.context import stage_dir
from rstar_jax.evolve.manifest import atomic_write_json, read_manifest

log = logging.getLogger(__name__)

ROUND_KEYS = ("solved_share", "greedy_acc", "mcts_ppm_acc", "ppm_pair_acc", "majority_acc",
              "ppm_selected_acc", "trajectories")
_HEADERS = ("round", "solved", "greedy", "mcts+ppm", "ppm pairs", "majority", "ppm-selected", "traj")


def _merged_metrics(run_dir: str, stages: Sequence[tuple], notes: List[str]) -> tuple:
    metrics: Dict[str, Any] = {}
    wall = 0.0
    for rnd, name in stages:
        m = read_manifest(stage_dir(run_dir, rnd, name))
        if m is None:
            continue
        metrics.update(m.get("metrics", {}))
        notes.extend(m.get("notes", []))
        wall += float(m.get("timings", {}).get("wall_s", 0.0))
    return metrics, wall


def build_report(run_dir: str, plan) -> Dict[str, Any]:
    """The report dict from whatever stages of `plan` have finished."""
    by_round: Dict[int, List[tuple]] = {}
    for s in plan:
        by_round.setdefault(s.round, []).append((s.round, s.name))
    total_wall = 0.0
    notes: List[str] = []
    base_metrics, wall = _merged_metrics(run_dir, by_round.get(0, []), notes)
    total_wall += wall
    rounds = []
    for rnd in sorted(r for r in by_round if r > 0):
        metrics, wall = _merged_metrics(run_dir, by_round[rnd], notes)
        total_wall += wall
        rounds.append({"round": rnd, **{k: metrics.get(k) for k in ROUND_KEYS}})
    return {"base": {"greedy_acc": base_metrics.get("greedy_acc")}, "rounds": rounds,
            "wall_s": round(total_wall, 3), "notes": notes}


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def format_table(report: Dict[str, Any]) -> str:
    """A fixed-width text table (percentages) of the report."""
    rows = [list(_HEADERS)]
    rows.append(["base", "-", _pct(report["base"]["greedy_acc"])] + ["-"] * 5)
    for r in report["rounds"]:
        traj = "-" if r["trajectories"] is None else str(r["trajectories"])
        rows.append([str(r["round"])] + [_pct(r[k]) for k in ROUND_KEYS[:-1]] + [traj])
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADERS))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _markdown(report: Dict[str, Any]) -> str:
    head = "| " + " | ".join(_HEADERS) + " |"
    sep = "|" + "---|" * len(_HEADERS)
    rows = [f"| base | - | {_pct(report['base']['greedy_acc'])} | - | - | - | - | - |"]
    for r in report["rounds"]:
        traj = "-" if r["trajectories"] is None else str(r["trajectories"])
        rows.append("| " + " | ".join([str(r["round"])] + [_pct(r[k]) for k in ROUND_KEYS[:-1]] + [traj])
                    + " |")
    return "\n".join([
        "# Self-evolution report", "",
        "Percentages. `solved`: share of training problems with a correct search trajectory "
        "(paper Table 2). `greedy`, `mcts+ppm`: policy and policy+PPM accuracy on the held-out "
        "test set (Tables 3, 6). `ppm pairs`: PPM pair accuracy on held-out pairs. `majority`, "
        "`ppm-selected`: answer choice among `traj` trajectories per problem vs greedy.", "",
        head, sep, *rows, "",
        f"Total stage time: {report['wall_s']:.1f} s.", "",
        *([f"Carried over: {n}" for n in report.get("notes", [])] + ([""] if report.get("notes") else [])),
        "![accuracy](accuracy.png) ![solved](solved.png) ![selection](selection.png)", "",
    ])


def _plots(run_dir: str, report: Dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = report["rounds"]
    xs = [r["round"] for r in rounds]

    def series(key):
        return [float("nan") if r[key] is None else 100 * r[key] for r in rounds]

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(xs, series("greedy_acc"), "o-", label="policy greedy")
    ax.plot(xs, series("mcts_ppm_acc"), "s-", label="MCTS + PPM")
    if report["base"]["greedy_acc"] is not None:
        ax.axhline(100 * report["base"]["greedy_acc"], ls="--", c="gray", label="base greedy")
    ax.set(xlabel="round", ylabel="test accuracy (%)", xticks=xs, title="Held-out accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(run_dir, "accuracy.png"), dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(xs, series("solved_share"))
    ax.set(xlabel="round", ylabel="training problems solved (%)", xticks=xs, title="Search coverage")
    fig.tight_layout()
    fig.savefig(os.path.join(run_dir, "solved.png"), dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    width = 0.27
    for i, (key, label) in enumerate((("greedy_acc", "greedy"), ("majority_acc", "majority vote"),
                                      ("ppm_selected_acc", "PPM-selected"))):
        ax.bar([x + (i - 1) * width for x in xs], series(key), width, label=label)
    ax.set(xlabel="round", ylabel="test accuracy (%)", xticks=xs, title="Answer selection")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(run_dir, "selection.png"), dpi=100)
    plt.close(fig)


def write_report(run_dir: str, plan, echo: Optional[Callable[[str], None]] = print) -> Dict[str, Any]:
    """Writes report.json, report.md and the PNGs; echoes the table; returns the report."""
    report = build_report(run_dir, plan)
    atomic_write_json(os.path.join(run_dir, "report.json"), report)
    tmp = os.path.join(run_dir, "report.md.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(_markdown(report))
    os.replace(tmp, os.path.join(run_dir, "report.md"))
    try:
        _plots(run_dir, report)
    except Exception as e:  # a plot must never fail a finished run
        log.warning("could not draw the report plots: %s", e)
    if echo is not None:
        echo(format_table(report))
        for note in report["notes"]:
            echo(f"note: {note}")
    return report
