#!/usr/bin/env bash
# Every GPU figure of issue 17 in one command, on one H200, within 8 minutes.
#
#   bash benchmarks/gpu_check.sh            # from the repo root; results in $OUT or ./gpu_check_out
#
# Before: put the wheels the image lacks (see ../shared/GPU_NOTES.md) in .whl/
# at the repo root (downloaded on a networked machine, see benchmarks/RESULTS.md,
# issue 17 section). They are installed into the interpreter's own
# site-packages: the executor's workers do not see PYTHONPATH additions.
#
# Writes, each as soon as it is measured:
#   gpu.txt               the card (nvidia-smi -L) and the versions
#   bench_engine.json     Qwen2.5-Math-1.5B shape, random weights, bf16, 256-token
#                         prompts, 128 new tokens, greedy, 8 steps per call, prefix
#                         cache off, batches 1 / 64 / 256: tokens_per_s,
#                         decode_tokens_per_s, e2e_over_decode, decode_roofline_share
#                         (vs the matmul peak and HBM bandwidth measured in the run),
#                         init_s, warmup_s (+ what warmup compiled), transformers
#                         generate on the same GPU, batched_prefill_speedup
#   bench_engine.log      its stdout/stderr
#   warm_start.json       init + warmup again in a new process, with the persistent
#                         compilation cache filled by the first run (if time is left)
#   decode_parts_b64.json, decode_parts_b256.json (if time is left)
#                         benchmarks/ab_decode_parts.py at the 1.5B shape, bf16, cache
#                         512, positions 256-383: one layer's decode attention per
#                         path (full cache / key blocks to the largest position / the
#                         Pallas kernel), fused vs separate q/k/v and gate/up over all
#                         layers; decode_attention_paths says which path ran, `failed`
#                         any that could not. The engine's own choice is in
#                         bench_engine.json, warmup_report.decode_attention.
# Acceptance (issue 17): batch 256 tokens_per_s >= 0.75 x decode_tokens_per_s;
# decode_roofline_share >= 0.65 at 64 and 256, >= 0.55 at 1; init_s + warmup_s <= 60.
set -u
START=$SECONDS
BUDGET=${GPU_CHECK_BUDGET_S:-470}   # own deadline, under the 8 minutes
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
left() { echo $(( BUDGET - (SECONDS - START) )); }
log() { echo "[gpu_check +$((SECONDS - START))s] $*" | tee -a "$OUT/progress.txt"; }

if ls .whl/*.whl >/dev/null 2>&1; then
  log "installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into $($PY -c 'import sys; print(sys.prefix)')"
  $PY -m pip install --no-index --no-deps --quiet .whl/*.whl 2>&1 | tail -3 | tee -a "$OUT/progress.txt"
fi
{
  nvidia-smi -L 2>&1
  $PY -c "import jax, sys; print('python', sys.version.split()[0], 'jax', jax.__version__, jax.devices())" 2>&1
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)" 2>&1
} > "$OUT/gpu.txt"
cat "$OUT/gpu.txt"

export PYTHONPATH=$PWD
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # JAX and torch share the card
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/jax_cache}
COMMON=(--model configs/models/qwen2.5-math-1.5b.yaml --dtype bfloat16 --prompt 256 --new 128
        --prefill-chunk 256 --prefill-tokens 8192 --prefill-rows 1,4,16
        --cache-dir "$JAX_COMPILATION_CACHE_DIR")

log "bench_engine (budget $(left) s)"
timeout --signal=INT --kill-after=10 "$(( $(left) - 60 ))" \
  $PY benchmarks/bench_engine.py "${COMMON[@]}" --batches 1,64,256 --hf-batches 1,64,256 \
  --out "$OUT/bench_engine.json" > "$OUT/bench_engine.log" 2>&1
log "bench_engine rc=$? ($(tail -c 300 "$OUT/bench_engine.log" | tr '\n' ' ' | cut -c1-300))"

if [ "$(left)" -gt 45 ]; then
  log "warm start: init + warmup at batch 256 with the compilation cache filled"
  timeout --signal=INT --kill-after=5 "$(( $(left) - 5 ))" \
    $PY benchmarks/bench_engine.py "${COMMON[@]}" --batches 256 --skip-hf --skip-prefill-ab \
    --out "$OUT/warm_start.json" > "$OUT/warm_start.log" 2>&1
  log "warm start rc=$?"
fi
for B in 64 256; do
  if [ "$(left)" -gt 40 ]; then
    log "decode parts at batch $B (ab_decode_parts)"
    timeout --signal=INT --kill-after=5 "$(( $(left) - 5 ))" \
      $PY benchmarks/ab_decode_parts.py --model configs/models/qwen2.5-math-1.5b.yaml --dtype bfloat16 \
      --batch "$B" --cache 512 --positions 256,384 --reps 10 --out "$OUT/decode_parts_b$B.json" \
      > "$OUT/decode_parts_b$B.log" 2>&1
    log "decode parts rc=$? ($(grep -E '^(attention|qkv|gate)' "$OUT/decode_parts_b$B.log" | tr -s ' ' | tr '\n' ';' | cut -c1-400))"
  fi
done
log "done; results in $OUT"
