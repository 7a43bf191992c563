"""Problems: the unit of work for search, training-data generation and evaluation.

A problem file is a JSON list or JSON Lines of objects with a question and,
when known, a gold answer. The reference's benchmark files use
`{"index", "question", "answer"}`; `problem`/`id`/`unique_id` spellings are
accepted too. A gold answer may be a list (any element counts).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

log = logging.getLogger(__name__)

Answer = Union[str, Tuple[str, ...], None]

_QUESTION_KEYS = ("question", "problem", "query")
_ID_KEYS = ("id", "index", "unique_id", "idx")


@dataclass(frozen=True)
class Problem:
    """One math problem. `answer` is None at inference time."""

    id: str
    question: str
    answer: Answer = None
    meta: Dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class ProblemFileError(ValueError):
    """A problem file is unreadable or holds no usable problem."""


def problem_from_record(record: Any, fallback_id: str) -> Problem:
    """Builds a Problem from one JSON object; raises ValueError with a reason."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    question = next((record[k] for k in _QUESTION_KEYS if k in record), None)
    if not isinstance(question, str) or not question.strip():
        raise ValueError("no non-empty 'question' field")
    pid = next((record[k] for k in _ID_KEYS if k in record), fallback_id)
    answer = record.get("answer")
    if isinstance(answer, list):
        if not all(isinstance(a, (str, int, float)) for a in answer) or not answer:
            raise ValueError("'answer' list must hold strings or numbers")
        answer = tuple(str(a) for a in answer)
    elif isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    elif answer is not None and not isinstance(answer, str):
        raise ValueError(f"'answer' must be a string or a list, not {type(answer).__name__}")
    meta = {k: v for k, v in record.items() if k not in _QUESTION_KEYS + ("answer",)}
    return Problem(id=str(pid), question=question, answer=answer, meta=meta)


def read_problems(path: str, limit: Optional[int] = None) -> List[Problem]:
    """Reads a JSON list or JSON Lines problem file.

    Malformed rows are skipped with a logged, counted reason; a file with no
    usable row is an error. Ids must be unique (they key resumption).
    """
    if not os.path.isfile(path):
        raise ProblemFileError(f"problem file not found: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    records: Sequence[Any]
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise ProblemFileError(f"{path} is not valid JSON: {e}") from None
    else:
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                records.append(ValueError(f"line {lineno}: invalid JSON ({e.msg})"))
    problems: List[Problem] = []
    skipped = 0
    seen = set()
    for i, rec in enumerate(records):
        try:
            if isinstance(rec, ValueError):
                raise rec
            p = problem_from_record(rec, fallback_id=str(i))
            if p.id in seen:
                raise ValueError(f"duplicate id {p.id!r}")
        except ValueError as e:
            skipped += 1
            log.warning("%s: skipping row %d: %s", path, i, e)
            continue
        seen.add(p.id)
        problems.append(p)
        if limit is not None and len(problems) >= limit:
            break
    if skipped:
        log.warning("%s: skipped %d malformed row(s) of %d", path, skipped, len(records))
    if not problems:
        raise ProblemFileError(f"{path} holds no usable problem ({skipped} malformed)")
    return problems


def write_problems(path: str, problems: Sequence[Problem]) -> None:
    """Writes problems as JSON Lines (atomically: temp file + rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for p in problems:
            answer = list(p.answer) if isinstance(p.answer, tuple) else p.answer
            f.write(json.dumps({**p.meta, "id": p.id, "question": p.question, "answer": answer}) + "\n")
    os.replace(tmp, path)
