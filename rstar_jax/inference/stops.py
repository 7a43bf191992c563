"""Stop strings detected on device, token by token, without a host sync.

A stop string such as `<end_of_step>` usually spans several tokens, and the
same text can be tokenized many ways (`<end` + `_of` + `_step>`, or a token
that carries text before the `<`, or one that runs past the `>`). Matching
token-id sequences would have to enumerate those ways. Instead we run an
Aho-Corasick automaton over the *characters* of the stop strings and lift it
to whole tokens once on the host: for every automaton state `s` and token
`t`, `next_state[s, t]` is the state after reading `t`'s text from `s`, and
`match_bits[s, t]` has bit `i` set when stop string `i` is completed
somewhere inside that text. On device each decode step is then two gathers
per slot (`[S, V]` tables, S automaton states); a slot stops when
`match_bits & its own stop mask` is non-zero. Any tokenization of the stop
string is caught, including one whose last token carries extra text.

Token texts come from decoding each id alone. That equals the text in
context for byte-level BPE (Qwen2, SmolLM2) except for multi-byte characters
split across tokens, which decode to U+FFFD and never match an ASCII stop
string, as in context. SentencePiece tokenizers drop a word's leading space
when decoded alone, so stop strings that contain spaces may be missed on
device there; the host check at the end of every completion
(`find_stop`) catches those and trims the text all the same.
"""

from __future__ import annotations

from collections import deque
from typing import Optional, Sequence, Tuple

import numpy as np

MAX_STOPS = 31  # bits of an int32 mask


def _automaton(stops: Sequence[str]) -> Tuple[np.ndarray, np.ndarray, dict]:
    """Character-level Aho-Corasick automaton of `stops`.

    Returns (delta `[S, C]` int32 next state per (state, char class),
    out `[S]` int32 bitmask of stops ending at each state, char -> class map;
    class 0 is every character not in any stop string).
    """
    chars = sorted({c for s in stops for c in s})
    cls = {c: i + 1 for i, c in enumerate(chars)}
    goto: list = [{}]
    out = [0]
    for i, stop in enumerate(stops):
        state = 0
        for c in stop:
            nxt = goto[state].get(cls[c])
            if nxt is None:
                goto.append({})
                out.append(0)
                nxt = len(goto) - 1
                goto[state][cls[c]] = nxt
            state = nxt
        out[state] |= 1 << i
    num_classes = len(chars) + 1
    delta = np.zeros((len(goto), num_classes), np.int32)
    fail = [0] * len(goto)
    queue = deque()
    for c in range(num_classes):
        nxt = goto[0].get(c, 0)
        delta[0, c] = nxt
        if nxt:
            queue.append(nxt)
    while queue:  # breadth first: a state's fail link is shallower than it
        state = queue.popleft()
        out[state] |= out[fail[state]]
        for c in range(num_classes):
            nxt = goto[state].get(c)
            if nxt is None:
                delta[state, c] = delta[fail[state], c]
            else:
                fail[nxt] = delta[fail[state], c]
                delta[state, c] = nxt
                queue.append(nxt)
    return delta, np.asarray(out, np.int32), cls


def token_tables(token_texts: Sequence[str], stops: Sequence[str],
                 num_states: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The automaton lifted to tokens.

    Args:
      token_texts: the text of every token id, `len == V`.
      stops: at most `MAX_STOPS` distinct non-empty strings; bit `i` is `stops[i]`.
      num_states: pad the tables to this many states (a fixed shape keeps the
        decode function from recompiling when stop strings are added).

    Returns:
      next_state `[S, V]` int32 and match_bits `[S, V]` int32.
    """
    if len(stops) > MAX_STOPS or any(not s for s in stops):
        raise ValueError(f"need at most {MAX_STOPS} non-empty stop strings, got {list(stops)}")
    delta, out, cls = _automaton(stops)
    s = num_states or len(delta)
    if s < len(delta):
        raise ValueError(f"{len(delta)} automaton states do not fit in {s}")
    v = len(token_texts)
    lut = np.zeros(0x110000, np.int32)
    for c, k in cls.items():
        lut[ord(c)] = k
    codes = np.frombuffer("".join(token_texts).encode("utf-32-le"), np.uint32)
    klass = lut[codes]
    lengths = np.fromiter((len(t) for t in token_texts), np.int64, count=v)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    state = np.broadcast_to(np.arange(len(delta), dtype=np.int32)[:, None], (len(delta), v)).copy()
    bits = np.zeros_like(state)
    for j in range(int(lengths.max(initial=0))):
        idx = np.nonzero(lengths > j)[0]
        c = klass[offsets[idx] + j]
        nxt = delta[state[:, idx], c[None, :]]
        bits[:, idx] |= out[nxt]
        state[:, idx] = nxt
    next_state = np.zeros((s, v), np.int32)
    match_bits = np.zeros((s, v), np.int32)
    next_state[: len(delta)], match_bits[: len(delta)] = state, bits
    return next_state, match_bits


def find_stop(text: str, stops: Sequence[str]) -> Optional[Tuple[int, str]]:
    """The first place a stop string ends in `text`: (end index, stop string).

    Ties (two stops ending at the same character) go to the longer string;
    None when no stop occurs.
    """
    best: Optional[Tuple[int, str]] = None
    for stop in stops:
        i = text.find(stop)
        if i < 0:
            continue
        end = i + len(stop)
        if best is None or end < best[0] or (end == best[0] and len(stop) > len(best[1])):
            best = (end, stop)
    return best


def token_texts(tokenizer, vocab_size: int) -> list[str]:
    """Each id's text decoded alone (ids the tokenizer lacks: empty text)."""
    n = min(len(tokenizer), vocab_size)
    texts = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False,
                                   clean_up_tokenization_spaces=False)
    return list(texts) + [""] * (vocab_size - n)
