"""Forward-pass speed of our decoder vs transformers' PyTorch model, same CPU.

SmolLM2-135M architecture with random weights (no download), float32,
one prompt of `--tokens` tokens, jitted JAX forward vs `torch.no_grad()`
eager PyTorch. Prints per-call times and the ratio; the last line is one
JSON object.

    python benchmarks/models_forward.py --tokens 128 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rstar_jax.config import load_config
    from rstar_jax.models import ArchConfig, Policy, init_model
    from rstar_jax.models.convert import hf_config

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    arch = ArchConfig.from_model_config(
        load_config(os.path.join(repo, "configs/models/smollm2-135m.yaml")).model)
    tokens = np.random.RandomState(0).randint(0, arch.vocab_size, (1, args.tokens))

    start = time.perf_counter()
    ours = init_model(Policy, arch, seed=0)
    init_s = time.perf_counter() - start
    forward = jax.jit(lambda m, t: m(t)[0])
    jt = jnp.asarray(tokens, jnp.int32)
    start = time.perf_counter()
    forward(ours, jt).block_until_ready()
    compile_s = time.perf_counter() - start
    ours_s = best_of(lambda: forward(ours, jt).block_until_ready(), args.repeats)

    cfg = {k: v for k, v in hf_config(arch).items() if k not in ("architectures", "model_type")}
    ref = LlamaForCausalLM(LlamaConfig(**cfg, attn_implementation="sdpa")).eval()
    tt = torch.as_tensor(tokens)
    with torch.no_grad():
        ref(tt)
        torch_s = best_of(lambda: ref(tt), args.repeats)

    print(f"init (jit, sharded path): {init_s:.2f} s; first call incl. compile: {compile_s:.2f} s")
    print(f"forward [1, {args.tokens}] float32: ours {ours_s * 1e3:.1f} ms, "
          f"transformers {torch_s * 1e3:.1f} ms, ratio {torch_s / ours_s:.2f}x")
    print(json.dumps({"benchmark": "models_forward", "tokens": args.tokens,
                      "ours_ms": round(ours_s * 1e3, 2), "transformers_ms": round(torch_s * 1e3, 2),
                      "speedup_vs_transformers": round(torch_s / ours_s, 3),
                      "init_s": round(init_s, 2), "compile_s": round(compile_s, 2),
                      "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
