"""Final-answer extraction from a model response (spec sections 2 and 8).

A final-answer step carries its answer in `\\boxed{...}`; we take the LAST one,
because models restate or correct themselves and the last box is the one they
commit to.

Quirks, on purpose:
- The rightmost `\\boxed` (or `\\fbox`) wins, even when nested inside another
  box: `\\boxed{\\boxed{3}}` gives `3`.
- Braces are matched; escaped braces `\\{` `\\}` (LaTeX set braces) are text,
  not nesting, so `\\boxed{\\{1,2\\}}` gives `\\{1,2\\}`.
- `\\boxed 5` (no braces, TeX's one-token argument) gives the token up to the
  next whitespace, `$` or end of text.
- An unterminated box (a response cut by the token limit) or an empty one
  yields None: no answer, never a partial one.
- `\\text{...}`, `\\textbf{...}` and `\\mbox{...}` are unwrapped everywhere in
  the answer (`\\text{(A)}` -> `(A)`, `5\\text{ cm}` -> `5 cm`); surrounding
  `$`, whitespace and a trailing full stop are removed.
"""

from __future__ import annotations

import re
from typing import Optional

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_TEXT_RE = re.compile(r"\\(?:text|textbf|mbox)\s*\{")


def _match_brace(text: str, open_at: int) -> int:
    """Index of the `}` closing the `{` at `open_at`, or -1 when unbalanced."""
    depth = 0
    i = open_at
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2  # an escaped character, e.g. `\{`, never nests
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def unwrap_text(s: str) -> str:
    """Replaces every `\\text{X}` (and `\\textbf`, `\\mbox`) by `X`."""
    while True:
        m = _TEXT_RE.search(s)
        if m is None:
            return s
        close = _match_brace(s, m.end() - 1)
        if close < 0:
            return s
        s = s[: m.start()] + s[m.end(): close] + s[close + 1:]


def _clean(ans: str) -> str:
    ans = unwrap_text(ans).strip()
    ans = ans.strip("$").strip()
    if ans.endswith(".") and not ans.endswith("\\."):
        ans = ans[:-1].rstrip()
    return ans


def extract_answer(text: str) -> Optional[str]:
    """The content of the last `\\boxed{...}` in `text`, cleaned (see module doc).

    Args:
      text: a whole response, a final-answer step, or any string.

    Returns:
      The answer string, or None when there is no complete, non-empty box.
    """
    if not isinstance(text, str):
        return None
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    i = m.end()
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] == "{":
        close = _match_brace(text, i)
        if close < 0:
            return None
        ans = text[i + 1: close]
    else:
        token = re.match(r"[^\s$]+", text[i:])
        if token is None:
            return None
        ans = token.group(0)
    ans = _clean(ans)
    return ans or None
