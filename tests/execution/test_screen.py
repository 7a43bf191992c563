"""Host screening answers non-compiling programs exactly as the sandbox would."""

import os
import warnings

import pytest

from rstar_jax.config.schema import ExecutorConfig
from rstar_jax.execution.pool import ExecutorPool
from rstar_jax.execution.screen import screen
from rstar_jax.execution.types import ExecResult

# Programs the host must answer (each fails to compile, in a different way).
JUNK = [
    "x = (",  # unclosed bracket
    "print('abc",  # unterminated string
    'x = """abc\ny = 2',  # unterminated triple-quoted string
    "def f():\nreturn 1",  # expected an indented block
    "x = 1\n    y = 2",  # unexpected indent
    "if True:\n        x = 1\n    y = 2",  # unindent does not match
    "if True:\n\tx = 1\n        y = 2",  # TabError: inconsistent tabs and spaces
    "x = 1\0",  # null byte (ValueError on 3.11, SyntaxError later)
    "(" * 250 + ")" * 250,  # too many nested parentheses
    "x = " + "1" * 5000,  # int literal over the 4300-digit limit
    "return 5",  # compile stage: 'return' outside function
    "for i in range(3):\n    pass\nbreak",  # compile stage: 'break' outside loop
    "nonlocal q",  # compile stage
    "def g(a, a):\n    return a",  # compile stage: duplicate argument
    "x = '\ud800'",  # lone surrogate (UnicodeEncodeError)
    "print 'hello'",  # missing parentheses hint
    "x = 3 +* 2",
    "f(**)",
    "x := 5",
    "del f()",
    "f'{x!z}'",
    "x = 1\ny = 2\n)",
    "<code>\nx = 12 * 3 <end_of_step>",  # tags left in the code
    "total = 12 + 7\nThe answer is \\boxed{19}",
    "import math\n" + "y = 2\n" * 400 + "z = = 1",  # error far from the start
    "x = 'a' * 3\n" + "\u00e9" * 3 + " = 1 +",
]

# Programs the host must leave to the pool (they compile, or may fail differently there).
RUN = [
    "print(1)",
    "x = " + "[" * 90 + "]" * 90,  # deep but legal
    "import os\nopen('screen_marker', 'w').write('ran')",
]


@pytest.fixture(scope="module")
def unscreened():
    cfg = ExecutorConfig(num_workers=1, timeout_s=5.0, preload_modules=[], preload_grading=False,
                         screen_programs=False)
    with ExecutorPool(cfg) as p:
        yield p


def test_host_answer_equals_the_sandbox_field_by_field(unscreened):
    hosted = [screen(code) for code in JUNK]
    assert all(isinstance(h, ExecResult) for h in hosted), [c for c, h in zip(JUNK, hosted) if h is None]
    ran = unscreened.run(JUNK)
    assert unscreened.stats().get("screened", 0) == 0
    for code, h, r in zip(JUNK, hosted, ran):
        assert (h.observation, h.error, h.timed_out) == (r.observation, r.error, r.timed_out), code
    assert hosted[0] == ExecResult("SyntaxError: '(' was never closed", error=True)
    assert hosted[6].observation.startswith("TabError: ")
    assert hosted[10] == ExecResult("SyntaxError: 'return' outside function", error=True)


def test_uncertain_or_valid_programs_go_to_the_pool(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert [screen(code) for code in RUN] == [None] * len(RUN)
    assert not os.path.exists(tmp_path / "screen_marker")  # compiling ran nothing
    deep = "x = " + "-" * 200_000 + "1"  # the parser or compiler runs out of stack or memory
    assert screen(deep) is None
    assert screen("x = (" + " " * 200, max_chars=100) is None  # over the size limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a worker only prints SyntaxWarnings: no error here
        assert screen("x = 1 is 1\nassert (x, 'message')") is None


def test_pool_screens_and_counts(pool, unscreened):
    before = pool.stats()
    progs = JUNK[:6] + ["print(6 * 7)", JUNK[0], "print(6 * 7)"]
    got = pool.run(progs)
    after = pool.stats()
    assert after.get("screened", 0) - before.get("screened", 0) == 6
    assert after.get("dedup_hits", 0) - before.get("dedup_hits", 0) >= 2
    assert got[6] == ExecResult("42") and got[7] == got[0]
    assert got == unscreened.run(progs)
