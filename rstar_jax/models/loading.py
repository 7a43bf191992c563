"""Building models on a mesh: fresh init, HF weights, our checkpoints, tokenizers.

Nothing here materialises a whole model on one device and shards it
afterwards: the abstract model (`nnx.eval_shape`) gives the shapes and the
logical axes, `param_shardings` turns those into shardings, and values are
either created by a jitted init with those `out_shardings` or placed tensor
by tensor with `jax.device_put(host_array, sharding)` (each device receives
only its shard).
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, Iterable, Mapping, Optional, Tuple, Type

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from rstar_jax.models.decoder import PPM, ArchConfig, Policy
from rstar_jax.models.sharding import Rules, logical_to_spec, param_shardings

log = logging.getLogger(__name__)

MODEL_CLASSES = {"policy": Policy, "ppm": PPM}


def path_key(path: Iterable) -> str:
    """`('model', 'layers', 0, 'attn', 'q')` -> `'model/layers/0/attn/q'`."""
    return "/".join(str(p) for p in path)


def model_kind(model: nnx.Module) -> str:
    return "ppm" if isinstance(model, PPM) else "policy"


def abstract_model(cls: Type[nnx.Module], arch: ArchConfig, *, seed: int = 0) -> nnx.Module:
    """The model with `ShapeDtypeStruct` values: shapes and metadata, no memory."""
    return nnx.eval_shape(lambda: cls(arch, rngs=nnx.Rngs(seed)))


def flat_params(model_or_state) -> Dict[str, jax.Array]:
    """Path string -> array (or ShapeDtypeStruct) for every Variable."""
    state = nnx.state(model_or_state) if isinstance(model_or_state, nnx.Module) else model_or_state
    return {path_key(p): v.get_value() for p, v in state.flat_state()}


def assemble(abstract: nnx.Module, values: Mapping[str, jax.Array]) -> nnx.Module:
    """A live model with the structure of `abstract` and the given values."""
    graphdef, state = nnx.split(abstract)
    missing = [path_key(p) for p, _ in state.flat_state() if path_key(p) not in values]
    if missing:
        raise KeyError(f"no values for {missing[:5]}{'...' if len(missing) > 5 else ''}")
    new = {p: v.replace(value=values[path_key(p)]) for p, v in state.flat_state()}
    return nnx.merge(graphdef, nnx.State.from_flat_path(new))


def _shardings(abstract: nnx.Module, mesh: Optional[Mesh], rules: Optional[Rules]):
    if mesh is None:
        return None
    return {path_key(p): s for p, s in param_shardings(abstract, mesh, rules or {}).flat_state()}


def init_model(cls: Type[nnx.Module], arch: ArchConfig, *, mesh: Optional[Mesh] = None,
               rules: Optional[Rules] = None, seed: int = 0) -> nnx.Module:
    """A freshly initialised model, each parameter created already sharded.

    The same numbers as `cls(arch, rngs=nnx.Rngs(seed))`. Built eagerly:
    each weight is drawn by a small jitted initializer straight into its
    sharding (`layers.init_placement`), compiled once per distinct shape, so
    a 1.5B model starts in seconds; a jitted whole-model initializer spent
    110 s compiling on an H200 (issue 17). The few constant parameters
    (norm scales, biases) are created on the default device and then placed.
    Without a mesh the parameters land on the default device.
    """
    from rstar_jax.models.layers import init_placement

    with init_placement(mesh, rules):
        model = cls(arch, rngs=nnx.Rngs(seed))
    if mesh is None:
        return model
    shardings = _shardings(model, mesh, rules)
    graphdef, state = nnx.split(model)
    placed = {p: v.replace(value=jax.device_put(v.get_value(), shardings[path_key(p)]))
              for p, v in state.flat_state()}
    return nnx.merge(graphdef, nnx.State.from_flat_path(placed))


def place_params(abstract: nnx.Module, arrays: Iterable[Tuple[str, np.ndarray]], *,
                 mesh: Optional[Mesh] = None, rules: Optional[Rules] = None,
                 fill: Optional[Mapping[str, jax.Array]] = None) -> nnx.Module:
    """Puts host arrays (path, value) onto their shardings one at a time.

    Values are cast to each parameter's dtype and must have its shape;
    `fill` supplies parameters absent from `arrays` (e.g. a fresh head).
    """
    shapes = flat_params(abstract)
    shardings = _shardings(abstract, mesh, rules)
    values: Dict[str, jax.Array] = dict(fill or {})
    for key, host in arrays:
        if key not in shapes:
            raise KeyError(f"unexpected parameter {key!r}")
        want = shapes[key]
        if tuple(host.shape) != tuple(want.shape):
            raise ValueError(f"{key}: shape {tuple(host.shape)} != model's {tuple(want.shape)}")
        host = np.asarray(host).astype(want.dtype)
        values[key] = jax.device_put(host, shardings[key]) if shardings else jnp.asarray(host)
    return assemble(abstract, values)


def ppm_from_policy(policy: Policy, *, seed: int = 0) -> PPM:
    """A PPM sharing the policy's backbone weights, with a fresh value head (spec section 6).

    The backbone arrays are reused as they are (same shardings, no copy);
    the LM head is dropped.
    """
    abstract = abstract_model(PPM, policy.arch, seed=seed)
    values = {k: v for k, v in flat_params(policy).items() if k.startswith("model/")}
    hidden = policy.arch.hidden_size
    head = {  # PPM.__init__'s head initialisation, without building a second backbone
        "value_kernel": hidden ** -0.5 * jax.random.normal(jax.random.key(seed), (hidden,)),
        "value_bias": jnp.zeros((), jnp.float32),
    }
    ref = policy.model.embed.get_value()
    values.update({k: _like(v, ref, replicated=True) for k, v in head.items()})
    return assemble(abstract, values)


def _like(value: jax.Array, ref: jax.Array, *, replicated: bool = False) -> jax.Array:
    """`value` placed on `ref`'s mesh (replicated) when `ref` is mesh-sharded."""
    sharding = getattr(ref, "sharding", None)
    if isinstance(sharding, NamedSharding) and replicated:
        return jax.device_put(value, NamedSharding(sharding.mesh, jax.sharding.PartitionSpec()))
    return value


# --- vocabulary ------------------------------------------------------------------

def _update_rows(model: nnx.Module, new_vocab: int, row_fn: Callable, mesh: Optional[Mesh],
                 rules: Optional[Rules]) -> None:
    """Applies `row_fn(w_vocab_major [V, D]) -> [new_vocab, D]` to embed and untied head."""
    def placed(var, new_value):
        sharding = getattr(var.get_value(), "sharding", None)
        if mesh is not None:
            axes = var.get_metadata()["logical_axes"]
            spec = logical_to_spec(axes, new_value.shape, mesh, rules or {})
            return jax.device_put(new_value, NamedSharding(mesh, spec))
        if isinstance(sharding, NamedSharding):
            axes = var.get_metadata()["logical_axes"]
            spec = logical_to_spec(axes, new_value.shape, sharding.mesh, rules or {})
            return jax.device_put(new_value, NamedSharding(sharding.mesh, spec))
        return new_value

    embed = model.model.embed
    embed.set_value(placed(embed, row_fn(embed.get_value())))
    if hasattr(model, "lm_head"):
        head = model.lm_head
        head.set_value(placed(head, row_fn(head.get_value().T).T))
    model.arch = model.arch.replace(vocab_size=new_vocab)
    model.model.arch = model.arch


def resize_vocab(model: nnx.Module, new_vocab_size: int, *, mesh: Optional[Mesh] = None,
                 rules: Optional[Rules] = None) -> nnx.Module:
    """Grows (or shrinks) the vocabulary in place; new rows = the mean row.

    Applies to the embedding `[V, D]` and the untied LM head `[D, V]`; the
    arch's `vocab_size` follows. With `mesh`/`rules` (or when the old array
    is mesh-sharded) the new arrays are re-sharded by their logical axes.
    """
    old = model.arch.vocab_size

    def rows(w):
        if new_vocab_size <= old:
            return w[:new_vocab_size]
        mean = jnp.mean(w.astype(jnp.float32), axis=0, keepdims=True).astype(w.dtype)
        return jnp.concatenate([w, jnp.repeat(mean, new_vocab_size - old, axis=0)], axis=0)

    _update_rows(model, new_vocab_size, rows, mesh, rules)
    return model


def init_new_token_rows(model: nnx.Module, token_ids, base_vocab: int) -> nnx.Module:
    """Sets the rows of `token_ids` to the mean of rows `[0, base_vocab)`.

    Qwen's embedding has spare rows past its tokenizer, so added special
    tokens often need no resize; their (untrained) rows still start from the
    mean embedding, like grown rows do.
    """
    ids = jnp.asarray(list(token_ids), jnp.int32)
    if ids.size == 0:
        return model

    def rows(w):
        mean = jnp.mean(w[:base_vocab].astype(jnp.float32), axis=0).astype(w.dtype)
        return w.at[ids].set(jnp.broadcast_to(mean, (ids.size, w.shape[1])))

    for var, vocab_major in [(model.model.embed, True)] + (
            [(model.lm_head, False)] if hasattr(model, "lm_head") else []):
        w = var.get_value()
        new = rows(w) if vocab_major else rows(w.T).T
        sharding = getattr(w, "sharding", None)
        var.set_value(jax.device_put(new, sharding) if sharding is not None else new)
    return model


def load_tokenizer(path: str, *, add_special_tokens: bool = True):
    """(tokenizer, num_added) from a local HF tokenizer directory."""
    try:
        from rstar_jax.data.tokenizer import load_tokenizer as data_load_tokenizer
    except ImportError:
        return _load_tokenizer_fallback(path, add_special_tokens)
    return data_load_tokenizer(path, add_special_tokens=add_special_tokens)


def _load_tokenizer_fallback(path: str, add_special_tokens: bool):
    """Stand-in until `rstar_jax.data.tokenizer` lands: AutoTokenizer + rStar tags."""
    from transformers import AutoTokenizer

    from rstar_jax.data.prompts import SPECIAL_TOKENS

    tok = AutoTokenizer.from_pretrained(path)
    added = tok.add_tokens(list(SPECIAL_TOKENS), special_tokens=True) if add_special_tokens else 0
    return tok, added


def fit_vocab_to_tokenizer(model: nnx.Module, tokenizer, num_added: int, *,
                           mesh: Optional[Mesh] = None, rules: Optional[Rules] = None,
                           pad_to: int = 64) -> nnx.Module:
    """Makes room for the tokenizer's ids and mean-initialises the added tokens.

    Grows the vocabulary (to a multiple of `pad_to`, so it keeps dividing
    the tensor axis) only when the tokenizer's ids do not fit.
    """
    size = len(tokenizer)
    if size > model.arch.vocab_size:
        target = -(-size // pad_to) * pad_to
        log.info("growing vocabulary %d -> %d for %d tokenizer ids",
                 model.arch.vocab_size, target, size)
        resize_vocab(model, target, mesh=mesh, rules=rules)
    if num_added:
        init_new_token_rows(model, range(size - num_added, size), size - num_added)
    return model


# --- from config -----------------------------------------------------------------

def rules_for(mesh_cfg, mode: str) -> Rules:
    """The rule table of `mode` ('inference' or 'training')."""
    if mode not in ("inference", "training"):
        raise ValueError(f"mode must be 'inference' or 'training', not {mode!r}")
    return mesh_cfg.inference_rules if mode == "inference" else mesh_cfg.training_rules


def load_hf(cls: Type[nnx.Module], hf_dir: str, *, mesh: Optional[Mesh] = None,
            rules: Optional[Rules] = None, param_dtype: str = "float32",
            compute_dtype: str = "float32", seed: int = 0) -> nnx.Module:
    """A Policy or PPM from an HF directory (config.json + safetensors).

    A PPM needs the reference's value head (`v_head.summary.*`) in the weights;
    for a PPM from a plain causal LM use `ppm_from_policy`.
    """
    from rstar_jax.models.convert import HFTensors, hf_to_params

    arch = ArchConfig.from_hf_dir(hf_dir, param_dtype=param_dtype, compute_dtype=compute_dtype)
    tensors = HFTensors(hf_dir)
    abstract = abstract_model(cls, arch, seed=seed)
    return place_params(abstract, hf_to_params(tensors, arch, ppm=cls is PPM),
                        mesh=mesh, rules=rules)


def _tokenizer_source(m, checkpoint: Optional[str]) -> Optional[str]:
    from rstar_jax.models.checkpoint import tokenizer_dir

    if m.tokenizer_dir:
        return m.tokenizer_dir
    if checkpoint:
        found = tokenizer_dir(checkpoint)
        if found:
            return found
    return m.hf_dir


def _with_tokenizer(model, m, checkpoint, mesh, rules, with_tokenizer: bool):
    source = _tokenizer_source(m, checkpoint) if with_tokenizer else None
    if not source:
        return model, None
    tok, added = load_tokenizer(source, add_special_tokens=m.add_special_tokens)
    return fit_vocab_to_tokenizer(model, tok, added, mesh=mesh, rules=rules), tok


def _load(cls, cfg, mesh, rules, checkpoint: Optional[str]):
    from rstar_jax.models.checkpoint import load_model

    m = cfg.model
    if checkpoint:
        return load_model(checkpoint, mesh=mesh, rules=rules, dtype=m.param_dtype,
                          compute_dtype=m.compute_dtype)
    if m.hf_dir:
        return load_hf(cls, m.hf_dir, mesh=mesh, rules=rules, param_dtype=m.param_dtype,
                       compute_dtype=m.compute_dtype, seed=cfg.seed)
    return init_model(cls, ArchConfig.from_model_config(m), mesh=mesh, rules=rules, seed=cfg.seed)


def load_policy(cfg, *, mesh: Optional[Mesh] = None, mode: str = "inference",
                with_tokenizer: bool = True):
    """(Policy, tokenizer or None) from `cfg.model`.

    Source, first found: `model.checkpoint` (ours), `model.hf_dir` (HF
    weights), else a fresh init from the config's architecture. The
    tokenizer (`model.tokenizer_dir`, the checkpoint's, or `model.hf_dir`)
    gets the rStar tags when `model.add_special_tokens`, and the vocabulary
    grows to fit them. Parameters are sharded by `cfg.mesh`'s rules of `mode`.
    """
    rules = rules_for(cfg.mesh, mode) if mesh is not None else None
    model = _load(Policy, cfg, mesh, rules, cfg.model.checkpoint)
    if not isinstance(model, Policy):
        raise ValueError(f"{cfg.model.checkpoint} holds a {model_kind(model)}, not a policy")
    return _with_tokenizer(model, cfg.model, cfg.model.checkpoint, mesh, rules, with_tokenizer)


def load_ppm(cfg, *, mesh: Optional[Mesh] = None, mode: str = "training",
             with_tokenizer: bool = True):
    """(PPM, tokenizer or None): `ppm.checkpoint` if set (a policy checkpoint
    there gets a fresh value head), else an HF dir with the reference's value
    head, else the policy of `cfg.model` with a fresh head (spec section 6)."""
    from rstar_jax.models.convert import HFTensors, has_value_head

    rules = rules_for(cfg.mesh, mode) if mesh is not None else None
    m = cfg.model
    if cfg.ppm.checkpoint:
        model, source = _load(PPM, cfg, mesh, rules, cfg.ppm.checkpoint), cfg.ppm.checkpoint
    elif m.hf_dir and not m.checkpoint and has_value_head(HFTensors(m.hf_dir)):
        model = load_hf(PPM, m.hf_dir, mesh=mesh, rules=rules, param_dtype=m.param_dtype,
                        compute_dtype=m.compute_dtype, seed=cfg.seed)
        source = None
    else:
        model, source = _load(Policy, cfg, mesh, rules, m.checkpoint), m.checkpoint
    if isinstance(model, Policy):
        model = ppm_from_policy(model, seed=cfg.seed)
    return _with_tokenizer(model, m, source, mesh, rules, with_tokenizer)
