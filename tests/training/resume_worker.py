"""A training run that SIGKILLs itself right after a checkpoint is on disk.

    python resume_worker.py TOKENIZER_DIR DATA OUT_DIR KILL_AT_STEP CKPT_STEP
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import resume_config  # noqa: E402


def main() -> None:
    tok_dir, data, out, kill_at, ckpt_step = sys.argv[1:6]

    def on_step(step, _metrics):
        if step == int(kill_at):
            done = os.path.join(out, "ckpt", ckpt_step)
            while not os.path.isdir(done):  # the async save has committed
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)

    from rstar_jax.training.loop import train_policy

    train_policy(resume_config(tok_dir), data, out, on_step=on_step)


if __name__ == "__main__":
    main()
