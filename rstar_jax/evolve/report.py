"""The run report, rebuilt from the stage manifests: terminal table, report.md/json, PNGs.

Per round (the paper's Tables 2, 3 and 6): the share of training problems
solved by search, the policy's greedy accuracy and MCTS+PPM accuracy on the
held-out test set, the PPM's pair accuracy, and PPM-selected answers vs
majority vote vs greedy at equal trajectory counts. `report.json`:

  {"run_name": "demo",  (the config's `run_name`)
   "base": {"greedy_acc": ...},
   "rounds": [{"round": 1, "solved_share": ..., "greedy_acc": ..., "mcts_ppm_acc": ...,
               "ppm_pair_acc": ..., "majority_acc": ..., "ppm_selected_acc": ...,
               "trajectories": ...,
               "protocol": {"rollouts": ..., "candidates": ..., ...},
               "ppm_margins": {"best_of_n": {"1": {...}, ..., "all": {...}},
                               "mcts_ppm": {...}}}, ...],
   "protocols": [{"rounds": [1, 2, 3, 4], "rollouts": ..., ...}],
   "wall_s": ...,
   "notes": ["round 1: search produced no preference pair; ...", ...]}

`protocol` is the evaluation protocol a round's eval stage ran under
(`inference_eval`, evaluation/methods.py); `protocols` groups the rounds by
it, so one entry means every round was measured the same way. `ppm_margins`
says where the PPM fails, per test level (evaluation/report.py `ppm_margins`).

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


def _merged_metrics(run_dir: str, stages: Sequence[tuple], notes: List[str],
                    details: Optional[Dict[str, Any]] = None) -> tuple:
    metrics: Dict[str, Any] = {}
    wall = 0.0
    for rnd, name in stages:
        m = read_manifest(stage_dir(run_dir, rnd, name))
        if m is None:
            continue
        metrics.update(m.get("metrics", {}))
        notes.extend(m.get("notes", []))
        if details is not None:
            details.update(m.get("details", {}))
        wall += float(m.get("timings", {}).get("wall_s", 0.0))
    return metrics, wall


def _protocols(rounds: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The evaluation protocols the rounds ran under, each with its rounds
    (one entry when every round was evaluated the same way)."""
    groups: List[Dict[str, Any]] = []
    for r in rounds:
        p = r.get("protocol")
        if p is None:
            continue
        same = next((g for g in groups if {k: v for k, v in g.items() if k != "rounds"} == p), None)
        if same is None:
            groups.append({"rounds": [r["round"]], **p})
        else:
            same["rounds"].append(r["round"])
    return groups


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
        details: Dict[str, Any] = {}
        metrics, wall = _merged_metrics(run_dir, by_round[rnd], notes, details)
        total_wall += wall
        rounds.append({"round": rnd, **{k: metrics.get(k) for k in ROUND_KEYS},
                       "protocol": details.get("protocol"),
                       "ppm_margins": details.get("ppm_margins")})
    return {"run_name": plan[0].cfg.run_name if plan else None,
            "base": {"greedy_acc": base_metrics.get("greedy_acc")}, "rounds": rounds,
            "protocols": _protocols(rounds), "wall_s": round(total_wall, 3), "notes": notes}


def _rounds_text(rounds: Sequence[int]) -> str:
    rs = sorted(rounds)
    if len(rs) > 1 and rs == list(range(rs[0], rs[-1] + 1)):
        return f"rounds {rs[0]}-{rs[-1]}"
    return ("round " if len(rs) == 1 else "rounds ") + ", ".join(str(r) for r in rs)


def protocol_lines(report: Dict[str, Any]) -> List[str]:
    """The evaluation protocol(s) in words, one line per group of rounds."""
    out = []
    for g in report.get("protocols") or []:
        out.append(
            f"Evaluation protocol ({_rounds_text(g['rounds'])}): MCTS+PPM with {g['rollouts']} "
            f"rollouts x {g['candidates']} candidates per step, PPM values for new leaves "
            f"{'on' if g['ppm_init_value'] else 'off'}, answers by {g['selection']}; "
            f"majority and PPM-selected among {g['trajectories']} sampled trajectories; "
            f"temperature {g['temperature']}, top-p {g['top_p']}, code-error threshold "
            f"{g['errors_threshold']}, at most {g['max_depth']} steps of "
            f"{g['max_new_tokens_per_step']} tokens; {g['prompt']} prompt.")
    if len(out) > 1:
        out.insert(0, "The rounds were NOT evaluated the same way:")
    return out


_MARGIN_METHODS = (("best_of_n", "sampled"), ("mcts_ppm", "MCTS"))


def _margin_rows(report: Dict[str, Any]) -> List[str]:
    rows = []
    for r in report["rounds"]:
        for method, label in _MARGIN_METHODS:
            per = (r.get("ppm_margins") or {}).get(method) or {}
            for level, v in per.items():
                rows.append("| " + " | ".join([
                    str(r["round"]), label, str(level), str(v["problems"]), str(v["mixed"]),
                    _num(v["mean_margin"]), _num(v["median_margin"]), _pct(v["right_first"]),
                    str(v["all_right"]), str(v["all_wrong"])]) + " |")
    return rows


def _num(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:+.3f}"


def margins_markdown(report: Dict[str, Any]) -> List[str]:
    """The 'where the PPM fails' section: per round, method and level."""
    rows = _margin_rows(report)
    if not rows:
        return []
    return [
        "## Where the PPM fails", "",
        "Per level, over the test problems whose candidates (`sampled`: the best-of-k "
        "trajectories; `MCTS`: the answer leaves of the MCTS+PPM trees) hold both a right and "
        "a wrong answer (`mixed`): the best right answer's PPM score minus the best wrong one's "
        "(mean, median; > 0 means the PPM's top choice is right), and the share of mixed problems "
        "whose top-scored answer is right. `all right` / `all wrong`: problems where the PPM's "
        "choice cannot matter.", "",
        "| round | candidates | level | problems | mixed | mean margin | median margin "
        "| right first | all right | all wrong |",
        "|" + "---|" * 10, *rows, ""]


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
        f"# Self-evolution report: {report.get('run_name') or 'run'}", "",
        "Percentages. `solved`: share of training problems with a correct search trajectory "
        "(paper Table 2). `greedy`, `mcts+ppm`: policy and policy+PPM accuracy on the held-out "
        "test set (Tables 3, 6). `ppm pairs`: PPM pair accuracy on held-out pairs. `majority`, "
        "`ppm-selected`: answer choice among `traj` trajectories per problem vs greedy.", "",
        head, sep, *rows, "",
        *protocol_lines(report), "",
        *margins_markdown(report),
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
    from rstar_jax.utils.xla_flags import runtime_markdown, runtime_settings

    report = build_report(run_dir, plan)
    report["runtime"] = runtime_settings()  # what decides CPU rounding (issue 26)
    atomic_write_json(os.path.join(run_dir, "report.json"), report)
    tmp = os.path.join(run_dir, "report.md.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(_markdown(report) + runtime_markdown(report["runtime"]))
    os.replace(tmp, os.path.join(run_dir, "report.md"))
    try:
        _plots(run_dir, report)
    except Exception as e:  # a plot must never fail a finished run
        log.warning("could not draw the report plots: %s", e)
    if echo is not None:
        echo(format_table(report))
        for line in protocol_lines(report):
            echo(line)
        for note in report["notes"]:
            echo(f"note: {note}")
    return report
