"""Per-problem evaluation records and their resumable JSONL store.

Every finished problem is one line of `<out>/<benchmark>/results.jsonl`
holding its prompt, every raw trajectory, the extracted answers and scores
and the generated-token count: the file to open when a number looks wrong,
and the one `report` recomputes every metric from (grading is never cached
on disk, so a better grader re-scores old runs).

Resumption: a line is appended with one `write` on an O_APPEND descriptor
and fsynced, so a crash leaves at most one torn last line; `load` drops it
(and truncates it away before the next append). Problems whose id is in the
file are skipped on rerun.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

from rstar_jax.data.problems import Problem

log = logging.getLogger(__name__)

Gold = Union[str, List[str], None]


@dataclass
class ProblemResult:
    """One problem's outcome under one method.

    `outputs[i]`, `preds[i]` and `scores[i]` describe candidate i (a whole
    trajectory); `chosen` is the method's final answer (None: no answer).
    `generated_tokens` counts every token the policy generated for the
    problem, search overhead included (the paper's Table 9).
    """

    id: str
    benchmark: str
    method: str
    question: str
    gold: Gold
    prompt: str = ""
    outputs: List[str] = field(default_factory=list)
    preds: List[Optional[str]] = field(default_factory=list)
    scores: Optional[List[float]] = None
    chosen: Optional[str] = None
    generated_tokens: int = 0
    meta: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> ProblemResult:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        missing = {"id", "benchmark", "method", "question", "gold"} - set(known)
        if missing:
            raise ValueError(f"missing field(s) {sorted(missing)}")
        r = cls(**known)
        if r.scores is not None and len(r.scores) != len(r.preds):
            raise ValueError(f"{len(r.preds)} preds but {len(r.scores)} scores")
        return r


class ResultStore:
    """Append-only JSONL of ProblemResults with crash-safe resumption."""

    def __init__(self, path: str):
        self.path = path

    def load(self) -> Dict[str, ProblemResult]:
        """{id: result} of complete lines; a torn last line is dropped."""
        if not os.path.isfile(self.path):
            return {}
        out: Dict[str, ProblemResult] = {}
        good_end = 0
        with open(self.path, "rb") as f:
            data = f.read()
        pos = 0
        for raw in data.splitlines(keepends=True):
            line_end = pos + len(raw)
            complete = raw.endswith(b"\n")
            try:
                r = ProblemResult.from_json(json.loads(raw))
            except (ValueError, TypeError) as e:
                if complete:
                    log.warning("%s: ignoring a bad line at byte %d: %s", self.path, pos, e)
                    good_end = line_end
                pos = line_end
                continue
            if complete:
                out[r.id] = r
                good_end = line_end
            pos = line_end
        if good_end < len(data):
            log.warning("%s: dropping a torn last line (%d bytes)", self.path,
                        len(data) - good_end)
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
        return out

    def append(self, results: Sequence[ProblemResult]) -> None:
        """Appends results, one `write` + fsync per call."""
        if not results:
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        payload = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in results)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, payload.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json_atomic(path: str, obj: Any) -> None:
    """JSON file written through a temp file and a rename."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def result_for(problem: Problem, benchmark: str, method: str, **fields) -> ProblemResult:
    """A ProblemResult pre-filled from its problem (runners call this)."""
    gold = list(problem.answer) if isinstance(problem.answer, tuple) else problem.answer
    meta = {k: v for k, v in problem.meta.items() if k in ("unique_id", "index", "level",
                                                          "subject")}
    meta.update(fields.pop("meta", {}))
    return ProblemResult(id=problem.id, benchmark=benchmark, method=method,
                         question=problem.question, gold=gold, meta=meta, **fields)
