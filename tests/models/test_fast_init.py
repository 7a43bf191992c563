"""`init_model` builds eagerly with small per-shape initializers (issue 17):
the numbers of `cls(arch, rngs=nnx.Rngs(seed))`, placed on the mesh, and no
whole-model initializer to compile (a second model of the same shapes
compiles nothing)."""

import jax
import numpy as np
from flax import nnx

from rstar_jax.config import load_config
from rstar_jax.config.schema import DEFAULT_TRAINING_RULES
from rstar_jax.models import PPM, ArchConfig, Policy, flat_params, init_model, param_shardings
from rstar_jax.models.loading import path_key
from testutil import REPO, count_compiles

TINY = str(REPO / "configs/models/tiny.yaml")


def arch(**kw) -> ArchConfig:
    return ArchConfig.from_model_config(load_config(TINY).model).replace(num_layers=2, **kw)


def test_same_numbers_as_the_module_constructor_with_and_without_a_mesh():
    from jax.sharding import AxisType

    a = arch(tie_word_embeddings=False)
    ref = {k: np.asarray(v) for k, v in flat_params(Policy(a, rngs=nnx.Rngs(5))).items()}
    plain = init_model(Policy, a, seed=5)
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    sharded = init_model(Policy, a, mesh=mesh, rules=DEFAULT_TRAINING_RULES, seed=5)
    want = {path_key(p): s for p, s in param_shardings(sharded, mesh, DEFAULT_TRAINING_RULES).flat_state()}
    for model in (plain, sharded):
        got = flat_params(model)
        assert set(got) == set(ref)
        for k, v in got.items():
            np.testing.assert_array_equal(np.asarray(v), ref[k], err_msg=k)
    for k, v in flat_params(sharded).items():
        assert v.sharding.is_equivalent_to(want[k], v.ndim), k
    assert flat_params(sharded)["model/layers/0/mlp/up"].sharding.spec != jax.sharding.PartitionSpec()


def test_a_second_model_of_the_same_shapes_compiles_nothing():
    init_model(PPM, arch(), seed=0)
    with count_compiles() as compiles:
        model = init_model(PPM, arch(), seed=1)
    assert len(compiles) == 0
    assert not np.array_equal(np.asarray(model.model.embed[...]),
                              np.asarray(init_model(PPM, arch(), seed=0).model.embed[...]))
