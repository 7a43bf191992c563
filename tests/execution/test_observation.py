"""Observation rules of spec section 3, each on its own (in-process, no pool)."""

import pytest

from rstar_jax.execution.observation import (
    CappedWriter,
    format_exception,
    round_floats,
    run_program,
    truncate,
)


def obs(code):
    return run_program(code)


def test_stdout_captured_and_stripped():
    assert obs("print('  hi  ')\nprint()\n") == ("hi", False)
    assert obs("print('a')\nprint('b')") == ("a\nb", False)
    assert obs("x = 1") == ("", False)


def test_last_bare_expression_repr():
    assert obs("x = 2\nx * 3") == ("6", False)
    assert obs("'text'") == ("'text'", False)  # repr, as the REPL shows it
    assert obs("print('p')\n[1, 2]") == ("p\n[1, 2]", False)  # after the prints
    assert obs("None") == ("", False)
    assert obs("print('only')") == ("only", False)  # print() returns None: nothing added
    assert obs("x = 1\nif x:\n    x + 1") == ("", False)  # not a top-level bare expression
    assert obs("import sympy as sp\nx = sp.Symbol('x')\nsp.expand((x + 1)**2)") == ("x**2 + 2*x + 1", False)


def test_float_rounding_when_shorter():
    assert obs("print(1/3)") == ("0.3333", False)
    assert obs("0.1 + 0.2") == ("0.3", False)
    assert obs("print(0.5, 3.1416, 2.0)") == ("0.5 3.1416 2.0", False)
    assert obs("print(-2/3)") == ("-0.6667", False)
    assert obs("print(f'{10/7:.6f} cm')") == ("1.4286 cm", False)
    # numpy pads to its own width; only the digits change
    assert obs("import numpy as np\nnp.array([1/3, 1/2])") == ("array([0.3333, 0.5       ])", False)
    assert round_floats("version 3.10.2 at 1.5e-07, id x1.23456") == "version 3.10.2 at 1.5e-07, id x1.23456"
    assert round_floats("2.50000 and 7") == "2.5 and 7"
    assert round_floats("123456.789012") == "123456.789"


def test_truncation_keeps_both_ends():
    text = "a" * 600 + "b" * 600
    out = truncate(text)
    assert len(out) == 1027 and out == "a" * 512 + "..." + "b" * 512
    assert truncate("x" * 1024) == "x" * 1024
    o, err = obs("print('x' * 600 + 'y' * 600)")
    assert not err and o == "x" * 512 + "..." + "y" * 512


def test_exceptions_type_and_message():
    assert obs("1/0") == ("ZeroDivisionError: division by zero", True)
    assert obs("print('before')\ny") == ("NameError: name 'y' is not defined", True)
    assert obs("raise ValueError") == ("ValueError", True)
    assert obs("{}['k']") == ("KeyError: 'k'", True)
    assert obs("x = (") == ("SyntaxError: '(' was never closed", True)
    assert obs("import sys\nsys.exit(3)") == ("SystemExit: 3", True)
    assert obs("import numpy as np\nnp.linalg.inv(np.zeros((2, 2)))") == (
        "numpy.linalg.LinAlgError: Singular matrix", True)
    assert format_exception(OSError(2, "No such file")) == "FileNotFoundError: [Errno 2] No such file"


def test_first_sft_example_is_a_name_error():
    """The spec's note: the reference's shared globals hid this NameError."""
    code = ("def G(m, n, p, q):\n    return m**n + p * q\n"
            "equation = G(3, y, 6, 15) - 171\nprint(4)")
    assert obs(code) == ("NameError: name 'y' is not defined", True)


def test_fresh_namespace_per_program():
    assert obs("leak = 42") == ("", False)
    assert obs("leak")[1] is True


def test_capped_writer_keeps_ends_only():
    w = CappedWriter(10)
    for ch in "abcdefghijklmnopqrstuvwxyz":
        w.write(ch)
    assert w.getvalue() == "abcdevwxyz"
    w = CappedWriter(10)
    w.write("0123456789" * 1000)
    w.write("tail")
    assert w.getvalue() == "01234" + "9tail"
    with pytest.raises(TypeError):
        w.write(b"bytes")


def test_huge_output_is_bounded():
    o, err = obs("for i in range(20000):\n    print('line', i, 'x' * 100)")
    assert not err and len(o) == 1027
    assert o.startswith("line 0 x") and o.endswith("line 19999 " + "x" * 100)


def test_threads_are_joined_like_interpreter_exit():
    code = ("import threading, time\n"
            "def f():\n    time.sleep(0.05)\n    print('late')\n"
            "threading.Thread(target=f).start()\nprint('early')")
    assert obs(code) == ("early\nlate", False)
