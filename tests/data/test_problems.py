import json

import pytest

from rstar_jax.data.problems import ProblemFileError, read_problems, write_problems
from testutil import SHARED_DATA


def test_reads_reference_benchmark_file():
    probs = read_problems(str(SHARED_DATA / "benchmarks" / "aime2024_test.json"))
    assert len(probs) == 30
    assert probs[0].question and probs[0].answer


def test_list_answers_become_tuples():
    probs = read_problems(str(SHARED_DATA / "benchmarks" / "math500_test.json"))
    assert len(probs) == 500
    assert any(isinstance(p.answer, tuple) for p in read_problems(
        str(SHARED_DATA / "benchmarks" / "MATH_test.json")))


def test_malformed_rows_are_skipped_and_counted(tmp_path, caplog):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2"}\nnot json\n{"answer": "3"}\n'
                    '{"question": "2+2?", "answer": 4}\n')
    probs = read_problems(str(path))
    assert [(p.id, p.answer) for p in probs] == [("0", "2"), ("3", "4")]
    assert "skipped 2 malformed" in caplog.text


def test_empty_or_missing_file_is_an_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("nope\n")
    with pytest.raises(ProblemFileError, match="no usable"):
        read_problems(str(bad))
    with pytest.raises(ProblemFileError, match="not found"):
        read_problems(str(tmp_path / "missing.json"))


def test_round_trip(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps([{"index": 7, "question": "q", "answer": ["1", "2"]}]))
    probs = read_problems(str(path))
    out = tmp_path / "o.jsonl"
    write_problems(str(out), probs)
    assert read_problems(str(out)) == probs
