"""Grading table: equal and unequal pairs for every answer kind."""

import threading

import pytest

from rstar_jax.execution.grading import grade, grade_many, is_equiv, normalize, parse_number

EQUAL = [
    # integers, decimals, tolerance (relative 1e-4)
    ("4", "4"), ("4.0", "4"), ("1,000", "1000"), ("3.14159", "3.1416"), ("100001", "100000"), ("3.0001", "3"),
    ("0.33333", "\\frac{1}{3}"),
    # fractions
    ("1/2", "\\frac{1}{2}"), ("0.5", "\\dfrac{1}{2}"), ("-\\frac{3}{4}", "-0.75"), ("\\frac{6}{8}", "\\tfrac34"),
    # percentages: either side's percent sign allows the /100 reading
    ("50", "50\\%"), ("0.5", "50\\%"), ("50\\%", "50\\%"), ("50%", "0.5"), ("12.5\\%", "0.125"),
    # intervals
    ("[0,1)", "[0, 1)"), ("(-\\infty, 2]", "(-\\infty,2]"), ("(0,1)\\cup(2,3)", "(0, 1) \\cup (2, 3)"),
    # tuples / points
    ("(1,2)", "(1, 2)"), ("(3, -1, 2)", "(3,-1,2)"),
    # sets
    ("\\{1,2,3\\}", "\\{3,2,1\\}"),
    # matrices
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("\\begin{pmatrix}1&0\\\\0&1\\end{pmatrix}", "\\begin{bmatrix}1&0\\\\0&1\\end{bmatrix}"),
    # symbolic expressions
    ("(x+1)^2", "x^2+2x+1"), ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2"), ("2\\sqrt{3}", "\\sqrt{12}"),
    ("\\pi/2", "\\frac{\\pi}{2}"),
    # equations, text, LaTeX noise
    ("3", "x=3"), ("(A)", "\\text{(A)}"), ("\\left(1,2\\right)", "(1,2)"), ("5.", "5"),
]

UNEQUAL = [
    ("3", "4"), ("3.001", "3"), ("200", "2"), ("0.02", "2"),  # no x100 on bare numbers
    ("0.5", "50"), ("1/3", "0.33"), ("-1", "1"),
    ("\\frac{1}{2}", "\\frac{1}{3}"), ("51\\%", "50\\%"), ("0.51", "50\\%"),
    ("[0,1]", "(0,1)"), ("(0,1]", "[0,1]"),
    ("(2,1)", "(1,2)"), ("(1,2,3)", "(1,2)"),
    ("\\{1,2\\}", "\\{1,2,3\\}"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}2\\\\1\\end{pmatrix}"),
    ("x^2+1", "(x+1)^2"), ("\\sqrt{3}", "\\sqrt{2}"), ("2\\pi", "\\pi"),
    ("(B)", "\\text{(A)}"),
]


@pytest.mark.parametrize("pred, gold", EQUAL)
def test_equal(pred, gold):
    assert grade(pred, gold)


@pytest.mark.parametrize("pred, gold", UNEQUAL)
def test_unequal(pred, gold):
    assert not grade(pred, gold)


def test_list_gold_any_element():
    assert grade("\\frac{1}{2}", ["0.25", "0.5"])
    assert not grade("0.75", ["0.25", "0.5"])
    assert not grade("1", [])


@pytest.mark.parametrize("pred, gold", [
    ("", "4"), ("4", ""), ("\\frac{", "1"), ("}}}{{{", "\\frac{1}{2}"), (None, "1"),
    ("x" * 5000, "1"), ("\\begin{pmatrix", "\\begin{pmatrix}1\\end{pmatrix}"),
])
def test_garbage_is_false_and_never_raises(pred, gold):
    assert grade(pred, gold) is False


def test_number_parsing_and_normalisation():
    assert parse_number(normalize("1,234.5\\%")) == (pytest.approx(1234.5), True)
    assert parse_number("\\frac{3}{4}")[0] == 0.75
    assert parse_number("1/0") is None
    assert normalize(" $\\dfrac{1}{2}$. ") == "\\frac{1}{2}"


def test_is_equiv_symmetric_and_cheap_on_identical():
    assert is_equiv("\\frac{1}{2}", "0.5") and is_equiv("0.5", "\\frac{1}{2}")
    assert is_equiv("x=3", "3") and is_equiv("3", "x=3")
    assert is_equiv("\\text{foo bar}", "foo bar")
    assert not is_equiv("2", "3")
    assert not is_equiv(None, "3")


def test_grade_off_main_thread():
    out = []
    t = threading.Thread(target=lambda: out.append((grade("(x+1)^2", "x^2+2x+1"), grade("x", "y"))))
    t.start()
    t.join(30)
    assert out == [(True, False)]


def test_grade_many_in_process():
    assert grade_many([("1/2", "0.5"), ("3", "4"), ("2", ["1", "2"])]) == [True, False, True]
