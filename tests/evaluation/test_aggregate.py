"""`rstar-jax aggregate`: exact I/O, malformed lines, exit codes."""

import argparse
import io
import json

import pytest
from evaluation.toygrader import toy_equiv, toy_grade

from rstar_jax.evaluation import aggregate, commands

LINES = [
    json.dumps({"gold": "2", "preds": ["2", "3", "3"], "scores": [0.9, 0.2, 0.3]}),
    json.dumps({"gold": ["3", "-3"], "preds": [None, "-3", "1/2"], "scores": [0.5, 0.1, 0.2]}),
    json.dumps({"gold": "0.5", "preds": ["1/2", "4", "4"], "scores": [-0.9, -0.2, -0.2]}),
]


def run(text, k=None):
    out, err = io.StringIO(), io.StringIO()
    rc = aggregate.run(io.StringIO(text), out, err, k=k, grade=toy_grade, equiv=toy_equiv)
    return rc, out.getvalue(), err.getvalue()


def test_exact_output_object():
    rc, out, err = run("\n".join(LINES) + "\n", k=2)
    assert rc == 0 and err == ""
    assert out.count("\n") == 1
    got = json.loads(out)
    assert set(got) == {"n", "skipped", "n_scored", "k", "first", "maj@k", "best@k",
                        "weighted@k", "pass@k"}
    assert got["n"] == 3 and got["skipped"] == 0 and got["k"] == 2 and got["n_scored"] == 3
    assert got["first"] == pytest.approx(66.6667)
    assert got["maj@k"] == 100.0
    assert got["best@k"] == pytest.approx(66.6667)
    assert got["weighted@k"] == pytest.approx(66.6667)
    assert got["pass@k"] == pytest.approx(66.6667)


def test_malformed_lines_reported_and_not_counted():
    bad = [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"preds": ["1"]}),
        json.dumps({"gold": "1", "preds": []}),
        json.dumps({"gold": "1", "preds": ["1", "2"], "scores": [0.1]}),
        json.dumps({"gold": "1", "preds": [{"x": 1}]}),
        json.dumps({"gold": "1", "preds": ["1"], "scores": ["high"]}),
    ]
    text = "\n".join([LINES[0], *bad, "", LINES[2]]) + "\n"
    rc, out, err = run(text)
    assert rc == 0
    got = json.loads(out)
    assert got["n"] == 2 and got["skipped"] == 7
    msgs = err.strip().splitlines()
    assert [m.split(":")[1].strip() for m in msgs] == ["line 2", "line 3", "line 4", "line 5",
                                                      "line 6", "line 7", "line 8"]
    assert "invalid JSON" in msgs[0] and "missing 'gold'" in msgs[2]
    assert "2 preds but 1 scores" in msgs[4]
    # Problems 1 and 3 alone, all samples: first 100, maj 0.
    assert got["first"] == 100.0 and got["maj@k"] == 0.0


def test_no_usable_line_exits_2():
    rc, out, err = run("garbage\n\n")
    assert rc == 2 and out == ""
    assert "line 1" in err and "no usable input line" in err
    assert run(LINES[0], k=0)[0] == 2


def test_numbers_as_answers_and_no_scores():
    rc, out, _ = run(json.dumps({"gold": 18, "preds": [18.0, 3]}) + "\n")
    got = json.loads(out)
    assert rc == 0 and got["first"] == 100.0
    assert got["best@k"] is None and got["weighted@k"] is None and got["n_scored"] == 0


def test_register_parses_aggregate():
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["aggregate", "--k", "4"])
    assert args.k == 4 and args.handler is not None


def test_through_the_real_cli(monkeypatch, capsys):
    from rstar_jax import cli

    monkeypatch.setattr("sys.stdin", io.StringIO(
        json.dumps({"gold": "1/2", "preds": ["0.5", "\\frac{1}{2}", "3"],
                    "scores": [0.1, 0.2, 0.9]}) + "\nnot json\n"))
    assert cli.main(["aggregate", "--k", "3"]) == 0
    out, err = capsys.readouterr()
    # Real grader: {0.5, \frac{1}{2}} sum 0.3 < {3} 0.9, so weighted@k and best@k miss.
    assert json.loads(out) == {"n": 1, "skipped": 1, "n_scored": 1, "k": 3, "first": 100.0,
                               "maj@k": 100.0, "best@k": 0.0, "weighted@k": 0.0,
                               "pass@k": 100.0}
    assert "line 2: invalid JSON" in err
