"""Engine throughput vs transformers' `generate`, decode roofline share, prefix sharing.

    PYTHONPATH=. python benchmarks/bench_engine.py [--batches 1,16,64] [--quick]

A SmolLM2-135M-shaped Llama (configs/models/smollm2-135m.yaml) with random
weights, float32; the same weights are copied into transformers'
`LlamaForCausalLM` and timed with `generate` in the same run (greedy, both
run to exactly 64 new tokens, prefill included). The machine's limits are
measured in the same run too: peak float32 matmul GFLOP/s and memory read
bandwidth; the decode roofline share is ideal step time
max(FLOPs / peak, bytes / bandwidth) over measured step time at batch B.
Prefix sharing: n=8 candidates of 64 tokens from one 1024-token prompt vs
8 independent copies of it. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

PROMPT, NEW = 128, 64


def word_tokenizer(vocab_size):
    """A tokenizer whose text `t5 t17 ...` maps 1:1 onto ids (no EOS)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def to_hf(policy, arch):
    """Our Llama weights -> transformers `LlamaForCausalLM` (float32, eval)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_cfg = LlamaConfig(vocab_size=arch.vocab_size, hidden_size=arch.hidden_size,
                         intermediate_size=arch.intermediate_size, num_hidden_layers=arch.num_layers,
                         num_attention_heads=arch.num_heads, num_key_value_heads=arch.num_kv_heads,
                         head_dim=arch.head_dim, max_position_embeddings=arch.max_position_embeddings,
                         rope_theta=arch.rope_theta, rms_norm_eps=arch.rms_norm_eps,
                         tie_word_embeddings=True, attention_bias=False)
    model = LlamaForCausalLM(hf_cfg).eval()
    t = lambda x: torch.from_numpy(np.array(x, np.float32))  # noqa: E731
    d, hd = arch.hidden_size, arch.head_dim
    sd = {"model.embed_tokens.weight": t(policy.model.embed[...]),
          "model.norm.weight": t(policy.model.norm.scale[...])}
    for i, layer in enumerate(policy.model.layers):
        p = f"model.layers.{i}."
        a = layer.attn
        sd[p + "self_attn.q_proj.weight"] = t(np.asarray(a.q[...]).reshape(d, -1).T)
        sd[p + "self_attn.k_proj.weight"] = t(np.asarray(a.k[...]).reshape(d, -1).T)
        sd[p + "self_attn.v_proj.weight"] = t(np.asarray(a.v[...]).reshape(d, -1).T)
        sd[p + "self_attn.o_proj.weight"] = t(np.asarray(a.o[...]).reshape(arch.num_heads * hd, d).T)
        sd[p + "mlp.gate_proj.weight"] = t(np.asarray(layer.mlp.gate[...]).T)
        sd[p + "mlp.up_proj.weight"] = t(np.asarray(layer.mlp.up[...]).T)
        sd[p + "mlp.down_proj.weight"] = t(np.asarray(layer.mlp.down[...]).T)
        sd[p + "input_layernorm.weight"] = t(layer.attn_norm.scale[...])
        sd[p + "post_attention_layernorm.weight"] = t(layer.mlp_norm.scale[...])
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    return model


def machine_limits():
    """Peak float32 matmul GFLOP/s and memory read GB/s, measured with XLA."""
    import jax
    import jax.numpy as jnp

    n = 2048
    a = jnp.ones((n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    best = min(_timed(lambda: mm(a).block_until_ready()) for _ in range(5))
    gflops = 2 * n ** 3 / best / 1e9
    big = jnp.ones((256 << 20) // 4, jnp.float32)  # 256 MiB, far past the caches
    total = jax.jit(jnp.sum)
    total(big).block_until_ready()
    best = min(_timed(lambda: total(big).block_until_ready()) for _ in range(5))
    return gflops, big.nbytes / best / 1e9


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class Clock:
    """Wall and process-CPU seconds of a block: on a shared machine the CPU
    seconds (all threads) are the steadier measure of work done."""

    def __enter__(self):
        self.t, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t
        self.cpu = time.process_time() - self.c


def step_cost(arch, batch, cache_len):
    """FLOPs and bytes read by one decode step at `batch` with `cache_len` keys."""
    d, f, L = arch.hidden_size, arch.intermediate_size, arch.num_layers
    qkvo = d * (arch.num_heads + 2 * arch.num_kv_heads) * arch.head_dim + arch.num_heads * arch.head_dim * d
    layer_params = qkvo + 3 * d * f
    params = L * layer_params + arch.vocab_size * d  # tied head read once for the logits
    attn_flops = 4 * L * arch.num_heads * arch.head_dim * cache_len
    flops = batch * (2 * params + attn_flops)
    kv_bytes = batch * L * 2 * cache_len * arch.num_kv_heads * arch.head_dim * 4
    return flops, 4 * params + kv_bytes


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    import jax
    import torch
    from flax import nnx

    from rstar_jax.config import load_config
    from rstar_jax.inference import Engine
    from rstar_jax.models import ArchConfig, Policy

    torch.set_num_threads(args.threads)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = load_config(os.path.join(root, "configs/models/smollm2-135m.yaml"))
    arch = ArchConfig.from_model_config(cfg.model)
    policy = Policy(arch, rngs=nnx.Rngs(0))
    tok = word_tokenizer(arch.vocab_size)
    rng = np.random.RandomState(0)
    print(f"devices: {jax.devices()}; torch threads {args.threads}", flush=True)

    gflops, gbs = machine_limits()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (figures are noisy when high)")
    print(f"machine: peak matmul {gflops:.1f} GFLOP/s, read bandwidth {gbs:.1f} GB/s", flush=True)

    hf = None if args.skip_hf else to_hf(policy, arch)
    if hf is not None:  # the conversion is only worth timing if the models agree
        ids = rng.randint(0, arch.vocab_size, (1, 12))
        ours = np.asarray(policy(jax.numpy.asarray(ids))[0])
        with torch.no_grad():
            theirs = hf(torch.from_numpy(ids)).logits.numpy()
        print(f"parity: max |logit diff| = {np.abs(ours - theirs).max():.2e}", flush=True)

    results = {"tokens_per_s": {}, "hf_tokens_per_s": {}, "ratio_vs_hf": {},
               "decode_step_ms": {}, "decode_roofline_share": {}, "tokens_per_cpu_s": {},
               "hf_tokens_per_cpu_s": {}, "ratio_vs_hf_cpu_time": {}}
    costs = {}
    for b in batches:
        ecfg = cfg.engine.__class__(num_slots=b, max_seq_len=256, prefill_buckets=[128, 256],
                                    decode_steps_per_call=8, max_new_tokens=NEW, prefix_cache=False)
        engine = Engine(policy, tok, ecfg)
        prompts = lambda b=b: [" ".join(f"t{i}" for i in rng.randint(1, arch.vocab_size, PROMPT))  # noqa: E731
                               for _ in range(b)]
        kw = dict(n=1, max_new_tokens=NEW, temperature=0.0)
        engine.generate(prompts(), **kw)  # warm-up: compiles every shape
        with Clock() as clock:
            out = engine.generate(prompts(), **kw)
        assert all(len(c[0].token_ids) == NEW for c in out)
        results["tokens_per_s"][str(b)] = b * NEW / clock.wall
        results["tokens_per_cpu_s"][str(b)] = b * NEW / clock.cpu
        # Decode steps alone: every slot busy, cache at the 256 bucket (128 + 64 tokens).
        for s in range(b):
            engine.insert(engine.prefill(tok.encode(prompts()[0])), s, engine_params(NEW * 4))
        engine.core.ensure_cache_length(PROMPT + NEW)
        engine.decode()
        calls = 4
        t = time.perf_counter()
        for _ in range(calls):
            engine.decode()
        step = (time.perf_counter() - t) / (calls * ecfg.decode_steps_per_call)
        costs[b] = step_cost(arch, b, engine.core.cache_length)
        results["decode_step_ms"][str(b)] = step * 1e3
        g2, b2 = machine_limits()  # the peak is the best seen: load only ever lowers it
        gflops, gbs = max(gflops, g2), max(gbs, b2)
        print(f"batch {b}: {results['tokens_per_s'][str(b)]:.1f} tok/s (prefill included), decode step "
              f"{step * 1e3:.1f} ms", flush=True)
        del engine
        if hf is not None:
            ids = torch.from_numpy(rng.randint(1, arch.vocab_size, (b, PROMPT)))
            gen = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, eos_token_id=None,
                       pad_token_id=0)
            with torch.no_grad():
                hf.generate(ids[:, :8], **{**gen, "max_new_tokens": 2, "min_new_tokens": 2})
                with Clock() as hf_clock:
                    hf.generate(ids, **gen)
            k = str(b)
            results["hf_tokens_per_s"][k] = b * NEW / hf_clock.wall
            results["hf_tokens_per_cpu_s"][k] = b * NEW / hf_clock.cpu
            results["ratio_vs_hf"][k] = results["tokens_per_s"][k] / results["hf_tokens_per_s"][k]
            results["ratio_vs_hf_cpu_time"][k] = results["tokens_per_cpu_s"][k] / results["hf_tokens_per_cpu_s"][k]
            print(f"batch {b}: transformers {results['hf_tokens_per_s'][k]:.1f} tok/s -> ratio "
                  f"{results['ratio_vs_hf'][k]:.2f}x wall, {results['ratio_vs_hf_cpu_time'][k]:.2f}x "
                  "per CPU second", flush=True)

    # Prefix sharing in the search's shape: one 1024-token prompt, 8 candidates of 64 tokens.
    ecfg = cfg.engine.__class__(num_slots=8, max_seq_len=1152, prefill_buckets=[128, 256, 512, 1024],
                                decode_steps_per_call=8, max_new_tokens=NEW, prefix_cache=False)
    engine = Engine(policy, tok, ecfg)
    long_prompt = lambda: " ".join(f"t{i}" for i in rng.randint(1, arch.vocab_size, 1024))  # noqa: E731
    kw = dict(max_new_tokens=NEW, temperature=0.7)
    engine.generate([long_prompt()], n=8, **kw)
    t = time.perf_counter()
    engine.generate([long_prompt()], n=8, **kw)
    shared = time.perf_counter() - t
    p = long_prompt()
    t = time.perf_counter()
    engine.generate([p] * 8, n=1, **kw)
    copies = time.perf_counter() - t
    results["prefix_sharing_speedup"] = copies / shared
    results["prefix_sharing_s"] = {"shared": shared, "copies": copies}
    print(f"prefix sharing: n=8 from one prefill {shared:.2f} s vs 8 copies {copies:.2f} s -> "
          f"{copies / shared:.2f}x", flush=True)
    for b, (flops, nbytes) in costs.items():
        ideal = max(flops / (gflops * 1e9), nbytes / (gbs * 1e9))
        share = ideal * 1e3 / results["decode_step_ms"][str(b)]
        results["decode_roofline_share"][str(b)] = share
        print(f"batch {b}: decode step ideal {ideal * 1e3:.1f} ms at {gflops:.0f} GFLOP/s, {gbs:.1f} GB/s "
              f"-> {share:.0%} of the roofline", flush=True)
    results["machine"] = {"matmul_gflops": gflops, "read_gb_s": gbs,
                          "load_avg_1min": os.getloadavg()[0], "cpus": os.cpu_count()}
    print(json.dumps(results))


def engine_params(max_new):
    from rstar_jax.inference.types import SamplingParams

    return SamplingParams(max_new_tokens=max_new, temperature=0.0)


if __name__ == "__main__":
    main()
