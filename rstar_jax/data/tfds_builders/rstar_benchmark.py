"""`rstar_benchmark/<name>`: the paper's evaluation sets as one tfds builder.

One config per benchmark (MATH500, GSM8K, AIME 2024, AMC 2023,
OlympiadBench, College Math, Gaokao 2023 En, Omni-MATH, full MATH test),
one `test` split each, written as array_record so that reading needs
neither TensorFlow nor a network: `builder.as_data_source("test")`.

The source, first match wins: the `source_path` given to the builder (a
file, or a directory holding the official file name), then tfds'
`manual_dir` (same rule), then the official file at its public URL (the
reference implementation's `eval_data/`). Rows keep file order
(`disable_shuffling`), so ids and indices line up with the source.

Every answer is stored as a list of strings (`answers`); a row whose source
answer is a list keeps all its elements (any one counts when grading).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

REFERENCE_URL = "https://raw.githubusercontent.com/microsoft/rStar/rStar-math/eval_data/"

# name -> (official file name, documented row count, description)
SOURCES = {
    "math500": ("math500_test.json", 500, "MATH500 (PRM800K split of the MATH test set)"),
    "gsm8k": ("GSM8K_test.json", 1319, "GSM8K test"),
    "aime2024": ("aime2024_test.json", 30, "AIME 2024"),
    "amc23": ("amc23_test.json", 40, "AMC 2023"),
    "olympiadbench": ("olympiadbench_test.json", 675, "OlympiadBench (English, text-only math)"),
    "collegemath": ("collegemath_test.json", 2818, "College Math"),
    "gaokao2023en": ("gaokao2023en_test.json", 385, "Gaokao 2023 English"),
    "omnimath": ("omni_test.json", 4428, "Omni-MATH"),
    "math": ("MATH_test.json", 5000, "the full MATH test set"),
}


@dataclasses.dataclass(eq=False)
class BenchmarkConfig(tfds.core.BuilderConfig):
    """Which official file a config reads and how many rows it should have."""

    filename: str = ""
    num_rows: int = 0


def _config(name: str) -> BenchmarkConfig:
    filename, rows, desc = SOURCES[name]
    return BenchmarkConfig(name=name, description=desc, filename=filename, num_rows=rows)


def source_url(name: str) -> str:
    """The public URL of a benchmark's official file."""
    return REFERENCE_URL + SOURCES[name][0]


def _resolve_local(path: Optional[str], filename: str) -> Optional[str]:
    if not path:
        return None
    path = os.fspath(path)
    if os.path.isdir(path):
        candidate = os.path.join(path, filename)
        return candidate if os.path.isfile(candidate) else None
    return path if os.path.isfile(path) else None


class RstarBenchmark(tfds.core.GeneratorBasedBuilder):
    """The rStar-Math evaluation benchmarks (MIT, microsoft/rStar eval_data)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "The reference implementation's eval_data files."}
    BUILDER_CONFIGS = [_config(n) for n in SOURCES]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional: put the official JSON file (e.g. math500_test.json) in manual_dir; "
        f"otherwise it is downloaded from {REFERENCE_URL}."
    )

    # tfds 4.9's default `code_path` touches the `importlib_resources`
    # backport (only installed on Python < 3.9) for package-defined builders;
    # our file's own path is what it wants to compute anyway.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(os.path.abspath(__file__))

    def __init__(self, *, source_path: Optional[str] = None, **kwargs):
        self._source_path = source_path
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.builder_config.description,
            features=tfds.features.FeaturesDict({
                "index": tfds.features.Scalar(dtype=np.int64),
                "id": tfds.features.Text(),
                "question": tfds.features.Text(),
                "answers": tfds.features.Sequence(tfds.features.Text()),
            }),
            homepage="https://github.com/microsoft/rStar",
            disable_shuffling=True,  # keep file order: ids line up with the source
        )

    def _source_file(self, dl_manager) -> str:
        filename = self.builder_config.filename
        local = _resolve_local(self._source_path, filename)
        if local:
            return local
        if self._source_path:
            raise FileNotFoundError(f"{self._source_path} is not {filename} nor a directory "
                                    "holding it")
        try:
            local = _resolve_local(str(dl_manager.manual_dir), filename)
        except (AssertionError, ValueError):  # no manual_dir given
            local = None
        return local or os.fspath(dl_manager.download(REFERENCE_URL + filename))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples(self._source_file(dl_manager))}

    def _generate_examples(self, path: str):
        # Local import: the problem parser is plain Python, shared with the
        # JSON path so both accept exactly the same rows.
        from rstar_jax.data.problems import read_problems

        for i, p in enumerate(read_problems(path)):
            answers = list(p.answer) if isinstance(p.answer, tuple) else (
                [] if p.answer is None else [p.answer])
            index = p.meta.get("index", i)
            yield i, {
                "index": int(index) if isinstance(index, int) else i,
                "id": p.id,
                "question": p.question,
                "answers": answers,
            }


def decode_row(row) -> dict:
    """An array_record row (bytes) -> {"index", "id", "question", "answer"}."""
    def text(x):
        return x.decode("utf-8") if isinstance(x, bytes) else str(x)

    answers = [text(a) for a in row["answers"]]
    answer = None if not answers else answers[0] if len(answers) == 1 else answers
    return {"index": int(row["index"]), "id": text(row["id"]),
            "question": text(row["question"]), "answer": answer}

