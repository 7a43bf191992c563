"""The demo BPE tokenizer and the any-HF-dir loader that adds the rStar tags."""

import json

import pytest

from rstar_jax.data import prompts
from rstar_jax.data.corpus import make_corpus
from rstar_jax.data.tokenizer import EOS_TOKEN, PAD_TOKEN, load_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    recs = make_corpus(4, 300)
    texts = [prompts.policy_prompt(r["query"], r["response"]) for r in recs]
    tok = train_tokenizer(texts, str(out), vocab_size=400)
    return out, tok, texts


def test_saved_as_a_normal_hf_dir(trained):
    out, tok, texts = trained
    from transformers import AutoTokenizer

    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (out / name).is_file()
    again = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert again.pad_token == PAD_TOKEN and again.eos_token == EOS_TOKEN
    assert again(texts[0])["input_ids"] == tok(texts[0])["input_ids"]
    assert json.loads((out / "special_tokens_map.json").read_text())["pad_token"] == PAD_TOKEN
    assert 200 < len(again) <= 400


def test_special_tokens_are_single_and_text_round_trips(trained):
    _, tok, texts = trained
    for t in prompts.SPECIAL_TOKENS + (PAD_TOKEN, EOS_TOKEN):
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids) == [t]
    for text in texts[:20]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    # Digits are single tokens: "x = 1234" never merges digits.
    toks = tok.convert_ids_to_tokens(tok("x = 1234", add_special_tokens=False)["input_ids"])
    assert toks[-4:] == ["1", "2", "3", "4"]


def test_load_tokenizer_adds_missing_tags(tmp_path, trained):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    plain = Tokenizer(models.BPE(unk_token="<unk>"))
    plain.pre_tokenizer = pre_tokenizers.Whitespace()
    plain.train_from_iterator(["a b c <code> d"] * 5, trainers.BpeTrainer(
        vocab_size=40, special_tokens=["<unk>", "<code>"], show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=plain, unk_token="<unk>").save_pretrained(str(tmp_path))
    base_len = len(load_tokenizer(str(tmp_path), add_special_tokens=False)[0])
    tok, added = load_tokenizer(str(tmp_path))
    # <code> was already a token; the other 8 tags are new.
    assert added == len(prompts.SPECIAL_TOKENS) - 1 == 8
    assert len(tok) == base_len + 8
    ids = tok("<end_of_step>", add_special_tokens=False)["input_ids"]
    assert ids == [base_len + prompts.SPECIAL_TOKENS.index("<end_of_step>") - 1]
    # The trained demo tokenizer already holds every tag.
    assert load_tokenizer(str(trained[0]))[1] == 0
    with pytest.raises(FileNotFoundError):
        load_tokenizer(str(tmp_path / "nope"))
