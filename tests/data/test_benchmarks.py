"""Benchmark loaders: documented row counts through JSON and through tfds."""

import json

import pytest

from rstar_jax.data import benchmarks as B

COUNTS = {"math500": 500, "gsm8k": 1319, "aime2024": 30, "amc23": 40, "olympiadbench": 675,
          "collegemath": 2818, "gaokao2023en": 385, "omnimath": 4428, "math": 5000}


@pytest.fixture(scope="module")
def bench_dir(shared_data):
    return str(shared_data / "benchmarks")


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def test_registry_matches_builder_and_counts():
    from rstar_jax.data.tfds_builders import rstar_benchmark as rb

    assert {k: v[1] for k, v in B.BENCHMARKS.items()} == COUNTS
    assert {k: (v[0], v[1]) for k, v in rb.SOURCES.items()} == B.BENCHMARKS
    assert set(B.PAPER_BENCHMARKS) == set(COUNTS) - {"math"}
    assert rb.source_url("gsm8k") == (
        "https://raw.githubusercontent.com/microsoft/rStar/rStar-math/eval_data/GSM8K_test.json")


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_json_path_row_counts(name, bench_dir):
    problems = B.load_benchmark(name, path=bench_dir)
    assert len(problems) == COUNTS[name]
    assert len({p.id for p in problems}) == COUNTS[name]
    assert all(p.question.strip() and p.answer is not None for p in problems)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_tfds_builder_row_counts_and_same_rows(name, bench_dir, tfds_dir):
    via_tfds = B.load_benchmark(name, data_dir=tfds_dir, path=bench_dir)
    via_json = B.load_benchmark(name, path=bench_dir)
    assert len(via_tfds) == COUNTS[name]
    # Same order, ids, questions and answers as the file (no shuffling).
    assert [(p.id, p.question, p.answer) for p in via_tfds] == [
        (p.id, p.question, p.answer) for p in via_json]
    files = list((__import__("pathlib").Path(tfds_dir) / "rstar_benchmark" / name).rglob("*"))
    assert any("array_record" in f.name for f in files)


def test_list_answers_survive_both_paths(bench_dir, tfds_dir):
    for problems in (B.load_benchmark("math", path=bench_dir),
                     B.load_benchmark("math", data_dir=tfds_dir, path=bench_dir)):
        by_index = {p.meta.get("index"): p for p in problems}
        assert by_index[334].answer == ("3", "-3")
        assert sum(isinstance(p.answer, tuple) for p in problems) == 4


def test_sources_aliases_limits_and_errors(bench_dir, tmp_path):
    assert B.canonical_name("Omni-MATH") == "omnimath"
    assert B.canonical_name("AIME") == "aime2024"
    assert len(B.load_benchmark("gsm8k", path=bench_dir, limit=7)) == 7
    # A plain file by name or by path.
    f = tmp_path / "mine.jsonl"
    f.write_text("\n".join(json.dumps({"id": f"p{i}", "question": f"{i}+1?", "answer": str(i + 1)})
                           for i in range(3)) + "\n")
    assert [p.answer for p in B.load_benchmark(str(f))] == ["1", "2", "3"]
    assert len(B.load_benchmark("gsm8k", path=str(f))) == 3
    # A single file as the tfds builder's source.
    got = B.load_benchmark("aime2024", data_dir=str(tmp_path / "t"),
                           path=f"{bench_dir}/aime2024_test.json", limit=5)
    assert len(got) == 5
    with pytest.raises(B.BenchmarkError, match="unknown benchmark"):
        B.load_benchmark("mathqa", path=bench_dir)
    with pytest.raises(B.BenchmarkError, match="no source"):
        B.load_benchmark("gsm8k")
    with pytest.raises(B.BenchmarkError, match="holds no"):
        B.load_benchmark("gsm8k", path=str(tmp_path))


def test_tfds_manual_dir(bench_dir, tmp_path):
    problems = B.load_tfds("amc23", str(tmp_path / "d"), manual_dir=bench_dir)
    assert len(problems) == 40


def test_reference_list_answers_grade_as_any_element(bench_dir):
    from rstar_jax.execution.grading import grade

    by_index = {p.meta.get("index"): p for p in B.load_benchmark("math", path=bench_dir)}
    gold = by_index[334].answer
    assert gold == ("3", "-3")
    assert grade("3", list(gold)) and grade("-3", list(gold)) and not grade("0", list(gold))
    foci = list(by_index[2717].answer)
    assert grade("(0,0)", foci) and grade("(10, 0)", foci) and not grade("(5,0)", foci)
