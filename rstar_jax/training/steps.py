"""Pure, jitted train steps: SFT cross-entropy, PPM pairwise (Bradley-Terry)
and PQM (MSE on Q), with AdamW, gradient clipping and accumulation.

Parameters are a plain nested dict (`nnx` pure dict), merged into the
module inside the step, so the train state is an ordinary pytree that
Orbax saves and restores onto any mesh. Every loss is a ratio
`numerator / denominator` where the denominator does not depend on the
parameters (trained tokens, summed pair weights); accumulation sums the
numerator's gradient over microbatches and divides once, so an
accumulated step equals the full-batch step exactly.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rstar_jax.config.schema import OptimConfig, PPMConfig
from rstar_jax.models.decoder import score_transform
from rstar_jax.models.sharding import sharding_context

Array = jax.Array
Batch = Dict[str, Array]
# A loss returns (numerator, stats) with stats summed over microbatches;
# stats["denom"] divides the numerator.
LossFn = Callable[[nnx.Module, Batch], Tuple[Array, Dict[str, Array]]]


def lm_loss(model: nnx.Module, batch: Batch):
    """Summed token cross-entropy on weighted targets.

    batch: inputs/targets/positions `[B, T]` int32, weights `[B, T]`,
    optional segment_ids `[B, T]`.
    """
    logits, _ = model(batch["inputs"], batch["positions"], segment_ids=batch.get("segment_ids"))
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, batch["targets"][..., None], axis=-1)[..., 0]
    w = batch["weights"]
    correct = (jnp.argmax(logits, -1) == batch["targets"]) * w
    return jnp.sum(nll * w), {"denom": jnp.sum(w), "correct": jnp.sum(correct)}


def pair_scores(model: nnx.Module, batch: Batch, ppm: PPMConfig, *, raw: bool = False) -> Array:
    """Scores `[R, 2]` (pos, neg) of a pair batch: tokens `[R, 2, T]`,
    lengths `[R, 2]`. Transformed as search scores them, or `raw` head
    outputs (the BT loss with `ppm.train_on_raw`)."""
    r, _, t = batch["tokens"].shape
    out = model(batch["tokens"].reshape(r * 2, t), batch["lengths"].reshape(r * 2))
    return (out if raw else score_transform(out, ppm)).reshape(r, 2)


def bt_terms(scores: Array, weights: Array, norm: str = "pairs"):
    """Bradley-Terry numerator and stats from scores `[R, 2]`, weights `[R]`:
    loss = sum_r w_r * -log sigmoid(s_pos - s_neg) / D, with D the number of
    pairs R (`norm="pairs"`, the reference: it sums each device's weighted
    pair losses and averages the sums over devices and accumulation steps,
    i.e. R / per-device batch; the constant per-device factor only moves
    where gradient clipping starts) or the summed weights (`"weights"`).

    Batches are always full (training/pipeline.py), so R is fixed and a
    batch whose pairs come from steps with many pairs (small weights) moves
    the model less under `pairs`, as in the reference; `weights` gives every
    batch the same total say whatever its steps' pair counts.
    """
    margin = scores[:, 0] - scores[:, 1]
    num = jnp.sum(weights * -jax.nn.log_sigmoid(margin))
    pairs = jnp.asarray(scores.shape[0], jnp.float32)
    if norm not in ("pairs", "weights"):
        raise ValueError(f"unknown Bradley-Terry normalisation {norm!r}; expected pairs or weights")
    stats = {"denom": pairs if norm == "pairs" else jnp.sum(weights),
             "correct": jnp.sum(margin > 0).astype(jnp.float32), "pairs": pairs}
    return num, stats


def pqm_terms(scores: Array, weights: Array, q: Array):
    """PQM ablation: weighted MSE of both scores on their Q targets `[R, 2]`."""
    num = jnp.sum(weights * jnp.mean(jnp.square(scores - q), axis=-1))
    margin = scores[:, 0] - scores[:, 1]
    stats = {"denom": jnp.sum(weights), "correct": jnp.sum(margin > 0).astype(jnp.float32),
             "pairs": jnp.asarray(scores.shape[0], jnp.float32)}
    return num, stats


def ppm_loss_fn(ppm: PPMConfig, kind: str, norm: str = "pairs") -> LossFn:
    """The PPM loss: `bt` (pairwise, the paper; on the raw output with
    `ppm.train_on_raw`; `norm` as in `bt_terms`, `train.ppm_loss_norm`) or
    `pqm` (MSE of the transformed score on Q, over the summed weights)."""
    def loss(model, batch):
        if kind == "pqm":
            return pqm_terms(pair_scores(model, batch, ppm), batch["weights"], batch["q"])
        return bt_terms(pair_scores(model, batch, ppm, raw=ppm.train_on_raw), batch["weights"],
                        norm)
    return loss


def schedule(opt: OptimConfig, total_steps: int) -> optax.Schedule:
    """Warmup to the peak, then linear (or cosine) decay to 0, or constant."""
    decay = max(total_steps - opt.warmup_steps, 1)
    if opt.schedule == "linear":
        main = optax.linear_schedule(opt.learning_rate, 0.0, decay)
    elif opt.schedule == "cosine":
        main = optax.cosine_decay_schedule(opt.learning_rate, decay)
    else:
        main = optax.constant_schedule(opt.learning_rate)
    if opt.warmup_steps <= 0:
        return main
    warm = optax.linear_schedule(0.0, opt.learning_rate, opt.warmup_steps)
    return optax.join_schedules([warm, main], [opt.warmup_steps])


def schedule_table(opt: OptimConfig, total_steps: int) -> np.ndarray:
    """Every step's learning rate `[total_steps]` float32, computed on the
    device one step at a time by the same schedule the optimizer holds.

    Why: a schedule inside the train step bakes `total_steps`, warmup and
    peak into the program as constants, so every stage whose step count
    differs (each round's SFT, round 1's PPM against later rounds') compiled
    its train step anew even with the persistent compilation cache on. The
    step reads its learning rate from this table instead (`make_train_step`
    with `tx_for_lr`), and the value is the same float32 the schedule gives
    at that count inside the step (`lax.map`: the same scalar program per
    count), so the parameters and losses are bit-identical
    (tests/training/test_steps.py).
    """
    sched = schedule(opt, total_steps)
    counts = np.arange(max(total_steps, 0), dtype=np.int32)  # host: no program to compile
    return np.asarray(jax.device_get(jax.jit(lambda c: jax.lax.map(sched, c))(counts)))


def _decay_mask(params, decay_biases: bool):
    """True where weight decay applies: every parameter but the biases
    (`q_bias`, `value_bias`, ...), unless `decay_biases`."""
    def decays(path, _):
        last = path[-1]
        name = str(getattr(last, "key", getattr(last, "name", last)))
        return decay_biases or not name.endswith("bias")
    return jax.tree_util.tree_map_with_path(decays, params)


def optimizer(opt: OptimConfig, total_steps: int, *, decay_biases: bool = False,
              learning_rate: Optional[optax.Schedule] = None) -> optax.GradientTransformation:
    """Global-norm clipping then AdamW (decoupled decay).

    The decay skips biases as the reference's trainer does (transformers
    4.45 decays every parameter whose name has no "bias", RMSNorm scales and
    embeddings included); `decay_biases` (`train.decay_biases`) decays them too.
    `learning_rate` replaces `schedule(opt, total_steps)` (the train loop
    passes the step's entry of `schedule_table`); the state is the same.
    """
    parts = []
    if opt.grad_clip and opt.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(opt.grad_clip))
    lr = learning_rate if learning_rate is not None else schedule(opt, total_steps)
    parts.append(optax.adamw(lr, b1=opt.b1, b2=opt.b2,
                             weight_decay=opt.weight_decay,
                             mask=lambda p: _decay_mask(p, decay_biases)))
    return optax.chain(*parts)


def _microbatches(batch: Batch, accum: int) -> Batch:
    """`[B, ...]` -> `[accum, B/accum, ...]` taking rows j, j+accum, ... into
    microbatch j, so each device's contiguous block of rows stays local."""
    def split(x):
        b = x.shape[0]
        if b % accum:
            raise ValueError(f"batch {b} is not divisible by grad_accum {accum}")
        return jnp.swapaxes(x.reshape((b // accum, accum) + x.shape[1:]), 0, 1)
    return jax.tree.map(split, batch)


def grads_and_stats(graphdef, params, batch: Batch, loss_fn: LossFn, accum: int):
    """Summed numerator gradient and summed stats (numerator in `num`) over
    `accum` microbatches."""
    def num(p, mb):
        n, stats = loss_fn(nnx.merge(graphdef, p), mb)
        return n, dict(stats, num=n)

    grad_fn = jax.grad(num, has_aux=True)
    if accum == 1:
        g, stats = grad_fn(params, batch)
    else:
        def body(carry, mb):
            g_acc, s_acc = carry
            g, s = grad_fn(params, mb)
            return (jax.tree.map(jnp.add, g_acc, g), jax.tree.map(jnp.add, s_acc, s)), None

        mbs = _microbatches(batch, accum)
        first = jax.tree.map(lambda x: x[0], mbs)
        s_shape = jax.eval_shape(lambda: grad_fn(params, first)[1])
        zero = (jax.tree.map(jnp.zeros_like, params),
                jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), s_shape))
        (g, stats), _ = jax.lax.scan(body, zero, mbs)
    return g, stats


def make_train_step(graphdef, loss_fn: LossFn, tx: optax.GradientTransformation, *,
                    accum: int = 1, mesh=None, rules=None, state_shardings=None,
                    batch_shardings=None,
                    tx_for_lr: Optional[Callable[[Array], optax.GradientTransformation]] = None):
    """A jitted `step(state, batch) -> (state, metrics)`, or with `tx_for_lr`
    `step(state, batch, lr) -> (state, metrics)`.

    `state` = {"params", "opt_state", "step"}; metrics are replicated
    scalars: num, denom, correct (and pairs for PPM), grad_norm.
    With a mesh the step traces inside the sharding context (activation
    constraints by the training rules) and keeps the state's shardings.

    `tx_for_lr(lr)` builds the optimizer around the step's learning rate, a
    float32 scalar argument (`schedule_table`): the compiled program then no
    longer depends on the run's length or schedule, and the persistent
    compilation cache serves it to every later stage of the same shapes.
    """
    def step(state, batch, lr=None):
        txs = tx if lr is None else tx_for_lr(lr)
        g, stats = grads_and_stats(graphdef, state["params"], batch, loss_fn, accum)
        denom = jnp.maximum(stats["denom"], 1e-9)
        g = jax.tree.map(lambda x: x / denom, g)
        updates, opt_state = txs.update(g, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = dict(stats)
        metrics["grad_norm"] = optax.global_norm(g)
        new = {"params": params, "opt_state": opt_state, "step": state["step"] + 1}
        return new, metrics

    def traced(state, batch, *lr):
        if mesh is None:
            return step(state, batch, *lr)
        with sharding_context(mesh, rules):
            return step(state, batch, *lr)

    if mesh is None:
        return jax.jit(traced, donate_argnums=(0,))
    from jax.sharding import NamedSharding, PartitionSpec

    replicated = NamedSharding(mesh, PartitionSpec())
    in_sh = (state_shardings, batch_shardings) + ((replicated,) if tx_for_lr else ())
    return jax.jit(traced, donate_argnums=(0,), in_shardings=in_sh,
                   out_shardings=(state_shardings, replicated))


def make_eval_step(graphdef, loss_fn: LossFn, *, mesh=None, rules=None):
    """A jitted `eval(params, batch) -> stats` (numerator in `num`)."""
    def ev(params, batch):
        def run():
            num, stats = loss_fn(nnx.merge(graphdef, params), batch)
            return dict(stats, num=num)
        if mesh is None:
            return run()
        with sharding_context(mesh, rules):
            return run()
    return jax.jit(ev)


def metrics_from_stats(stats: Dict[str, float], num_key: str = "num") -> Dict[str, float]:
    """Host-side: loss and accuracy from summed stats."""
    out = {"loss": stats[num_key] / max(stats["denom"], 1e-9)}
    if "pairs" in stats:
        out["pair_accuracy"] = stats["correct"] / max(stats["pairs"], 1.0)
    else:
        out["token_accuracy"] = stats["correct"] / max(stats["denom"], 1e-9)
    return out
