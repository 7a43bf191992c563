"""A training rerun into a directory whose checkpoint was made for other
data or settings is refused with what changed and how to continue; with
`force` it starts over."""

import logging

import pytest
from helpers import memorisable_sft, read_metrics, save_tiny_tokenizer, tiny_config, write_jsonl

from rstar_jax.training.loop import ResumeMismatch, mismatch_message, train_policy


def test_refusal_names_the_changes_and_the_ways_on(tmp_path, caplog):
    tok = save_tiny_tokenizer(str(tmp_path / "tok"))
    data = write_jsonl(str(tmp_path / "sft.jsonl"), memorisable_sft(8))
    out = str(tmp_path / "run")
    first = tiny_config(tok, "train.sft.max_steps=2", "checkpoint.save_every=1")
    train_policy(first, data, out)

    bigger = tiny_config(tok, "train.sft.max_steps=2", "checkpoint.save_every=1",
                         "train.sft.batch_size=2")
    with pytest.raises(ResumeMismatch) as e:
        train_policy(bigger, data, out)
    msg = str(e.value)
    assert "train.sft.batch_size 4 -> 2" in msg
    assert "another --out" in msg and "--force" in msg and "\n" not in msg

    # Same settings, other data: the data's hash and size are named.
    other = write_jsonl(str(tmp_path / "sft2.jsonl"), memorisable_sft(6))
    with pytest.raises(ResumeMismatch, match=r"data_sha256 '[0-9a-f]+' -> '[0-9a-f]+'; examples 8 -> 6"):
        train_policy(first, other, out)

    # --force discards the old run and trains the new one from step 0.
    with caplog.at_level(logging.WARNING):
        summary = train_policy(bigger, data, out, force=True)
    assert "discarding the checkpoints" in caplog.text
    assert summary["steps"] == 2
    assert [r["step"] for r in read_metrics(out)] == [1, 2]
    train_policy(bigger, data, out)  # and now resumes it without complaint


def test_message_for_an_old_checkpoint_without_recorded_data():
    from rstar_jax.config import load_config, to_dict

    cfg = load_config(None, [])
    msg = mismatch_message("/r/ckpt", to_dict(cfg), cfg, None, {"examples": 3})
    assert "the data file's content or order" in msg and "/r" in msg
