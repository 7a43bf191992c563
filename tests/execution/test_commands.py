"""`rstar-jax exec` and `rstar-jax grade`: JSON Lines, one out per line, in order."""

import json
import os
import subprocess
import sys

from testutil import REPO


def _cli(args, lines, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "rstar_jax", *args], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, env=env, timeout=timeout)
    return proc.returncode, [json.loads(x) for x in proc.stdout.splitlines()], proc.stderr


def test_exec_lines_in_order_with_malformed_lines():
    rc, out, _ = _cli(["exec", "--timeout", "1", "executor.num_workers=1", "executor.preload_grading=false"], [
        json.dumps({"code": "print(1/3)"}), "not json", json.dumps({"code": "y"}), json.dumps({"nocode": 1}),
        json.dumps({"code": "while True: pass"}), "[1]", json.dumps({"code": 5}),
    ])
    assert rc == 0
    assert out[0] == {"observation": "0.3333", "error": False, "timed_out": False}
    assert "line 2" in out[1]["error"] and "invalid JSON" in out[1]["error"]
    assert out[2] == {"observation": "NameError: name 'y' is not defined", "error": True, "timed_out": False}
    assert out[3] == {"error": "line 4: missing field 'code'"}
    assert out[4]["timed_out"] is True and out[4]["error"] is True
    assert out[5] == {"error": "line 6: expected a JSON object"}
    assert out[6] == {"error": "line 7: 'code' must be a string"}
    assert len(out) == 7


def test_exec_bad_timeout_is_exit_2():
    rc, out, err = _cli(["exec", "--timeout", "-1"], [])
    assert rc == 2 and out == [] and "timeout" in err and "Traceback" not in err


def test_grade_extracts_and_grades():
    rc, out, _ = _cli(["grade"], [
        json.dumps({"pred": "So the answer is \\boxed{\\frac{1}{2}}.", "gold": "0.5"}),
        json.dumps({"pred": "3", "gold": ["1", "3"]}),
        "x",
        json.dumps({"pred": "3", "gold": 3}),
        json.dumps({"pred": "\\boxed{5} then \\boxed{4}", "gold": "5"}),
        json.dumps({"pred": "50\\%", "gold": "0.5"}),
    ])
    assert rc == 0
    assert out == [{"equal": True}, {"equal": True},
                   {"error": "line 3: invalid JSON (Expecting value: line 1 column 1 (char 0))"},
                   {"error": "line 4: 'gold' must be a string or a list of strings"},
                   {"equal": False}, {"equal": True}]
