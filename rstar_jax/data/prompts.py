"""The step format's exact strings and the policy prompt (spec section 2).

One template serves search, SFT and PPM training, so the model always sees
the same text before its first step. The reference infers with "\\n\\n"
before `<|assistant|>` and trains with "\\n"; `DataConfig.assistant_sep`
picks one (default "\\n\\n", the inference form) and every caller passes it.
"""

from __future__ import annotations

from typing import Sequence

CODE = "<code>"
END_OF_STEP = "<end_of_step>"
END_OF_CODE = "<end_of_code>"
OUTPUT = "<output>"
END_OF_OUTPUT = "<end_of_output>"
ANSWER = "<answer>"
END_OF_ANSWER = "<end_of_answer>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"

STEP_TAGS = (CODE, END_OF_STEP, END_OF_CODE, OUTPUT, END_OF_OUTPUT, ANSWER, END_OF_ANSWER)
SPECIAL_TOKENS = STEP_TAGS + (USER, ASSISTANT)
# One generation call = one tree node; it stops at any of these (kept in text).
STEP_STOPS = (END_OF_STEP, END_OF_CODE, END_OF_ANSWER)

ASSISTANT_PREFIX = "Let's think step by step and solve the problem with code."


def policy_prompt(question: str, partial_solution: str = "", *, sep: str = "\n\n") -> str:
    """`<|user|>:\\n{question}{sep}<|assistant|>: Let's think ... code.` + partial."""
    return f"{USER}:\n{question}{sep}{ASSISTANT}: {ASSISTANT_PREFIX}{partial_solution}"


def observation_suffix(observation: str) -> str:
    """Appended by the system after a step that ends with `<end_of_code>`."""
    return f"\n{OUTPUT}{observation}{END_OF_OUTPUT}"


def join_steps(step_texts: Sequence[str]) -> str:
    """A partial solution is the concatenation of its node texts."""
    return "".join(step_texts)
