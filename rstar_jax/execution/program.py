"""Program assembly: which Python a tree node runs (spec section 3).

A node's text is one generation call: Python with reasoning comments, ending
in `<end_of_step>` (the code block goes on) or `<end_of_code>` (the block
ends; the system then appends `\\n<output>...<end_of_output>`), or an
`<answer>...<end_of_answer>` step with no code. A new step runs together with
the code of its ancestors back to the start of the current `<code>` block,
from scratch, in a fresh namespace: the executor keeps no state between
programs, so the program itself must carry everything it needs.

Both functions are pure and cheap; they run on the host once per candidate.
"""

from __future__ import annotations

import ast
import re
from typing import Optional, Sequence

from rstar_jax.data.prompts import (
    ANSWER,
    CODE,
    END_OF_ANSWER,
    END_OF_CODE,
    END_OF_OUTPUT,
    END_OF_STEP,
    OUTPUT,
)

# `<output>...<end_of_output>`; an unterminated one runs to the end of the text.
_OUTPUT_RE = re.compile(re.escape(OUTPUT) + r".*?(?:" + re.escape(END_OF_OUTPUT) + r"|\Z)", re.S)


def step_code(step_text: str) -> str:
    """The Python source of one node's text.

    Rules, in order: an `<output>...<end_of_output>` part is removed (it is the
    system's observation, not code); everything from `<answer>` on is dropped;
    everything from `<end_of_code>` on is dropped (the block ends there); prose
    before a `<code>` tag is dropped; the `<end_of_step>` tag (and any stray
    closing tag) is removed. Leading blank lines and trailing whitespace go, so
    that joined steps read like one script; indentation inside is kept.

    Args:
      step_text: the text of one node, as generated (stop string included).

    Returns:
      The code, possibly empty (an answer step, or a step with no code).
    """
    text = _OUTPUT_RE.sub("", step_text)
    for end_marker in (ANSWER, END_OF_CODE):
        cut = text.find(end_marker)
        if cut >= 0:
            text = text[:cut]
    start = text.rfind(CODE)
    if start >= 0:
        text = text[start + len(CODE):]
    for tag in (END_OF_STEP, END_OF_OUTPUT, END_OF_ANSWER):
        text = text.replace(tag, "")
    lines = text.rstrip().split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines)


def _closes_block(step_text: str) -> bool:
    """True when this node ends a code block (or is an answer after one)."""
    return END_OF_CODE in step_text or ANSWER in step_text or OUTPUT in step_text


def _is_code_step(step_text: str) -> bool:
    """An answer-only node (`<answer>` with no `<code>` region) is not code."""
    if CODE in step_text:
        return True
    head = step_text
    for marker in (OUTPUT, ANSWER):
        cut = head.find(marker)
        if cut >= 0:
            head = head[:cut]
    return bool(head.strip()) or END_OF_STEP in step_text or END_OF_CODE in step_text


def _has_statements(source: str) -> bool:
    """Whether the source does anything (comments and blank lines do not).

    A syntax error counts as something to run: the executor reports it.
    """
    try:
        return bool(ast.parse(source).body)
    except (SyntaxError, ValueError):
        return True


def cumulative_program(step_texts: Sequence[str]) -> Optional[str]:
    """The program to run for the last node of a root-to-node path.

    Walks back from the new step through its ancestors, collecting their code,
    and stops after the node that opened the current `<code>` block or before a
    node that closed an earlier block (one with `<end_of_code>`, an output or an
    answer). Steps are joined with a newline.

    Args:
      step_texts: node texts along the path, root first; the last is the new
        step. Texts may or may not already carry their appended `<output>`.

    Returns:
      The program, or None when there is nothing to execute: the new step is an
      answer step, or neither it nor its block holds a single statement.
    """
    if not step_texts:
        return None
    new = step_texts[-1]
    if not _is_code_step(new):
        return None
    parts = [step_code(new)]
    if CODE not in new:
        for text in reversed(step_texts[:-1]):
            if _closes_block(text):
                break
            parts.append(step_code(text))
            if CODE in text:
                break
    program = "\n".join(p for p in reversed(parts) if p)
    if not _has_statements(program):
        return None
    return program
