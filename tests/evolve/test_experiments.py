"""The launch scripts under experiments/: every config they name resolves and loads."""

import os
import re
import subprocess

import pytest

from rstar_jax.config import load_config
from rstar_jax.evolve.plan import build_plan
from testutil import REPO

SCRIPTS = sorted(
    os.path.relpath(os.path.join(d, f), REPO)
    for d, _, fs in os.walk(REPO / "experiments") for f in fs if f.endswith(".sh")
)
_YAML = re.compile(r"[\w./-]+\.yaml")


def test_there_is_a_script_per_round_and_cluster():
    for cluster in ("tpu-v5e-256", "gpu-8"):
        for r in (1, 2, 3, 4):
            assert f"experiments/{cluster}/round{r}.sh" in SCRIPTS


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s != "experiments/common.sh"])
def test_script_configs_resolve(script):
    text = (REPO / script).read_text()
    header = "\n".join(line for line in text.splitlines()[:10] if line.startswith("#"))
    for word in ("Runs:", "Produces:", "Needs:"):
        assert word in header, f"{script} must say what it {word[:-1].lower()}"
    named = [m for m in _YAML.findall(text) if not m.startswith("$")]
    code = [m for line in text.splitlines() if not line.startswith("#") for m in _YAML.findall(line)]
    assert code, f"{script} names no config"
    for path in named:
        assert (REPO / path).is_file(), f"{script} names {path}, which does not exist"
    for path in code:
        plan = build_plan(str(REPO / path))
        round_ = int(re.search(r"round(\d)", script).group(1))
        cfg = next(s.cfg for s in plan if s.round == round_)
        assert cfg.evolve.round == round_
        assert cfg.model.name.startswith("qwen2.5-math-")
        rounds_cfg = load_config(str(REPO / "configs" / "rounds" / f"round{round_}.yaml"))
        assert (cfg.mcts.rollouts, cfg.mcts.candidates) == (rounds_cfg.mcts.rollouts, rounds_cfg.mcts.candidates)
    assert subprocess.run(["bash", "-n", str(REPO / script)]).returncode == 0


def test_script_refuses_without_its_inputs():
    env = {k: v for k, v in os.environ.items() if k not in ("RUN_DIR", "MODEL_DIR")}
    out = subprocess.run(["bash", str(REPO / "experiments/gpu-8/round2.sh")], env=env,
                         capture_output=True, text=True)
    assert out.returncode != 0 and "RUN_DIR" in out.stderr
