"""Whole-directory conversions: HF model directory <-> our export (`rstar-jax convert`).

Above `convert` (tensor names and layouts), `checkpoint` (our files) and
`loading` (building models), which never import it.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import jax.numpy as jnp

from rstar_jax.models.checkpoint import (
    EXPORT_MARKER,
    TOKENIZER_DIR,
    export_params,
    host_params,
    load_model,
    read_export_info,
    tokenizer_dir,
)
from rstar_jax.models.convert import (
    HFTensors,
    copy_tokenizer_files,
    has_value_head,
    hf_config,
    params_to_hf,
    write_safetensors,
)
from rstar_jax.models.decoder import PPM, Policy
from rstar_jax.models.loading import load_hf
from rstar_jax.models.params import model_kind, ppm_from_policy

_SAFETENSORS_FLOATS = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def _header_dtypes(path: str) -> list:
    """The dtype codes in a safetensors file's JSON header (no tensor is read)."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    return [v["dtype"] for k, v in header.items() if k != "__metadata__"]


def source_dtype(hf_dir: str) -> str:
    """The dtype the HF weights are stored in, as one we store.

    Read from the first safetensors file's header (its floating tensors),
    else config.json's `torch_dtype` / `dtype`; bfloat16 stays bfloat16,
    anything else (float32, float16, unknown) becomes float32, which holds
    float16 exactly.
    """
    files = sorted(f for f in os.listdir(hf_dir) if f.endswith(".safetensors"))
    floats = [_SAFETENSORS_FLOATS[d] for d in _header_dtypes(os.path.join(hf_dir, files[0]))
              if d in _SAFETENSORS_FLOATS] if files else []
    name = floats[0] if floats else None
    if name is None:
        with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        name = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    return "bfloat16" if name == "bfloat16" else "float32"


def convert_hf_to_ckpt(hf_dir: str, out: str, *, ppm: bool = False,
                       dtype: Optional[str] = None) -> str:
    """HF directory -> our export directory (params, arch, tokenizer files).

    Stored in `dtype`, by default the source's (`source_dtype`), so a round
    trip HF -> ours -> HF is exact. With `ppm`, the reference's value head
    is converted when present, else a fresh head is put on the backbone
    (spec section 6).
    """
    if not os.path.exists(os.path.join(hf_dir, "config.json")):
        raise FileNotFoundError(f"{hf_dir} has no config.json (not a HF model directory)")
    with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as f:
        original = json.load(f)
    dtype = dtype or source_dtype(hf_dir)
    head = ppm and has_value_head(HFTensors(hf_dir))
    model = load_hf(PPM if head else Policy, hf_dir, param_dtype=dtype, compute_dtype=dtype)
    if ppm and not head:
        model = ppm_from_policy(model)
    export_params(model, out, dtype=jnp.dtype(dtype), source=os.path.abspath(hf_dir),
                  hf_config=original)
    copy_tokenizer_files(hf_dir, os.path.join(out, TOKENIZER_DIR))
    return out


def convert_ckpt_to_hf(ckpt: str, out: str, *, dtype: Optional[str] = None) -> str:
    """Our checkpoint or export -> HF directory (safetensors, config.json, tokenizer).

    A policy loads in transformers / vLLM as `Qwen2ForCausalLM` /
    `LlamaForCausalLM`; a PPM is written in the reference's layout
    (backbone + `v_head.summary.*`).
    """
    model = load_model(ckpt)
    arch = model.arch
    dtype = dtype or jnp.dtype(arch.param_dtype).name
    base = None
    if os.path.exists(os.path.join(ckpt, EXPORT_MARKER)):
        base = read_export_info(ckpt).get("hf_config")
    tensors = params_to_hf(host_params(model, jnp.dtype(dtype)), arch,
                           ppm=model_kind(model) == "ppm")
    write_safetensors(tensors, out)
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(hf_config(arch, base, dtype=dtype), f, indent=2)
    copy_tokenizer_files(tokenizer_dir(ckpt) or "", out)
    return out
