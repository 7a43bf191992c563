"""CLI: `rstar-jax exec` and `rstar-jax grade`, JSON Lines in, JSON Lines out.

One output object per input line, in input order. A malformed line yields
`{"error": "line N: ..."}` for that line only. Input is read in chunks, so
a long stream starts producing output before it ends.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Iterator, List, Tuple

from rstar_jax.config.commands import add_config_arguments, config_from_args, ranged

CHUNK = 512  # lines per executor batch


def _chunks(stream) -> Iterator[List[Tuple[int, str]]]:
    batch = []
    for number, line in enumerate(stream, 1):
        batch.append((number, line.rstrip("\n")))
        if len(batch) >= CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def _parse(number: int, line: str, fields: Tuple[str, ...]):
    """(record, None) or (None, error message) for one input line."""
    try:
        obj = json.loads(line)
    except ValueError as e:
        return None, f"line {number}: invalid JSON ({e})"
    if not isinstance(obj, dict):
        return None, f"line {number}: expected a JSON object"
    for name in fields:
        if name not in obj:
            return None, f"line {number}: missing field {name!r}"
    return obj, None


def _parse_code(number: int, line: str):
    obj, err = _parse(number, line, ("code",))
    if err is None and not isinstance(obj["code"], str):
        return None, f"line {number}: 'code' must be a string"
    return obj, err


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")


def _exec(args: argparse.Namespace) -> int:
    from rstar_jax.execution.pool import ExecutorPool

    cfg = config_from_args(args).executor
    if args.timeout is not None:
        cfg = dataclasses.replace(cfg, timeout_s=float(args.timeout))
    with ExecutorPool(cfg) as pool:
        for batch in _chunks(sys.stdin):
            parsed = [_parse_code(n, line) for n, line in batch]
            codes = [obj["code"] for obj, err in parsed if err is None]
            results = iter(pool.run(codes))
            for _, err in parsed:
                if err is not None:
                    _emit({"error": err})
                else:
                    r = next(results)
                    _emit({"observation": r.observation, "error": r.error, "timed_out": r.timed_out})
            sys.stdout.flush()
    return 0


def _grade(args: argparse.Namespace) -> int:
    from rstar_jax.execution.answers import extract_answer
    from rstar_jax.execution.grading import grade

    config_from_args(args)
    for batch in _chunks(sys.stdin):
        for n, line in batch:
            obj, err = _parse(n, line, ("pred", "gold"))
            gold = obj.get("gold") if obj else None
            if err is None and not isinstance(obj["pred"], str):
                err = f"line {n}: 'pred' must be a string"
            if err is None and not (isinstance(gold, str) or
                                    (isinstance(gold, list) and all(isinstance(g, str) for g in gold))):
                err = f"line {n}: 'gold' must be a string or a list of strings"
            if err is not None:
                _emit({"error": err})
                continue
            pred = obj["pred"]
            answer = extract_answer(pred) if "boxed" in pred or "fbox" in pred else pred
            _emit({"equal": answer is not None and grade(answer, gold, timeout_s=args.timeout)})
        sys.stdout.flush()
    return 0


def register(sub) -> None:
    """Adds `exec` and `grade` to the `rstar-jax` parser."""
    ex = sub.add_parser(
        "exec", help="run step programs in the sandboxed pool (JSON Lines stdin -> stdout)",
        description='Reads {"code": "..."} per line; writes {"observation", "error", "timed_out"} '
                    "per line, same order, with the spec's observation rules.")
    ex.add_argument("--timeout", type=ranged(float, "executor.timeout_s"), default=None, metavar="S",
                    help="wall-clock seconds per program (default: executor.timeout_s)")
    add_config_arguments(ex, required=False)
    ex.set_defaults(handler=_exec)

    gr = sub.add_parser(
        "grade", help="grade answers against gold answers (JSON Lines stdin -> stdout)",
        description='Reads {"pred": "...", "gold": "..." or [...]} per line (pred may be a whole '
                    'response: its last \\boxed{} is graded); writes {"equal": bool} per line.')
    gr.add_argument("--timeout", type=ranged(float, "eval.grade_timeout_s"), default=5.0,
                    metavar="S", help="seconds per pair")
    add_config_arguments(gr, required=False)
    gr.set_defaults(handler=_grade)
