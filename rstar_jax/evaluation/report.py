"""Evaluation summaries: JSON, a markdown table and PNG plots.

A benchmark summary is computed from its stored ProblemResults alone:
`accuracy` grades each problem's `chosen` answer (the method's own answer
choice), with a seeded bootstrap 95% interval; `first`, `maj@k`, `best@k`,
`weighted@k` and unbiased `pass@k` re-score the candidates as `aggregate`
does; the accuracy-vs-trajectories curve is Figure 3 of the paper; the
average generated tokens per problem is Table 9's figure (with the average
rollouts, the compute per problem); MATH500 also gets
per-level and per-subject accuracy.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

from rstar_jax.evaluation import metrics
from rstar_jax.evaluation.results import ProblemResult, write_json_atomic


def _samples(r: ProblemResult) -> metrics.Samples:
    gold = tuple(r.gold) if isinstance(r.gold, list) else r.gold
    return metrics.Samples(gold, tuple(r.preds),
                           None if r.scores is None else tuple(float(s) for s in r.scores))


def benchmark_summary(
    benchmark: str,
    method: str,
    results: Sequence[ProblemResult],
    *,
    k: Optional[int] = None,
    grade: Optional[metrics.Grade] = None,
    equiv: Optional[metrics.Equiv] = None,
    levels: Optional[Dict[str, Dict[str, object]]] = None,
    bootstrap_samples: int = 1000,
    seed: int = 0,
) -> Dict[str, object]:
    """All numbers of one benchmark (percent), JSON-ready."""
    cg = metrics.CachedGrader(grade)
    usable = [r for r in results if r.gold is not None]
    correct = [float(cg(r.chosen, _samples(r).gold)) for r in usable]
    samples = [_samples(r) for r in usable]
    per = [metrics.problem_metrics(s, k, cg, equiv) if s.preds else
           {m: 0.0 for m in metrics.METRICS} for s in samples]
    out: Dict[str, object] = {
        "benchmark": benchmark,
        "method": method,
        "n": len(usable),
        "k": k,
        "accuracy": round(100.0 * metrics.mean(correct), 4) if correct else None,
        "answered": sum(r.chosen is not None for r in results),
        "warnings": [],
    }
    if results and out["answered"] == 0:
        out["warnings"].append(
            f"no answer was extracted from any of the {len(results)} problems (every "
            "prediction is None): the model's output is not in the step format; read the "
            "outputs in results.jsonl")
    if correct and bootstrap_samples:
        lo, hi = metrics.bootstrap_ci(correct, bootstrap_samples, seed)
        out["accuracy_ci"] = [round(100.0 * lo, 4), round(100.0 * hi, 4)]
    out.update(metrics.summarize(per, bootstrap_samples=0))
    toks = [r.generated_tokens for r in results]
    out["avg_generated_tokens"] = round(metrics.mean(toks), 2) if toks else None
    # The compute per problem beside the tokens: search rollouts over all its
    # trees (an MCTS+PPM problem's runs x rollouts; a baseline path is one).
    rolls = [r.meta["rollouts"] for r in results if "rollouts" in r.meta]
    out["avg_rollouts"] = round(metrics.mean(rolls), 2) if rolls else None
    out["avg_candidates"] = round(metrics.mean([len(r.preds) for r in results]), 2) if results \
        else None
    out["curve"] = metrics.accuracy_vs_trajectories([s for s in samples if s.preds], None,
                                                    cg, equiv)
    if levels is not None:
        keys = [[r.question, str(r.meta.get("unique_id", "")), r.id] for r in usable]
        out["breakdown"] = metrics.breakdown(keys, correct, levels)
    return out


def ppm_margins(results: Sequence[ProblemResult], grade: Optional[metrics.Grade] = None,
                *, level_key: str = "level") -> Dict[str, Dict[str, object]]:
    """Where the PPM fails: per level, how it scores right against wrong answers.

    Over each problem's scored candidates that carry an answer, a problem
    is *mixed* when some are right and some wrong; its margin is the best
    right candidate's PPM score minus the best wrong one's (> 0: the PPM's
    top choice is right). Per level (`meta[level_key]`, "?" when absent)
    and over all (`"all"`): `problems` (with scores), `mixed`, `mean_margin`
    and `median_margin` over mixed problems, `right_first` (share of mixed
    problems whose top-scored candidate is right), and `all_right` /
    `all_wrong` (problems where the choice cannot matter). None where no
    problem is mixed.
    """
    cg = metrics.CachedGrader(grade)
    groups: Dict[str, List[tuple]] = {}
    for r in results:
        if r.gold is None or r.scores is None:
            continue
        gold = tuple(r.gold) if isinstance(r.gold, list) else r.gold
        scored = [(float(s), cg(p, gold)) for p, s in zip(r.preds, r.scores) if p is not None]
        level = r.meta.get(level_key)
        level = "?" if level is None else str(level)
        for key in (level, "all"):
            groups.setdefault(key, []).append(tuple(scored))
    out: Dict[str, Dict[str, object]] = {}
    for key in sorted(groups, key=lambda k: (k == "all", k)):
        margins, first = [], []
        right = wrong = 0
        for scored in groups[key]:
            good = [s for s, ok in scored if ok]
            bad = [s for s, ok in scored if not ok]
            if good and bad:
                margins.append(max(good) - max(bad))
                first.append(max(good) > max(bad))
            elif good:
                right += 1
            elif bad:
                wrong += 1
        out[key] = {
            "problems": len(groups[key]), "mixed": len(margins), "all_right": right,
            "all_wrong": wrong,
            "mean_margin": round(float(sum(margins) / len(margins)), 4) if margins else None,
            "median_margin": round(float(_median(margins)), 4) if margins else None,
            "right_first": round(sum(first) / len(first), 4) if first else None,
        }
    return out


def _median(xs: Sequence[float]) -> float:
    ys = sorted(xs)
    mid = len(ys) // 2
    return ys[mid] if len(ys) % 2 else (ys[mid - 1] + ys[mid]) / 2


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def markdown_table(summaries: Sequence[Dict[str, object]]) -> str:
    """One row per benchmark; accuracy with its interval, then the re-scores."""
    head = ("| benchmark | method | n | accuracy | 95% CI | first | maj@k | best@k | weighted@k "
            "| pass@k | avg tokens | avg rollouts |")
    lines = [head, "|" + "---|" * 12]
    for s in summaries:
        ci = s.get("accuracy_ci")
        ci_txt = f"[{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "-"
        lines.append(
            f"| {s['benchmark']} | {s['method']} | {s['n']} | {_fmt(s['accuracy'])} | {ci_txt} "
            f"| {_fmt(s.get('first'))} | {_fmt(s.get('maj@k'))} | {_fmt(s.get('best@k'))} "
            f"| {_fmt(s.get('weighted@k'))} | {_fmt(s.get('pass@k'))} "
            f"| {_fmt(s.get('avg_generated_tokens'))} | {_fmt(s.get('avg_rollouts'))} |")
    for s in summaries:
        lines += [f"\n**Warning ({s['benchmark']}):** {w}" for w in s.get("warnings") or ()]
    for s in summaries:
        bd = s.get("breakdown")
        if not bd:
            continue
        for field in ("level", "subject"):
            lines += ["", f"**{s['benchmark']} by {field}**", "", f"| {field} | n | accuracy |",
                      "|---|---|---|"]
            lines += [f"| {name} | {v['n']} | {v['accuracy']:.1f} |"
                      for name, v in bd[field].items()]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(summaries: Sequence[Dict[str, object]], path: str) -> None:
    """Bar chart of accuracy per benchmark with the bootstrap interval."""
    plt = _pyplot()
    names = [s["benchmark"] for s in summaries]
    acc = [s["accuracy"] or 0.0 for s in summaries]
    err = [[a - (s.get("accuracy_ci") or [a, a])[0] for a, s in zip(acc, summaries)],
           [(s.get("accuracy_ci") or [a, a])[1] - a for a, s in zip(acc, summaries)]]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names)), 3.5))
    ax.bar(names, acc, yerr=err, capsize=4, color="tab:blue")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{summaries[0]['method'] if summaries else ''}: accuracy, 95% bootstrap CI")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curve(summary: Dict[str, object], path: str) -> None:
    """Accuracy vs number of trajectories (paper Figure 3)."""
    plt = _pyplot()
    curve: List[Dict[str, object]] = summary.get("curve") or []  # type: ignore[assignment]
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for m, style in (("best@k", "o-"), ("weighted@k", "s--"), ("maj@k", "^-."),
                     ("pass@k", "x:")):
        pts = [(row["n"], row[m]) for row in curve if row.get(m) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=m.replace("@k", "@n"))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("trajectories per problem")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{summary['benchmark']} ({summary['method']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_breakdown(summary: Dict[str, object], path: str) -> None:
    """Accuracy per MATH level and per subject, side by side."""
    plt = _pyplot()
    bd = summary["breakdown"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, field in zip(axes, ("level", "subject")):
        names = list(bd[field])
        ax.bar(names, [bd[field][n]["accuracy"] for n in names], color="tab:green")
        ax.set_ylim(0, 100)
        ax.set_title(f"{summary['benchmark']} by {field}")
        ax.tick_params(axis="x", rotation=45)
    axes[0].set_ylabel("accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(out_dir: str, summaries: Sequence[Dict[str, object]]) -> Dict[str, str]:
    """Writes summary.json, report.md and PNGs under `out_dir`; returns paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "summary.json"),
             "markdown": os.path.join(out_dir, "report.md")}
    write_json_atomic(paths["json"], {"benchmarks": list(summaries)})
    method = summaries[0]["method"] if summaries else ""
    with open(paths["markdown"], "w", encoding="utf-8") as f:
        f.write(f"# Evaluation: {method}\n\n" + markdown_table(summaries))
    if summaries:
        paths["accuracy_png"] = os.path.join(out_dir, "accuracy.png")
        plot_accuracy(summaries, paths["accuracy_png"])
    for s in summaries:
        bdir = os.path.join(out_dir, str(s["benchmark"]))
        os.makedirs(bdir, exist_ok=True)
        if s.get("curve"):
            paths[f"{s['benchmark']}_curve_png"] = os.path.join(bdir, "trajectories.png")
            plot_curve(s, paths[f"{s['benchmark']}_curve_png"])
        if s.get("breakdown"):
            paths[f"{s['benchmark']}_breakdown_png"] = os.path.join(bdir, "breakdown.png")
            plot_breakdown(s, paths[f"{s['benchmark']}_breakdown_png"])
    return paths
