"""Real weights, untuned: SmolLM2-135M-Instruct writes the step format by default.

With the step tags added as new tokens that share one mean embedding, this
model stopped at once (EOS after one token; greedy 0% with every prediction
None). By default a pretrained model now keeps the tags as plain text at
inference (models/vocab.py `wants_tags`), and the CPU preset's two
demonstrations show it the format. `sample` and greedy `evaluate` on 5
GSM8K problems through configs/presets/cpu-eval.yaml must give non-empty
steps in that format. Accuracy is not asserted (0 of 5 measured at 135M).

Prepare the weights as tests/models/test_smollm2_realweights.py says.
"""

import json
import re

import pytest
from models.test_smollm2_realweights import prepared_dirs

from rstar_jax.cli import main
from testutil import REPO, SHARED_DATA

PRESET = str(REPO / "configs/presets/cpu-eval.yaml")
# Short budgets keep this test to a few minutes on 2 CPU cores.
BUDGET = ["mcts.max_depth=3", "mcts.max_new_tokens_per_step=64", "logging.progress=false"]
QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many "
            "clips in May. How many clips did Natalia sell altogether in April and May?")
STOP_TAGS = ("<end_of_step>", "<end_of_code>", "<end_of_answer>")


@pytest.mark.slow
@pytest.mark.realweights
def test_smollm2_samples_and_evaluates_in_the_step_format(tmp_path, capsys):
    _, ckpt = prepared_dirs()
    model = [f"model.checkpoint={ckpt}"]
    assert main(["sample", "--config", PRESET, "--prompt", QUESTION, "--temperature", "0",
                 "--max-new-tokens", "64", *model, *BUDGET]) == 0
    out = capsys.readouterr().out
    head = re.search(r"--- candidate 0 \((\w+), (\d+) tokens", out)
    text = out[head.end():].split("\n", 1)[1]
    assert int(head.group(2)) > 1 and text.startswith("<code>"), out
    assert head.group(1) == "stop" and text.rstrip().endswith(STOP_TAGS), out

    rc = main(["evaluate", "--config", PRESET, "--benchmark", "gsm8k", "--limit", "5",
               "--out", str(tmp_path / "eval"), f"eval.benchmark_dir={SHARED_DATA}/benchmarks",
               *model, *BUDGET])
    assert rc == 0
    rows = [json.loads(x) for x in (tmp_path / "eval" / "gsm8k" / "results.jsonl").open()]
    assert len(rows) == 5
    for r in rows:
        assert r["generated_tokens"] > 1 and r["outputs"][0].startswith("<code>\n"), r["outputs"]
    assert any(tag in r["outputs"][0] for r in rows for tag in STOP_TAGS)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())["benchmarks"][0]
    print(f"SmolLM2-135M-Instruct greedy GSM8K accuracy on 5: {summary['accuracy']}%, "
          f"answered {summary['answered']}, avg tokens {summary['avg_generated_tokens']}")
