"""Paper-style tables and plots from one or more evaluation directories.

Used by `notebooks/evaluation_report.ipynb`; kept here so the notebook only
calls functions and the numbers are tested. A run is what
`rstar-jax evaluate` wrote: `run.json` + `summary.json` (+ per-benchmark
`results.jsonl`).
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

from rstar_jax.data.benchmarks import PAPER_BENCHMARKS

# The paper's column names (Table 5 / Table 9).
COLUMN_NAMES = {"math500": "MATH", "aime2024": "AIME 2024", "amc23": "AMC 2023",
                "olympiadbench": "Olympiad Bench", "collegemath": "College Math",
                "gsm8k": "GSM8K", "gaokao2023en": "GaoKao 2023 En", "omnimath": "Omni-MATH"}


def load_run(eval_dir: str, label: Optional[str] = None) -> Dict[str, object]:
    """{"label", "dir", "method", "summaries": {benchmark: summary}}."""
    with open(os.path.join(eval_dir, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    run_path = os.path.join(eval_dir, "run.json")
    run = {}
    if os.path.isfile(run_path):
        with open(run_path, encoding="utf-8") as f:
            run = json.load(f)
    sums = {s["benchmark"]: s for s in summary["benchmarks"]}
    method = run.get("method") or next((s["method"] for s in sums.values()), "?")
    return {"label": label or f"{method} ({os.path.basename(os.path.normpath(eval_dir))})",
            "dir": eval_dir, "method": method, "summaries": sums}


def benchmarks_of(runs: Sequence[Dict[str, object]]) -> List[str]:
    present = {b for r in runs for b in r["summaries"]}
    ordered = [b for b in PAPER_BENCHMARKS if b in present]
    return ordered + sorted(present - set(ordered))


def _table(runs, field: str, title: str, digits: int, average: bool) -> str:
    benches = benchmarks_of(runs)
    head = [title] + [COLUMN_NAMES.get(b, b) for b in benches] + (["Avg."] if average else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        vals = [r["summaries"].get(b, {}).get(field) for b in benches]
        cells = ["-" if v is None else f"{v:.{digits}f}" for v in vals]
        if average:
            have = [v for v in vals if v is not None]
            cells.append(f"{sum(have) / len(have):.{digits}f}" if have else "-")
        lines.append("| " + " | ".join([str(r["label"])] + cells) + " |")
    return "\n".join(lines) + "\n"


def accuracy_table(runs: Sequence[Dict[str, object]], field: str = "accuracy") -> str:
    """Methods x benchmarks accuracy (%), the paper's Table 5 layout."""
    return _table(runs, field, "Method", 1, average=True)


def tokens_table(runs: Sequence[Dict[str, object]]) -> str:
    """Average generated tokens per problem (the paper's Table 9)."""
    return _table(runs, "avg_generated_tokens", "Method", 0, average=False)


def level_table(runs: Sequence[Dict[str, object]], benchmark: str = "math500") -> str:
    """Accuracy per MATH difficulty level, one row per run."""
    levels = sorted({lv for r in runs
                     for lv in (r["summaries"].get(benchmark, {}).get("breakdown") or {})
                     .get("level", {})})
    lines = ["| Method | " + " | ".join(f"Level {lv}" for lv in levels) + " |",
             "|" + "---|" * (len(levels) + 1)]
    for r in runs:
        bd = (r["summaries"].get(benchmark, {}).get("breakdown") or {}).get("level", {})
        cells = [f"{bd[lv]['accuracy']:.1f}" if lv in bd else "-" for lv in levels]
        lines.append("| " + " | ".join([str(r["label"])] + cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(runs: Sequence[Dict[str, object]], benchmark: str, metric: str = "best@k",
                ax=None):
    """Accuracy vs trajectories of several runs on one benchmark (Figure 3)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    for r in runs:
        curve = r["summaries"].get(benchmark, {}).get("curve") or []
        pts = [(row["n"], row[metric]) for row in curve if row.get(metric) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=str(r["label"]))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("trajectories per problem")
    ax.set_ylabel(f"{metric.replace('@k', '@n')} accuracy (%)")
    ax.set_title(COLUMN_NAMES.get(benchmark, benchmark))
    ax.legend(fontsize=8)
    return ax
