"""A short search stage for test_progress.py, run as its own process with
stderr going to a file: the mock engine and fake executor stand in for
the models (as in tests/search/test_commands.py), the CLI path is real."""

import json
import sys
import types

import rstar_jax.execution as execution_pkg
import rstar_jax.inference
from rstar_jax import cli
from rstar_jax.testing import mock

rstar_jax.inference.load_policy_engine = lambda cfg, **kw: mock.MockEngine(steps=2, seeded=True)
rstar_jax.inference.load_ppm_scorer = lambda cfg, **kw: mock.MockScorer()
for name, attrs in mock.fake_execution_modules().items():
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    sys.modules[name] = module
    setattr(execution_pkg, name.rsplit(".", 1)[1], module)

if __name__ == "__main__":
    problems, out = sys.argv[1], sys.argv[2]
    with open(problems, "w", encoding="utf-8") as f:
        for i in range(4):
            f.write(json.dumps({"id": f"p{i}", "question": f"What is {3 + i} + 4?",
                                "answer": str(7 + i)}) + "\n")
    sys.exit(cli.main(["search", "--config", "configs/base.yaml", "--problems", problems,
                       "--out", out, "mcts.rollouts=2", "mcts.candidates=2", *sys.argv[3:]]))
