"""Splitting a solution into node texts and scoring each prefix."""

import json

import numpy as np

from rstar_jax.evaluation import step_scores as S
from testutil import SHARED_DATA

SOLUTION = ("<code>\n# Step 1: set x\nx = 2\n<end_of_step>\n\n# Step 2: square\ny = x * x\n"
            "<end_of_step>\n\n# Now print the final answer\nprint(y)\n<end_of_code>\n"
            "<output>4<end_of_output>\n<answer>The answer is \\boxed{4}.<end_of_answer>")


def test_split_steps_by_hand():
    steps = S.split_steps(SOLUTION)
    assert steps == [
        "<code>\n# Step 1: set x\nx = 2\n<end_of_step>",
        "\n\n# Step 2: square\ny = x * x\n<end_of_step>",
        "\n\n# Now print the final answer\nprint(y)\n<end_of_code>\n<output>4<end_of_output>",
        "\n<answer>The answer is \\boxed{4}.<end_of_answer>",
    ]
    assert "".join(steps) == SOLUTION
    assert S.split_steps("no tags") == ["no tags"]


def test_split_reference_sft_examples_round_trip():
    examples = json.loads((SHARED_DATA / "rstar_examples" / "sft_data_examples.json").read_text())
    for ex in examples:
        steps = S.split_steps(ex["response"])
        assert "".join(steps) == ex["response"]
        assert steps[-1].rstrip().endswith("<end_of_answer>")


class LengthScorer:
    def score(self, texts):
        return np.array([len(t) for t in texts], np.float32)


def test_score_steps_and_rounds():
    steps = S.split_steps(SOLUTION)
    got = S.score_steps(LengthScorer(), "Q?", steps)
    prompt_len = len("<|user|>:\nQ?\n\n<|assistant|>: Let's think step by step and solve the "
                     "problem with code.")
    assert got.tolist() == [prompt_len + len("".join(steps[: i + 1])) for i in range(4)]
    both = S.compare_rounds({"r1": LengthScorer(), "r2": LengthScorer()}, "Q?", steps)
    assert list(both) == ["r1", "r2"] and np.array_equal(both["r1"], got)
