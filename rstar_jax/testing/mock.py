"""Fakes you can check by hand: a policy whose steps are arithmetic on its
prompt, a safe mini-executor for that arithmetic, and a PPM whose score is a
function of the text. Used by tests/search, tests/evaluation and benchmarks/bench_search.py.

The mock policy solves "What is A + B?" in `steps` tool steps plus an
answer step. Candidate `j` of a request uses offset
`o = (seed + j) % max(n, 2)` when seeded and sampling (temperature > 0),
else `o = j`; offset 0 is the right path:

    depth 1: "<code>\\n# Step 1: start\\nx = A + o\\n<end_of_step>"
    depth 2..steps-1: "\\n\\n# Step k: keep going\\nx = x + o\\n<end_of_step>"
    depth steps: "\\n\\n# Now print the final answer\\nprint(x + B)\\n<end_of_code>"
    depth steps+1: "\\n<answer>The answer is \\\\boxed{OUT}.<end_of_answer>"
                   (OUT read from the last <output>; candidate j > 0 appends
                   " Done." j times, so only the first answer is kept)

With `error_offset=e`, offset `e` writes `x = A / 0` instead (a
ZeroDivisionError observation). A completion runs on through the steps
above until it ends with one of the request's stop strings, so without
`<end_of_step>` among them one call writes every tool step up to
`<end_of_code>` (the whole-solution greedy).
"""

from __future__ import annotations

import ast
import hashlib
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import List, Optional, Sequence

import numpy as np

from rstar_jax.data.prompts import (
    ASSISTANT,
    ASSISTANT_PREFIX,
    CODE,
    END_OF_ANSWER,
    END_OF_CODE,
    END_OF_OUTPUT,
    END_OF_STEP,
    OUTPUT,
)
from rstar_jax.execution.types import ExecResult
from rstar_jax.inference.types import Completion, GenerationRequest
from rstar_jax.search.expansion import Hooks

_INT = re.compile(r"-?\d+")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_OUT = re.compile(re.escape(OUTPUT) + r"(.*?)" + re.escape(END_OF_OUTPUT), re.S)


def split_prompt(prompt: str):
    """(question, partial solution) of a policy prompt."""
    head, _, partial = prompt.partition(f"{ASSISTANT}: {ASSISTANT_PREFIX}")
    question = head.split(":\n", 1)[1] if ":\n" in head else head
    return question, partial


def steps_done(partial: str) -> int:
    return sum(partial.count(t) for t in (END_OF_STEP, END_OF_CODE, END_OF_ANSWER))


class MockEngine:
    """`GenerationEngine` whose candidates are arithmetic on the prompt.

    `call_latency_s` sleeps once per `generate` call, like a device batch
    whose cost does not grow with the batch (for the benchmark).
    """

    def __init__(self, steps: int = 2, seeded: bool = False, error_offset: Optional[int] = None,
                 call_latency_s: float = 0.0):
        self.steps = steps
        self.seeded = seeded
        self.error_offset = error_offset
        self.call_latency_s = call_latency_s
        self.calls: List[int] = []  # batch size of every call

    def step_text(self, prompt: str, offset: int, j: int) -> str:
        question, partial = split_prompt(prompt)
        nums = [int(x) for x in _INT.findall(question)] + [0, 0]
        a, b = nums[0], nums[1]
        k = steps_done(partial)
        if k == 0:
            expr = f"{a} / 0" if offset == self.error_offset else f"{a} + {offset}"
            return f"{CODE}\n# Step 1: start\nx = {expr}\n{END_OF_STEP}"
        if k < self.steps - 1:
            expr = "x / 0" if offset == self.error_offset else f"x + {offset}"
            return f"\n\n# Step {k + 1}: keep going\nx = {expr}\n{END_OF_STEP}"
        if k == self.steps - 1:
            return f"\n\n# Now print the final answer\nprint(x + {b})\n{END_OF_CODE}"
        outs = _OUT.findall(partial)
        out = outs[-1] if outs else "?"
        return f"\n<answer>The answer is \\boxed{{{out}}}." + " Done." * j + END_OF_ANSWER

    def generate(self, requests: Sequence[GenerationRequest]) -> List[List[Completion]]:
        self.calls.append(len(requests))
        if self.call_latency_s:
            time.sleep(self.call_latency_s)
        out = []
        for r in requests:
            n = r.params.n
            comps = []
            # Like a real engine, a completion runs on to the first of the
            # request's stop strings (none given: every step tag stops it).
            tags = {END_OF_STEP, END_OF_CODE, END_OF_ANSWER}
            stops = (set(r.params.stop) & tags) or tags
            for j in range(n):
                o = j
                if self.seeded and r.params.temperature > 0:
                    o = (r.params.seed + j) % max(n, 2)
                text = ""
                while True:
                    text += self.step_text(r.prompt + text, o, j)
                    stop = next(t for t in (END_OF_STEP, END_OF_CODE, END_OF_ANSWER)
                                if text.endswith(t))
                    if stop in stops:
                        break
                comps.append(Completion(text=text, token_ids=(), stop_reason="stop", stop_string=stop))
            out.append(comps)
        return out


# --- the fake executor ---------------------------------------------------------


def _eval(node, env):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise NameError(f"name '{node.id}' is not defined")
        return env[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, env)
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, env), _eval(node.right, env)
        ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
               ast.Div: lambda: a / b}
        if type(node.op) in ops:
            return ops[type(node.op)]()
    raise SyntaxError("unsupported expression")


def run_mini_program(program: str) -> ExecResult:
    """Assignments and print() of + - * / arithmetic, evaluated without exec."""
    env: dict = {}
    printed: List[str] = []
    try:
        for stmt in ast.parse(program).body:
            if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                env[stmt.targets[0].id] = _eval(stmt.value, env)
            elif (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
                  and getattr(stmt.value.func, "id", "") == "print"):
                v = _eval(stmt.value.args[0], env)
                printed.append(str(int(v)) if float(v).is_integer() else str(round(v, 4)))
            else:
                raise SyntaxError("unsupported statement")
    except Exception as e:  # noqa: BLE001 - the observation is the error
        return ExecResult(observation=f"{type(e).__name__}: {e}", error=True)
    return ExecResult(observation="\n".join(printed))


def mock_cumulative_program(step_texts: Sequence[str]) -> Optional[str]:
    """Code lines from the start of the current `<code>` block through the last
    step; None when the last step has no code (an answer step)."""
    if not step_texts or not mock_step_code(step_texts[-1]):
        return None
    joined = "".join(step_texts)
    start = joined.rfind(CODE)
    return mock_step_code(joined[start:] if start >= 0 else joined)


def mock_step_code(text: str) -> str:
    """The non-comment code lines of a text (outputs, tags and answers removed)."""
    if "<answer>" in text:
        text = text[: text.index("<answer>")]
    text = _OUT.sub("", text)
    for tag in (CODE, END_OF_STEP, END_OF_CODE):
        text = text.replace(tag, "")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return "\n".join(lines)


def mock_extract_answer(text: str) -> Optional[str]:
    m = _BOXED.findall(text)
    return m[-1].strip() if m else None


def mock_grade(pred: Optional[str], gold: str) -> bool:
    return pred is not None and pred.strip() == str(gold).strip()


MOCK_HOOKS = Hooks(mock_cumulative_program, mock_extract_answer, mock_grade, mock_step_code)


class _DoneFuture:
    def __init__(self, results):
        self._results = results

    def done(self) -> bool:
        return True

    def result(self, timeout=None):
        return self._results


class FakeExecutor:
    """`Executor` running `run_mini_program`. With `latency_s`, a batch runs on
    a background thread and takes `latency_s * ceil(len / workers)`, like a
    process pool of `workers` (0: synchronous, instant)."""

    def __init__(self, latency_s: float = 0.0, workers: int = 1):
        self.latency_s = latency_s
        self.workers = max(1, workers)
        self.submitted: List[List[str]] = []
        self._pool = ThreadPoolExecutor(2) if latency_s else None

    def _run_all(self, programs):
        if self.latency_s:
            time.sleep(self.latency_s * -(-len(programs) // self.workers))
        return [run_mini_program(p) for p in programs]

    def submit(self, programs: Sequence[str]):
        programs = list(programs)
        self.submitted.append(programs)
        if self._pool is None:
            return _DoneFuture(self._run_all(programs))
        fut: Future = self._pool.submit(self._run_all, programs)
        return fut

    def run(self, programs: Sequence[str]) -> List[ExecResult]:
        return self.submit(programs).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


class MockScorer:
    """`StepScorer`: +0.5 when the last `x = ...` step of the text adds 0 (the
    right path), -0.5 otherwise; +0.9 / -0.9 for answer steps by their boxed
    value's parity (even: +0.9). Hash mode: a text-hash score in [-1, 1]."""

    def __init__(self, hashed: bool = False):
        self.hashed = hashed
        self.calls: List[int] = []

    def score_one(self, text: str) -> float:
        if self.hashed:
            h = hashlib.blake2b(text.encode(), digest_size=4).digest()
            return int.from_bytes(h, "little") / 2**31 - 1.0
        _, partial = split_prompt(text)
        boxed = mock_extract_answer(partial)
        if boxed is not None:
            return 0.9 if boxed.lstrip("-").isdigit() and int(boxed) % 2 == 0 else -0.9
        m = re.findall(r"x = \S+ ([+/]) (\d+)\n", partial)
        return 0.5 if m and m[-1] == ("+", "0") else -0.5

    def score(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return np.asarray([self.score_one(t) for t in texts], dtype=np.float32)


_CHAR_CORPUS = (
    "<|user|>:\nWhat is 3 + 4?\n\n<|assistant|>: Let's think step by step and solve the problem "
    "with code.",
    "<code>\n# Step 1: start\nx = 3 + 4\nprint(x)\n<end_of_code>",
)


def tiny_step_tokenizer(boxed_answers: Sequence[str] = ()):
    """A small real HF tokenizer for searches with a random tiny model.

    A character BPE over a small alphabet (lower-case letters, digits, the
    few capitals and signs of the prompts; anything else is `<unk>`) with a
    handful of merges: about 80 tokens with the rStar tags as added tokens,
    so a random model emits a step tag every twenty-odd tokens and searches
    build trees several steps deep. Each of `boxed_answers` becomes one added token `\\boxed{A}`, so
    such a model also writes final answers now and then. No files, no network.
    """
    from tokenizers import Tokenizer, decoders, models, trainers
    from transformers import PreTrainedTokenizerFast

    from rstar_jax.data.prompts import SPECIAL_TOKENS

    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789 \n+-*/=()?:.,'#_WL")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.decoder = decoders.Fuse()  # decoding is concatenation: clean text, exact stops
    trainer = trainers.BpeTrainer(vocab_size=70, special_tokens=["<|endoftext|>", "<unk>"],
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(list(_CHAR_CORPUS) * 10, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>")
    extra = [f"\\boxed{{{a}}}" for a in boxed_answers]
    fast.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS) + extra})
    return fast


def fake_execution_modules() -> dict:
    """Module name -> attributes that stand in for `rstar_jax.execution`'s
    pool, program assembly, answer extraction and grading: the fakes above,
    for CLI-level tests that run `search` / `evaluate` without a sandbox."""
    return {
        "rstar_jax.execution.pool": dict(ExecutorPool=lambda cfg: FakeExecutor()),
        "rstar_jax.execution.program": dict(cumulative_program=mock_cumulative_program,
                                            step_code=mock_step_code),
        "rstar_jax.execution.answers": dict(extract_answer=mock_extract_answer),
        "rstar_jax.execution.grading": dict(grade=mock_grade),
    }
