"""The `rstar-jax sample` command's argument handling."""

import subprocess
import sys

from testutil import REPO


def test_sample_help_and_bad_config_exit_cleanly():
    run = lambda *a: subprocess.run([sys.executable, "-m", "rstar_jax", "sample", *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=REPO)
    help_ = run("--help")
    assert help_.returncode == 0 and "--prompt" in help_.stdout and "--n" in help_.stdout
    bad = run("--config", "configs/models/tiny.yaml", "--prompt", "hi", "engine.num_slotz=3")
    assert bad.returncode == 2 and "num_slots" in bad.stderr and "Traceback" not in bad.stderr
