"""Problem sources behind one call: `load_problems(data_cfg, split)`.

`data.source` picks the source:
  jsonl  a problem file (`read_problems`): `data.path` for train,
         `data.test_path` for test;
  arith  the seeded arithmetic generator (`arith.py`): `data.arith_seed` /
         `data.arith_count` for train, `data.arith_test_seed` /
         `data.arith_test_count` for test, levels `data.arith_levels`;
  tfds   a benchmark by name (`data.path`, test: `data.test_path` or the
         same name) through `rstar_jax.data.benchmarks.load_benchmark`.
`data.limit` / `data.test_limit` cap the count for every source.
"""

from __future__ import annotations

from typing import List, Optional

from rstar_jax.config.schema import DataConfig
from rstar_jax.data.problems import Problem, ProblemFileError, read_problems

SPLITS = ("train", "test")


def _limit(problems: List[Problem], limit: Optional[int]) -> List[Problem]:
    return problems if limit is None else problems[:limit]


def load_problems(data_cfg: DataConfig, split: str = "train") -> List[Problem]:
    """The problems of `split` from the source `data_cfg.source` names.

    Raises:
      ValueError: unknown split or source, or a source missing its path.
      ProblemFileError: a jsonl file that is missing or holds no problem.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    test = split == "test"
    limit = data_cfg.test_limit if test else data_cfg.limit
    source = data_cfg.source
    if source == "arith":
        from rstar_jax.data.arith import generate_problems

        seed = data_cfg.arith_test_seed if test else data_cfg.arith_seed
        count = data_cfg.arith_test_count if test else data_cfg.arith_count
        return _limit(generate_problems(seed, count, data_cfg.arith_levels,
                                        data_cfg.arith_final_mod_share), limit)
    if source == "jsonl":
        path = data_cfg.test_path if test else data_cfg.path
        if not path:
            key = "data.test_path" if test else "data.path"
            raise ValueError(f"data.source=jsonl needs {key} for the {split} split")
        return read_problems(path, limit=limit)
    if source == "tfds":
        from rstar_jax.data.benchmarks import load_benchmark

        name = (data_cfg.test_path or data_cfg.path) if test else data_cfg.path
        if not name:
            raise ValueError("data.source=tfds needs the benchmark name in data.path")
        problems = list(load_benchmark(name, limit=limit))
        if not problems:
            raise ProblemFileError(f"benchmark {name!r} holds no problem")
        return _limit(problems, limit)
    raise ValueError(f"unknown data.source {source!r}; expected jsonl, arith or tfds")
