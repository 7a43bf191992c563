"""Records -> examples: the prompt template, the loss mask, PPM pair
weights (on the reference fixtures) and malformed-record skipping."""

import json

import numpy as np
import pytest
from helpers import tiny_tokenizer, write_jsonl

from rstar_jax.data.prompts import policy_prompt
from rstar_jax.training.records import NoUsableRecords, load_examples, pair_weight


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_pair_weights_from_reference_examples(tok, shared_data):
    path = shared_data / "rstar_examples" / "rm_data_examples.json"
    rows = json.loads(path.read_text())
    # The fixture: three final-answer pairs of a 2x2 step, two step pairs of
    # a 1x4 step; every pair of a step weighs 1 / (pairs in that step).
    assert [(r["pos_count"], r["neg_count"]) for r in rows] == [(2, 2)] * 3 + [(1, 4)] * 2
    pairs, skipped = load_examples(str(path), tok, kind="ppm", seq_len=4096)
    assert skipped == {}
    assert [p.weight for p in pairs] == [0.25] * 5
    assert pair_weight(1, 2) == 0.5 and pair_weight(2, 1) == 0.5 and pair_weight(1, 1) == 1.0
    # prompt + continuation, tokenised per field, pos and neg share the prompt
    n_prompt = len(tok(rows[0]["prompt"], add_special_tokens=False)["input_ids"])
    assert np.array_equal(pairs[0].pos[:n_prompt], pairs[0].neg[:n_prompt])
    assert tok.decode(pairs[0].pos) == rows[0]["prompt"] + rows[0]["pos"]
    assert tok.decode(pairs[0].neg) == rows[0]["prompt"] + rows[0]["neg"]


def test_sft_example_trains_on_response_and_eos_only(tok, shared_data):
    path = shared_data / "rstar_examples" / "sft_data_examples.json"
    rows = json.loads(path.read_text())
    exs, skipped = load_examples(str(path), tok, kind="lm", seq_len=4096, sep="\n\n")
    assert skipped == {} and len(exs) == len(rows)
    ex, row = exs[0], rows[0]
    prompt = policy_prompt(row["query"], "", sep="\n\n")
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    full = np.concatenate([ex.inputs[:1], ex.targets])
    assert tok.decode(full[:n_prompt]) == prompt
    assert full[-1] == tok.eos_token_id
    trained = ex.targets[ex.weights == 1]
    assert tok.decode(trained[:-1]) == row["response"]
    assert trained[-1] == tok.eos_token_id
    assert ex.weights[: n_prompt - 1].sum() == 0 and ex.weights[n_prompt - 1:].all()


def test_text_records_train_on_every_token_and_are_cut_to_seq_len(tok, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "abcdefghij"}])
    exs, _ = load_examples(str(path), tok, kind="lm", seq_len=4)
    # 10 bytes + eos = 11 tokens -> 10 targets in pieces of at most 4
    assert [e.length for e in exs] == [4, 4, 2]
    assert all(e.weights.all() for e in exs)
    assert tok.decode(np.concatenate([exs[0].inputs[:1]] + [e.targets for e in exs])[:-1]) == "abcdefghij"


def test_malformed_records_are_counted_and_skipped(tok, tmp_path, caplog):
    good = {"query": "1+1?", "response": "<answer>\\boxed{2}<end_of_answer>"}
    path = write_jsonl(tmp_path / "sft.jsonl", [
        good, "{not json", json.dumps([1, 2]), {"query": "", "response": "x"},
        {"query": "q"}, {"query": "q", "response": "y" * 200},
    ])
    exs, skipped = load_examples(str(path), tok, kind="lm", seq_len=128, overlong="skip")
    assert len(exs) == 1
    assert skipped == {"bad JSON": 1, "not a JSON object": 1, "missing or empty 'query'": 1,
                       "missing or empty 'response'": 1, "longer than seq_len": 1}
    assert "record 1 skipped: bad JSON" in caplog.text

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "p", "pos": "a", "neg": "b", "pos_count": 2, "neg_count": 1},
        {"prompt": "p", "pos": "a", "neg": "b", "pos_count": 0, "neg_count": 1},
        {"prompt": "p", "pos": "a", "neg": "b", "pos_count": "2", "neg_count": 1},
        {"prompt": "p", "pos": "", "neg": "b"},
    ])
    got, skipped = load_examples(str(pairs), tok, kind="ppm", seq_len=64)
    assert [p.weight for p in got] == [0.5]
    assert skipped == {"pos_count/neg_count must be positive integers": 2,
                       "missing or empty 'pos'": 1}


def test_overlong_records_are_truncated_on_the_right_by_default(tok, tmp_path, caplog):
    """The reference's tokenizers truncate: an SFT record keeps its prompt and
    the start of its response (no EOS), a pair both sequences' first
    seq_len tokens; `overlong=skip` drops them instead."""
    sft = {"query": "1+1?", "response": "y" * 200}
    path = write_jsonl(tmp_path / "sft.jsonl", [sft, {"query": "q" * 300, "response": "z"}])
    (ex,), skipped = load_examples(str(path), tok, kind="lm", seq_len=128)
    assert skipped == {"prompt longer than seq_len": 1}
    assert "1 records longer than seq_len 128 truncated" in caplog.text
    n_prompt = len(tok(policy_prompt(sft["query"], "", sep="\n\n"),
                       add_special_tokens=False)["input_ids"])
    assert ex.length == 128 and ex.weights.sum() == 128 - (n_prompt - 1)
    assert tok.decode(ex.targets[ex.weights == 1]) == "y" * (129 - n_prompt)
    assert tok.eos_token_id not in ex.targets
    with pytest.raises(NoUsableRecords, match="'longer than seq_len': 2"):
        load_examples(str(path), tok, kind="lm", seq_len=128, overlong="skip")

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "p" * 30, "pos": "a" * 50, "neg": "b" * 10, "pos_count": 1, "neg_count": 1}])
    (pair,), skipped = load_examples(str(pairs), tok, kind="ppm", seq_len=64)
    assert skipped == {}
    assert tok.decode(pair.pos) == "p" * 30 + "a" * 34 and tok.decode(pair.neg) == "p" * 30 + "b" * 10
    with pytest.raises(NoUsableRecords, match="longer than seq_len"):
        load_examples(str(pairs), tok, kind="ppm", seq_len=64, overlong="skip")
    with pytest.raises(ValueError, match="overlong"):
        load_examples(str(pairs), tok, kind="ppm", seq_len=64, overlong="cut")


def test_file_with_no_usable_record_is_an_error(tok, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", ["{oops", {"query": "q"}])
    with pytest.raises(NoUsableRecords, match="no usable"):
        load_examples(str(path), tok, kind="lm", seq_len=64)
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(NoUsableRecords):
        load_examples(str(empty), tok, kind="ppm", seq_len=64)


def test_pqm_targets_go_from_a_tree_through_extraction_to_the_loss(tok, tmp_path):
    """The Q values of extraction's pairs are the PQM loss's targets (not
    the +1/-1 fallback): tree -> extract -> ppm.jsonl -> examples -> batch -> loss."""
    import jax.numpy as jnp

    from rstar_jax.config.schema import Config
    from rstar_jax.data.extract import extract_records, write_jsonl
    from rstar_jax.search import tree as T
    from rstar_jax.training.pipeline import collate_pairs
    from rstar_jax.training.steps import pqm_terms

    t = T.Tree()
    t.root.expanded = True
    rows = []  # (parent, text, N, W, answer correctness or None)
    for parent, text, n, w, correct in (
            (0, "<code>\n# a\n<end_of_step>", 4, 1.2, None),
            (0, "<code>\n# b\n<end_of_step>", 4, -2.0, None),
            (1, "\n<answer>\\boxed{7}<end_of_answer>", 1, 1.0, True),
            (2, "\n<answer>\\boxed{8}<end_of_answer>", 1, -1.0, False)):
        t.nodes[parent].expanded = True
        ci = T.add_child(t, parent, text)
        node = t.nodes[ci]
        node.N, node.W = n, w
        if correct is not None:
            node.terminal, node.terminal_reason, node.correct = True, T.FINAL_ANSWER, correct
        rows.append(ci)
    rec = {"id": "p", "question": "What is 3 + 4?", "answer": "7",
           "trees": [dict(seed=0, **t.to_json())]}
    ex = extract_records([rec], Config().mcts)
    step = [r for r in ex.ppm if r["kind"] == "step"]
    assert len(step) == 1 and (step[0]["q_pos"], step[0]["q_neg"]) == (0.3, -0.5)
    path = tmp_path / "ppm.jsonl"
    write_jsonl(str(path), ex.ppm)
    pairs, skipped = load_examples(str(path), tok, kind="ppm", seq_len=4096)
    assert skipped == {} and len(pairs) == len(ex.ppm)
    batch = collate_pairs(pairs, list(range(len(pairs))), 128)
    expected = np.array([[r["q_pos"], r["q_neg"]] for r in ex.ppm], np.float32)
    np.testing.assert_allclose(batch["q"], expected)
    assert not np.all(np.abs(batch["q"]) == 1.0)  # not the outcome-label fallback
    # Scores equal to the targets cost nothing; +1/-1 scores do not.
    w = jnp.asarray(batch["weights"])
    assert float(pqm_terms(jnp.asarray(expected), w, jnp.asarray(batch["q"]))[0]) == 0.0
    signs = jnp.asarray(np.sign(expected))
    assert float(pqm_terms(signs, w, jnp.asarray(batch["q"]))[0]) > 0.1
