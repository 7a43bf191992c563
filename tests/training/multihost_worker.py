"""One process of the two-process training test (run as a script).

    python multihost_worker.py PROCESS_ID PORT TOKENIZER_DIR DATA OUT_DIR
Each process has 4 fake CPU devices; together they form the 8-device mesh.
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import tiny_config  # noqa: E402


def main() -> None:
    pid, port, tok_dir, data, out = sys.argv[1:6]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=int(pid))
    assert jax.device_count() == 8 and jax.local_device_count() == 4
    from rstar_jax.training.loop import train_policy

    cfg = tiny_config(tok_dir, "train.sft.max_steps=3", "mesh.data=2", "mesh.fsdp=2",
                      "mesh.tensor=2", "checkpoint.save_every=2", "train.sft.batch_size=8")
    train_policy(cfg, data, out)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
