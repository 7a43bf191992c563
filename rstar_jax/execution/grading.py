"""Mathematical equivalence of a predicted and a gold answer (spec section 8).

First both sides are prepared (`prepare`, string work in `forms`): a
response is cut to its answer (its `\\boxed{}`, adjacent boxes joined as
one list, else the math after "answer is" in prose), relations are spelt
the LaTeX way (`x != 5` is `x \\neq 5`), `\\langle a, b\\rangle` is `(a, b)`,
degrees inside trig functions are radians, `f(x) = 2x` is `2x`.
Then stages, cheapest first:
1. Normalised strings equal (`\\dfrac`->`\\frac`, `\\frac13`->`\\frac{1}{3}`,
   `\\left`/`\\right`, `\\!`, spacing except between digits, `$`,
   `\\text{}`, a trailing full stop): exact and free.
2. Quantities (`forms.parse_quantity`: integers, decimals with or without
   thousands commas, `a/b`, `\\frac{a}{b}`, scientific notation, mixed
   numbers `1 1/2`, a `%` / `\\%` / `percent`, a leading `\\$`, a trailing
   unit word) compared with relative tolerance 1e-4 (the reference
   grader's `isclose(rel_tol=1e-4)`); units must agree when both sides have
   one (`10 weeks` is not `10 days`, but is `10`). Clock times compare as
   seconds (`20:34:00` is `20:34`). Percentages: when EITHER side carries a
   percent sign, the value with and without the `/100` counts, so gold
   `50\\%` equals `50`, `0.5` and `50%`. Unlike the reference we do not try
   x100 / /100 on bare numbers, which would make gold `2` equal `200`. When
   both sides are quantities (or both clock times) this stage is final: a
   mismatch is unequal without calling sympy. A side with `, ` is a list,
   never a number with a thousands comma.
3. math-verify (`parse` then `verify(gold, pred)`) on both strings wrapped
   in `\\boxed{}`: fractions, intervals, tuples, sets, matrices, symbolic
   expressions, equations (`x=3` equals `3`), LaTeX; it can only say
   "equal". When it says "unequal", `closeness.approx_equal` tries the
   parsed pair once more with the 1e-4 tolerance at every leaf of the same
   structure (a decimal against `\\sqrt3`, matrices against vectors,
   approximate interval ends), `i` as the imaginary unit, and trigonometric
   identities. Tuples stay ordered and sets unordered throughout.

Gold-first: `verify` is asymmetric, the gold goes first. A list gold counts
when any element matches. Sympy can hang, so stage 3 runs under a timeout:
math-verify's SIGALRM timer on the main thread (parse, verify and
`approx_equal` each get `timeout_s`); off the main thread (where signals
cannot be used) the whole stage runs in a daemon thread the caller stops
waiting for. For a hard, killable limit in bulk, `grade_many(pairs, pool)`
runs in the sandboxed pool's processes. Garbage in never raises: it is
logged and graded False; so is an answer over `MAX_ANSWER_CHARS` (2000)
normalised characters, which no benchmark answer comes near, and any input
over `MAX_RESPONSE_CHARS`, which is not read at all.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from fractions import Fraction
from typing import Iterable, Optional, Sequence, Tuple, Union

from rstar_jax.execution.answers import unwrap_text
from rstar_jax.execution.forms import (
    Quantity,
    answer_from_text,
    braced_fractions,
    canonical_relations,
    function_value,
    parse_clock,
    parse_quantity,
    plain_number,
    radians_in_trig,
)

logger = logging.getLogger(__name__)

REL_TOL = 1e-4
MAX_RESPONSE_CHARS = 100_000  # a pred may be a whole response; longer is refused unread
MAX_ANSWER_CHARS = 2000  # longer "answers" are garbage (or an attack on the parser): unequal
Gold = Union[str, Sequence[str]]

_SPACE_RE = re.compile(r"\s+")
_DIGIT_SPACE_RE = re.compile(r"(\d)\s+(?=\d)")
_SQRT_SHORT_RE = re.compile(r"\\sqrt(\d)")
_LIST_COMMA_RE = re.compile(r",\s")


def normalize(s: str) -> str:
    """A canonical spelling for stage 1 (see module doc); pure string work."""
    s = str(s)
    if "\\" in s:
        s = unwrap_text(s)
        for old, new in (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""),
                         ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\displaystyle", "")):
            s = s.replace(old, new)
    s = s.strip().strip("$").strip()
    s = braced_fractions(s)
    if "\\sqrt" in s:
        s = _SQRT_SHORT_RE.sub(r"\\sqrt{\1}", s)
    if " " in s or "\n" in s or "\t" in s:  # spaces go, except between digits: `1 1/2` is not `11/2`
        s = _SPACE_RE.sub("", _DIGIT_SPACE_RE.sub("\\1\0", s)).replace("\0", " ")
    if s.endswith(".") and not s.endswith("\\."):
        s = s[:-1]
    return s.strip("$")


def parse_number(s: str) -> Optional[Tuple[Fraction, bool]]:
    """(value, had_percent_sign) for a normalised plain number, else None."""
    pct = False
    for suffix in ("\\%", "%"):
        if s.endswith(suffix):
            s, pct = s[: -len(suffix)], True
            break
    value = plain_number(s)
    return None if value is None else (value, pct)


def _close(a: Fraction, b: Fraction) -> bool:
    return math.isclose(float(a), float(b), rel_tol=REL_TOL, abs_tol=1e-12)


def numbers_equal(pred: Tuple[Fraction, bool], gold: Tuple[Fraction, bool]) -> bool:
    """Stage 2 (see module doc): tolerance and the percentage rule."""
    (p, p_pct), (g, g_pct) = pred, gold
    if p_pct or g_pct:
        preds = {p, p / 100} if p_pct else {p}
        golds = {g, g / 100} if g_pct else {g}
        return any(_close(a, b) for a in preds for b in golds)
    return _close(p, g)


def quantities_equal(pred: Quantity, gold: Quantity) -> bool:
    """Stage 2 for decorated numbers: units must agree when both sides have one."""
    if pred.unit and gold.unit and pred.unit != gold.unit:
        return False
    return numbers_equal((pred.value, pred.percent), (gold.value, gold.percent))


def prepare(s: str) -> str:
    """The answer part of `s` with relations and angle brackets canonical (module doc)."""
    s = function_value(radians_in_trig(canonical_relations(answer_from_text(str(s)))))
    if "\\langle" in s:
        s = s.replace("\\langle", "(").replace("\\rangle", ")")
    return s


def _verify(pred: str, gold: str, timeout: Optional[int]) -> bool:
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException
    from math_verify.utils import timeout as with_timeout

    from rstar_jax.execution.closeness import approx_equal

    kw = {"parsing_timeout": timeout}
    gold_parsed = parse(f"\\boxed{{{gold}}}", **kw)
    pred_parsed = parse(f"\\boxed{{{pred}}}", **kw)
    if not gold_parsed or not pred_parsed:
        return False
    if verify(gold_parsed, pred_parsed, timeout_seconds=timeout):
        return True
    try:
        return bool(with_timeout(timeout)(approx_equal)(gold_parsed[0], pred_parsed[0], top=True))
    except TimeoutException:  # a BaseException: `grade`'s handler would not see it
        logger.warning("approximate comparison timed out after %ss: pred=%.80r gold=%.80r", timeout, pred, gold)
        return False


def _fast(pred: str, gold: str) -> Optional[bool]:
    """Stages 1 and 2: a final answer from string work alone, or None."""
    p, g = normalize(pred), normalize(gold)
    if not p or not g or len(p) > MAX_ANSWER_CHARS or len(g) > MAX_ANSWER_CHARS:
        return False
    if p == g:
        return True
    if _LIST_COMMA_RE.search(pred) or _LIST_COMMA_RE.search(gold):
        return None  # `1, 234` is a list of two answers, not one thousand two hundred ...
    pq, gq = parse_quantity(pred), parse_quantity(gold)
    if pq is not None and gq is not None:
        return quantities_equal(pq, gq)
    pc, gc = parse_clock(pred), parse_clock(gold)
    if pc is not None and gc is not None:
        return pc == gc
    return None


def _grade_one(pred: str, gold: str, timeout_s: float) -> bool:
    if len(pred) > MAX_RESPONSE_CHARS or len(gold) > MAX_RESPONSE_CHARS:
        return False
    pred, gold = prepare(pred), prepare(gold)
    verdict = _fast(pred, gold)
    if verdict is not None:
        return verdict
    if threading.current_thread() is threading.main_thread():
        return _verify(pred, gold, max(1, math.ceil(timeout_s)))
    box: list = []
    worker = threading.Thread(target=lambda: box.append(_verify(pred, gold, None)), daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not box:
        logger.warning("grading timed out after %.1fs: pred=%.80r gold=%.80r", timeout_s, pred, gold)
        return False
    return box[0]


def grade(pred: str, gold: Gold, *, timeout_s: float = 5.0) -> bool:
    """Whether `pred` is mathematically equal to `gold` (or any element of it).

    Args:
      pred: the predicted answer (already extracted: see `extract_answer`).
      gold: the gold answer, or a list of acceptable gold answers.
      timeout_s: wall-clock budget per gold element (see module doc).

    Returns:
      True when equal; False when not, on timeout, or on unparseable input.
    """
    golds = [gold] if isinstance(gold, str) else list(gold or [])
    for g in golds:
        try:
            if _grade_one(str(pred), str(g), timeout_s):
                return True
        except Exception as e:  # noqa: BLE001  (sympy raises anything on garbage)
            logger.info("grading failed (%s: %s): pred=%.80r gold=%.80r", type(e).__name__, e, pred, g)
    return False


@functools.lru_cache(maxsize=65536)
def _equiv_sorted(a: str, b: str) -> bool:
    return grade(a, b) or grade(b, a)


def is_equiv(a: str, b: str) -> bool:
    """Answer-vs-answer equivalence for majority voting: symmetric and cached.

    Identical normalised strings are equal without parsing; otherwise both
    directions of `grade` are tried (math-verify is asymmetric), memoised on
    the unordered pair so voting over many candidates stays cheap.
    """
    if a is None or b is None:
        return False
    na, nb = normalize(a), normalize(b)
    if na == nb:
        return bool(na)
    return _equiv_sorted(*sorted((str(a), str(b))))


def grading_program(pred: str, gold: Gold, timeout_s: float) -> str:
    """A program that grades one pair inside the pool (its observation: True/False)."""
    gold_lit = repr(gold if isinstance(gold, str) else list(gold))
    return ("from rstar_jax.execution.grading import grade\n"
            f"grade({pred!r}, {gold_lit}, timeout_s={timeout_s!r})")


def grade_many(pairs: Iterable[Tuple[str, Gold]], executor=None, *, timeout_s: float = 5.0) -> list:
    """Grades many (pred, gold) pairs, in the pool's workers when one is given.

    In the pool each pair is a program whose wall-clock kill is the pool's
    timeout, so a hung sympy costs one worker child, never the caller.

    Returns:
      list[bool], one per pair, in order.
    """
    pairs = list(pairs)
    if executor is None:
        return [grade(p, g, timeout_s=timeout_s) for p, g in pairs]
    results = executor.run([grading_program(str(p), g, timeout_s) for p, g in pairs])
    out = []
    for (p, g), r in zip(pairs, results):
        if r.error or r.observation not in ("True", "False"):
            logger.info("pool grading failed: %s (pred=%.80r gold=%.80r)", r.observation[:200], p, g)
        out.append(r.observation == "True" and not r.error)
    return out
