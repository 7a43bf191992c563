"""Program assembly on the reference's SFT trajectories (spec section 3)."""

import json
import re

import pytest

from rstar_jax.execution.program import cumulative_program, step_code
from testutil import SHARED_DATA

_STOP_RE = re.compile(r"(<end_of_step>|<end_of_code>|<end_of_answer>)")


def split_nodes(response):
    """Splits a response into node texts, each keeping its stop string.

    The `<output>` part goes with the `<end_of_code>` node, as the system
    appends it there.
    """
    pieces = _STOP_RE.split(response)
    nodes = [pieces[i] + pieces[i + 1] for i in range(0, len(pieces) - 1, 2)]
    out = []
    for node in nodes:
        if node.lstrip().startswith("<output>") and out:
            head, _, rest = node.partition("<end_of_output>")
            out[-1] += head + "<end_of_output>"
            node = rest
        out.append(node)
    return out


@pytest.fixture(scope="module")
def examples():
    with open(SHARED_DATA / "rstar_examples" / "sft_data_examples.json") as f:
        return json.load(f)


def test_step_code_strips_tags():
    assert step_code("<code>\nx = 1\n<end_of_step>") == "x = 1"
    assert step_code("\n\n# c\n    y = 2\n<end_of_step>") == "# c\n    y = 2"
    text = "\nprint(x)\n<end_of_code>\n<output>4<end_of_output>\n<answer>\\boxed{4}<end_of_answer>"
    assert step_code(text) == "print(x)"
    assert step_code("\n<answer>The answer is \\boxed{4}.<end_of_answer>") == ""
    assert step_code("Some prose first <code>\nz = 3\n<end_of_step>") == "z = 3"


def test_first_example_nodes(examples):
    nodes = split_nodes(examples[0]["response"])
    assert len(nodes) == 4
    p1 = cumulative_program(nodes[:1])
    assert p1 == "# Step 1: Define the function G(m, n, p, q)\ndef G(m, n, p, q):\n    return m**n + p * q"
    p2 = cumulative_program(nodes[:2])
    assert p2.startswith(p1 + "\n# Step 2")
    assert p2.endswith("equation = G(3, y, 6, 15) - 171")
    p3 = cumulative_program(nodes[:3])
    assert p3.startswith(p2 + "\n# Step 3")
    assert p3.endswith("print(4)")
    assert "<" not in p3
    assert cumulative_program(nodes) is None  # the answer step runs nothing


def test_every_example_assembles_to_valid_python(examples):
    import ast

    for ex in examples:
        nodes = split_nodes(ex["response"])
        for k in range(1, len(nodes) + 1):
            prog = cumulative_program(nodes[:k])
            if "<answer>" in nodes[k - 1]:
                assert prog is None
                continue
            assert prog is not None
            ast.parse(prog)
            # Each program extends its parent's within the block.
            if k > 1 and "<code>" not in nodes[k - 1]:
                assert prog.startswith(cumulative_program(nodes[: k - 1]))


def test_block_boundary():
    path = ["<code>\na = 1\n<end_of_code>\n<output><end_of_output>",
            "\n<code>\nb = 2\n<end_of_step>",
            "\nc = a\n<end_of_step>"]
    assert cumulative_program(path) == "b = 2\nc = a"
    assert cumulative_program(path[:2]) == "b = 2"
    # A new block without an explicit <code> still stops at the closed block.
    assert cumulative_program(path[:1] + ["\nd = 4\n<end_of_step>"]) == "d = 4"


def test_nothing_to_run():
    assert cumulative_program([]) is None
    assert cumulative_program(["<code>\n# only a comment\n<end_of_step>"]) is None
    # A comment-only step inside a block still re-runs the block (its output is the block's).
    assert cumulative_program(["<code>\nx = 1\n<end_of_step>", "\n# done\n<end_of_code>"]) == "x = 1\n# done"
    # A syntax error is still a program: the executor reports it.
    assert cumulative_program(["<code>\nx = (\n<end_of_step>"]) == "x = ("
