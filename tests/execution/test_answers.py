"""Answer extraction: the last box, brace matching, text unwrapping."""

import pytest

from rstar_jax.execution.answers import extract_answer, unwrap_text


@pytest.mark.parametrize("text, expected", [
    ("The value of y is \\boxed{4}.", "4"),
    ("first \\boxed{1} then \\boxed{2}", "2"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
    ("\\boxed{[0, \\arcsin(\\frac{\\sqrt{2}}{3})]}", "[0, \\arcsin(\\frac{\\sqrt{2}}{3})]"),
    ("\\boxed{\\text{(A)}}", "(A)"),
    ("\\boxed{5\\text{ cm}}", "5 cm"),
    ("\\boxed{\\textbf{Yes}.}", "Yes"),
    ("$\\boxed{$x$}$", "x"),
    ("so \\boxed 5 is it", "5"),
    ("\\boxed{\\boxed{3}}", "3"),
    ("\\fbox{7}", "7"),
    ("\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
])
def test_extracts(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", [
    "no box here", "\\boxed{unterminated {x}", "\\boxed{}", "\\boxed{ . }", "", "\\boxedfoo{3}",
])
def test_no_answer(text):
    assert extract_answer(text) is None


@pytest.mark.parametrize("text, expected", [
    ("the roots are $\\boxed{3}$ and $\\boxed{-1}$.", "3, -1"),
    ("$\\boxed{1}$, $\\boxed{2}$, $\\boxed{5}$", "1, 2, 5"),
    ("\\boxed{x=1}\\quad\\boxed{y=2}", "x=1, y=2"),
    ("\\boxed{2}\\text{ or }\\boxed{7}", "2, 7"),
    ("\\boxed{1} then later \\boxed{2}", "2"),  # words between: separate boxes, the last wins
    ("\\boxed{1}, \\boxed{}", None),  # the last box empty: no answer
])
def test_adjacent_boxes_are_one_answer(text, expected):
    assert extract_answer(text) == expected


def test_joined_boxes_grade_as_a_set_or_tuple():
    from rstar_jax.execution.grading import grade

    assert grade(extract_answer("so $\\boxed{5}$ and $\\boxed{2}$."), "\\{2, 5\\}")
    assert grade(extract_answer("the point is $\\boxed{1}$, $\\boxed{2}$"), "(1, 2)")
    assert not grade(extract_answer("so $\\boxed{5}$ and $\\boxed{2}$."), "\\{2, 7\\}")
    assert not grade(extract_answer("so $\\boxed{5}$ and $\\boxed{2}$."), "5")


def test_non_string_is_none():
    assert extract_answer(None) is None


def test_unwrap_text_nested():
    assert unwrap_text("\\text{a {b} c} + \\text{d}") == "a {b} c + d"
    assert unwrap_text("\\text{open") == "\\text{open"
