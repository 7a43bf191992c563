"""The round-1 few-shot prompt (spec section 2) and its zero-shot identity."""

import os

from rstar_jax.config.loader import load_config
from rstar_jax.data import prompts as P
from tests.testutil import SHARED_DATA

EXAMPLES = os.path.join(SHARED_DATA, "rstar_examples")


def _cfg(*overrides):
    return load_config(None, list(overrides))


def test_zero_shot_is_policy_prompt():
    fn = P.make_prompt_fn(_cfg())
    assert fn("What is 2+2?", "<code>\nx") == P.policy_prompt("What is 2+2?", "<code>\nx",
                                                             sep="\n\n")


def test_few_shot_structure():
    fn = P.make_prompt_fn(_cfg("mcts.few_shot=true"))
    out = fn("What is 2+2?", "<code>\n# Step 1")
    assert out.count("Question: ") == 3  # two demonstrations + the question
    assert out.endswith("Question: What is 2+2?\n<code>\n# Step 1")
    assert out.count(P.END_OF_ANSWER) == 2
    # The instructions name no stop tag literally (only the demos end with them).
    assert not any(s in P.FEW_SHOT_INSTRUCTIONS for s in P.STEP_STOPS)


def test_load_reference_files():
    instructions, demos, suffix = P.load_few_shot(EXAMPLES)
    assert len(demos) == 2 and all(d.startswith("Question: ") for d in demos)
    assert "{input}" in suffix and not suffix.startswith('"')
    assert not instructions.startswith('"')
    fn = P.make_prompt_fn(_cfg("mcts.few_shot=true", f"mcts.few_shot_path={EXAMPLES}"))
    out = fn("Q?", "<code>\n")
    assert out.startswith(instructions) and out.endswith("Question: Q?\n<code>\n")
    assert demos[1].strip() in out
