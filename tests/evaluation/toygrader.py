"""A grader small enough to check by hand: numbers compare as fractions."""

from fractions import Fraction


def toy_equiv(a, b):
    try:
        return Fraction(a) == Fraction(b)
    except (ValueError, ZeroDivisionError):
        return a.strip() == b.strip()


def toy_grade(pred, gold):
    golds = gold if isinstance(gold, (list, tuple)) else [gold]
    return pred is not None and any(toy_equiv(pred, g) for g in golds)
