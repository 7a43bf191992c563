"""The vocabulary: tokenizers with the rStar tags, and the embedding rows for them.

Whether the tags (spec section 2) are added is decided in one place,
`wants_tags`, for the engine, training and notebooks alike, so the same
text becomes the same ids everywhere. A model whose weights were trained
without the tags (a pretrained HF model, round 1's bootstrap policy) reads
and writes them as plain text at inference, as the paper's round 1 does;
they become single tokens when a model is fine-tuned (SFT / PPM), each new
row starting from the mean of its own text pieces' rows.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from rstar_jax.models.sharding import Rules, logical_to_spec

log = logging.getLogger(__name__)


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


def init_new_token_rows(model: nnx.Module, token_ids, base_vocab: int,
                        pieces: Optional[Mapping[int, Sequence[int]]] = None) -> nnx.Module:
    """Initialises the rows of the added `token_ids` (embedding and untied head).

    A token with `pieces` (the ids its text had before it was added, all
    below `base_vocab`) starts as the mean of those pieces' rows, input and
    output alike: a pretrained model that never saw `<code>` as one token
    then reads it about as it reads the text `<`, `code`, `>`, and its logit
    is the mean of theirs, so it goes on writing the tag as text (stop
    strings match text, whatever the tokenization). A token without pieces
    starts from the mean of rows `[0, base_vocab)`; Qwen's embedding has
    spare rows past its tokenizer, so added tokens often need no resize
    but still need their rows set.
    """
    ids = [int(i) for i in token_ids]
    if not ids:
        return model
    pieces = {i: [int(p) for p in pieces[i]] for i in ids if pieces and pieces.get(i)}

    def rows(w):
        mean = jnp.mean(w[:base_vocab].astype(jnp.float32), axis=0)
        new = [jnp.mean(w[jnp.asarray(pieces[i], jnp.int32)].astype(jnp.float32), axis=0)
               if i in pieces else mean for i in ids]
        return w.at[jnp.asarray(ids, jnp.int32)].set(jnp.stack(new).astype(w.dtype))

    for var, vocab_major in [(model.model.embed, True)] + (
            [(model.lm_head, False)] if hasattr(model, "lm_head") else []):
        w = var.get_value()
        new = rows(w) if vocab_major else rows(w.T).T
        sharding = getattr(w, "sharding", None)
        var.set_value(jax.device_put(new, sharding) if sharding is not None else new)
    return model


def added_token_pieces(tokenizer, token_ids, base_vocab: int) -> Dict[int, List[int]]:
    """Added token id -> the ids of its text's pieces under the original vocabulary.

    Tokenizes each added token's text with the added tokens split back into
    ordinary text (`split_special_tokens`); a token whose text does not
    split into ids below `base_vocab` is left out (it gets the mean row).
    """
    out: Dict[int, List[int]] = {}
    for tid in token_ids:
        text = tokenizer.convert_ids_to_tokens(int(tid))
        try:
            ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        except TypeError:  # a tokenizer without split_special_tokens
            continue
        if ids and all(0 <= i < base_vocab for i in ids):
            out[int(tid)] = list(ids)
        else:
            log.warning("added token %r has no text pieces in the base vocabulary; "
                        "it starts from the mean embedding", text)
    return out


def load_tokenizer(path: str, *, add_special_tokens: bool = True):
    """(tokenizer, num_added) from a local HF tokenizer directory (`data.tokenizer`)."""
    from rstar_jax.data.tokenizer import load_tokenizer as data_load_tokenizer

    return data_load_tokenizer(path, add_special_tokens=add_special_tokens)


def fit_vocab_to_tokenizer(model: nnx.Module, tokenizer, num_added: int, *,
                           mesh: Optional[Mesh] = None, rules: Optional[Rules] = None,
                           pad_to: int = 64) -> nnx.Module:
    """Makes room for the tokenizer's ids and initialises the added tokens' rows.

    Each added token (the rStar tags) starts from the mean of its own text
    pieces' rows (`init_new_token_rows`), so a pretrained model is usable
    before any fine-tuning on the tags.

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
        base, new_ids = size - num_added, range(size - num_added, size)
        init_new_token_rows(model, new_ids, base, added_token_pieces(tokenizer, new_ids, base))
    return model


def wants_tags(setting: Optional[bool], *, mode: str, pretrained: bool) -> bool:
    """Whether the rStar tags are added to a model's tokenizer.

    Args:
      setting: `model.add_special_tokens`; True / False decide, None (the
        default) picks by the two below.
      mode: 'training' adds them: SFT / PPM teach the model the new tokens
        (spec section 2).
      pretrained: weights from a checkpoint or HF directory. At inference
        such a model keeps the tags it was trained with (a fine-tuned
        checkpoint saved its tokenizer with them) and gets none added: an
        untuned model (round 1's bootstrap, spec section 2) writes the tags
        as text, which new rows, even well initialised, would break. A
        fresh random init gets them (nothing to break).
    """
    if setting is not None:
        return bool(setting)
    return mode == "training" or not pretrained


def attach_tokenizer(model: nnx.Module, source: Optional[str], *, add_tags: bool,
                     mesh: Optional[Mesh] = None, rules: Optional[Rules] = None):
    """(model, tokenizer or None): the tokenizer of `source`, the model fitted to it.

    The one path from a tokenizer directory to a model's tokenizer, used by
    `load_policy` / `load_ppm` (engine, training) and `load_checkpoint`
    (notebooks), so the same text gives the same ids in each.
    """
    if not source:
        return model, None
    tok, added = load_tokenizer(source, add_special_tokens=add_tags)
    return fit_vocab_to_tokenizer(model, tok, added, mesh=mesh, rules=rules), tok
