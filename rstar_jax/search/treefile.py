"""Tree files: one JSON object per problem per line, appended as problems finish.

A record holds the problem, its gold answer and every node of every tree
searched for it (tags "0.1.2" as in the reference). Each record is written
with a single `write` of the whole line, then flushed and fsynced, so a
killed run loses at most the problems in flight; on resume a torn last line
is cut off and the finished problems are skipped. Records carry no clock
readings, so a rerun writes byte-identical lines.

Multi-host: JAX process `p` of `P` searches problems `p, p+P, ...` and
writes `trees.<p>.jsonl`; `merge_tree_files` combines the shards.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from rstar_jax.data.problems import Problem
from rstar_jax.search import tree as T

log = logging.getLogger(__name__)

MERGED_NAME = "trees.jsonl"
_SHARD = re.compile(r"trees\.(\d+)\.jsonl$")


def shard_path(out_dir: str, process_index: int) -> str:
    return os.path.join(out_dir, f"trees.{process_index}.jsonl")


def shard_problems(problems: Sequence[Problem], process_index: int, process_count: int) -> List[Problem]:
    """This process's share: every `process_count`-th problem from `process_index`."""
    return list(problems[process_index::process_count])


def make_record(problem: Problem, trees: Sequence[T.Tree], seeds: Sequence[int], *,
                mode: str = "mcts", extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The JSON object of one finished problem (no wall-clock data)."""
    answer = list(problem.answer) if isinstance(problem.answer, tuple) else problem.answer
    rec = {
        "id": problem.id,
        "question": problem.question,
        "answer": answer,
        "mode": mode,
        "solved": any(T.is_solved(t) for t in trees),
        "trees": [dict(seed=s, **t.to_json()) for t, s in zip(trees, seeds)],
    }
    if extra:
        rec.update(extra)
    return rec


def record_trees(record: Dict[str, Any]) -> List[T.Tree]:
    return [T.Tree.from_json(t) for t in record["trees"]]


def record_answers(record: Dict[str, Any]) -> List[Tuple[Optional[str], Optional[float]]]:
    """(final answer, PPM score) of every final-answer node of a record, all
    trees, in creation order: the input of `rstar_jax.search.selection`."""
    out = []
    for t in record["trees"]:
        for n in t["nodes"]:
            if n.get("terminal_reason") == T.FINAL_ANSWER:
                out.append((n.get("final_answer"), n.get("ppm_value")))
    return out


def encode(record: Dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def _complete_prefix_len(path: str) -> int:
    """Bytes up to and including the last newline (a torn tail is excluded)."""
    with open(path, "rb") as f:
        data = f.read()
    return data.rfind(b"\n") + 1


def read_records(path: str) -> Iterator[Dict[str, Any]]:
    """Records of a tree file; a torn (unterminated or unparsable) last line is skipped."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if i >= len(lines) - 2:
                log.warning("%s: ignoring a torn last record", path)
                return
            raise ValueError(f"{path}:{i + 1}: corrupt record") from None


class TreeWriter:
    """Appends records atomically; knows which problems are already done."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.done: Set[str] = set()
        self.questions: Dict[str, str] = {}  # id -> the question its record answered
        if os.path.exists(path):
            keep = _complete_prefix_len(path)
            if keep != os.path.getsize(path):
                log.warning("%s: cutting a torn last record (%d bytes)", path,
                            os.path.getsize(path) - keep)
                with open(path, "r+b") as f:
                    f.truncate(keep)
            for rec in read_records(path):
                self.done.add(str(rec["id"]))
                self.questions[str(rec["id"])] = rec.get("question")
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: Dict[str, Any]) -> None:
        data = encode(record)
        view = memoryview(data)
        while view:  # one write for a regular file; loop only on a short write
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)
        self.done.add(str(record["id"]))
        self.questions[str(record["id"])] = record.get("question")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def shard_files(tree_dir: str) -> List[Tuple[int, str]]:
    out = []
    for p in glob.glob(os.path.join(tree_dir, "trees.*.jsonl")):
        m = _SHARD.search(os.path.basename(p))
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def tree_files(tree_dir: str) -> List[str]:
    """The tree files of a directory: the merged file if present, else the shards."""
    if os.path.isfile(tree_dir):
        return [tree_dir]
    merged = os.path.join(tree_dir, MERGED_NAME)
    if os.path.isfile(merged):
        return [merged]
    return [p for _, p in shard_files(tree_dir)]


def load_records(tree_dir: str) -> List[Dict[str, Any]]:
    """All records of a directory (or one file), first record per id wins."""
    seen, out = set(), []
    for path in tree_files(tree_dir):
        for rec in read_records(path):
            if rec["id"] in seen:
                continue
            seen.add(rec["id"])
            out.append(rec)
    return out


def merge_tree_files(tree_dir: str, out_path: Optional[str] = None) -> Dict[str, int]:
    """Combines `trees.<p>.jsonl` shards into one file, sorted by problem id.

    Returns counts: shards, records, duplicates (same id in two shards; the
    first is kept and the rest reported).
    """
    out_path = out_path or os.path.join(tree_dir, MERGED_NAME)
    shards = shard_files(tree_dir)
    if not shards:
        raise FileNotFoundError(f"no trees.<process>.jsonl files in {tree_dir}")
    recs: Dict[str, bytes] = {}
    dup = 0
    for _, path in shards:
        for rec in read_records(path):
            key = str(rec["id"])
            if key in recs:
                dup += 1
                continue
            recs[key] = encode(rec)
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as f:
        for key in sorted(recs, key=id_order_key):
            f.write(recs[key])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out_path)
    return {"shards": len(shards), "records": len(recs), "duplicates": dup}


def id_order_key(pid: Any) -> List[Tuple[int, int, str]]:
    """Problem-id order: integer ids numerically and first, the rest in
    natural order (`arith-0-2` before `arith-0-10`)."""
    s = str(pid)
    if s.lstrip("-").isdigit():
        return [(0, int(s), "")]
    return [(1, 0, "")] + [(0, int(p), "") if p.isdigit() else (1, 0, p)
                           for p in re.split(r"(\d+)", s)]
