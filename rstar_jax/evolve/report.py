"""The run report, rebuilt from the stage manifests: terminal table, report.md/json, PNGs.

Per round (the paper's Tables 2, 3 and 6): the share of training problems
solved by search, the policy's greedy accuracy and MCTS+PPM accuracy on each
evaluation set (the run's held-out `test` split and `eval.benchmarks`; the
flat keys are the first set's), the PPM's pair accuracy on held-out pairs,
and PPM-selected answers vs majority vote vs greedy at equal trajectory
counts. Every comparison is a paired difference on the same problems with a
seeded bootstrap interval (`COMPARISONS`), from the per-problem correctness
each eval stage keeps. `report.json`:

  {"run_name": "demo",  (the config's `run_name`)
   "base": {"greedy_acc": ..., "benchmarks": {"test": {"n": 80, "greedy_acc": ...}}},
   "rounds": [{"round": 1, "solved_share": ..., "greedy_acc": ..., "mcts_ppm_acc": ...,
               "ppm_pair_acc": ..., "majority_acc": ..., "ppm_selected_acc": ...,
               "trajectories": ...,
               "protocol": {"rollouts": ..., "candidates": ..., ...},
               "ppm_margins": {"best_of_n": {"1": {...}, ..., "all": {...}},
                               "mcts_ppm": {...}},
               "ppm_pairs": {"measured_on": "held_out_problems", "problems": ...,
                             "pairs": ..., "heldout_share": 0.1},
               "benchmarks": {"test": {"n": ..., "greedy_acc": ..., "mcts_ppm_acc": ...,
                                       "ppm_selected_acc": ..., "majority_acc": ...}, ...},
               "comparisons": {"test": {"greedy_vs_base": {"n": 80, "diff": 0.125,
                                                           "ci": [0.05, 0.2],
                                                           "excludes_zero": true},
                                        "mcts_ppm_vs_greedy": {...},
                                        "ppm_selected_vs_majority": {...}}, ...}}, ...],
   "sets": ["test", ...],  (the evaluation sets, table column order)
   "intervals": {"method": "paired bootstrap over problems", "level": 0.95,
                 "samples": 1000, "seed": 0},
   "protocols": [{"rounds": [1, 2, 3, 4], "rollouts": ..., ...}],
   "wall_s": ...,
   "notes": ["round 1: search produced no preference pair; ...", ...]}

`protocol` is the evaluation protocol a round's eval stage ran under
(`inference_eval`, evaluation/methods.py); `protocols` groups the rounds by
it, so one entry means every round was measured the same way. `ppm_margins`
says where the PPM fails, per test level (evaluation/report.py `ppm_margins`).

Accuracies and differences are fractions ([0, 1], [-1, 1]); a value no
stage produced is null (no interval: `eval.bootstrap_samples: 0`).
`notes` are the reasons stages logged for carrying a model over (a round
whose search verified nothing keeps its policy; one without preference pairs
keeps its PPM). Metrics are merged over a round's stages in plan order (search gives
`solved_share`, ppm `ppm_pair_acc`, eval the accuracies).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

from rstar_jax.evaluation import metrics
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


# The paired comparisons of every round, per evaluation set: (name, what
# minus what, the round's method key, the other side's round ("base": round
# 0, "same": this round) and key).
COMPARISONS = (
    ("greedy_vs_base", "greedy - base greedy", "greedy", "base", "greedy"),
    ("mcts_ppm_vs_greedy", "MCTS+PPM - greedy", "mcts_ppm", "same", "greedy"),
    ("ppm_selected_vs_majority", "PPM-selected - majority", "ppm_selected", "same", "majority"),
    # Ceilings, not claims: how much a perfect answer choice could add over
    # the vote and over the PPM's choice in the tree (the room the PPM has).
    ("any_of_k_vs_majority", "any of k correct - majority (ceiling)", "any_of_k", "same", "majority"),
    ("mcts_any_vs_mcts_ppm", "any tree answer correct - MCTS+PPM (ceiling)", "mcts_any", "same",
     "mcts_ppm"),
)
LEVEL = 0.95


def _correctness(run_dir: str, rnd: int) -> Optional[Dict[str, Any]]:
    """A round's per-problem correctness by set (the eval stage's
    `correctness.json`), or None when its eval has not finished."""
    m = read_manifest(stage_dir(run_dir, rnd, "eval"))
    rel = (m or {}).get("outputs", {}).get("correctness")
    if not rel:
        return None
    path = rel if os.path.isabs(rel) else os.path.join(stage_dir(run_dir, rnd, "eval"), rel)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)["sets"]
    except (OSError, ValueError, KeyError) as e:
        log.warning("round %d: unreadable per-problem correctness %s (%s)", rnd, path, e)
        return None


def _paired(a: Dict[str, Any], a_key: str, b: Dict[str, Any], b_key: str, samples: int,
            seed: int) -> Dict[str, Any]:
    """`a_key` of set `a` minus `b_key` of set `b` over the problems both
    hold (same id and question), with its paired bootstrap interval."""
    where = {(i, d): j for j, (i, d) in enumerate(zip(b["ids"], b["digests"]))}
    pairs = [(k, where[(i, d)]) for k, (i, d) in enumerate(zip(a["ids"], a["digests"]))
             if (i, d) in where]
    return metrics.paired_difference([a[a_key][k] for k, _ in pairs],
                                     [b[b_key][j] for _, j in pairs], samples, seed, LEVEL)


def comparisons(rnd_sets: Dict[str, Any], base_sets: Optional[Dict[str, Any]], samples: int,
                seed: int) -> Dict[str, Dict[str, Any]]:
    """{set: {comparison: {"n", "diff", "ci", "excludes_zero"}}} of one round
    (`COMPARISONS`; against the base only where round 0 measured that set)."""
    out: Dict[str, Dict[str, Any]] = {}
    for name, own in rnd_sets.items():
        row = {}
        for key, _, a_key, side, b_key in COMPARISONS:
            other = own if side == "same" else (base_sets or {}).get(name)
            if other is None or a_key not in own or b_key not in other:
                continue
            row[key] = _paired(own, a_key, other, b_key, samples, seed)
        out[name] = row
    return out


def _sets(base: Dict[str, Any], rounds: List[Dict[str, Any]]) -> List[str]:
    names: List[str] = []
    for d in [base.get("benchmarks")] + [r.get("benchmarks") for r in rounds]:
        names += [n for n in (d or {}) if n not in names]
    return names


def build_report(run_dir: str, plan) -> Dict[str, Any]:
    """The report dict from whatever stages of `plan` have finished."""
    by_round: Dict[int, List[tuple]] = {}
    cfg_of: Dict[int, Any] = {}
    for s in plan:
        by_round.setdefault(s.round, []).append((s.round, s.name))
        cfg_of.setdefault(s.round, s.cfg)
    total_wall = 0.0
    notes: List[str] = []
    base_details: Dict[str, Any] = {}
    base_metrics, wall = _merged_metrics(run_dir, by_round.get(0, []), notes, base_details)
    total_wall += wall
    base_sets = _correctness(run_dir, 0) if 0 in by_round else None
    rounds = []
    for rnd in sorted(r for r in by_round if r > 0):
        details: Dict[str, Any] = {}
        metrics_, wall = _merged_metrics(run_dir, by_round[rnd], notes, details)
        total_wall += wall
        own = _correctness(run_dir, rnd)
        cfg = cfg_of[rnd]
        rounds.append({"round": rnd, **{k: metrics_.get(k) for k in ROUND_KEYS},
                       "protocol": details.get("protocol"),
                       "ppm_margins": details.get("ppm_margins"),
                       "ppm_pairs": details.get("ppm_pairs"),
                       "benchmarks": details.get("benchmarks"),
                       "comparisons": None if own is None else comparisons(
                           own, base_sets, cfg.eval.bootstrap_samples, cfg.seed)})
    first = cfg_of[min(cfg_of)] if cfg_of else None
    base = {"greedy_acc": base_metrics.get("greedy_acc"),
            "benchmarks": base_details.get("benchmarks")}
    return {"run_name": plan[0].cfg.run_name if plan else None,
            "base": base, "rounds": rounds, "sets": _sets(base, rounds),
            "intervals": None if first is None else {
                "method": "paired bootstrap over problems", "level": LEVEL,
                "samples": first.eval.bootstrap_samples, "seed": first.seed},
            "protocols": _protocols(rounds), "wall_s": round(total_wall, 3), "notes": notes}


def _rounds_text(rounds: Sequence[int]) -> str:
    rs = sorted(rounds)
    if len(rs) > 1 and rs == list(range(rs[0], rs[-1] + 1)):
        return f"rounds {rs[0]}-{rs[-1]}"
    return ("round " if len(rs) == 1 else "rounds ") + ", ".join(str(r) for r in rs)


def _search_text(g: Dict[str, Any]) -> str:
    """The MCTS budget of one test problem in words."""
    if g.get("mode") == "runs":
        return (f"{g['runs']} independent runs of {g['rollouts']} rollouts (each run's best "
                f"trajectory by PPM score is one candidate)")
    return f"one tree of {g['rollouts']} rollouts"


def compute_lines(report: Dict[str, Any]) -> List[str]:
    """MCTS+PPM's measured compute per test problem, per round and set."""
    out = []
    for r in report.get("rounds") or []:
        parts = []
        for name, m in (r.get("benchmarks") or {}).items():
            if (m or {}).get("mcts_avg_rollouts") is not None:
                parts.append(f"{name}: {m['mcts_avg_rollouts']:.1f} rollouts, "
                             f"{m.get('mcts_avg_tokens') or 0:.0f} generated tokens")
        if parts:
            out.append(f"MCTS+PPM compute per problem, round {r['round']}: " + "; ".join(parts) + ".")
    return out


def protocol_lines(report: Dict[str, Any]) -> List[str]:
    """The evaluation protocol(s) in words, one line per group of rounds."""
    out = []
    for g in report.get("protocols") or []:
        out.append(
            f"Evaluation protocol ({_rounds_text(g['rounds'])}): MCTS+PPM with {_search_text(g)} "
            f"x {g['candidates']} candidates per step, PPM values for new leaves "
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


def _pp(v: Optional[float]) -> str:
    """A difference of fractions in percentage points."""
    return "-" if v is None else f"{100 * v:+.1f}"


def _interval(c: Dict[str, Any]) -> str:
    return "-" if not c.get("ci") else f"[{_pp(c['ci'][0])}, {_pp(c['ci'][1])}]"


def benchmark_markdown(report: Dict[str, Any]) -> List[str]:
    """Per-round accuracy with one column per evaluation set (the paper's
    Table 6 layout): greedy rows (base, rounds) and MCTS+PPM rows."""
    sets = report.get("sets") or []
    if not sets:
        return []

    def cell(d, key):
        v = (d or {}).get(key)
        return "-" if v is None else f"{_pct(v)} (n={d['n']})"

    rows = ["| base | greedy | " + " | ".join(cell((report["base"].get("benchmarks") or {}).get(n),
                                                    "greedy_acc") for n in sets) + " |"]
    for key, label in (("greedy_acc", "greedy"), ("mcts_ppm_acc", "MCTS+PPM")):
        for r in report["rounds"]:
            rows.append(f"| {r['round']} | {label} | " + " | ".join(
                cell((r.get("benchmarks") or {}).get(n), key) for n in sets) + " |")
    return ["## Accuracy per evaluation set", "",
            "Percent correct (n: problems). `test`: the run's own held-out test problems; the "
            "others: `eval.benchmarks`.", "",
            "| round | method | " + " | ".join(sets) + " |", "|" + "---|" * (len(sets) + 2),
            *rows, ""]


def comparison_rows(report: Dict[str, Any]) -> List[tuple]:
    """(round, set, label, comparison dict) of every paired comparison."""
    labels = {key: label for key, label, *_ in COMPARISONS}
    out = []
    for r in report["rounds"]:
        for name, row in (r.get("comparisons") or {}).items():
            for key, c in row.items():
                out.append((r["round"], name, labels[key], c))
    return out


def comparisons_markdown(report: Dict[str, Any]) -> List[str]:
    """The paired differences with their intervals, and which exclude zero."""
    rows = comparison_rows(report)
    if not rows:
        return []
    iv = report.get("intervals") or {}
    table = [f"| {rnd} | {name} | {label} | {c['n']} | {_pp(c['diff'])} | {_interval(c)} | "
             f"{'-' if c['excludes_zero'] is None else ('yes' if c['excludes_zero'] else 'no')} |"
             for rnd, name, label, c in rows]
    clear = [f"round {rnd} {name} {label} ({_pp(c['diff'])} points, n={c['n']})"
             for rnd, name, label, c in rows if c["excludes_zero"]]
    return ["## Paired differences", "",
            f"Each comparison is the mean per-problem difference of two methods on the same "
            f"problems (percentage points), with a {100 * iv.get('level', LEVEL):.0f}% interval "
            f"({iv.get('method', 'paired bootstrap')}: {iv.get('samples')} resamples, seed "
            f"{iv.get('seed')}); n: problems compared. A difference whose "
            "interval holds zero is not told apart from noise at this n.", "",
            "| round | set | comparison | n | difference | 95% interval | excludes 0 |",
            "|" + "---|" * 7, *table, "",
            ("Intervals excluding zero: " + "; ".join(clear) + "." if clear
             else "No interval excludes zero."), ""]


def ppm_pairs_lines(report: Dict[str, Any]) -> List[str]:
    """Where each round's `ppm pairs` accuracy was measured."""
    out = []
    for r in report["rounds"]:
        p = r.get("ppm_pairs")
        if not p or r.get("ppm_pair_acc") is None:
            continue
        where = p.get("measured_on")
        if where == "held_out_problems":
            text = (f"{p['pairs']} pairs of {p['problems']} problems held out of PPM training "
                    f"(evolve.ppm_heldout {p['heldout_share']})")
        elif where == "held_out_records":
            text = f"{p['pairs']} pair records held out of PPM training (train.eval_fraction)"
        else:
            text = "the last training window (pairs the PPM trained on; evolve.ppm_heldout 0)"
        out.append(f"Round {r['round']} PPM pair accuracy: on {text}.")
    return out


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


def _first_set(report: Dict[str, Any]) -> str:
    sets = report.get("sets") or []
    if not sets:
        return "the held-out test set"
    n = next((d[sets[0]]["n"] for d in [report["base"].get("benchmarks")]
              + [r.get("benchmarks") for r in report["rounds"]] if d and sets[0] in d), None)
    return f"`{sets[0]}` (n={n})"


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
        "(paper Table 2). `greedy`, `mcts+ppm`: policy and policy+PPM accuracy on "
        f"{_first_set(report)} (Tables 3, 6; every set below). `ppm pairs`: PPM pair accuracy "
        "(where measured: below). `majority`, `ppm-selected`: answer choice among `traj` "
        "trajectories per problem vs greedy.", "",
        head, sep, *rows, "",
        *ppm_pairs_lines(report), "",
        *benchmark_markdown(report),
        *comparisons_markdown(report),
        *protocol_lines(report), *compute_lines(report), "",
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
        for rnd, name, label, c in comparison_rows(report):
            echo(f"round {rnd} {name}: {label} {_pp(c['diff'])} points, 95% interval "
                 f"{_interval(c)}, n={c['n']}" + (" (excludes 0)" if c["excludes_zero"] else ""))
        for line in protocol_lines(report) + compute_lines(report):
            echo(line)
        for note in report["notes"]:
            echo(f"note: {note}")
    return report
