"""Approximate equality of two parsed answers (sympy objects), structure-aware.

The grader's last stage, asked only after math-verify's `verify` has said
"unequal". math-verify compares decimals by rounding to 6 places, so `1.732`
is not `\\sqrt{3}` there; the reference grader calls numbers equal within
`isclose(rel_tol=1e-4)`. This module applies that tolerance at every leaf of
the same structures:
- matrices entry by entry (a column or row vector also against a tuple, or a
  two-element `[a, b]`/`(a, b)` that parses as an interval);
- tuples in order; sets (FiniteSet) as multisets; intervals with the same
  open/closed ends; unions interval by interval; `x = v` by its right side;
- scalars: constant on both sides, compared as complex numbers. The
  relative tolerance applies only when one side carries a decimal (a
  written approximation); exact against exact must simplify to a zero
  difference.
- expressions with free symbols and a written decimal: both sides at seven
  fixed points must agree within the relative tolerance (`1.7321x` is
  `\\sqrt3 x`, `x + 0.0001` is not `x`).
- `i` as the imaginary unit: when the only free symbol on either side is `i`
  (so `i(2-i)` against `1+2i`), it is read as `I`.
- trigonometric identities: when a side has trig functions, both sides are
  evaluated at seven fixed points of both signs and must agree to 1e-9 at
  every point where both are defined (at least four); when fewer are
  defined, the difference is expanded (`expand_trig`) and simplified
  (`trigsimp`) towards 0.

Never exact where math-verify is not: nothing here treats an ordered tuple
as a set, and a shape or bracket mismatch is unequal.
"""

from __future__ import annotations

import cmath
from typing import List, Optional

import sympy
from sympy import FiniteSet, Interval, MatrixBase, Tuple, Union

REL_TOL = 1e-4
ABS_TOL = 1e-12  # a floor for values at zero
_SAMPLE_POINTS = (0.31, 1.13, -0.73, 2.27, -1.93, 0.83, -2.61)
_TRIG = (sympy.sin, sympy.cos, sympy.tan, sympy.cot, sympy.sec, sympy.csc)


def _vector(x) -> Optional[List]:
    """Entries of a vector-shaped answer (row/column matrix, tuple, 2-interval)."""
    if isinstance(x, MatrixBase):
        return list(x) if 1 in x.shape else None
    if isinstance(x, Tuple):
        return list(x)
    if isinstance(x, Interval) and x.left_open == x.right_open:
        return [x.start, x.end]
    return None


def _has_float(x) -> bool:
    return isinstance(x, sympy.Basic) and x.has(sympy.Float)


def _complex(x) -> Optional[complex]:
    try:
        v = complex(sympy.N(x, 30))
    except (TypeError, ValueError, AttributeError):
        return None
    return v if v == v and abs(v) != float("inf") else None  # NaN / inf: no value


def _scalar_close(a, b) -> bool:
    if not isinstance(a, sympy.Expr) or not isinstance(b, sympy.Expr):
        return False
    free = a.free_symbols | b.free_symbols
    if free and all(getattr(x, "name", None) == "i" for x in free):
        to_unit = {x: sympy.I for x in free}  # math-verify's `i` carries assumptions: match by name
        a, b = a.subs(to_unit), b.subs(to_unit)
        free = set()
    if free and (_has_float(a) or _has_float(b)):  # `x + 1.7321` against `x + \\sqrt3`
        return bool(_agree_at_points(a, b, sorted(free, key=str), REL_TOL))
    if free:
        if not (a.has(*_TRIG) or b.has(*_TRIG)):
            return False
        agree = _agree_at_points(a, b, sorted(free, key=str))
        if agree is not None:
            return agree
        diff = sympy.trigsimp(sympy.expand_trig(a - b))
        return diff == 0 or sympy.simplify(diff) == 0
    if not (_has_float(a) or _has_float(b)):
        diff = a - b  # exact against exact: no tolerance (2^100 is not 2^100+1)
        return diff == 0 if diff.is_Number else sympy.simplify(diff) == 0
    va, vb = _complex(a), _complex(b)
    if va is None or vb is None:
        return False
    return abs(va - vb) <= max(REL_TOL * max(abs(va), abs(vb)), ABS_TOL)


def _agree_at_points(a, b, symbols, tol: float = 1e-9) -> Optional[bool]:
    """Whether `a` and `b` agree (relatively, to `tol`) at fixed points, both signs, where both are defined.

    For trigonometric identities simplification misses (`\\tan x + \\cot x`
    against `2/\\sin 2x`, half-angle forms), and for expressions with a
    written decimal (`1.7321x` against `\\sqrt3 x`, at `REL_TOL`). Fixed points keep it deterministic;
    at least four must be defined, so a pole cannot make the check vacuous
    (None then: undecided).
    """
    names = sorted({str(x) for x in symbols})  # parses may give two `i`s with different assumptions
    plain = [sympy.Symbol(f"v{k}") for k in range(len(names))]
    by_name = {x: plain[names.index(str(x))] for x in symbols}
    try:
        fa = sympy.lambdify(plain, a.subs(by_name), "mpmath")
        fb = sympy.lambdify(plain, b.subs(by_name), "mpmath")
    except Exception:  # noqa: BLE001  (lambdify cannot print every expression)
        return None
    symbols = plain
    agreed = 0
    for base in _SAMPLE_POINTS:
        point = [base + 0.37 * k for k in range(len(symbols))]
        try:
            va, vb = complex(fa(*point)), complex(fb(*point))
        except (ZeroDivisionError, ValueError, OverflowError, TypeError, NameError):
            continue
        if not (cmath.isfinite(va) and cmath.isfinite(vb)):
            continue
        if abs(va - vb) > tol * max(abs(va), abs(vb)) + ABS_TOL:
            return False
        agreed += 1
    return True if agreed >= 4 else None


def _plain_exact(x) -> bool:
    return (isinstance(x, sympy.Expr) and not x.has(sympy.Float) and not x.has(*_TRIG)
            and not any(getattr(v, "name", None) == "i" for v in x.free_symbols))


def _all_close(xs, ys) -> bool:
    return len(xs) == len(ys) and all(approx_equal(x, y) for x, y in zip(xs, ys))


def _multiset_close(xs, ys) -> bool:
    if len(xs) != len(ys):
        return False
    left = list(ys)
    for x in xs:
        hit = next((k for k, y in enumerate(left) if approx_equal(x, y)), None)
        if hit is None:
            return False
        left.pop(hit)
    return True


def _rhs(x):
    """`v` for an assignment `x = v` (a symbol on the left), else `x`."""
    if isinstance(x, sympy.Eq) and isinstance(x.lhs, sympy.Symbol):
        return x.rhs
    return x


def approx_equal(gold, pred, *, top: bool = False) -> bool:
    """Whether `pred` equals `gold` within the rules of the module doc.

    Args:
      gold, pred: sympy objects as math-verify's `parse` returns them.
      top: the pair math-verify has just called unequal. Two exact scalars
        without `i` or trig functions are then unequal at once: math-verify
        has already simplified their difference.
    """
    if gold == pred:
        return True
    if top and _plain_exact(gold) and _plain_exact(pred):
        return False
    if isinstance(gold, MatrixBase) or isinstance(pred, MatrixBase):
        if isinstance(gold, MatrixBase) and isinstance(pred, MatrixBase) and gold.shape == pred.shape:
            return _all_close(list(gold), list(pred))
        gv, pv = _vector(gold), _vector(pred)
        return gv is not None and pv is not None and _all_close(gv, pv)
    if isinstance(gold, Tuple) and isinstance(pred, Tuple):
        return _all_close(list(gold), list(pred))
    if isinstance(gold, FiniteSet) and isinstance(pred, FiniteSet):
        return _multiset_close(list(gold), list(pred))
    if isinstance(gold, Interval) and isinstance(pred, Interval):
        return (gold.left_open == pred.left_open and gold.right_open == pred.right_open
                and approx_equal(gold.start, pred.start) and approx_equal(gold.end, pred.end))
    if isinstance(gold, Union) and isinstance(pred, Union):
        return _all_close(list(gold.args), list(pred.args))
    if isinstance(gold, sympy.Eq) and isinstance(pred, sympy.Eq):
        return gold.lhs == pred.lhs and approx_equal(gold.rhs, pred.rhs)
    gold, pred = _rhs(gold), _rhs(pred)
    return _scalar_close(gold, pred)
