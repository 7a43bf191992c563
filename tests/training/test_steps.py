"""Train steps: PPM losses on hand-computed scores, accumulation equals the
full batch, and one sharded step on 8 fake devices equals one device."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import TINY

from rstar_jax.config.loader import load_config
from rstar_jax.config.schema import MeshConfig, OptimConfig
from rstar_jax.models.decoder import PPM, ArchConfig, Policy
from rstar_jax.models.loading import abstract_model, init_model
from rstar_jax.models.mesh import make_mesh
from rstar_jax.models.sharding import param_shardings
from rstar_jax.training import state as st
from rstar_jax.training import steps
from rstar_jax.training.loop import flops_per_token

CFG = load_config(TINY)
# One layer: the step's structure is per layer, and compile time is the cost.
ARCH = ArchConfig.from_model_config(CFG.model).replace(num_layers=1)
RULES = CFG.mesh.training_rules
OPT = OptimConfig(learning_rate=1e-2, weight_decay=0.1, grad_clip=1.0, batch_size=8)


def test_bradley_terry_loss_and_accuracy_by_hand():
    scores = jnp.array([[0.5, 0.1], [-0.2, 0.3], [0.0, -0.9]])
    weights = jnp.array([0.25, 0.5, 1.0])
    num, s = steps.bt_terms(scores, weights)
    # -log sigmoid(m) = log(1 + exp(-m)): m = 0.4, -0.5, 0.9
    l1, l2, l3 = math.log1p(math.exp(-0.4)), math.log1p(math.exp(0.5)), math.log1p(math.exp(-0.9))
    assert (l1, l2, l3) == pytest.approx((0.513015, 0.974077, 0.341154), abs=1e-6)
    m = steps.metrics_from_stats({k: float(v) for k, v in dict(s, num=num).items()})
    # The reference's normalisation (the default): over the batch's 3 pairs.
    assert m["loss"] == pytest.approx((0.25 * l1 + 0.5 * l2 + l3) / 3, rel=1e-6)
    assert m["loss"] == pytest.approx(0.318816, abs=1e-6)  # 0.956447 / 3
    assert m["pair_accuracy"] == pytest.approx(2 / 3)
    # `weights`: over the summed weights.
    num, s = steps.bt_terms(scores, weights, "weights")
    m = steps.metrics_from_stats({k: float(v) for k, v in dict(s, num=num).items()})
    assert m["loss"] == pytest.approx((0.25 * l1 + 0.5 * l2 + l3) / 1.75, rel=1e-6)
    assert m["loss"] == pytest.approx(0.546541, abs=1e-6)  # 0.956447 / 1.75
    with pytest.raises(ValueError, match="normalisation"):
        steps.bt_terms(scores, weights, "tokens")


def test_ppm_loss_norm_reaches_the_loss_from_the_config():
    class Fake:
        def __call__(self, tokens, lengths):
            return jnp.array([1.0, 0.0, 0.0, 1.0])  # pairs (pos, neg): margins 1, -1

    batch = {"tokens": jnp.zeros((2, 2, 3), jnp.int32), "lengths": jnp.ones((2, 2), jnp.int32),
             "weights": jnp.array([0.25, 0.25])}
    ppm = load_config(TINY, ["ppm.train_on_raw=true"]).ppm
    assert load_config(TINY).train.ppm_loss_norm == "pairs"
    _, s = steps.ppm_loss_fn(ppm, "bt", load_config(TINY).train.ppm_loss_norm)(Fake(), batch)
    assert float(s["denom"]) == 2.0
    _, s = steps.ppm_loss_fn(ppm, "bt", "weights")(Fake(), batch)
    assert float(s["denom"]) == 0.5


def test_adamw_betas_are_the_references_by_default():
    """transformers' AdamW defaults (b1 0.9, b2 0.999, eps 1e-8) in both
    stages; the PPM stage without weight decay, as the reference's RM script."""
    cfg = load_config(TINY)
    for opt in (cfg.train.sft, cfg.train.ppm):
        assert (opt.b1, opt.b2) == (0.9, 0.999)
    assert cfg.train.ppm.weight_decay == 0.0
    opt = OptimConfig(learning_rate=1e-3, schedule="constant", grad_clip=0.0, weight_decay=0.0)
    tx = steps.optimizer(opt, 10)
    p = {"w": jnp.zeros(1)}
    state = tx.init(p)
    _, state = tx.update({"w": jnp.array([1.0])}, state, p)
    upd, _ = tx.update({"w": jnp.array([3.0])}, state, p)
    # Adam by hand, second step: m = .9 * .1 + .1 * 3, v = b2 * (1 - b2) + (1 - b2) * 9.
    b2 = 0.999
    m_hat = (0.9 * 0.1 + 0.1 * 3.0) / (1 - 0.9 ** 2)
    v_hat = (b2 * (1 - b2) + (1 - b2) * 9.0) / (1 - b2 ** 2)
    # rtol: optax's float32 bias correction (see the test above) moves the
    # step by ~7e-6 relative; b2 0.95 would move it by 1%.
    np.testing.assert_allclose(upd["w"], [-1e-3 * m_hat / (math.sqrt(v_hat) + 1e-8)], rtol=1e-4)
    assert abs(float(upd["w"][0]) + 1e-3 * 0.9087) > 5e-6  # what b2 = 0.95 gives


def test_pqm_is_weighted_mse_on_q():
    scores = jnp.array([[0.5, 0.1], [-0.2, 0.3]])
    q = jnp.array([[1.0, -1.0], [0.5, 0.0]])
    num, s = steps.pqm_terms(scores, jnp.array([1.0, 0.5]), q)
    # pair 1: (0.25 + 1.21) / 2 = 0.73; pair 2: (0.49 + 0.09) / 2 = 0.29
    assert float(num) / float(s["denom"]) == pytest.approx((0.73 + 0.5 * 0.29) / 1.5, rel=1e-6)


def test_score_transform_is_the_models(monkeypatch):
    cfg = load_config(TINY, ["ppm.score_transform=tanh_scaled", "ppm.score_scale=5.0"])
    raw = jnp.array([2.0, -1.0])

    class Fake:
        def __call__(self, tokens, lengths):
            return raw

    batch = {"tokens": jnp.zeros((1, 2, 3), jnp.int32), "lengths": jnp.ones((1, 2), jnp.int32)}
    np.testing.assert_allclose(steps.pair_scores(Fake(), batch, cfg.ppm),
                               [[math.tanh(0.4), math.tanh(-0.2)]], rtol=1e-6)


def test_train_on_raw_feeds_the_raw_output_to_bt_only():
    raw = jnp.array([1.5, -1.0])

    class Fake:
        def __call__(self, tokens, lengths):
            return raw

    batch = {"tokens": jnp.zeros((1, 2, 3), jnp.int32), "lengths": jnp.ones((1, 2), jnp.int32),
             "weights": jnp.ones((1,)), "q": jnp.array([[1.0, -1.0]])}
    on_score = load_config(TINY, ["ppm.score_transform=tanh"]).ppm
    on_raw = load_config(TINY, ["ppm.score_transform=tanh", "ppm.train_on_raw=true"]).ppm
    # BT: -log sigmoid(margin); margin 2.5 on the raw output, tanh(1.5) + tanh(1) on the score.
    num, _ = steps.ppm_loss_fn(on_raw, "bt")(Fake(), batch)
    assert float(num) == pytest.approx(math.log1p(math.exp(-2.5)), rel=1e-5)
    num, _ = steps.ppm_loss_fn(on_score, "bt")(Fake(), batch)
    assert float(num) == pytest.approx(math.log1p(math.exp(-(math.tanh(1.5) + math.tanh(1.0)))), rel=1e-5)
    # PQM regresses the transformed score on Q either way.
    want = ((math.tanh(1.5) - 1.0) ** 2 + (math.tanh(-1.0) + 1.0) ** 2) / 2
    for ppm in (on_raw, on_score):
        num, _ = steps.ppm_loss_fn(ppm, "pqm")(Fake(), batch)
        assert float(num) == pytest.approx(want, rel=1e-5)


def _lm_batch(rows=8, t=32, seed=0):
    rng = np.random.default_rng(seed)
    toks = rng.integers(1, ARCH.vocab_size, (rows, t + 1)).astype(np.int32)
    w = (rng.random((rows, t)) < 0.7).astype(np.float32)
    return {"inputs": toks[:, :-1], "targets": toks[:, 1:], "weights": w,
            "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (rows, t)).copy()}


def _pair_batch(rows=8, t=24, seed=1):
    rng = np.random.default_rng(seed)
    return {"tokens": rng.integers(1, ARCH.vocab_size, (rows, 2, t)).astype(np.int32),
            "lengths": rng.integers(5, t + 1, (rows, 2)).astype(np.int32),
            "weights": rng.choice([0.25, 0.5, 1.0], rows).astype(np.float32),
            "q": rng.uniform(-1, 1, (rows, 2)).astype(np.float32)}


@functools.cache
def _host_params(cls):
    """The same initial parameters for every mesh (host numpy)."""
    return jax.device_get(st.split_params(init_model(cls, ARCH, seed=0))[1])


def _one_step(shape, kind, batch, accum=1, loss="bt", arch=ARCH):
    mesh = make_mesh(MeshConfig(data=shape[0], fsdp=shape[1], tensor=shape[2]),
                     jax.devices()[: int(np.prod(shape))])
    cls = PPM if kind == "ppm" else Policy
    graphdef, _ = st.split_params(abstract_model(cls, arch))
    shardings = nnx.to_pure_dict(param_shardings(abstract_model(cls, ARCH), mesh, RULES))
    params = jax.device_put(_host_params(cls), shardings)
    # Adam's first update is g / (|g| + eps) ~ sign(g): float32 rounding of a
    # near-zero gradient flips it by a whole learning rate, so parameter
    # equality after one Adam step is ill-conditioned. The comparison uses
    # an update linear in the gradient (clip + decay + SGD); `optimizer`
    # itself is checked separately.
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.add_decayed_weights(0.1),
                     optax.sgd(0.5))
    state = st.init_train_state(tx, params, mesh)
    bsh = st.batch_shardings(mesh, RULES, batch, len(next(iter(batch.values()))))
    loss_fn = steps.ppm_loss_fn(CFG.ppm, loss) if kind == "ppm" else steps.lm_loss
    fn = steps.make_train_step(graphdef, loss_fn, tx, accum=accum, mesh=mesh, rules=RULES,
                               state_shardings=jax.tree.map(lambda x: x.sharding, state),
                               batch_shardings=bsh)
    gb = {k: jax.device_put(v, bsh[k]) for k, v in batch.items()}
    new, m = fn(state, gb)
    return jax.device_get(new["params"]), {k: float(v) for k, v in m.items()}


def _assert_close(a, b):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("kind", ["lm", "ppm"])
def test_sharded_step_equals_single_device(kind):
    batch = _lm_batch() if kind == "lm" else _pair_batch()
    ref_p, ref_m = _one_step((1, 1, 1), kind, batch)
    for shape in [(8, 1, 1), (2, 2, 2), (1, 2, 4)]:
        p, m = _one_step(shape, kind, batch)
        _assert_close(p, ref_p)
        for k in ref_m:
            assert m[k] == pytest.approx(ref_m[k], rel=1e-5), (shape, k)
    # a real step happened (a no-op step would also "agree")
    assert ref_m["num"] > 0 and ref_m["grad_norm"] > 0
    assert not np.allclose(ref_p["model"]["embed"], _host_params(
        PPM if kind == "ppm" else Policy)["model"]["embed"])


@pytest.mark.parametrize("kind,loss", [("lm", "bt"), ("ppm", "pqm")])
def test_gradient_accumulation_equals_full_batch(kind, loss):
    batch = _lm_batch() if kind == "lm" else _pair_batch()
    p1, m1 = _one_step((1, 1, 1), kind, batch, accum=1, loss=loss)
    p4, m4 = _one_step((1, 1, 1), kind, batch, accum=4, loss=loss)
    _assert_close(p4, p1)
    assert m4["num"] / m4["denom"] == pytest.approx(m1["num"] / m1["denom"], rel=1e-5)


def test_flop_count_matches_hand_count():
    # tiny: D=64, H=4, K=2, Dh=16, F=128, L=2, V=512
    arch = ArchConfig.from_model_config(CFG.model)
    per_layer = 64 * 16 * (2 * 4 + 2 * 2) + 3 * 64 * 128  # 12288 + 24576
    assert flops_per_token(arch, 100, lm_head=True) == 6 * (2 * per_layer + 64 * 512) \
        + 12 * 2 * 4 * 16 * 100
    assert flops_per_token(arch, 100, lm_head=False) == 6 * (2 * per_layer + 64) \
        + 12 * 2 * 4 * 16 * 100


def test_optimizer_schedule_decays_linearly_and_clips():
    # b2 0.95: optax's bias correction 1 - b2 ** t runs in float32, where
    # 1 - 0.999 is off by 1.3e-5 relative (sqrt: 6.6e-6 on the step), which
    # the first step's sign(g) check below would see; 1 - 0.95 is off by 2e-7.
    opt = OptimConfig(learning_rate=1e-3, warmup_steps=2, grad_clip=1.0, weight_decay=0.0,
                      b2=0.95)
    sched = steps.schedule(opt, 10)
    assert [float(sched(i)) for i in (0, 1, 2, 6, 10)] == pytest.approx(
        [0.0, 5e-4, 1e-3, 5e-4, 0.0])
    tx = steps.optimizer(dataclasses.replace(opt, warmup_steps=0), 10)
    p = {"w": jnp.ones(3)}
    upd, _ = tx.update({"w": jnp.array([30.0, 40.0, 0.0])}, tx.init(p), p)
    # first Adam step: clipped g / |g| -> lr * sign(g) with lr(0) = 1e-3
    np.testing.assert_allclose(upd["w"], [-1e-3, -1e-3, 0.0], atol=1e-9)


@pytest.mark.parametrize("decay_biases", [False, True])
def test_weight_decay_skips_biases_as_the_reference(decay_biases):
    opt = OptimConfig(learning_rate=0.1, schedule="constant", grad_clip=0.0, weight_decay=0.5)
    tx = steps.optimizer(opt, 10, decay_biases=decay_biases)
    p = {"layer": {"kernel": jnp.ones(2), "q_bias": jnp.ones(2), "scale": jnp.ones(2)},
         "value_bias": jnp.ones(())}
    zero = jax.tree.map(jnp.zeros_like, p)
    upd, _ = tx.update(zero, tx.init(p), p)  # no gradient: the decay alone moves
    decayed = -0.1 * 0.5
    assert float(upd["layer"]["kernel"][0]) == pytest.approx(decayed)
    assert float(upd["layer"]["scale"][0]) == pytest.approx(decayed)  # norm scales decay
    bias = decayed if decay_biases else 0.0
    assert float(upd["layer"]["q_bias"][0]) == pytest.approx(bias)
    assert float(upd["value_bias"]) == pytest.approx(bias)


def test_bfloat16_compute_tracks_float32():
    batch = _lm_batch()
    _, m32 = _one_step((1, 1, 1), "lm", batch)
    _, m16 = _one_step((1, 1, 1), "lm", batch, arch=ARCH.replace(dtype=jnp.bfloat16))
    assert m16["num"] / m16["denom"] == pytest.approx(m32["num"] / m32["denom"], rel=2e-2)
    assert m16["num"] != m32["num"]  # really computed in bfloat16


def _run_steps(total, *, table, cosine_opt, kind="lm"):
    """The AdamW steps of a `total`-step warmup + cosine
    run on one device: the schedule in the step (`table=False`, the old
    program) or its learning rate read from `schedule_table` (`table=True`).
    Returns (params, per-step metrics, the step's lowered program text)."""
    mesh = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    cls = PPM if kind == "ppm" else Policy
    graphdef, _ = st.split_params(abstract_model(cls, ARCH))
    shardings = nnx.to_pure_dict(param_shardings(abstract_model(cls, ARCH), mesh, RULES))
    params = jax.device_put(_host_params(cls), shardings)
    tx = steps.optimizer(cosine_opt, total)
    state = st.init_train_state(tx, params, mesh)
    make = _lm_batch if kind == "lm" else _pair_batch
    bsh = st.batch_shardings(mesh, RULES, make(), 8)
    loss_fn = steps.ppm_loss_fn(CFG.ppm, "bt") if kind == "ppm" else steps.lm_loss
    extra = {}
    if table:
        extra["tx_for_lr"] = lambda lr: steps.optimizer(cosine_opt, total,
                                                        learning_rate=lambda _c: lr)
        lrs = steps.schedule_table(cosine_opt, total)
    fn = steps.make_train_step(graphdef, loss_fn, tx, mesh=mesh, rules=RULES,
                               state_shardings=jax.tree.map(lambda x: x.sharding, state),
                               batch_shardings=bsh, **extra)
    rows, text = [], None
    for k in range(total):
        gb = {key: jax.device_put(v, bsh[key]) for key, v in make(seed=k).items()}
        args = (state, gb) + ((jax.device_put(lrs[k], st.replicated(mesh)),) if table else ())
        if text is None:
            text = fn.lower(*args).as_text()
        state, m = fn(*args)
        rows.append({key: np.asarray(v) for key, v in m.items()})
    return jax.device_get(state["params"]), rows, text


@pytest.mark.parametrize("kind", ["lm", "ppm"])
def test_learning_rate_table_is_bit_identical_and_run_length_free(kind):
    """The step reading its learning rate from `schedule_table` trains
    exactly as the step holding the schedule (every parameter and metric
    equal to the bit, warmup and cosine steps alike), and its program is the
    same whatever the run's length, which the old one was not: that is what
    lets the persistent compilation cache serve it to the next stage."""
    opt = OptimConfig(learning_rate=3e-3, schedule="cosine", warmup_steps=3, weight_decay=0.01,
                      b2=0.95, grad_clip=1.0, batch_size=8)
    texts = {}
    for total in (7, 11):
        p_old, m_old, texts["old", total] = _run_steps(total, table=False, cosine_opt=opt,
                                                       kind=kind)
        p_new, m_new, texts["new", total] = _run_steps(total, table=True, cosine_opt=opt,
                                                       kind=kind)
        for a, b in zip(jax.tree.leaves(p_old), jax.tree.leaves(p_new)):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(m_old, m_new):
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # a real schedule: the learning rates differ step to step and run to run
    assert len(set(steps.schedule_table(opt, 11).tolist())) > 5
    assert texts["old", 7] != texts["old", 11]
    assert texts["new", 7] == texts["new", 11]


def test_schedule_table_is_the_schedule():
    opt = OptimConfig(learning_rate=1e-3, warmup_steps=2, schedule="linear")
    assert steps.schedule_table(opt, 10).tolist() == pytest.approx(
        [float(steps.schedule(opt, 10)(i)) for i in range(10)])
    assert steps.schedule_table(opt, 10).dtype == np.float32
