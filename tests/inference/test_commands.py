"""`rstar-jax sample` end to end, and its error handling."""

import subprocess
import sys

import pytest
from inference.inference_helpers import make_tokenizer

from rstar_jax import cli
from testutil import REPO


def test_sample_help_and_bad_config_exit_cleanly():
    run = lambda *a: subprocess.run([sys.executable, "-m", "rstar_jax", "sample", *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=REPO)
    help_ = run("--help")
    assert help_.returncode == 0 and "--prompt" in help_.stdout and "--n" in help_.stdout
    bad = run("--config", "configs/models/tiny.yaml", "--prompt", "hi", "engine.num_slotz=3")
    assert bad.returncode == 2 and "num_slots" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow  # loads through rstar_jax.models.loading onto the 8-device mesh
def test_sample_prints_n_candidates_and_rejects_an_over_long_prompt(tmp_path, capsys):
    make_tokenizer().save_pretrained(tmp_path / "tok")
    base = ["sample", "--config", str(REPO / "configs/models/tiny.yaml"), "--n", "2",
            "--max-new-tokens", "3", "--temperature", "0", "--raw"]
    over = [f"model.tokenizer_dir={tmp_path / 'tok'}", "engine.num_slots=2", "engine.max_seq_len=16",
            "engine.prefill_buckets=[16]"]
    assert cli.main(base + ["--prompt", "x = 3 + 4", *over]) == 0
    out = capsys.readouterr().out
    assert out.count("--- candidate") == 2 and "(length, 3 tokens" in out
    assert cli.main(base + ["--prompt", "x = 3 + 4 " * 10, *over]) == 2
    assert "engine.truncation" in capsys.readouterr().err
