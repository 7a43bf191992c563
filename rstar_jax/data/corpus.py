"""A seeded corpus of imperfect step-format solutions (the demo's pretraining text).

The demo's base model is trained from scratch on this corpus, standing in for
the paper's pretrained base model: it must learn the step format (spec
section 2) but start *weak*. Two kinds of imperfection, both keeping the
program's output and the boxed answer consistent with the (wrong) code,
exactly as a fallible model's trajectory would be:

*Habits* (`habits`, per operation kind): with probability `habits[kind]`
every step of that kind is written as its systematic wrong twin. A habit
above one half is the corpus's *majority* way of writing that step, so a
model that learned the corpus well decodes it greedily: the base model fails
the problems that need that operation however long it trains, while
sampling (and MCTS with gold-answer verification) still finds the correct
step often enough. That is the gap self-evolution closes: trained on its own
verified trajectories, the policy's greedy choice flips to the correct step
(the paper's "wrong habits of the base model", at toy scale). Majority vote
over sampled answers follows the habit too, which a PPM trained on step
pairs can see through.

*Slips*: a per-level share of the solutions carries one random mistake:

  wrong_op       the operation's systematic wrong twin (a percentage kept
                 instead of removed, a quotient instead of a remainder,
                 + for -, ...);
  wrong_operand  a distractor number (or the start) copied instead of the
                 operation's own number;
  skip           the step is left out;
  off_by_one     the operand is one too large or too small.

Slips land preferentially on the hard operations (percentages, remainders,
division).

Each record is `{"query", "response", "correct", "level", "error",
"habits"}` (`habits`: how many steps drew their wrong twin; a slip on one of
them replaces it), the same `query`/`response` layout as the reference's SFT
files.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from rstar_jax.data import prompts
from rstar_jax.data.arith import FINAL_MOD, LEVELS, ArithItem, apply_op, generate_items, op_code

ERROR_KINDS = ("wrong_op", "wrong_operand", "skip", "off_by_one")
# Per-level probability that a solution holds one mistake (levels 1..4).
DEFAULT_ERROR_RATES = (0.15, 0.3, 0.5, 0.7)
# How much more likely a mistake lands on each kind of step.
_HARDNESS = {"add": 1.0, "sub": 1.0, "mul": 1.5, "div": 2.5, "pct": 4.0, "mod": 4.0}
_WRONG_TWIN = {"add": "sub", "sub": "add", "mul": "add", "div": "mul", "pct": "keep_pct", "mod": "div"}


@dataclass(frozen=True)
class Step:
    """One solution step: a comment (copied from the question) and a code line."""

    comment: str
    code: str


def _twin_code(kind: str, n: int) -> Tuple[str, str]:
    """(code, semantics kind) of an operation's systematic wrong twin."""
    twin = _WRONG_TWIN[kind]
    if twin == "keep_pct":
        return f"x = x * {n} // 100", "keep_pct"
    return op_code(twin, n), twin


def _run(start: int, ops: Sequence[Tuple[str, int]]) -> int:
    """Executes a (possibly wrong) solution's operations exactly."""
    x = start
    for kind, n in ops:
        x = x * n // 100 if kind == "keep_pct" else apply_op(kind, x, n)
    return x


def _choose_error_step(rng: random.Random, item: ArithItem) -> int:
    weights = [_HARDNESS[op.kind] for op in item.ops]
    return rng.choices(range(len(item.ops)), weights=weights, k=1)[0]


def solution_steps(
    item: ArithItem, rng: Optional[random.Random] = None, error: Optional[str] = None,
    twins: Sequence[int] = (),
) -> Tuple[List[Step], int]:
    """The steps of a solution of `item` and the value its code prints.

    With `error` set (one of `ERROR_KINDS`), one operation chosen by `rng`
    (weighted towards hard operations) is made wrong in that way. The
    operations whose indices are in `twins` are written as their systematic
    wrong twin (habits; a slip on the same step replaces it).
    """
    bad = _choose_error_step(rng, item) if error else -1
    steps = [Step(item.start_sentence[:-1], f"x = {item.start}")]
    executed: List[Tuple[str, int]] = []
    for i, op in enumerate(item.ops):
        kind, n, code = op.kind, op.n, op_code(op.kind, op.n)
        if i in twins and i != bad:
            code, kind = _twin_code(op.kind, n)
        if i == bad:
            if error == "skip":
                continue
            if error == "wrong_op":
                code, kind = _twin_code(op.kind, n)
            elif error == "wrong_operand":
                pool = list(item.distractors) or [item.start]
                n = rng.choice(pool)
                code = op_code(kind, n)
            elif error == "off_by_one":
                n = n + 1 if n <= 2 or rng.random() < 0.5 else n - 1
                code = op_code(kind, n)
            else:
                raise ValueError(f"unknown error kind {error!r}")
        steps.append(Step(op.sentence[:-1], code))
        executed.append((kind, n))
    return steps, _run(item.start, executed)


def render_solution(steps: Sequence[Step], value: int) -> str:
    """The exact step-format response text (spec section 2) for these steps."""
    parts = [
        f"\n\n# Step {i}: {s.comment}\n{s.code}\n{prompts.END_OF_STEP}" for i, s in enumerate(steps, 1)
    ]
    body = "".join(parts)[2:]  # the first step follows `<code>\n` directly
    return (
        f"{prompts.CODE}\n{body}\n\n# Now print the final answer\nprint(x)\n{prompts.END_OF_CODE}"
        f"{prompts.observation_suffix(str(value))}"
        f"\n{prompts.ANSWER}The answer is \\boxed{{{value}}}.{prompts.END_OF_ANSWER}"
    )


def _rates_by_level(error_rates: Sequence[float]) -> Dict[int, float]:
    if len(error_rates) != len(LEVELS):
        raise ValueError(f"need one error rate per level {LEVELS}, got {list(error_rates)}")
    for r in error_rates:
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"error rates must lie in [0, 1], got {r}")
    return dict(zip(LEVELS, error_rates))


def _check_habits(habits: Mapping[str, float]) -> None:
    for kind, rate in habits.items():
        if kind not in _WRONG_TWIN:
            raise ValueError(f"habit for unknown operation kind {kind!r}; expected one of "
                             f"{sorted(_WRONG_TWIN)}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"habit rates must lie in [0, 1], got {kind}: {rate}")


def make_corpus(
    seed: int,
    count: int,
    levels: Sequence[int] = LEVELS,
    error_rates: Sequence[float] = DEFAULT_ERROR_RATES,
    habits: Optional[Mapping[str, float]] = None,
    final_mod: float = FINAL_MOD,
) -> List[Mapping[str, object]]:
    """`count` solved problems of stream `seed`, imperfect as the module says.

    Args:
      seed: the corpus's problem stream; use one distinct from the train and
        test streams, so the base model never sees the problems it is
        evaluated on.
      count: number of records.
      levels: difficulty levels, cycling.
      error_rates: per level 1..4, the share of solutions with one slip.
      habits: per operation kind, the probability that a step of that kind
        is written as its wrong twin (drawn per step).
      final_mod: share of level-4 problems ending with a remainder question
        (arith.make_item).
    """
    rates = _rates_by_level(error_rates)
    habits = dict(habits or {})
    _check_habits(habits)
    records = []
    for item in generate_items(seed, count, levels, final_mod):
        rng = random.Random(f"corpus:{seed}:{item.index}")
        error = rng.choice(ERROR_KINDS) if rng.random() < rates[item.level] else None
        # A separate stream for habits keeps the slips of a habit-free corpus
        # unchanged (same seed, same records).
        hrng = random.Random(f"habits:{seed}:{item.index}")
        twins = [i for i, op in enumerate(item.ops) if hrng.random() < habits.get(op.kind, 0.0)]
        steps, value = solution_steps(item, rng, error, twins)
        records.append({
            "query": item.question,
            "response": render_solution(steps, value),
            "correct": value == item.answer,
            "level": item.level,
            "error": error,
            "habits": len(twins),
        })
    return records
