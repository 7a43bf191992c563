"""HuggingFace Qwen2 / Llama weights <-> our parameters.

One declarative table (`name_map`) lists, for every parameter, our path
(`model/layers/3/attn/q`), the HF tensor name and a pair of reshape hooks
(HF -> ours, ours -> HF). Both directions read the same table, so they can
only disagree if a hook pair is not an inverse, which the round-trip tests
check. HF linears store `[out, in]`; ours are `[in, ...]` with heads split
out (`q: [D, H, Dh]`, `o: [H, Dh, D]`).

A PPM saved by the reference (trl's value-head wrapper) carries
`v_head.summary.weight [1, D]` and `v_head.summary.bias [1]` next to the
backbone, possibly under a `pretrained_model.` prefix; both convert.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional

import numpy as np

from rstar_jax.models.decoder import ArchConfig

Hook = Callable[[np.ndarray], np.ndarray]
WEIGHTS_INDEX = "model.safetensors.index.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json",
                   "generation_config.json", "chat_template.jinja")


class Entry(NamedTuple):
    """One parameter: our path, its HF name, and the two reshape hooks."""

    ours: str
    hf: str
    to_ours: Hook
    to_hf: Hook


def _same(x: np.ndarray) -> np.ndarray:
    return x


def _transpose(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.T)


def _in_proj(n: int, dh: int):
    """HF `[n*Dh, D]` <-> ours `[D, n, Dh]` (q, k, v projections)."""
    def to_ours(w):
        return np.ascontiguousarray(w.T).reshape(w.shape[1], n, dh)

    def to_hf(w):
        return np.ascontiguousarray(w.reshape(w.shape[0], n * dh).T)
    return to_ours, to_hf


def _in_bias(n: int, dh: int):
    """HF `[n*Dh]` <-> ours `[n, Dh]`."""
    return (lambda b: b.reshape(n, dh)), (lambda b: b.reshape(n * dh))


def _out_proj(n: int, dh: int):
    """HF `[D, H*Dh]` <-> ours `[H, Dh, D]`."""
    def to_ours(w):
        return np.ascontiguousarray(w.T).reshape(n, dh, w.shape[0])

    def to_hf(w):
        return np.ascontiguousarray(w.reshape(n * dh, w.shape[-1]).T)
    return to_ours, to_hf


def name_map(arch: ArchConfig, *, ppm: bool = False) -> List[Entry]:
    """Every parameter of a Policy (or, with `ppm`, a PPM) of `arch`."""
    h, k, dh = arch.num_heads, arch.num_kv_heads, arch.head_dim
    entries = [
        Entry("model/embed", "model.embed_tokens.weight", _same, _same),
        Entry("model/norm/scale", "model.norm.weight", _same, _same),
    ]
    for i in range(arch.num_layers):
        ours, hf = f"model/layers/{i}", f"model.layers.{i}"
        entries += [
            Entry(f"{ours}/attn_norm/scale", f"{hf}.input_layernorm.weight", _same, _same),
            Entry(f"{ours}/mlp_norm/scale", f"{hf}.post_attention_layernorm.weight", _same, _same),
            Entry(f"{ours}/attn/q", f"{hf}.self_attn.q_proj.weight", *_in_proj(h, dh)),
            Entry(f"{ours}/attn/k", f"{hf}.self_attn.k_proj.weight", *_in_proj(k, dh)),
            Entry(f"{ours}/attn/v", f"{hf}.self_attn.v_proj.weight", *_in_proj(k, dh)),
            Entry(f"{ours}/attn/o", f"{hf}.self_attn.o_proj.weight", *_out_proj(h, dh)),
            Entry(f"{ours}/mlp/gate", f"{hf}.mlp.gate_proj.weight", _transpose, _transpose),
            Entry(f"{ours}/mlp/up", f"{hf}.mlp.up_proj.weight", _transpose, _transpose),
            Entry(f"{ours}/mlp/down", f"{hf}.mlp.down_proj.weight", _transpose, _transpose),
        ]
        if arch.attention_bias:
            entries += [
                Entry(f"{ours}/attn/q_bias", f"{hf}.self_attn.q_proj.bias", *_in_bias(h, dh)),
                Entry(f"{ours}/attn/k_bias", f"{hf}.self_attn.k_proj.bias", *_in_bias(k, dh)),
                Entry(f"{ours}/attn/v_bias", f"{hf}.self_attn.v_proj.bias", *_in_bias(k, dh)),
            ]
    if ppm:
        entries += [
            Entry("value_kernel", "v_head.summary.weight",
                  lambda w: w.reshape(-1), lambda w: w.reshape(1, -1)),
            Entry("value_bias", "v_head.summary.bias",
                  lambda b: b.reshape(()), lambda b: b.reshape(1)),
        ]
    elif not arch.tie_word_embeddings:
        entries.append(Entry("lm_head", "lm_head.weight", _transpose, _transpose))
    return entries


# --- safetensors -------------------------------------------------------------

class HFTensors(Mapping[str, np.ndarray]):
    """Lazy read-only view of the safetensors weights of an HF directory.

    Tensors load one at a time (a 7B model never sits whole in host memory
    twice); a `pretrained_model.` prefix (trl value-head wrapper) is dropped.
    """

    PREFIX = "pretrained_model."

    def __init__(self, hf_dir: str):
        self.hf_dir = hf_dir
        index = os.path.join(hf_dir, WEIGHTS_INDEX)
        if os.path.exists(index):
            with open(index, encoding="utf-8") as f:
                files = json.load(f)["weight_map"]
        elif os.path.exists(os.path.join(hf_dir, WEIGHTS_FILE)):
            files = {name: WEIGHTS_FILE for name in _safetensor_names(
                os.path.join(hf_dir, WEIGHTS_FILE))}
        else:
            raise FileNotFoundError(f"no {WEIGHTS_FILE} or {WEIGHTS_INDEX} in {hf_dir}")
        self._files = {self._strip(name): (name, file) for name, file in files.items()}

    def _strip(self, name: str) -> str:
        return name[len(self.PREFIX):] if name.startswith(self.PREFIX) else name

    def __getitem__(self, name: str) -> np.ndarray:
        from safetensors import safe_open

        raw, file = self._files[name]
        with safe_open(os.path.join(self.hf_dir, file), framework="np") as f:
            return f.get_tensor(raw)

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def _safetensor_names(path: str) -> List[str]:
    from safetensors import safe_open

    with safe_open(path, framework="np") as f:
        return list(f.keys())


def write_safetensors(tensors: Mapping[str, np.ndarray], out_dir: str,
                      max_shard_bytes: int = 4 << 30) -> None:
    """`model.safetensors`, or shards plus an index past `max_shard_bytes`."""
    from safetensors.numpy import save_file

    os.makedirs(out_dir, exist_ok=True)
    shards: List[Dict[str, np.ndarray]] = [{}]
    size = 0
    for name, value in tensors.items():
        if shards[-1] and size + value.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = np.ascontiguousarray(value)
        size += value.nbytes
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], os.path.join(out_dir, WEIGHTS_FILE), metadata=meta)
        return
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(out_dir, fname), metadata=meta)
        weight_map.update({name: fname for name in shard})
    total = sum(v.nbytes for v in tensors.values())
    with open(os.path.join(out_dir, WEIGHTS_INDEX), "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


# --- conversion ------------------------------------------------------------------

def has_value_head(hf_tensors: Mapping[str, np.ndarray]) -> bool:
    return "v_head.summary.weight" in hf_tensors


def hf_to_params(hf_tensors: Mapping[str, np.ndarray], arch: ArchConfig, *,
                 ppm: bool = False) -> Iterator[tuple]:
    """Yields `(our_path, array)`; a missing tensor is a KeyError naming it."""
    for entry in name_map(arch, ppm=ppm):
        if entry.hf not in hf_tensors:
            raise KeyError(f"HF weights lack {entry.hf!r} (needed for {entry.ours})")
        yield entry.ours, entry.to_ours(np.asarray(hf_tensors[entry.hf]))


def params_to_hf(params: Mapping[str, np.ndarray], arch: ArchConfig, *,
                 ppm: bool = False) -> Dict[str, np.ndarray]:
    """Our flat params (path -> array) to HF tensor names."""
    return {e.hf: e.to_hf(np.asarray(params[e.ours])) for e in name_map(arch, ppm=ppm)}


def hf_config(arch: ArchConfig, base: Optional[dict] = None, dtype: str = "float32") -> dict:
    """A transformers `config.json` for `arch`, on top of the original one if known."""
    cfg = dict(base or {})
    cls = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[arch.family]
    cfg.update({
        "architectures": [cls],
        "model_type": arch.family,
        "vocab_size": arch.vocab_size,
        "hidden_size": arch.hidden_size,
        "intermediate_size": arch.intermediate_size,
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_heads,
        "num_key_value_heads": arch.num_kv_heads,
        "head_dim": arch.head_dim,
        "max_position_embeddings": arch.max_position_embeddings,
        "rope_theta": arch.rope_theta,
        "rms_norm_eps": arch.rms_norm_eps,
        "tie_word_embeddings": arch.tie_word_embeddings,
        "hidden_act": "silu",
        "torch_dtype": dtype,
    })
    cfg.pop("rope_parameters", None)
    cfg.pop("rope_scaling", None)
    cfg.pop("dtype", None)
    if arch.family == "llama":
        cfg.update({"attention_bias": False, "mlp_bias": False})
    else:
        cfg.update({"use_sliding_window": False})
    return cfg


def copy_tokenizer_files(src: str, dst: str) -> List[str]:
    """Copies the HF tokenizer files found in `src`; returns their names."""
    import shutil

    copied = []
    if not src or not os.path.isdir(src):
        return copied
    os.makedirs(dst, exist_ok=True)
    for name in TOKENIZER_FILES:
        if os.path.exists(os.path.join(src, name)):
            shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
            copied.append(name)
    return copied
