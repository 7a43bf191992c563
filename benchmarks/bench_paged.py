"""The paged KV layout against the dense one, same run (issue 24).

    PYTHONPATH=. python benchmarks/bench_paged.py                 # CPU defaults
    PYTHONPATH=. python benchmarks/bench_paged.py --parts clone,live --out paged.json
    PYTHONPATH=. python benchmarks/bench_paged.py --parts speed --dtype bfloat16 \
        --model configs/models/qwen2.5-math-1.5b.yaml --batches 1,64,256   # a GPU/TPU

Parts (`--parts`, default all):
  * ``clone``: KV bytes copied to put a node's 8 candidates into slots after
    a 1025-token prompt (a 1024-token context) and after a 1031-token one
    (a partly filled last page): `DecodeCore.copied_bytes` over `generate`,
    per clone, and in pages for the paged layout (target: 0 full pages).
  * ``live``: live sequences at a fixed cache budget (`--budget` KV tokens)
    on a search-shaped workload: 4 trees, 4 nodes each whose prompts extend
    their tree's question by steps of 50-300 tokens, 8 candidates a node
    generating 50-300 tokens each, prefix cache off (candidates share only
    their node's pages). Dense: budget / max_seq_len slots; paged: the
    budget as pages, slots no limit. Peak and mean slots decoding per
    decode call, wall time; greedy and seeded-sampling tokens compared
    between the layouts (target: peak >= 4x dense, tokens identical).
  * ``decode``: decode calls alone at each batch, the layouts interleaved
    call by call, median and range over `--reps` (not in the default parts).
  * ``mixed``: prefill chunks riding decode calls (`engine.mixed_prefill`)
    against prefill calls of their own, paged layout, a workload whose later
    requests arrive while earlier ones decode (not in the default parts).
  * ``speed``: `bench_engine.py`-shaped work (128-token prompts, 64 new,
    greedy): `generate` and decode-only tok/s at batch 1/16/64, the two
    layouts alternating, best of `--reps` (target: paged within 5%).

Random weights (`init_model`), a word tokenizer without EOS (every
completion runs to its token limit). Every figure goes to `--out` as soon as
it is measured; the last stdout line is the whole JSON object.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench_engine import Clock, Recorder, word_tokenizer  # noqa: E402

LAYOUTS = ("dense", "paged")


def engine_for(policy, tok, layout, **kw):
    from rstar_jax.config.schema import EngineConfig
    from rstar_jax.inference import Engine

    return Engine(policy, tok, EngineConfig(kv_layout=layout, **kw))


def text(ids):
    return " ".join(f"t{i}" for i in ids)


def clone_part(policy, tok, arch, rec, page_size):
    from rstar_jax.inference import GenerationRequest, SamplingParams

    rng = np.random.RandomState(1)
    for prompt_len in (1025, 1031):
        req = GenerationRequest(text(rng.randint(1, arch.vocab_size, prompt_len)),
                                SamplingParams(n=8, max_new_tokens=8, temperature=1.0, seed=3))
        tokens = {}
        for layout in LAYOUTS:
            engine = engine_for(policy, tok, layout, num_slots=8, max_seq_len=2048,
                                prefill_buckets=[512, 1024, 2048], prefix_cache=False,
                                page_size=page_size, max_new_tokens=8)
            engine.core.copied_bytes = 0
            out = engine.generate([req])[0]
            tokens[layout] = [c.token_ids for c in out]
            per_clone = engine.core.copied_bytes / 7
            row = {"bytes_per_clone": per_clone}
            if layout == "paged":
                row["pages_per_clone"] = per_clone / engine.core.page_bytes
                partial = 1 if (prompt_len - 1) % page_size else 0  # the copy-on-write page
                row["full_pages_per_clone"] = row["pages_per_clone"] - partial
            rec.put(f"clone_{prompt_len - 1}_context", row, layout)
            pages = f" ({row['pages_per_clone']:.0f} pages)" if layout == "paged" else ""
            print(f"clone, {prompt_len - 1}-token context, {layout}: {per_clone / 2 ** 20:.3f} MiB per "
                  f"clone{pages}", flush=True)
            del engine
        rec.put(f"clone_{prompt_len - 1}_tokens_identical", tokens["dense"] == tokens["paged"])


def search_workload(arch, seed):
    """16 requests (4 trees x 4 nodes) of 8 candidates: node prompts extend
    their tree's 300-token question by 1-3 steps of 50-300 tokens."""
    from rstar_jax.inference import GenerationRequest, SamplingParams

    rng = np.random.RandomState(seed)
    reqs = []
    for _tree in range(4):
        question = list(rng.randint(1, arch.vocab_size, 300))
        for node in range(4):
            prompt = list(question)
            for _ in range(1 + node % 3):
                prompt += list(rng.randint(1, arch.vocab_size, rng.randint(50, 301)))
            reqs.append((prompt, int(rng.randint(50, 301))))
    return [lambda temp, p=p, m=m, i=i: GenerationRequest(
        text(p), SamplingParams(n=8, max_new_tokens=m, temperature=temp, seed=100 + i))
        for i, (p, m) in enumerate(reqs)]


def live_part(policy, tok, arch, rec, page_size, budget, max_seq_len):
    makers = search_workload(arch, 7)
    results = {}
    for layout in LAYOUTS:
        kw = dict(max_seq_len=max_seq_len, prefill_buckets=[256, 512, 1024, 2048, max_seq_len],
                  prefix_cache=False, page_size=page_size, decode_steps_per_call=8)
        if layout == "dense":
            kw["num_slots"] = budget // max_seq_len
        else:
            kw.update(num_slots=128, num_pages=budget // page_size + 1)
        engine = engine_for(policy, tok, layout, **kw)
        live = []
        real = engine.core.decode

        def counting(tables, engine=engine, real=real, live=live):
            live.append(len(engine.slot_jobs))
            return real(tables)

        engine.core.decode = counting
        for name, temp in (("greedy", 0.0), ("sampled", 1.0)):
            live.clear()
            with Clock() as clock:
                out = engine.generate([make(temp) for make in makers])
            results[(layout, name)] = [[c.token_ids for c in cands] for cands in out]
            assert all(c.stop_reason == "length" for cands in out for c in cands)
            row = {"slots": kw["num_slots"], "peak_live": max(live), "mean_live": float(np.mean(live)),
                   "decode_calls": len(live), "wall_s": clock.wall, "cpu_s": clock.cpu,
                   "tokens": sum(len(t) for cands in results[(layout, name)] for t in cands)}
            if layout == "paged":
                row["pages"] = kw["num_pages"] - 1
            rec.put(f"live_{name}", row, layout)
            print(f"live, {name}, {layout}: peak {row['peak_live']} / mean {row['mean_live']:.1f} "
                  f"sequences at a {budget}-token budget, {row['decode_calls']} decode calls, "
                  f"{clock.wall:.1f} s", flush=True)
        del engine
    for name in ("greedy", "sampled"):
        rec.put(f"live_{name}_tokens_identical", results[("dense", name)] == results[("paged", name)])
        dense, paged = rec.data[f"live_{name}"]["dense"], rec.data[f"live_{name}"]["paged"]
        rec.put(f"live_{name}_peak_ratio", paged["peak_live"] / dense["peak_live"])
        print(f"live, {name}: paged/dense peak {paged['peak_live'] / dense['peak_live']:.1f}x, tokens "
              f"identical: {rec.data[f'live_{name}_tokens_identical']}", flush=True)


def decode_rates(engines, tok, prompts, view, max_new, reps):
    """{layout: tok/s of `reps` timings of 4 decode calls}, every slot busy
    with one of `prompts`, the engines interleaved call by call."""
    from rstar_jax.inference import SamplingParams

    for e in engines.values():
        e.prefill_into_slots([tok.encode(p) for p in prompts],
                             SamplingParams(max_new_tokens=max_new, temperature=0.0))
        e.core.ensure_cache_length(view)
        np.asarray(e.decode())
    rates = {k: [] for k in engines}
    for _ in range(reps):
        for name, e in engines.items():
            t = time.perf_counter()
            for _ in range(4):
                last = e.core.decode(e._tables)
            np.asarray(last)
            rates[name].append(len(prompts) * 4 * e.core.steps / (time.perf_counter() - t))
    return rates


def speed_engines(policy, tok, b, page_size, prompt_len, new):
    """{layout: engine} of `b` slots for `prompt_len`-token prompts and `new` tokens."""
    return {layout: engine_for(policy, tok, layout, num_slots=b, max_seq_len=prompt_len + new,
                               prefill_buckets=[prompt_len, prompt_len + new], prefix_cache=False,
                               page_size=page_size, max_new_tokens=new, prefill_chunk=512)
            for layout in LAYOUTS}


def speed_part(policy, tok, arch, rec, page_size, batches, reps):
    prompt_len, new = 128, 64
    rng = np.random.RandomState(0)
    for b in batches:
        engines = speed_engines(policy, tok, b, page_size, prompt_len, new)
        for e in engines.values():
            e.warmup()
        prompts = [text(rng.randint(1, arch.vocab_size, prompt_len)) for _ in range(b)]
        kw = dict(n=1, max_new_tokens=new, temperature=0.0)
        best = {layout: [0.0, 0.0] for layout in LAYOUTS}
        outs = {}
        for rep in range(reps + 1):  # the first round is host warm-up
            for layout, engine in engines.items():
                with Clock() as clock:
                    outs[layout] = engine.generate(prompts, **kw)
                if rep:
                    best[layout][0] = max(best[layout][0], b * new / clock.wall)
        for layout, rates in decode_rates(engines, tok, prompts, prompt_len + new, 4 * new, reps).items():
            best[layout][1] = max(rates)
        same = [c[0].token_ids for c in outs["dense"]] == [c[0].token_ids for c in outs["paged"]]
        for layout in LAYOUTS:
            rec.put(f"speed_{layout}", {"generate_tok_s": best[layout][0], "decode_tok_s": best[layout][1]}, b)
        rec.put("speed_paged_over_dense", {"generate": best["paged"][0] / best["dense"][0],
                                           "decode": best["paged"][1] / best["dense"][1]}, b)
        rec.put("speed_tokens_identical", same, b)
        rec.put("attention_paths", {layout: sorted(e.attention_paths()) for layout, e in engines.items()}, b)
        print(f"speed, batch {b}: generate dense {best['dense'][0]:.1f} / paged {best['paged'][0]:.1f} tok/s "
              f"({best['paged'][0] / best['dense'][0]:.3f}x), decode dense {best['dense'][1]:.1f} / paged "
              f"{best['paged'][1]:.1f} tok/s ({best['paged'][1] / best['dense'][1]:.3f}x), tokens identical: "
              f"{same}", flush=True)
        del engines


def decode_part(policy, tok, arch, rec, page_size, batches, reps):
    """Decode calls alone, every slot busy (128-token prompts, view 192),
    dense and paged interleaved call by call: median and range of `reps`
    timings of 4 calls each (steadier than `speed`'s best of a few)."""
    prompt_len, new = 128, 64
    rng = np.random.RandomState(0)
    for b in batches:
        engines = speed_engines(policy, tok, b, page_size, prompt_len, new)
        prompts = [text(rng.randint(1, arch.vocab_size, prompt_len)) for _ in range(b)]
        rates = decode_rates(engines, tok, prompts, prompt_len + new, 4 * new, reps)
        med = {k: float(np.median(v)) for k, v in rates.items()}
        rec.put("decode_tok_s_median", med, b)
        rec.put("decode_tok_s_range", {k: [float(min(v)), float(max(v))] for k, v in rates.items()}, b)
        rec.put("decode_paged_over_dense", med["paged"] / med["dense"], b)
        print(f"decode, batch {b}: median tok/s dense {med['dense']:.1f} "
              f"[{min(rates['dense']):.1f}, {max(rates['dense']):.1f}], paged {med['paged']:.1f} "
              f"[{min(rates['paged']):.1f}, {max(rates['paged']):.1f}] ({med['paged'] / med['dense']:.3f}x), "
              f"{reps} reps", flush=True)
        del engines


def mixed_part(policy, tok, arch, rec, page_size, reps):
    """Prefill chunks riding decode calls (`engine.mixed_prefill`) against
    prefill calls of their own, paged layout, same run: 16 requests of 4
    candidates through 32 slots (later requests are prefilled while earlier
    ones decode), prompts 128-384 tokens, 32-96 new; wall time of
    `generate`, best of `reps` after a warm-up round, the two alternating."""
    from rstar_jax.inference import GenerationRequest, SamplingParams

    rng = np.random.RandomState(5)
    reqs = [GenerationRequest(text(rng.randint(1, arch.vocab_size, rng.randint(128, 385))),
                              SamplingParams(n=4, max_new_tokens=int(rng.randint(32, 97)),
                                             temperature=1.0, seed=i))
            for i in range(16)]
    engines = {name: engine_for(policy, tok, "paged", num_slots=32, max_seq_len=512,
                                prefill_buckets=[128, 256, 512], prefix_cache=False,
                                page_size=page_size, prefill_chunk=128, prefill_tokens=1024,
                                mixed_prefill=on)
               for name, on in (("apart", False), ("mixed", True))}
    best = {name: float("inf") for name in engines}
    outs = {}
    for rep in range(reps + 1):  # the first round compiles
        for name, engine in engines.items():
            calls = engine.core.mixed_calls
            with Clock() as clock:
                outs[name] = engine.generate(reqs)
            if rep:
                best[name] = min(best[name], clock.wall)
            rec.put("mixed_calls", engine.core.mixed_calls - calls, name)
    tokens = sum(len(c.token_ids) for cands in outs["apart"] for c in cands)
    same = ([[c.token_ids for c in cands] for cands in outs["apart"]]
            == [[c.token_ids for c in cands] for cands in outs["mixed"]])
    for name in engines:
        rec.put("mixed_generate", {"wall_s": best[name], "tok_s": tokens / best[name]}, name)
    rec.put("mixed_over_apart", best["apart"] / best["mixed"])
    rec.put("mixed_tokens_identical", same)
    print(f"mixed: generate {best['apart']:.2f} s with prefill calls apart, {best['mixed']:.2f} s with "
          f"{rec.data['mixed_calls']['mixed']} chunks riding decode calls "
          f"({best['apart'] / best['mixed']:.3f}x), tokens identical: {same}", flush=True)


def main(argv=None):
    import json

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "configs/models/smollm2-135m.yaml"),
                    help="model of the clone and speed parts")
    ap.add_argument("--live-model", default=os.path.join(ROOT, "configs/models/tiny.yaml"),
                    help="model of the live part (counts do not depend on it; time does)")
    ap.add_argument("--parts", default="clone,live,speed")
    ap.add_argument("--page-size", type=int, default=16)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                    help="params and compute (bfloat16 on a GPU/TPU: the paged kernels' dtype)")
    ap.add_argument("--budget", type=int, default=8 * 4096, help="live part: KV tokens of cache")
    ap.add_argument("--max-seq-len", type=int, default=4096, help="live part")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    out = args.out or (os.path.join(os.environ["OUT"], "bench_paged.json") if os.environ.get("OUT") else None)
    rec = Recorder(out)

    import jax

    from rstar_jax.config import load_config
    from rstar_jax.models import ArchConfig, Policy
    from rstar_jax.models.loading import init_model

    parts = args.parts.split(",")
    rec.put("setup", {"backend": jax.default_backend(), "jax": jax.__version__, "model": args.model,
                      "live_model": args.live_model, "page_size": args.page_size, "dtype": args.dtype, "cpus": os.cpu_count(),
                      "load_avg_1min": os.getloadavg()[0]})

    def model(path):
        over = [f"model.max_position_embeddings={max(args.max_seq_len, 2048)}",
                f"model.param_dtype={args.dtype}", f"model.compute_dtype={args.dtype}"]
        arch = ArchConfig.from_model_config(load_config(path, over).model)
        return init_model(Policy, arch, seed=0), word_tokenizer(arch.vocab_size), arch

    batches = [int(b) for b in args.batches.split(",")]
    if {"clone", "speed", "decode", "mixed"} & set(parts):
        policy, tok, arch = model(args.model)
        if "clone" in parts:
            clone_part(policy, tok, arch, rec, args.page_size)
        if "decode" in parts:
            decode_part(policy, tok, arch, rec, args.page_size, batches, args.reps)
        if "speed" in parts:
            speed_part(policy, tok, arch, rec, args.page_size, batches, args.reps)
        if "mixed" in parts:
            mixed_part(policy, tok, arch, rec, args.page_size, args.reps)
    if "live" in parts:
        policy, tok, arch = model(args.live_model)
        live_part(policy, tok, arch, rec, args.page_size, args.budget, args.max_seq_len)
    rec.put("load_avg_1min_end", os.getloadavg()[0])
    print(json.dumps(rec.data))


if __name__ == "__main__":
    main()
