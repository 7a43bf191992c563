"""Shared helpers for the training tests: a tiny byte-level tokenizer and
tiny configs (importable from subprocess scripts too)."""

from __future__ import annotations

import json
import os

from rstar_jax.config.loader import load_config
from rstar_jax.data.prompts import SPECIAL_TOKENS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "configs", "models", "tiny.yaml")


def tiny_tokenizer():
    """Byte-level tokenizer (256 symbols) + the step tags + <eos> + <pad>:
    267 ids, inside the tiny model's 512-token vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    fast.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return fast


def save_tiny_tokenizer(path: str) -> str:
    tiny_tokenizer().save_pretrained(path)
    return path


def tiny_config(tok_dir: str, *extra: str):
    """The tiny model with small batches, fast logging, no TensorBoard."""
    overrides = [
        f"model.tokenizer_dir={tok_dir}", "mesh.data=1", "mesh.fsdp=-1", "mesh.tensor=1",
        "train.sft.learning_rate=0.003", "train.sft.batch_size=4", "train.sft.seq_len=512",
        "train.sft.weight_decay=0.0", "train.sft.epochs=1",
        "train.ppm.learning_rate=0.001", "train.ppm.batch_size=4", "train.ppm.seq_len=1024",
        "train.log_every=1", "train.tensorboard=false", "checkpoint.save_every=0",
        "logging.progress=false", "train.length_buckets=[64,128,256,512,1024]",
        "checkpoint.export_bf16=false",
    ]
    return load_config(TINY, overrides + list(extra))


def write_jsonl(path: str, rows) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def memorisable_sft(n: int = 8):
    """Short, distinct SFT records a tiny model can memorise."""
    return [{"query": f"What is {i} + {i + 1}?",
             "response": f"<code>\nprint({i} + {i + 1})\n<end_of_code>\n<output>{2 * i + 1}"
                         f"<end_of_output>\n<answer>\\boxed{{{2 * i + 1}}}<end_of_answer>"}
            for i in range(n)]


def resume_config(tok_dir: str):
    """8 steps, async checkpoints every 3 (kept: 2), on the 8-device mesh."""
    return tiny_config(tok_dir, "train.sft.max_steps=8", "checkpoint.save_every=3",
                       "checkpoint.keep=2", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2",
                       "train.sft.batch_size=4")


def read_metrics(out_dir: str, split: str = "train"):
    with open(os.path.join(out_dir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r["split"] == split]


def final_params(out_dir: str):
    """The exported parameters on one device, as host numpy."""
    import jax
    from flax import nnx

    from rstar_jax.config.schema import MeshConfig
    from rstar_jax.models.checkpoint import load_exported
    from rstar_jax.models.mesh import make_mesh

    # An explicit one-device mesh: restoring without one reuses the saved
    # sharding, which fails for an export written by two processes.
    mesh = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    model = load_exported(os.path.join(out_dir, "final"), mesh=mesh, rules={})
    return jax.device_get(nnx.to_pure_dict(nnx.state(model)))
