"""Orbax checkpoints: resumable training checkpoints and params-only exports.

Training checkpoint (a `Checkpointer` directory)::

    DIR/<step>/state       model parameters, flat {path: array}, sharded save
    DIR/<step>/metadata    JSON: kind, arch, config, round, step, git revision, extras
    DIR/<step>/extra_<n>   optional extras (optimizer state, iterator state, ...)
    DIR/tokenizer/         the tokenizer, when one was given (HF files)

Export (`export_params`, also what `rstar-jax convert hf-to-ckpt` writes)::

    DIR/params             flat {path: array} in one dtype
    DIR/rstar_model.json   kind, arch, source
    DIR/tokenizer/         when known

Restores go through an abstract target carrying shardings, so a checkpoint
written on one mesh loads onto any other (or onto one device). Parameters
are stored under flat path strings (`model/layers/0/attn/q`) so the layout
does not depend on Flax's internal tree types.

In a notebook::

    from rstar_jax.models import load_checkpoint
    policy, tok = load_checkpoint("runs/demo/round_4/sft/ckpt")
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import time
from typing import Any, Dict, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from rstar_jax.config.schema import CheckpointConfig
from rstar_jax.models.decoder import ArchConfig
from rstar_jax.models.params import (
    MODEL_CLASSES,
    _shardings,
    abstract_model,
    assemble,
    flat_params,
    model_kind,
)
from rstar_jax.models.sharding import Rules
from rstar_jax.models.vocab import attach_tokenizer, wants_tags

log = logging.getLogger(__name__)

EXPORT_MARKER = "rstar_model.json"
TOKENIZER_DIR = "tokenizer"


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def git_revision() -> Optional[str]:
    """HEAD of the repository holding this package, or None outside git."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class Restored(NamedTuple):
    """What `Checkpointer.restore` returns."""

    model: Any  # nnx.Module for a module target, else the flat dict
    metadata: Dict[str, Any]
    extra: Dict[str, Any]


def _encode_json_extra(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {"__bytes_b64__": base64.b64encode(bytes(value)).decode("ascii")}
    return value


def _decode_json_extra(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__bytes_b64__"}:
        return base64.b64decode(value["__bytes_b64__"])
    return value


def _is_jsonable(value: Any) -> bool:
    if isinstance(value, (bytes, bytearray)):
        return True
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def _restore_target(target, mesh: Optional[Mesh], rules: Optional[Rules]):
    """Flat {path: ShapeDtypeStruct(sharding=...)} for a module or a flat dict."""
    if isinstance(target, nnx.Module):
        shapes = flat_params(target)
        shardings = _shardings(target, mesh, rules)
        if shardings is None:  # keep shardings of a live model, else default device
            shardings = {k: getattr(v, "sharding", None) for k, v in shapes.items()}
        return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=shardings[k])
                for k, v in shapes.items()}
    return dict(target)


class Checkpointer:
    """Orbax `CheckpointManager` for one training run (async saves, keep-N).

    `save(step, model, extra={...}, round=r)` stores the parameters, the
    metadata and any extras: JSON-able values (dicts, numbers, strings,
    bytes such as a grain iterator state) or pytrees of arrays (optimizer
    state; pass pure pytrees, e.g. `nnx.state(opt).to_pure_dict()`).
    `restore(target, step)` returns `Restored(model, metadata, extra)`;
    give pytree extras an abstract target in `extra_targets` to place
    them on a mesh.
    """

    def __init__(self, directory: str, cfg: Optional[CheckpointConfig] = None, *, config=None,
                 tokenizer=None):
        ocp = _ocp()
        self.directory = os.path.abspath(directory)
        keep = getattr(cfg, "keep", 3)
        async_save = getattr(cfg, "async_save", True)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self.config = config
        if tokenizer is not None and jax.process_index() == 0:
            tok_dir = os.path.join(self.directory, TOKENIZER_DIR)
            if not os.path.isdir(tok_dir):
                tokenizer.save_pretrained(tok_dir)

    def save(self, step: int, model, *, extra: Optional[Mapping[str, Any]] = None,
             round: Optional[int] = None, force: bool = False) -> bool:
        """Starts an (async) save of `model` at `step`; returns whether it saved."""
        ocp = _ocp()
        from rstar_jax.config import to_dict

        extra = dict(extra or {})
        kinds = {name: "json" if _is_jsonable(v) else "pytree" for name, v in extra.items()}
        meta = {
            "kind": model_kind(model), "arch": model.arch.to_dict(), "step": int(step),
            "round": round, "git_revision": git_revision(), "time": time.time(),
            "config": to_dict(self.config) if self.config is not None else None,
            "extras": kinds,
        }
        items = {"state": ocp.args.StandardSave(flat_params(model)),
                 "metadata": ocp.args.JsonSave(meta)}
        for name, value in extra.items():
            items[f"extra_{name}"] = (ocp.args.JsonSave(_encode_json_extra(value))
                                      if kinds[name] == "json" else ocp.args.StandardSave(value))
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def all_steps(self):
        return list(self.manager.all_steps())

    def metadata(self, step: Optional[int] = None) -> Dict[str, Any]:
        ocp = _ocp()
        step = self._step(step)
        out = self.manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))
        return dict(out["metadata"])

    def restore(self, target=None, step: Optional[int] = None, *, mesh: Optional[Mesh] = None,
                rules: Optional[Rules] = None,
                extra_targets: Optional[Mapping[str, Any]] = None) -> Restored:
        """Restores onto `target` (an abstract or live model, or a flat dict of
        ShapeDtypeStructs with shardings); None builds the model from the
        stored arch. `mesh`/`rules` shard a module target (any mesh)."""
        ocp = _ocp()
        step = self._step(step)
        meta = self.metadata(step)
        if target is None:
            cls = MODEL_CLASSES[meta["kind"]]
            target = abstract_model(cls, ArchConfig.from_dict(meta["arch"]))
        abstract_flat = _restore_target(target, mesh, rules)
        items = {"state": ocp.args.StandardRestore(abstract_flat)}
        extra_targets = dict(extra_targets or {})
        for name, kind in meta.get("extras", {}).items():
            items[f"extra_{name}"] = (ocp.args.JsonRestore() if kind == "json"
                                      else ocp.args.StandardRestore(extra_targets.get(name)))
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        extra = {name: _decode_json_extra(out[f"extra_{name}"]) if kind == "json"
                 else out[f"extra_{name}"] for name, kind in meta.get("extras", {}).items()}
        values = out["state"]
        model = assemble(target, values) if isinstance(target, nnx.Module) else values
        return Restored(model, meta, extra)

    def _step(self, step: Optional[int]) -> int:
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return step

    def wait(self) -> None:
        """Blocks until pending async saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def latest_step(directory: str) -> Optional[int]:
    """The newest complete step in a `Checkpointer` directory (None if none)."""
    if not os.path.isdir(directory):
        return None
    with Checkpointer(directory, _NoKeep()) as ckpt:
        return ckpt.latest_step()


class _NoKeep:
    keep = None
    async_save = False


def restore(directory: str, target=None, step: Optional[int] = None, *,
            mesh: Optional[Mesh] = None, rules: Optional[Rules] = None) -> Restored:
    """One-shot `Checkpointer(directory).restore(target, step, ...)`."""
    with Checkpointer(directory, _NoKeep()) as ckpt:
        return ckpt.restore(target, step, mesh=mesh, rules=rules)


# --- params-only export ---------------------------------------------------------

def export_params(model: nnx.Module, directory: str, dtype=jnp.bfloat16, *,
                  tokenizer=None, source: Optional[str] = None,
                  hf_config: Optional[dict] = None) -> str:
    """Writes the parameters alone, cast to `dtype`, for inference and notebooks."""
    ocp = _ocp()
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    values = {k: v.astype(dtype) for k, v in flat_params(model).items()}
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(directory, "params"), values, force=True)
    if jax.process_index() == 0:
        arch = model.arch.replace(param_dtype=jnp.dtype(dtype))
        info = {"kind": model_kind(model), "arch": arch.to_dict(), "source": source,
                "git_revision": git_revision()}
        if hf_config is not None:
            info["hf_config"] = hf_config
        with open(os.path.join(directory, EXPORT_MARKER), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
        if tokenizer is not None:
            tokenizer.save_pretrained(os.path.join(directory, TOKENIZER_DIR))
    return directory


def read_export_info(directory: str) -> Dict[str, Any]:
    with open(os.path.join(directory, EXPORT_MARKER), encoding="utf-8") as f:
        return json.load(f)


def _override(arch: ArchConfig, dtype, compute_dtype) -> ArchConfig:
    if dtype is not None:
        arch = arch.replace(param_dtype=jnp.dtype(dtype))
    if compute_dtype is not None:
        arch = arch.replace(dtype=jnp.dtype(compute_dtype))
    return arch


def load_exported(directory: str, *, mesh: Optional[Mesh] = None, rules: Optional[Rules] = None,
                  dtype=None, compute_dtype=None) -> nnx.Module:
    """The model of an `export_params` directory, sharded on `mesh` if given.

    `dtype` / `compute_dtype` override the stored parameter / compute dtypes
    (e.g. float32 for parity checks).
    """
    ocp = _ocp()
    directory = os.path.abspath(directory)
    info = read_export_info(directory)
    arch = ArchConfig.from_dict(info["arch"])
    stored = arch.param_dtype
    arch = _override(arch, dtype, compute_dtype)
    target = abstract_model(MODEL_CLASSES[info["kind"]], arch)
    flat = _restore_target(target, mesh, rules)
    on_disk = {k: jax.ShapeDtypeStruct(v.shape, stored, sharding=v.sharding)
               for k, v in flat.items()}
    with ocp.StandardCheckpointer() as ckptr:
        values = ckptr.restore(os.path.join(directory, "params"), on_disk)
    values = {k: v.astype(flat[k].dtype) for k, v in values.items()}
    return assemble(target, values)


def tokenizer_dir(path: str) -> Optional[str]:
    """The tokenizer saved with a checkpoint or export at `path`, if any."""
    root = path if os.path.exists(os.path.join(path, EXPORT_MARKER)) else _manager_root(path)[0]
    tok_dir = os.path.join(root, TOKENIZER_DIR)
    return tok_dir if os.path.isdir(tok_dir) else None


def _manager_root(path: str) -> tuple:
    """(manager directory, step or None) for a manager dir or one of its step dirs."""
    path = os.path.abspath(path)
    base = os.path.basename(path)
    if base.isdigit() and os.path.isdir(os.path.join(path, "metadata")):
        return os.path.dirname(path), int(base)
    return path, None


def load_model(path: str, *, mesh: Optional[Mesh] = None, rules: Optional[Rules] = None,
               step: Optional[int] = None, dtype=None, compute_dtype=None) -> nnx.Module:
    """The model in `path`: an export dir, a `Checkpointer` dir or one of its steps."""
    if os.path.exists(os.path.join(path, EXPORT_MARKER)):
        return load_exported(path, mesh=mesh, rules=rules, dtype=dtype,
                             compute_dtype=compute_dtype)
    root, found = _manager_root(path)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no checkpoint at {path}")
    with Checkpointer(root, _NoKeep()) as ckpt:
        meta = ckpt.metadata(step if step is not None else found)
        arch = _override(ArchConfig.from_dict(meta["arch"]), dtype, compute_dtype)
        target = abstract_model(MODEL_CLASSES[meta["kind"]], arch)
        return ckpt.restore(target, step if step is not None else found,
                            mesh=mesh, rules=rules).model


def load_checkpoint(path: str, *, mesh: Optional[Mesh] = None, rules: Optional[Rules] = None,
                    step: Optional[int] = None, dtype=None, compute_dtype=None,
                    add_special_tokens: Optional[bool] = None, mode: str = "inference"):
    """(model, tokenizer or None) from any checkpoint path: the notebook entry point.

    The tokenizer is the engine's for the same checkpoint (`vocab.wants_tags`
    with `model.add_special_tokens` = `add_special_tokens`, the model's
    vocabulary fitted to it), so the same text gives the same ids here as in
    `load_policy_engine`.
    """
    model = load_model(path, mesh=mesh, rules=rules, step=step, dtype=dtype,
                       compute_dtype=compute_dtype)
    add = wants_tags(add_special_tokens, mode=mode, pretrained=True)
    return attach_tokenizer(model, tokenizer_dir(path), add_tags=add, mesh=mesh, rules=rules)


def host_params(model: nnx.Module, dtype=None) -> Dict[str, np.ndarray]:
    """Flat params gathered to host numpy (for HF export); `dtype` casts."""
    out = {}
    for key, value in flat_params(model).items():
        arr = np.asarray(jax.device_get(value))
        out[key] = arr.astype(dtype) if dtype is not None else arr
    return out
