"""The training and extraction defaults are the reference's; the demo keeps
the settings its numbers were measured with, as declared departures
(configs/demo/base.yaml), in every round and its pretraining."""

from rstar_jax.config.loader import load_config
from rstar_jax.evolve.plan import build_plan
from testutil import REPO


def test_the_paper_rounds_use_the_reference_settings():
    for i in (1, 2, 3, 4):
        cfg = load_config(str(REPO / "configs" / "rounds" / f"round{i}.yaml"))
        assert (cfg.train.sft.b2, cfg.train.ppm.b2) == (0.999, 0.999)
        assert (cfg.train.sft.weight_decay, cfg.train.ppm.weight_decay) == (0.1, 0.0)
        assert not cfg.train.decay_biases
        assert (cfg.train.ppm_loss_norm, cfg.train.overlong) == ("pairs", "truncate")
        assert cfg.mcts.extract_sft_order == "top_k_first" and cfg.mcts.ppm_continuation_q
        assert not cfg.mcts.ppm_reference_filters


def test_the_demo_keeps_its_measured_settings():
    plan = build_plan(str(REPO / "configs" / "demo" / "evolve.yaml"))
    for step in plan:
        cfg = step.cfg
        for opt in (cfg.train.sft, cfg.train.ppm, cfg.evolve.pretrain):
            assert opt.b2 == 0.95, step.id
        assert cfg.train.decay_biases, step.id
        assert (cfg.train.ppm_loss_norm, cfg.train.overlong) == ("weights", "skip"), step.id
        assert cfg.mcts.extract_sft_order == "filter_first", step.id
        assert not cfg.mcts.ppm_continuation_q, step.id
