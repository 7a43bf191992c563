"""The checkpoints notebook on two tiny exported rounds (policy + PPM each)."""

import json

import pytest

from rstar_jax.config import load_config
from testutil import REPO


@pytest.mark.slow
def test_checkpoints_notebook(tmp_path, monkeypatch, shared_data):
    from evaluation.test_notebooks import outputs_text, run_notebook

    from rstar_jax.data.tokenizer import train_tokenizer
    from rstar_jax.models.checkpoint import export_params
    from rstar_jax.models.loading import load_policy, ppm_from_policy

    sft = (shared_data / "rstar_examples" / "sft_data_examples.json")
    texts = [ex["query"] + ex["response"] for ex in json.loads(sft.read_text())]
    train_tokenizer(texts, str(tmp_path / "tok"), vocab_size=400)
    base = tmp_path / "base.yaml"
    base.write_text(f"base_config:\n  - {REPO}/configs/base.yaml\n  - {REPO}/configs/models/tiny.yaml\n"
                    f"model:\n  tokenizer_dir: {tmp_path / 'tok'}\n  param_dtype: float32\n"
                    "engine:\n  num_slots: 2\n  max_seq_len: 1024\n  prefill_buckets: [1024]\n"
                    "  score_batch_size: 4\n  truncation: left\nlogging:\n  level: WARNING\n")
    rounds = []
    for r in (1, 2):
        cfg = load_config(str(base), [f"seed={r}"])
        policy, tok = load_policy(cfg)
        export_params(policy, str(tmp_path / f"r{r}" / "policy"), dtype="float32", tokenizer=tok)
        export_params(ppm_from_policy(policy, seed=r), str(tmp_path / f"r{r}" / "ppm"),
                      dtype="float32", tokenizer=tok)
        f = tmp_path / f"round{r}.yaml"
        f.write_text(f"base_config: {base}\nmodel:\n  checkpoint: {tmp_path / f'r{r}' / 'policy'}\n"
                     f"ppm:\n  checkpoint: {tmp_path / f'r{r}' / 'ppm'}\n")
        rounds.append(f"round{r}={f}")
    nb = run_notebook("checkpoints.ipynb", tmp_path, monkeypatch,
                      RSTAR_ROUND_CONFIGS=",".join(rounds), RSTAR_SOLUTION_FILE=str(sft),
                      RSTAR_EXAMPLE_INDEX="1", RSTAR_MAX_NEW_TOKENS="8")
    text = outputs_text(nb)
    assert "rounds: ['round1', 'round2']" in text
    assert "step 1: round1=" in text and "round2=" in text
    assert "--- round2:" in text
    pngs = [o for c in nb.cells for o in c.get("outputs", []) if o.get("data", {}).get("image/png")]
    assert len(pngs) == 2
