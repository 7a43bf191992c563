"""Sandboxed execution of step code, answer extraction and grading (spec 3, 8).

Public API:
- `ExecutorPool(cfg)`: the `Executor` (submit / run / close, context manager).
- `cumulative_program(step_texts)`, `step_code(text)`: what a node runs.
- `extract_answer(text)`: the last `\\boxed{}`.
- `grade(pred, gold)`, `grade_many(pairs, executor)`, `is_equiv(a, b)`.
"""

from rstar_jax.execution.answers import extract_answer
from rstar_jax.execution.grading import grade, grade_many, is_equiv
from rstar_jax.execution.pool import ExecutorPool
from rstar_jax.execution.program import cumulative_program, step_code
from rstar_jax.execution.types import ExecResult, Executor

__all__ = ["ExecResult", "Executor", "ExecutorPool", "cumulative_program", "extract_answer",
           "grade", "grade_many", "is_equiv", "step_code"]
