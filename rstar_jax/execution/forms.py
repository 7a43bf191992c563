"""String-level answer forms the grader reads before any parser (spec section 8).

Pure string work, no sympy, so the grader's fast path stays cheap:
- `answer_from_text`: the answer a response commits to: its `\\boxed{}`
  (several adjacent boxes joined, see `answers.extract_answer`), else, for
  prose with inline math, the first `$...$` / `\\(...\\)` / `\\[...\\]` after
  the last "answer is" / "answer:", else the last one; math joined only by
  `and` / `or` / commas (`$1$ and $2$`) is one list, `1, 2`.
- `canonical_relations`: ASCII and unicode relations (`!=`, `<>`, `>=`,
  `<=`, `=<`, `≠`, `≥`, `≤`, `\\ne`, `\\ge`, `\\le`, `\\geqslant`) spelt
  `\\neq`, `\\geq`, `\\leq`. (`=>` is left alone: it is usually "implies".)
- `parse_quantity`: a number with its decoration: scientific notation
  (`2.31\\times10^{-3}`, `2.31e-3`), a mixed number (`1 1/2`,
  `1\\frac{1}{2}`: a whole part and a PROPER fraction, else not a mixed
  number), a percent sign, a leading `\\$`, a trailing unit word
  (`10 weeks`, `5\\text{ cm}`, `90^\\circ`; `percent` and `pct` are a
  percent sign). A unit is up to three words of two letters or more set
  off by space from the number, or a word of four letters or more glued to
  it (`10weeks`); `5x` and `10cm` are not read as numbers with units here.
  Known units (`_UNITS`: time, length, mass, money, angle, with `square` /
  `cubic` / `^2`) must agree when both sides name one (`10 weeks` is not
  `10 days`, `5 cm` is `5 centimeters`); other words are ignored, as the
  reference grader strips them.
- `radians_in_trig`: `30^\\circ` inside a string with trig functions becomes
  `\\frac{30\\pi}{180}`, so `\\cos(90^\\circ - x)` is `\\sin x`.
- `function_value`: `f(x) = 2x+3` and `y = 2x+3` read as `2x+3`.
- `parse_clock`: `H:MM` or `H:MM:SS` with an optional am/pm, as seconds
  since midnight, so `20:34:00` equals `20:34` and `8:34 pm`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

from rstar_jax.execution.answers import extract_answer, unwrap_text

_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+"
_NUM_RE = re.compile(rf"[-+]?(?:{_NUM})")
_FRAC_RE = re.compile(r"^([-+]?)\\frac\{([^{}]+)\}\{([^{}]+)\}$")
_SCI_RE = re.compile(rf"^([-+]?(?:{_NUM}))(?:\\times|\\cdot|\*|×)10\^(?:\{{([-+]?\d{{1,4}})\}}|([-+]?\d))$")
_E_RE = re.compile(rf"^([-+]?(?:{_NUM}))[eE]([-+]?\d{{1,4}})$")
_MIXED_SLASH_RE = re.compile(r"^([-+]?)(\d+)\s+(\d+)\s*/\s*(\d+)$")
_MIXED_FRAC_RE = re.compile(r"^([-+]?)(\d+)\s*\\[dt]?frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))$")
_UNIT_RE = re.compile(r"^(.*?\S)\s+((?:[A-Za-z]{2,}\.?\s*){1,3})(?:\^\{?([23])\}?)?$")
_GLUED_UNIT_RE = re.compile(r"^(.*?\d)([A-Za-z]{4,})()$")  # `10weeks`: glued only when 4+ letters
_DEGREE_RE = re.compile(r"(?:\^\s*\{?\\circ\}?|°|\\degree)\s*$")
_CLOCK_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(?:([ap])\.?\s*m\.?)?$", re.IGNORECASE)
_FRAC_SHORT_RE = re.compile(r"\\frac(?:(\d)|\{([^{}]*)\})(?:(\d)|\{([^{}]*)\})")
_SPACING_RE = re.compile(r"\\[ ,;:!]|~")
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textrm|mbox|mathrm)\s*\{")
_MATH_SEGMENT_RE = re.compile(
    r"\$\$(.+?)\$\$|(?<!\\)\$(.+?)(?<!\\)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_SPACED_THOUSANDS_RE = re.compile(r"^[-+]?\d{1,3}(?: \d{3})+(?:\.\d+)?$")
_SPLIT_DIGITS_RE = re.compile(r"\d\s+[\d.]")
_ANSWER_CUE_RE = re.compile(r"answer\s*(?:is|:)", re.IGNORECASE)
_CONNECTIVES = frozenset({"and", "or", "not", "to", "than", "more", "less", "at", "least", "most", "only",
                          "both", "either", "neither", "nor", "also", "then"})
_PERCENT_WORDS = ("percent", "percentage", "pct")
_LONG_WORD_RE = re.compile(r"[A-Za-z]{4,}")
_COMMAND_RE = re.compile(r"\\[A-Za-z]+(?:\s*\{[^{}]*\})?")
_WORD_RE = re.compile(r"[A-Za-z]{2,}")
_RELATIONS = ((re.compile(r"!=|<>|≠|\\ne(?![a-zA-Z])"), r"\\neq "),
              (re.compile(r">=|≥|\\ge(?![a-zA-Z])|\\geqslant"), r"\\geq "),
              (re.compile(r"<=|=<|≤|\\le(?![a-zA-Z])|\\leqslant"), r"\\leq "))
_ANY_RELATION_RE = re.compile(r"[!<>=≠≥≤]|\\[ngl]e(?![a-zA-Z])|slant")
_TRIG_CMD_RE = re.compile(r"\\(?:sin|cos|tan|sec|csc|cot)(?![a-zA-Z])")
_DEGREES_RE = re.compile(r"(\d+(?:\.\d+)?)\s*\^\s*(?:\{\s*\\circ\s*\}|\\circ)")
_FUNCTION_DEF_RE = re.compile(r"^\s*(?:[a-zA-Z]\s*\(\s*[a-z]\s*\)|y)\s*=\s*(?=\S)")
_UNITS = {  # spelling -> canonical unit; only these are compared, other words are ignored
    **dict.fromkeys(("sec", "secs", "second", "seconds"), "second"),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), "minute"),
    **dict.fromkeys(("hr", "hrs", "hour", "hours"), "hour"),
    **dict.fromkeys(("day", "days"), "day"), **dict.fromkeys(("week", "weeks"), "week"),
    **dict.fromkeys(("month", "months"), "month"), **dict.fromkeys(("yr", "yrs", "year", "years"), "year"),
    **dict.fromkeys(("mm", "millimeter", "millimeters", "millimetre", "millimetres"), "millimeter"),
    **dict.fromkeys(("cm", "centimeter", "centimeters", "centimetre", "centimetres"), "centimeter"),
    **dict.fromkeys(("meter", "meters", "metre", "metres"), "meter"),
    **dict.fromkeys(("km", "kilometer", "kilometers", "kilometre", "kilometres"), "kilometer"),
    **dict.fromkeys(("in", "inch", "inches"), "inch"), **dict.fromkeys(("ft", "foot", "feet"), "foot"),
    **dict.fromkeys(("yd", "yard", "yards"), "yard"), **dict.fromkeys(("mi", "mile", "miles"), "mile"),
    **dict.fromkeys(("gram", "grams"), "gram"), **dict.fromkeys(("kg", "kilogram", "kilograms"), "kilogram"),
    **dict.fromkeys(("lb", "lbs", "pound", "pounds"), "pound"), **dict.fromkeys(("oz", "ounce", "ounces"), "ounce"),
    **dict.fromkeys(("dollar", "dollars"), "dollar"), **dict.fromkeys(("cent", "cents"), "cent"),
    **dict.fromkeys(("deg", "degree", "degrees"), "degree"), **dict.fromkeys(("rad", "radian", "radians"), "radian"),
}
_POWER_WORDS = {"square": "2", "sq": "2", "cubic": "3", "cu": "3"}


@dataclass(frozen=True)
class Quantity:
    """A number read from an answer, with what decorated it."""

    value: Fraction
    percent: bool = False
    unit: str = ""  # canonical unit word(s), "" when none


def answer_from_text(s: str) -> str:
    """The answer part of `s` (see module doc); `s` itself when it is not prose."""
    if "\\boxed" in s or "\\fbox" in s:
        boxed = extract_answer(s)
        if boxed is not None:
            return boxed
    if "$" not in s and "\\(" not in s and "\\[" not in s:
        return s
    segments = list(_MATH_SEGMENT_RE.finditer(s))
    if not segments:
        return s
    outside = _MATH_SEGMENT_RE.sub(" ", s)
    if not _WORD_RE.search(unwrap_text(outside)):
        return s  # only math and punctuation: not prose, leave it to normalisation
    words = {w.lower() for w in _WORD_RE.findall(unwrap_text(outside))}
    if words <= _CONNECTIVES:  # `$1$ and $2$`: a list of answers, not prose around one
        return ", ".join(next(g for g in m.groups() if g is not None).strip() for m in segments)
    cues = list(_ANSWER_CUE_RE.finditer(s))
    after_cue = [m for m in segments if cues and m.start() >= cues[-1].end()]
    chosen = after_cue[0] if after_cue else segments[-1]
    answer = next(g for g in chosen.groups() if g is not None).strip()
    if _LONG_WORD_RE.search(_COMMAND_RE.sub(" ", answer)):
        return s  # prose between two `$` (currency, `$5 and then $6`): not math, leave it whole
    return answer


def braced_fractions(s: str) -> str:
    """`\\frac13` and `\\frac1{3}` spelt `\\frac{1}{3}` (TeX's one-token arguments)."""
    if "\\frac" not in s:
        return s
    return _FRAC_SHORT_RE.sub(
        lambda m: "\\frac{" + (m.group(1) or m.group(2)) + "}{" + (m.group(3) or m.group(4)) + "}", s)


def radians_in_trig(s: str) -> str:
    """`\\cos(90^\\circ - x)` as `\\cos((\\frac{90\\pi}{180}) - x)`: degrees only where trig is."""
    if "circ" not in s or _TRIG_CMD_RE.search(s) is None:
        return s
    return _DEGREES_RE.sub(lambda m: "(\\frac{" + m.group(1) + "\\pi}{180})", s)


def function_value(s: str) -> str:
    """`f(x) = 2x+3` and `y = 2x+3` as `2x+3` (a function given by its rule)."""
    m = _FUNCTION_DEF_RE.match(s)
    return s[m.end():] if m and "=" not in s[m.end():] else s


def canonical_relations(s: str) -> str:
    """`s` with every relation spelt the LaTeX way (see module doc)."""
    if _ANY_RELATION_RE.search(s) is None:
        return s
    for pattern, repl in _RELATIONS:
        s = pattern.sub(repl, s)
    return s


def plain_number(s: str) -> Optional[Fraction]:
    """Exact value of a space-free plain number, fraction or scientific form."""
    if _NUM_RE.fullmatch(s):
        return Fraction(s.replace(",", ""))
    m = _SCI_RE.match(s) or _E_RE.match(s)
    if m:
        exp = int(next(g for g in m.groups()[1:] if g is not None))
        return Fraction(m.group(1).replace(",", "")) * Fraction(10) ** exp
    m = _FRAC_RE.match(s)
    if m:
        num, den = plain_number(m.group(2)), plain_number(m.group(3))
    elif s.count("/") == 1:
        a, b = s.split("/")
        num, den = plain_number(a), plain_number(b)
    else:
        return None
    if num is None or den is None or den == 0:
        return None
    value = num / den
    return -value if m and m.group(1) == "-" else value


def _mixed(s: str) -> Optional[Fraction]:
    """`1 1/2` or `1\\frac{1}{2}` as 3/2; None unless the fraction is proper."""
    m = _MIXED_SLASH_RE.match(s)
    if m:
        sign, whole, num, den = m.group(1), m.group(2), m.group(3), m.group(4)
    else:
        m = _MIXED_FRAC_RE.match(s)
        if m is None:
            return None
        sign, whole = m.group(1), m.group(2)
        num, den = m.group(3) or m.group(4), m.group(5) or m.group(6)
    num, den = int(num), int(den)
    if not 0 <= num < den:
        return None  # `11 7/6` or `4 4/0` is no mixed number (and no other number either)
    value = int(whole) + Fraction(num, den)
    return -value if sign == "-" else value


def _unit_key(words: str, power: Optional[str]) -> str:
    """Canonical `unit^power` for known unit words, "" for anything else (then ignored)."""
    parts = words.lower().replace(".", " ").split()
    if len(parts) == 2 and parts[0] in _POWER_WORDS:
        power, parts = power or _POWER_WORDS[parts[0]], parts[1:]
    if len(parts) != 1 or parts[0] not in _UNITS:
        return ""
    return _UNITS[parts[0]] + (f"^{power}" if power else "")


def _spaced(s: str) -> str:
    """`s` with text commands unwrapped behind a space and TeX spacing as spaces."""
    if "\\" not in s:
        return s.replace("~", " ")
    s = _TEXT_CMD_RE.sub(lambda m: " " + m.group(0), s)
    s = unwrap_text(s)
    s = _SPACING_RE.sub(" ", s)
    for old, new in (("\\left", ""), ("\\right", ""), ("\\displaystyle", ""), ("\\dfrac", "\\frac"),
                     ("\\tfrac", "\\frac")):
        s = s.replace(old, new)
    return braced_fractions(s)


def parse_quantity(raw: str) -> Optional[Quantity]:
    """The `Quantity` written in `raw` (see module doc), or None.

    Args:
      raw: an answer string before normalisation (spaces matter here:
        `1 1/2` is a mixed number, `11/2` is not).
    """
    if not any(c.isdigit() for c in raw):
        return None
    s = _spaced(raw).strip().strip("$").strip()
    if s.endswith(".") and not s.endswith("\\."):
        s = s[:-1].rstrip()
    unit, percent = "", False
    m = _DEGREE_RE.search(s) if ("circ" in s or "deg" in s or "°" in s) else None
    if m:
        s, unit = s[: m.start()].rstrip(), "degree"
    else:
        m = _UNIT_RE.match(s) if " " in s else _GLUED_UNIT_RE.match(s)
        if m:
            if set(m.group(2).lower().split()) & _CONNECTIVES:
                return None  # `3 or more`, `5 and up`: not a number with a unit
            s, unit = m.group(1), _unit_key(m.group(2), m.group(3))
            percent = m.group(2).strip().lower() in _PERCENT_WORDS
    for suffix in ("\\%", "%"):
        if s.endswith(suffix):
            s, percent = s[: -len(suffix)].rstrip(), True
            break
    if s.startswith("\\$"):
        s = s[2:].lstrip()
    value = _mixed(s)
    if value is None:
        if _SPACED_THOUSANDS_RE.match(s):
            s = s.replace(" ", "")  # `1 000 000`: thousands set off by spaces
        elif _SPLIT_DIGITS_RE.search(s):
            return None  # `11 7/6`, `2 3`: not one plain number; leave it to the parser
        value = plain_number(re.sub(r"\s+", "", s))
    if value is None:
        return None
    return Quantity(value, percent, unit)


def parse_clock(raw: str) -> Optional[int]:
    """Seconds since midnight for a clock time `H:MM[:SS][ am|pm]`, else None."""
    m = _CLOCK_RE.match(_spaced(raw).strip().strip("$").strip().rstrip("."))
    if m is None:
        return None
    h, mi, sec = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if mi > 59 or sec > 59 or h > 24:
        return None
    half = (m.group(4) or "").lower()
    if half:
        if not 1 <= h <= 12:
            return None
        h = h % 12 + (12 if half == "p" else 0)
    return (h * 60 + mi) * 60 + sec
