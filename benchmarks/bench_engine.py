"""Engine throughput on whatever backend JAX finds, against transformers on
the same device, with the machine's limits measured in the same run.

    PYTHONPATH=. python benchmarks/bench_engine.py --model configs/models/qwen2.5-math-1.5b.yaml \
        --dtype bfloat16 --batches 1,64,256 --prompt 256 --new 128 --out bench_engine.json
    PYTHONPATH=. python benchmarks/bench_engine.py            # CPU: SmolLM2-135M shape, fp32

Random weights (`init_model`), greedy, every request runs to exactly `--new`
tokens. Per batch B: `tokens_per_s` (`generate` of B prompts, prefill
included), `decode_tokens_per_s` (B busy slots, decode calls only),
`e2e_over_decode`, `decode_roofline_share` (ideal step max(FLOPs / peak,
bytes / bandwidth) over the measured step), `warmup_s` (`Engine.warmup`,
every shape), transformers' `generate` on the same weights and device
(CUDA when torch sees one; `--hf-batches` limits it: eager torch on a CPU
is slow). Once: `init_s` (model init), the machine limits (`dtype` matmul
peak, memory read bandwidth) and `batched_prefill_speedup`: context tokens
per second putting 16 prompts of 128..1024 tokens into slots in batched
calls, over one prompt per call, same engine, same run. Every figure is
written to `--out` (default `$OUT/bench_engine.json` when `OUT` is set) as
soon as it is measured; the last stdout line is the whole JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def word_tokenizer(vocab_size):
    """A tokenizer whose text `t5 t17 ...` maps 1:1 onto ids (no EOS)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def machine_limits(dtype, big: bool):
    """Peak `dtype` matmul FLOP/s and memory read bytes/s, measured with XLA
    (best of 5; on an accelerator an 8192^3 matmul and a 2 GiB read)."""
    import jax
    import jax.numpy as jnp

    n = 8192 if big else 2048
    a = jnp.ones((n, n), dtype)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    best = min(_timed(lambda: mm(a).block_until_ready()) for _ in range(5))
    flops = 2 * n ** 3 / best
    size = (2 << 30) if big else (256 << 20)
    data = jnp.ones(size // jnp.dtype(dtype).itemsize, dtype)
    total = jax.jit(lambda x: jnp.sum(x, dtype=jnp.float32))
    total(data).block_until_ready()
    best = min(_timed(lambda: total(data).block_until_ready()) for _ in range(5))
    return flops, size / best


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


def step_cost(arch, batch, cache_len, itemsize):
    """FLOPs and bytes read by one decode step at `batch` with `cache_len` keys."""
    d, f, L = arch.hidden_size, arch.intermediate_size, arch.num_layers
    qkvo = d * (arch.num_heads + 2 * arch.num_kv_heads) * arch.head_dim + arch.num_heads * arch.head_dim * d
    params = L * (qkvo + 3 * d * f) + arch.vocab_size * d  # the LM head read once for the logits
    flops = batch * (2 * params + 4 * L * arch.num_heads * arch.head_dim * cache_len)
    kv_bytes = batch * L * 2 * cache_len * arch.num_kv_heads * arch.head_dim * itemsize
    return flops, itemsize * params + kv_bytes


def to_hf(policy, arch, device, torch_dtype):
    """Our weights in transformers' model of the same family, on `device`."""
    import torch
    import transformers

    from rstar_jax.models.convert import hf_config, params_to_hf
    from rstar_jax.models.loading import flat_params

    cfg = hf_config(arch)
    cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
           "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[arch.family]
    hf_cfg = cls[0](**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
    hf_cfg._attn_implementation = "sdpa"
    model = cls[1](hf_cfg).eval()
    host = {k: np.asarray(v, np.float32) for k, v in flat_params(policy).items()}
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params_to_hf(host, arch).items()}
    if arch.tie_word_embeddings:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    return model.to(device=device, dtype=torch_dtype)


class Recorder:
    """The results dict, rewritten to `path` after every figure."""

    def __init__(self, path):
        self.path, self.data = path, {}

    def put(self, key, value, sub=None):
        if sub is None:
            self.data[key] = value
        else:
            self.data.setdefault(key, {})[str(sub)] = value
        if self.path:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.data, f, indent=1)
            os.replace(tmp, self.path)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "configs/models/smollm2-135m.yaml"))
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens")
    ap.add_argument("--new", type=int, default=64, help="new tokens per request")
    ap.add_argument("--steps-per-call", type=int, default=8)
    ap.add_argument("--prefill-tokens", type=int, default=None, help="engine.prefill_tokens")
    ap.add_argument("--prefill-chunk", type=int, default=None, help="engine.prefill_chunk")
    ap.add_argument("--prefill-rows", default=None, help="engine.prefill_row_buckets, e.g. 1,4,16")
    ap.add_argument("--cache-dir", default=None, help="engine.compilation_cache_dir")
    ap.add_argument("--hf-batches", default=None, help="batches to time transformers at (default all)")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-prefill-ab", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="torch threads on a CPU")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    batches = [int(b) for b in args.batches.split(",")]
    hf_batches = batches if args.hf_batches is None else [int(b) for b in args.hf_batches.split(",") if b]
    out = args.out or (os.path.join(os.environ["OUT"], "bench_engine.json") if os.environ.get("OUT") else None)
    rec = Recorder(out)

    import jax
    import jax.numpy as jnp

    from rstar_jax.config import load_config
    from rstar_jax.inference import Engine, SamplingParams
    from rstar_jax.models import ArchConfig, Policy
    from rstar_jax.models.loading import init_model

    backend = jax.default_backend()
    accel = backend != "cpu"
    cfg = load_config(args.model, [f"model.param_dtype={args.dtype}", f"model.compute_dtype={args.dtype}"])
    arch = ArchConfig.from_model_config(cfg.model)
    dtype = jnp.dtype(args.dtype)
    rec.put("setup", {"backend": backend, "devices": [str(d) for d in jax.devices()], "model": args.model,
                      "dtype": args.dtype, "prompt": args.prompt, "new": args.new,
                      "steps_per_call": args.steps_per_call, "jax": jax.__version__})
    print(f"backend {backend}: {jax.devices()}", flush=True)
    t = time.perf_counter()
    policy = init_model(Policy, arch, seed=0)
    jax.block_until_ready(jax.tree.leaves(policy))
    rec.put("init_s", time.perf_counter() - t)
    print(f"init_s {rec.data['init_s']:.1f}", flush=True)
    peak, bw = machine_limits(dtype, accel)
    rec.put("machine", {"matmul_tflops": peak / 1e12, "read_tb_s": bw / 1e12,
                        "load_avg_1min": os.getloadavg()[0], "cpus": os.cpu_count()})
    print(f"machine: {peak / 1e12:.1f} TFLOP/s {args.dtype} matmul, {bw / 1e12:.3f} TB/s read", flush=True)
    tok = word_tokenizer(arch.vocab_size)
    rng = np.random.RandomState(0)
    prompt_len, new = args.prompt, args.new
    seq = prompt_len + new
    E = cfg.engine.__class__
    extra = {}
    if args.prefill_tokens:
        extra["prefill_tokens"] = args.prefill_tokens
    if args.prefill_rows:
        extra["prefill_row_buckets"] = [int(r) for r in args.prefill_rows.split(",")]
    if args.cache_dir:
        extra["compilation_cache_dir"] = args.cache_dir
    params = SamplingParams(max_new_tokens=new * 4, temperature=0.0)

    def text_prompts(b):
        return [" ".join(f"t{i}" for i in rng.randint(1, arch.vocab_size, prompt_len)) for _ in range(b)]

    for b in batches:
        ecfg = E(num_slots=b, max_seq_len=seq, prefill_buckets=[prompt_len, seq],
                 decode_steps_per_call=args.steps_per_call, max_new_tokens=new, prefix_cache=False,
                 prefill_chunk=args.prefill_chunk or max(512, prompt_len), **extra)
        engine = Engine(policy, tok, ecfg)
        t = time.perf_counter()
        report = engine.warmup()
        rec.put("warmup_s", time.perf_counter() - t, b)
        rec.put("warmup_report", report, b)
        kw = dict(n=1, max_new_tokens=new, temperature=0.0)
        engine.generate(text_prompts(b), **kw)  # host-side warm-up (tokenizer, tables)
        with Clock() as clock:
            res = engine.generate(text_prompts(b), **kw)
        assert all(len(c[0].token_ids) == new for c in res)
        rec.put("tokens_per_s", b * new / clock.wall, b)
        rec.put("tokens_per_cpu_s", b * new / clock.cpu, b)
        # Decode alone: every slot busy, the cache at its last bucket.
        engine.prefill_into_slots([tok.encode(p) for p in text_prompts(b)], params)
        engine.core.ensure_cache_length(seq)
        np.asarray(engine.decode())
        calls = max(2, min(16, new // args.steps_per_call))
        t = time.perf_counter()
        for _ in range(calls):
            last = engine.core.decode(engine._tables)
        np.asarray(last)
        step = (time.perf_counter() - t) / (calls * args.steps_per_call)
        flops, nbytes = step_cost(arch, b, engine.core.cache_length, dtype.itemsize)
        ideal = max(flops / peak, nbytes / bw)
        rec.put("decode_step_ms", step * 1e3, b)
        rec.put("decode_ideal_step_ms", ideal * 1e3, b)
        rec.put("decode_tokens_per_s", b / step, b)
        rec.put("e2e_over_decode", (b * new / clock.wall) / (b / step), b)
        rec.put("decode_roofline_share", ideal / step, b)
        print(f"batch {b}: generate {b * new / clock.wall:.1f} tok/s, decode {b / step:.1f} tok/s "
              f"(step {step * 1e3:.2f} ms, ideal {ideal * 1e3:.2f} ms: {ideal / step:.0%}), "
              f"warmup {rec.data['warmup_s'][str(b)]:.1f} s", flush=True)
        del engine

    if not args.skip_hf and hf_batches:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            torch.set_num_threads(args.threads)
        tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
        hf = to_hf(policy, arch, device, tdt)
        ids = rng.randint(1, arch.vocab_size, (1, 12))
        ours = np.asarray(policy(jnp.asarray(ids))[0], np.float32)
        with torch.no_grad():
            theirs = hf(torch.from_numpy(ids).to(device)).logits.float().cpu().numpy()
        rec.put("hf_parity_max_abs_logit_diff", float(np.abs(ours - theirs).max()))
        rec.put("hf_device", device)
        gen = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0)
        for b in hf_batches:
            x = torch.from_numpy(rng.randint(1, arch.vocab_size, (b, prompt_len))).to(device)
            with torch.no_grad():
                hf.generate(x[:, :8], **{**gen, "max_new_tokens": 2, "min_new_tokens": 2})
                if device == "cuda":
                    torch.cuda.synchronize()
                with Clock() as c:
                    hf.generate(x, **gen)
                    if device == "cuda":
                        torch.cuda.synchronize()
            rec.put("hf_tokens_per_s", b * new / c.wall, b)
            if str(b) in rec.data.get("tokens_per_s", {}):
                rec.put("ratio_vs_hf", rec.data["tokens_per_s"][str(b)] / (b * new / c.wall), b)
            print(f"batch {b}: transformers ({device}) {b * new / c.wall:.1f} tok/s", flush=True)
        del hf
    if not args.skip_prefill_ab:
        lens = [128 + round(i * (1024 - 128) / 15) for i in range(16)]
        ecfg = E(num_slots=16, max_seq_len=1152, prefill_buckets=[128, 256, 512, 1024], prefix_cache=False,
                 **extra)
        engine = Engine(policy, tok, ecfg)
        one = SamplingParams(max_new_tokens=1, temperature=0.0)

        def fill(batched, seed):
            r = np.random.RandomState(seed)
            ids = [list(r.randint(1, arch.vocab_size, n)) for n in lens]
            engine.core.reset()
            t = time.perf_counter()
            slots = (engine.prefill_into_slots(ids, one) if batched
                     else [s for i in ids for s in engine.prefill_into_slots([i], one)])
            jax.block_until_ready(engine.core.state)
            dt = time.perf_counter() - t
            for s in slots:
                engine.free(s)
            return sum(n - 1 for n in lens) / dt

        fill(True, 1), fill(False, 1)  # compiles
        rates = {"batched": [], "one_per_call": []}
        for rep in range(3):  # alternating, best of 3
            rates["batched"].append(fill(True, 10 + rep))
            rates["one_per_call"].append(fill(False, 10 + rep))
        best = {k: max(v) for k, v in rates.items()}
        rec.put("prefill_tokens_per_s", best)
        rec.put("batched_prefill_speedup", best["batched"] / best["one_per_call"])
        print(f"prefill 16 prompts of 128-1024: batched {best['batched']:.0f} tok/s, one per call "
              f"{best['one_per_call']:.0f} tok/s -> {rec.data['batched_prefill_speedup']:.2f}x", flush=True)
        del engine

    print(json.dumps(rec.data))


if __name__ == "__main__":
    main()
