"""The paper's benchmarks as lists of Problems.

`load_benchmark(name)` reads one evaluation set, from (first match wins):
  1. `name` itself when it is a JSON / JSONL file (any problem file);
  2. `path` when it is a file: read as plain JSON / JSONL, unless
     `data_dir` is set, in which case it is the tfds builder's source;
  3. `data_dir` set: the `rstar_benchmark/<name>` tfds builder (array_record,
     no TensorFlow) is built there once, from `path` (a directory holding the
     official file), tfds' manual_dir, or the public URL, then read back;
  4. `path` a directory: its official file read as plain JSON.
Names: see `BENCHMARKS` (aliases such as `aime`, `omni`, `gaokao` work).
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional

from rstar_jax.data.problems import Problem, ProblemFileError, problem_from_record, read_problems

log = logging.getLogger(__name__)

# name -> (official file, documented rows). Kept in sync with the tfds builder
# (tests check) without importing tfds for the plain-JSON path.
BENCHMARKS: Dict[str, tuple] = {
    "math500": ("math500_test.json", 500),
    "gsm8k": ("GSM8K_test.json", 1319),
    "aime2024": ("aime2024_test.json", 30),
    "amc23": ("amc23_test.json", 40),
    "olympiadbench": ("olympiadbench_test.json", 675),
    "collegemath": ("collegemath_test.json", 2818),
    "gaokao2023en": ("gaokao2023en_test.json", 385),
    "omnimath": ("omni_test.json", 4428),
    "math": ("MATH_test.json", 5000),
}
# The paper's eight evaluation sets, in its table order.
PAPER_BENCHMARKS = ("math500", "aime2024", "amc23", "olympiadbench", "collegemath", "gsm8k",
                    "gaokao2023en", "omnimath")
ALIASES = {
    "aime": "aime2024", "aime24": "aime2024", "amc": "amc23", "amc2023": "amc23",
    "olympiad": "olympiadbench", "college_math": "collegemath", "gaokao": "gaokao2023en",
    "gaokao2023": "gaokao2023en", "omni": "omnimath", "omni_math": "omnimath",
    "omni-math": "omnimath", "math_test": "math",
}


class BenchmarkError(ValueError):
    """Unknown benchmark name or no usable source."""


def canonical_name(name: str) -> str:
    """Benchmark name in lower case with aliases resolved; raises on unknown."""
    key = name.strip().lower().replace(" ", "")
    key = ALIASES.get(key, key)
    if key not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)} "
                             "(or give a JSON/JSONL file)")
    return key


def _is_file(p: Optional[str]) -> bool:
    return bool(p) and os.path.isfile(p)


def load_benchmark(
    name: str,
    data_dir: Optional[str] = None,
    path: Optional[str] = None,
    limit: Optional[int] = None,
) -> List[Problem]:
    """Problems of one benchmark, in file order (see the module docstring).

    Raises:
      BenchmarkError: unknown name or nothing to read from.
      ProblemFileError: a source file with no usable row.
    """
    if _is_file(name):
        return read_problems(name, limit)
    key = canonical_name(name)
    if _is_file(path) and data_dir is None:
        return _checked(key, read_problems(path, limit), limit)
    if data_dir is not None:
        return _checked(key, load_tfds(key, data_dir, source_path=path, limit=limit), limit)
    if path and os.path.isdir(path):
        file = os.path.join(path, BENCHMARKS[key][0])
        if not os.path.isfile(file):
            raise BenchmarkError(f"eval.benchmark_dir={path} holds no {BENCHMARKS[key][0]}")
        return _checked(key, read_problems(file, limit), limit)
    missing = f" (eval.benchmark_dir={path}: no such file or directory)" if path else ""
    raise BenchmarkError(
        f"no source for {key}{missing}: set eval.benchmark_dir (the file or a directory holding "
        f"{BENCHMARKS[key][0]}) or eval.data_dir (tfds cache, downloads the official file)")


def _checked(key: str, problems: List[Problem], limit: Optional[int]) -> List[Problem]:
    expected = BENCHMARKS[key][1]
    if limit is None and len(problems) != expected:
        log.warning("%s: %d problems, the official file has %d", key, len(problems), expected)
    return problems


def build_tfds(key: str, data_dir: str, source_path: Optional[str] = None,
               manual_dir: Optional[str] = None):
    """Builds (once) and returns the `rstar_benchmark/<key>` tfds builder."""
    import tensorflow_datasets as tfds

    from rstar_jax.data.tfds_builders.rstar_benchmark import RstarBenchmark

    builder = RstarBenchmark(config=key, data_dir=data_dir, file_format="array_record",
                             source_path=source_path)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    builder.download_and_prepare(download_config=download_config)
    return builder


def load_tfds(key: str, data_dir: str, source_path: Optional[str] = None,
              limit: Optional[int] = None, manual_dir: Optional[str] = None) -> List[Problem]:
    """Reads a benchmark through its tfds builder (array_record data source)."""
    from rstar_jax.data.tfds_builders.rstar_benchmark import decode_row

    source = build_tfds(key, data_dir, source_path, manual_dir).as_data_source(split="test")
    n = len(source) if limit is None else min(limit, len(source))
    problems = []
    for i in range(n):
        row = decode_row(source[i])
        problems.append(problem_from_record(row, fallback_id=str(i)))
    if not problems:
        raise ProblemFileError(f"tfds {key} in {data_dir} holds no problem")
    return problems
