"""Final-answer extraction from a model response (spec sections 2 and 8).

A final-answer step carries its answer in `\\boxed{...}`; we take the LAST one,
because models restate or correct themselves and the last box is the one they
commit to.

Quirks, on purpose:
- The rightmost `\\boxed` (or `\\fbox`) wins, even when nested inside another
  box: `\\boxed{\\boxed{3}}` gives `3`.
- Braces are matched; escaped braces `\\{` `\\}` (LaTeX set braces) are text,
  not nesting, so `\\boxed{\\{1,2\\}}` gives `\\{1,2\\}`.
- Several boxes in a row, separated only by commas, `and`, `or`, `;`,
  `\\quad`, spacing or `$` (`$\\boxed{1}$, $\\boxed{2}$`), are one answer,
  joined as `1, 2` (read by the grader as a list of answers). Boxes with
  other words between them stay separate, and the last one wins.
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
from typing import Optional, Tuple

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_TEXT_RE = re.compile(r"\\(?:text|textbf|mbox)\s*\{")
_JOINER_RE = re.compile(
    r"^(?:\s|\$|\\[ ,;!]|\\q?quad|~)*(?:,|;|and|or|\\text\{\s*(?:and|or|,)\s*\})?(?:\s|\$|\\[ ,;!]|\\q?quad|~)*$")


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
    last = _box_at(text, matches[-1]) if matches else None
    if last is None:
        return None
    group = [last]
    for m in reversed(matches[:-1]):
        span = _box_at(text, m)
        if span is None or span[1] > group[0][0] or not _JOINER_RE.match(text[span[1]: group[0][0]]):
            break  # unterminated, enclosing the later box, or words in between
        group.insert(0, span)
    parts = [_clean(c) for _, _, c in group]
    if len(parts) > 1 and all(parts):
        return ", ".join(parts)
    return parts[-1] or None


def _box_at(text: str, m: re.Match) -> Optional[Tuple[int, int, str]]:
    """(start, end, content) of the box whose keyword `m` matched, or None."""
    i = m.end()
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] == "{":
        close = _match_brace(text, i)
        if close < 0:
            return None
        return m.start(), close + 1, text[i + 1: close]
    token = re.match(r"[^\s$]+", text[i:])
    if token is None:
        return None
    return m.start(), i + token.end(), token.group(0)
