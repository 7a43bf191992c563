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


# Round-1 bootstrap (spec section 2): a base model sees the step format in two
# worked demonstrations before the question. Our own wording; a user can point
# `mcts.few_shot_path` at files in the reference's JSON format instead.
FEW_SHOT_INSTRUCTIONS = (
    "Solve the math problem by writing Python in small steps. Each step is a comment "
    "saying what it computes, then the code, and ends with the end-of-step tag. The "
    "last code step prints the result and ends with the end-of-code tag; the printed "
    "value is shown to you, and then you state the final answer in \\boxed{} and close "
    "with the end-of-answer tag. Follow the two examples exactly.\n\n"
)
FEW_SHOT_DEMOS = (
    "Question: A baker makes 6 trays of 15 rolls and sells 58 rolls. How many rolls are left?\n"
    "<code>\n# Step 1: Count all rolls baked\nbaked = 6 * 15\n<end_of_step>\n\n"
    "# Step 2: Subtract the rolls sold and print the rest\nleft = baked - 58\nprint(left)\n"
    "<end_of_code>\n<output>32<end_of_output>\n"
    "<answer>The baker has \\boxed{32} rolls left.<end_of_answer>",
    "Question: Mia reads 12 pages a day for 5 days, then 20 pages a day for 3 days. "
    "How many pages does she read in total?\n"
    "<code>\n# Step 1: Pages read in the first 5 days\nfirst = 12 * 5\n<end_of_step>\n\n"
    "# Step 2: Pages read in the next 3 days\nsecond = 20 * 3\n<end_of_step>\n\n"
    "# Step 3: Add both parts and print the total\ntotal = first + second\nprint(total)\n"
    "<end_of_code>\n<output>120<end_of_output>\n"
    "<answer>Mia reads \\boxed{120} pages in total.<end_of_answer>",
)
FEW_SHOT_SUFFIX = "Now solve this one.\nQuestion: {input}"


def _unquote(text: str) -> str:
    """The reference stores its prompt strings wrapped in literal double quotes."""
    text = text.strip()
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def load_few_shot(path: str) -> tuple[str, tuple[str, ...], str]:
    """(instructions, demonstrations, suffix) from a reference-format directory or file.

    `path` is a `few_shots.json` (a list of demonstration strings) or a directory
    holding one; an `mcts_prompt.json` next to it (keys `pot_format_instructions`,
    `pot_suffix` with an `{input}` slot) overrides our instructions and suffix.
    """
    import json
    import os

    shots = os.path.join(path, "few_shots.json") if os.path.isdir(path) else path
    with open(shots, encoding="utf-8") as f:
        demos = json.load(f)
    if not isinstance(demos, list) or not all(isinstance(d, str) for d in demos):
        raise ValueError(f"{shots}: expected a JSON list of demonstration strings")
    instructions, suffix = FEW_SHOT_INSTRUCTIONS, FEW_SHOT_SUFFIX
    extra = os.path.join(os.path.dirname(shots), "mcts_prompt.json")
    if os.path.exists(extra):
        with open(extra, encoding="utf-8") as f:
            fmt = json.load(f)
        instructions = _unquote(fmt.get("pot_format_instructions", instructions))
        suffix = _unquote(fmt.get("pot_suffix", suffix))
    return instructions, tuple(demos), suffix


def few_shot_prompt(question: str, partial_solution: str, *, instructions: str,
                    demos: Sequence[str], suffix: str) -> str:
    """Instructions + demonstrations + suffix(question) + "\\n" + partial (starts `<code>`)."""
    body = "\n\n\n".join(d.strip() for d in demos)
    return f"{instructions}{body}\n\n\n{suffix.format(input=question)}\n{partial_solution}"


def make_prompt_fn(cfg):
    """The search/evaluation prompt builder: zero-shot unless `cfg.mcts.few_shot`."""
    sep = cfg.data.assistant_sep
    if not getattr(cfg.mcts, "few_shot", False):
        return lambda question, partial="": policy_prompt(question, partial, sep=sep)
    path = getattr(cfg.mcts, "few_shot_path", None)
    if path:
        instructions, demos, suffix = load_few_shot(path)
    else:
        instructions, demos, suffix = FEW_SHOT_INSTRUCTIONS, FEW_SHOT_DEMOS, FEW_SHOT_SUFFIX
    return lambda question, partial="": few_shot_prompt(
        question, partial, instructions=instructions, demos=demos, suffix=suffix)
