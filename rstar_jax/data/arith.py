"""Seeded multi-step arithmetic word problems with exact answers (the demo world).

A problem is a starting quantity followed by a chain of operations, each
stated as one short sentence, then a question. Four difficulty levels:

  1. one operation (+, -, x);
  2. two chained operations (adds exact division);
  3. three or four operations plus one or two distractor numbers;
  4. five operations mixing multiplication, division, percentages and (in
     a share `final_mod` of them, half by default) a final remainder, plus
     distractors.

Every item is a pure function of (seed, index): a `random.Random` seeded by
the string "arith:{seed}:{index}" (string seeds hash with SHA-512, stable
across runs and platforms). The structured form (`ArithItem`) is what the
corpus writer (`corpus.py`) turns into step-format solutions; search and
evaluation only see the `Problem`. The vocabulary is deliberately small (six
names, six items, a dozen verbs) so a tokenizer of a few hundred symbols and
a model of well under a million parameters can read it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from rstar_jax.data.problems import Problem

LEVELS = (1, 2, 3, 4)
FINAL_MOD = 0.5  # share of level-4 problems ending with a remainder question


def _check_share(final_mod: float) -> None:
    if not 0.0 <= final_mod <= 1.0:
        raise ValueError(f"arith final_mod share must be in [0, 1], got {final_mod}")

_NAMES = (("Ann", "She"), ("Ben", "He"), ("Cal", "He"), ("Dee", "She"), ("Eva", "She"), ("Max", "He"))
_ITEMS = ("apples", "pens", "cards", "coins", "books", "eggs")

# Operation kinds allowed at each level (a kind may be drawn again).
_LEVEL_KINDS = {
    1: ("add", "sub", "mul"),
    2: ("add", "sub", "mul", "div"),
    3: ("add", "sub", "mul", "div"),
    4: ("add", "sub", "mul", "div", "pct"),
}
# Several phrasings per kind, and no phrasing twice in one problem: a step's
# comment copies its sentence, and with two identical prefixes ("She gives
# away 16. She gives away 19.") a sub-million-parameter model cannot tell
# which one it is at (measured: most level-2 failures of the demo's base
# were such copies). Distinct prefixes make each copy unambiguous.
_SENTENCES = {
    "add": ("{P} buys {n} more.", "{P} finds {n} more.", "{P} wins {n} more.",
            "{P} picks up {n} more.", "{P} is given {n} more."),
    "sub": ("{P} gives away {n}.", "{P} loses {n}.", "{P} drops {n}.", "{P} trades away {n}.",
            "{P} lends out {n}."),
    "mul": ("{P} gets {n} times as many.", "{P} ends up with {n} times as many.",
            "{P} multiplies them by {n}.", "{P} scales them up {n} times.",
            "{P} makes the pile {n} times bigger."),
    "div": ("{P} keeps 1/{n} of them.", "{P} saves 1/{n} of them.", "{P} holds on to 1/{n} of them.",
            "{P} sets aside 1/{n} of them.", "{P} puts 1/{n} of them on a shelf."),
    "pct": ("{P} sells {n}% of them.", "{P} donates {n}% of them.", "{P} spends {n}% of them.",
            "{P} gives {n}% of them to a friend.", "{P} recycles {n}% of them."),
    "mod": ("{P} packs them in boxes of {n}.",),
}
_PERCENTS = (10, 20, 25, 50, 75)
_MAX_VALUE = 999


@dataclass(frozen=True)
class Op:
    """One operation: `kind` in add|sub|mul|div|pct|mod, operand `n`."""

    kind: str
    n: int
    sentence: str


@dataclass(frozen=True)
class ArithItem:
    """The structured problem behind one question.

    `sentences` is the question text split into sentences in order (start,
    operations and distractors interleaved, then the question).
    """

    seed: int
    index: int
    level: int
    start: int
    start_sentence: str
    ops: Tuple[Op, ...]
    distractors: Tuple[int, ...]
    sentences: Tuple[str, ...]
    answer: int

    @property
    def question(self) -> str:
        return " ".join(self.sentences)

    @property
    def id(self) -> str:
        return f"arith-{self.seed}-{self.index}"


def apply_op(kind: str, x: int, n: int) -> int:
    """The exact integer semantics of one operation (matches `op_code`)."""
    if kind == "add":
        return x + n
    if kind == "sub":
        return x - n
    if kind == "mul":
        return x * n
    if kind == "div":
        return x // n
    if kind == "pct":
        return x - x * n // 100
    if kind == "mod":
        return x % n
    raise ValueError(f"unknown operation kind {kind!r}")


def op_code(kind: str, n: int) -> str:
    """The Python line a correct solution writes for one operation."""
    return {
        "add": f"x = x + {n}",
        "sub": f"x = x - {n}",
        "mul": f"x = x * {n}",
        "div": f"x = x // {n}",
        "pct": f"x = x - x * {n} // 100",
        "mod": f"x = x % {n}",
    }[kind]


def _operand(rng: random.Random, kind: str, x: int) -> Optional[int]:
    """An operand for `kind` keeping every value an exact, small, positive int."""
    if kind == "add":
        return rng.randint(2, 20)
    if kind == "sub":
        return rng.randint(1, min(20, x - 1)) if x >= 3 else None
    if kind == "mul":
        ok = [n for n in (2, 3, 4) if x * n <= _MAX_VALUE]
        return rng.choice(ok) if ok else None
    if kind == "div":
        ok = [n for n in range(2, 10) if x % n == 0 and x // n >= 2]
        return rng.choice(ok) if ok else None
    if kind == "pct":
        ok = [p for p in _PERCENTS if (x * p) % 100 == 0 and x - x * p // 100 >= 1]
        return rng.choice(ok) if ok else None
    if kind == "mod":
        ok = [n for n in range(3, 10) if x > n and x % n != 0]
        return rng.choice(ok) if ok else None
    raise ValueError(kind)


def _num_ops(rng: random.Random, level: int) -> int:
    return {1: 1, 2: 2, 3: rng.choice((3, 4)), 4: 5}[level]


def _chain(rng: random.Random, level: int, start: int, pronoun: str,
           final_mod_share: float) -> Optional[List[Op]]:
    """Draws the operations; None when the draw painted itself into a corner."""
    kinds = _LEVEL_KINDS[level]
    count = _num_ops(rng, level)
    # Level 4 ends with a remainder question in a share of its problems
    # (levels 1-3 make no such draw and do not depend on the share).
    final_mod = level == 4 and rng.random() < final_mod_share
    ops: List[Op] = []
    used: set = set()
    x = start
    for i in range(count):
        if final_mod and i == count - 1:
            choices: Sequence[str] = ("mod",)
        elif level == 4 and i == 0:
            choices = ("mul", "pct")  # the hard operations appear every time
        else:
            choices = kinds
        for _ in range(20):
            kind = rng.choice(choices)
            unused = [t for t in _SENTENCES[kind] if t not in used]
            n = _operand(rng, kind, x) if unused else None
            if n is not None:
                break
        else:
            return None
        template = rng.choice(unused)
        used.add(template)
        sentence = template.format(P=pronoun, n=n)
        ops.append(Op(kind, n, sentence))
        x = apply_op(kind, x, n)
    return ops


def make_item(seed: int, index: int, level: int, final_mod: float = FINAL_MOD) -> ArithItem:
    """The problem number `index` of stream `seed` at `level` (deterministic).

    `final_mod`: the share of level-4 problems that end with a remainder
    question ("How many ... are not in a box?"). Their answers are small
    (0 to 8), so a wrong chain of steps lands on the gold answer often; a
    search then verifies wrong trajectories as correct.
    """
    if level not in LEVELS:
        raise ValueError(f"arith level must be one of {LEVELS}, got {level}")
    _check_share(final_mod)
    rng = random.Random(f"arith:{seed}:{index}")
    name, pronoun = rng.choice(_NAMES)
    item = rng.choice(_ITEMS)
    while True:
        start = rng.randint(4, 40) if level <= 2 else rng.choice(range(12, 97, 4))
        ops = _chain(rng, level, start, pronoun, final_mod)
        if ops is not None:
            break
    start_sentence = f"{name} has {start} {item}."
    body = [start_sentence] + [op.sentence for op in ops]
    distractors: List[int] = []
    if level >= 3:
        others = [it for it in _ITEMS if it != item]
        for _ in range(rng.choice((1, 2)) if level == 3 else 1):
            d = rng.randint(2, 30)
            distractors.append(d)
            body.insert(rng.randint(1, len(body)), f"{pronoun} also has {d} {rng.choice(others)}.")
    x = start
    for op in ops:
        x = apply_op(op.kind, x, op.n)
    if ops[-1].kind == "mod":
        ask = f"How many {item} are not in a box?"
    else:
        ask = f"How many {item} does {pronoun.lower()} have now?"
    return ArithItem(
        seed=seed, index=index, level=level, start=start, start_sentence=start_sentence,
        ops=tuple(ops), distractors=tuple(distractors), sentences=tuple(body + [ask]), answer=x,
    )


def level_of(index: int, levels: Sequence[int]) -> int:
    """Levels cycle through `levels` so every prefix of a stream is balanced."""
    return levels[index % len(levels)]


def generate_items(seed: int, count: int, levels: Sequence[int] = LEVELS,
                   final_mod: float = FINAL_MOD) -> List[ArithItem]:
    """`count` structured problems of stream `seed`, levels cycling."""
    if not levels:
        raise ValueError("arith levels must not be empty")
    return [make_item(seed, i, level_of(i, levels), final_mod) for i in range(count)]


def to_problem(item: ArithItem) -> Problem:
    """The `Problem` the rest of the system sees (gold answer as a string)."""
    return Problem(
        id=item.id, question=item.question, answer=str(item.answer),
        meta={"level": item.level, "seed": item.seed, "index": item.index},
    )


def generate_problems(seed: int, count: int, levels: Sequence[int] = LEVELS,
                      final_mod: float = FINAL_MOD) -> List[Problem]:
    """`count` problems of stream `seed` (ids `arith-{seed}-{index}`)."""
    return [to_problem(it) for it in generate_items(seed, count, levels, final_mod)]
