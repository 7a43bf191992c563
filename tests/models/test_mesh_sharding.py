"""Mesh building, parameter shardings, sharded forward == single-device forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rstar_jax.config import MeshConfig, load_config
from rstar_jax.config.schema import (
    DEFAULT_INFERENCE_RULES,
    DEFAULT_TRAINING_RULES,
    DistributedConfig,
)
from rstar_jax.models import (
    PPM,
    ArchConfig,
    Policy,
    flat_params,
    init_model,
    make_mesh,
    maybe_initialize_distributed,
    param_shardings,
    replication_report,
    sharding_context,
)
from rstar_jax.models import mesh as mesh_mod
from rstar_jax.models.loading import abstract_model
from testutil import REPO


def tiny_arch(**kw) -> ArchConfig:
    return ArchConfig.from_model_config(
        load_config(str(REPO / "configs/models/tiny.yaml")).model).replace(**kw)


def test_minus_one_takes_the_remaining_devices():
    mesh = make_mesh(MeshConfig(data=2, fsdp=-1, tensor=2))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    assert make_mesh(MeshConfig(data=1, fsdp=1, tensor=-1)).shape["tensor"] == 8


@pytest.mark.parametrize("cfg, words", [
    (MeshConfig(data=2, fsdp=2, tensor=1), "needs 4 devices but 8"),
    (MeshConfig(data=3, fsdp=-1, tensor=1), "do not divide the 8"),
    (MeshConfig(data=-1, fsdp=-1, tensor=1), "at most one axis"),
])
def test_mesh_that_does_not_fit_is_a_clear_error(cfg, words):
    with pytest.raises(ValueError, match=words):
        make_mesh(cfg)


def test_mesh_over_a_device_subset():
    mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=2), devices=jax.devices()[:4])
    assert mesh.size == 4 and set(mesh.devices.flat) == set(jax.devices()[:4])


def test_distributed_init_skipped_on_one_process(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "SLURM_NTASKS",
                "OMPI_COMM_WORLD_SIZE", "WORLD_SIZE", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(var, raising=False)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    assert maybe_initialize_distributed(DistributedConfig()) is False
    assert maybe_initialize_distributed(DistributedConfig(enabled="off", num_processes=4)) is False
    assert calls == []
    # The environment of a 4-task SLURM job asks for it; "on" forces it.
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert mesh_mod.should_initialize(DistributedConfig())
    assert mesh_mod.should_initialize(DistributedConfig(enabled="on", num_processes=1))
    assert not mesh_mod.should_initialize(DistributedConfig(num_processes=1))


def test_distributed_init_passes_config_once(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(mesh_mod, "_initialized", False)
    dcfg = DistributedConfig(coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1)
    assert maybe_initialize_distributed(dcfg) and maybe_initialize_distributed(dcfg)
    assert calls == [{"coordinator_address": "10.0.0.1:1234", "num_processes": 2,
                      "process_id": 1}]
    monkeypatch.setattr(mesh_mod, "_initialized", False)


def test_param_shardings_follow_rules_and_drop_non_dividing_axes():
    mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=4))
    arch = tiny_arch(num_kv_heads=2)  # 2 KV heads cannot split over tensor=4
    specs = {k: s.spec for k, s in
             flat_shardings(param_shardings(abstract_model(Policy, arch), mesh,
                                            DEFAULT_TRAINING_RULES)).items()}
    assert specs["model/embed"] == jax.P("tensor", "fsdp")  # vocab 512, embed 64
    assert specs["model/layers/0/attn/q"] == jax.P("fsdp", "tensor")  # 4 heads
    assert specs["model/layers/0/attn/k"] == jax.P("fsdp")  # kv_heads dropped
    assert specs["model/layers/0/mlp/down"] == jax.P("tensor", "fsdp")
    assert specs["model/norm/scale"] == jax.P()
    inference = {k: s.spec for k, s in flat_shardings(param_shardings(
        abstract_model(Policy, arch), mesh, DEFAULT_INFERENCE_RULES)).items()}
    assert inference["model/embed"] == jax.P("tensor")  # no fsdp on weights


def flat_shardings(state):
    from rstar_jax.models.loading import path_key

    return {path_key(p): v for p, v in state.flat_state()}


def test_init_creates_parameters_already_sharded():
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    model = init_model(Policy, tiny_arch(num_layers=1), mesh=mesh, rules=DEFAULT_TRAINING_RULES)
    q = flat_params(model)["model/layers/0/attn/q"]  # [64, 4, 16]: fsdp x tensor
    assert q.sharding.spec == jax.P("fsdp", "tensor")
    assert {s.data.shape for s in q.addressable_shards} == {(32, 2, 16)}
    # Same numbers as an unsharded init from the same seed.
    plain = Policy(tiny_arch(num_layers=1), rngs=nnx.Rngs(0))  # the eager constructor
    np.testing.assert_array_equal(np.asarray(q), np.asarray(flat_params(plain)["model/layers/0/attn/q"]))


def test_replication_report_counts_bytes_and_refuses():
    mesh = make_mesh(MeshConfig(data=1, fsdp=8, tensor=1))
    abstract = abstract_model(Policy, tiny_arch())
    total = sum(int(np.prod(v.shape)) * 4 for v in flat_params(abstract).values())
    sharded = replication_report(abstract, mesh, DEFAULT_TRAINING_RULES)
    # Only the 5 norms [64] and the q/k/v biases ([4,16] + 2 x [2,16], 2 layers) have
    # no `embed` axis, so they stay whole; everything else is split 8 ways over fsdp.
    whole = (5 * 64 + 2 * (4 * 16 + 2 * 2 * 16)) * 4
    assert sharded["total_bytes"] == total
    assert sharded["replicated_bytes"] == whole
    assert sharded["per_device_bytes"] == whole + (total - whole) // 8
    nothing = {k: [] for k in DEFAULT_TRAINING_RULES}
    cfg = MeshConfig(data=1, fsdp=8, tensor=1, refuse_replicated=True, max_replicated_fraction=0.5)
    assert replication_report(abstract, mesh, nothing)["replicated_fraction"] == 1.0
    with pytest.raises(ValueError, match="100% of the parameter bytes are replicated"):
        replication_report(abstract, mesh, nothing, cfg)
    replication_report(abstract, mesh, DEFAULT_TRAINING_RULES, cfg)  # fine when sharded
    one = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
    replication_report(abstract, one, nothing, cfg)  # one device: nothing to refuse


@pytest.mark.parametrize("shape, rules, batch_axes", [
    ((8, 1, 1), DEFAULT_TRAINING_RULES, "data"),
    ((2, 2, 2), DEFAULT_TRAINING_RULES, ("data", "fsdp")),
    ((1, 2, 4), DEFAULT_INFERENCE_RULES, "fsdp"),
], ids=["8x1x1-train", "2x2x2-train", "1x2x4-infer"])
def test_sharded_forward_equals_single_device(shape, rules, batch_axes):
    arch = tiny_arch(num_layers=1)
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, 512, (8, 12)), jnp.int32)
    want, _ = jax.jit(lambda m, t: m(t))(init_model(Policy, arch, seed=1), tokens)
    data, fsdp, tensor = shape
    mesh = make_mesh(MeshConfig(data=data, fsdp=fsdp, tensor=tensor))
    model = init_model(Policy, arch, mesh=mesh, rules=rules, seed=1)
    with sharding_context(mesh, rules):
        got, _ = jax.jit(lambda m, t: m(t))(model, tokens)
    assert got.sharding.spec[0] == batch_axes  # the batch really was split
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)


def test_sharded_ppm_equals_single_device():
    arch = tiny_arch(num_layers=1)
    tokens = jnp.asarray(np.random.RandomState(2).randint(0, 512, (4, 10)), jnp.int32)
    lengths = jnp.array([10, 7, 3, 1])
    want = jax.jit(lambda m, t, n: m(t, n))(init_model(PPM, arch, seed=2), tokens, lengths)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    model = init_model(PPM, arch, mesh=mesh, rules=DEFAULT_INFERENCE_RULES, seed=2)
    with sharding_context(mesh, DEFAULT_INFERENCE_RULES):
        got = jax.jit(lambda m, t, n: m(t, n))(model, tokens, lengths)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)

