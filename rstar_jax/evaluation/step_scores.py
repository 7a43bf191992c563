"""Per-step PPM scores of one solution, and the same across rounds.

Used by `notebooks/checkpoints.ipynb`: split an rStar-format solution into
its node texts exactly as the search builds them, score every prefix with
each round's PPM, and plot the curves side by side.
"""

from __future__ import annotations

import re
from typing import Dict, List, Mapping, Sequence

import numpy as np

from rstar_jax.data.prompts import (
    END_OF_ANSWER,
    END_OF_CODE,
    END_OF_OUTPUT,
    END_OF_STEP,
    policy_prompt,
)

_STOP = re.compile("(" + "|".join(re.escape(t) for t in (END_OF_STEP, END_OF_CODE,
                                                        END_OF_ANSWER)) + ")")


def split_steps(solution: str) -> List[str]:
    """Node texts of a solution: each ends at a stop tag; after
    `<end_of_code>` the system's `\\n<output>...<end_of_output>` belongs to
    the same node (spec section 2). Trailing text without a stop is a step.

    Joining the result gives back `solution` exactly.
    """
    steps: List[str] = []
    pos = 0
    while pos < len(solution):
        m = _STOP.search(solution, pos)
        if m is None:
            steps.append(solution[pos:])
            break
        end = m.end()
        if m.group(1) == END_OF_CODE:
            out_end = solution.find(END_OF_OUTPUT, end)
            if out_end != -1 and "<end_of" not in solution[end:out_end]:
                end = out_end + len(END_OF_OUTPUT)
        steps.append(solution[pos:end])
        pos = end
    return steps


def prefix_texts(question: str, steps: Sequence[str], sep: str = "\n\n") -> List[str]:
    """`[num_steps]` texts: the policy prompt with steps[:i+1] appended."""
    return [policy_prompt(question, "".join(steps[: i + 1]), sep=sep) for i in range(len(steps))]


def score_steps(scorer, question: str, steps: Sequence[str], sep: str = "\n\n") -> np.ndarray:
    """float32 `[num_steps]`: the PPM score after each step."""
    if not steps:
        return np.zeros(0, np.float32)
    return np.asarray(scorer.score(prefix_texts(question, steps, sep)), dtype=np.float32)


def compare_rounds(scorers: Mapping[str, object], question: str, steps: Sequence[str],
                   sep: str = "\n\n") -> Dict[str, np.ndarray]:
    """{round label: `[num_steps]` scores} for the same solution."""
    return {label: score_steps(s, question, steps, sep) for label, s in scorers.items()}


def plot_rounds(scores: Mapping[str, np.ndarray], ax=None, title: str = "PPM score per step"):
    """One line per round, x = step number (1-based)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    for label, s in scores.items():
        ax.plot(np.arange(1, len(s) + 1), s, "o-", label=str(label))
    ax.set_xlabel("step")
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax
