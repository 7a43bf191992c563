"""The stop-string automaton lifted to tokens, against plain string search."""

import numpy as np
import pytest
from inference.inference_helpers import make_tokenizer

from rstar_jax.inference.stops import find_stop, token_tables, token_texts

STOPS = ["<end_of_step>", "<end_of_code>", "ab"]


def _run(ids, texts, nxt, bits, mask):
    """The device loop in numpy: index of the token that completes a stop."""
    state = 0
    for i, t in enumerate(ids):
        if bits[state, t] & mask:
            return i
        state = nxt[state, t]
    return None


def test_tables_match_text_search_for_every_tokenization():
    # A toy vocabulary where each stop splits many ways, and tokens overlap the stop's ends.
    vocab = ["<", "end", "_of", "_step", ">", "<end", "_of_step>", "x<e", "nd_of_step>y", "a", "b",
             "ab", "xa", "<end_of_", "code>", "code", "step", "_", "zz"]
    texts = list(vocab)
    nxt, bits = token_tables(texts, STOPS, num_states=64)
    assert nxt.shape == bits.shape == (64, len(vocab))
    rng = np.random.RandomState(0)
    for _ in range(3000):
        ids = list(rng.randint(0, len(vocab), size=rng.randint(1, 12)))
        for mask in (0b001, 0b010, 0b100, 0b111):
            active = [s for i, s in enumerate(STOPS) if mask >> i & 1]
            # Reference: the first token after which the joined text contains a stop.
            want = next((k for k in range(len(ids))
                         if find_stop("".join(texts[t] for t in ids[: k + 1]), active)), None)
            assert _run(ids, texts, nxt, bits, mask) == want, (ids, mask)


def test_real_tokenizer_catches_a_multi_token_step_tag():
    tok = make_tokenizer()
    plain = "so x = 3<end_of_step" + ">more"  # kept away from the added special token
    ids = [i for piece in ("so x = 3", "<end_", "of_st", "ep>", "more") for i in tok.encode(piece)]
    texts = token_texts(tok, len(tok))
    assert "".join(texts[i] for i in ids) == plain
    nxt, bits = token_tables(texts, ["<end_of_step>"])
    k = _run(ids, texts, nxt, bits, 1)
    assert k is not None and tok.decode(ids[: k + 1]).endswith("<end_of_step>")
    assert not tok.decode(ids[:k]).endswith("<end_of_step>")


def test_find_stop_takes_the_earliest_end_and_too_many_stops_are_refused():
    assert find_stop("aa<b>cc<a>", ["<a>", "<b>"]) == (5, "<b>")
    assert find_stop("xyz", ["q"]) is None
    assert find_stop("xab", ["b", "ab"]) == (3, "ab")
    with pytest.raises(ValueError):
        token_tables(["a"], [str(i) for i in range(40)])
    with pytest.raises(ValueError):
        token_tables(["a"], [""])
