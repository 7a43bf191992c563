#!/usr/bin/env bash
# Every GPU figure of issues 17 and 24 in one command, on a fresh H100 or H200,
# inside 8 minutes (a 15-minute device window holds it and a rerun).
#
#   bash benchmarks/fetch_gpu_wheels.sh     # once, on a networked machine: .whl/
#   bash benchmarks/gpu_check.sh            # on the GPU host, from the repo root (carry .whl)
#   bash benchmarks/gpu_check.sh --dry-run  # every stage at tiny size on the CPU (a test runs it)
#
# Stages, in order of worth; each is cut at the script's own deadline
# (GPU_CHECK_BUDGET_S, default 460 s from the start) and writes its figures to
# $OUT (default ./gpu_check_out) the moment it measures them:
#   1. wheels: .whl/*.whl installed into the interpreter's own site-packages
#      (not --target: the executor's workers do not see PYTHONPATH additions;
#      ../shared/GPU_NOTES.md); a failed install stops the run.
#   2. imports: every package rstar_jax needs; one that still fails stops the
#      run with ONE line naming it.
#   3. summary.txt: card (nvidia-smi -L), versions, then one line per stage,
#      the attention path each run took and the headline figures.
#   4. bench_engine.json: Qwen2.5-Math-1.5B shape, random weights, bf16,
#      256-token prompts, 128 new tokens, greedy, 8 steps per call, batches
#      1 / 64 / 256: tokens_per_s, decode_tokens_per_s, e2e_over_decode,
#      decode_roofline_share (against the matmul peak and HBM read measured in
#      the run), init_s, warmup_s and warmup_report (incl. decode_attention:
#      the path the engine took), transformers on the same GPU at batch 256
#      (the other batches' ~30 s go to the kernel A/B), batched prefill.
#   5. decode_parts_b256.json, decode_parts_b64.json: the kernel A/B
#      (ab_decode_parts.py): one layer's decode attention per path
#      (decode_attention_paths: what ran; failed: what could not), fused vs
#      separate projections; rewritten after every repetition.
#   6. bench_sampling.json: top-k/top-p thresholds at vocab 152064, sort vs
#      bisection search (issue 24 point 4), batches 1 / 64 / 256.
#   7. bench_paged.json: the paged KV layout against the dense one at batches
#      1 / 64 / 256 (bench_paged.py --parts speed, bf16): generate and decode
#      tok/s, tokens identical, the attention paths each engine took (issue 24).
#   8. warm_start.json: init + warmup at batch 256 again in a new process with
#      the compilation cache the first run filled.
# run.log holds every stage's output. Exit status: 0 every stage complete,
# 1 wheels or imports failed, 3 a stage failed, was cut or was skipped. 8 files come back (the device
# tool returns at most 8); the compilation cache stays under /tmp, never under $OUT.
# Acceptance (issues 17, 24): batch 256 e2e_over_decode >= 0.75;
# decode_roofline_share >= 0.60 at 64 and 256.
set -u -o pipefail
DRY=0
for a in "$@"; do
  case "$a" in
    --dry-run|--tiny) DRY=1 ;;
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "gpu_check: unknown argument '$a' (use --dry-run)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
START=$SECONDS
BUDGET=${GPU_CHECK_BUDGET_S:-460}
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SUMMARY=$OUT/summary.txt
LOG=$OUT/run.log
: > "$SUMMARY"
: > "$LOG"
left() { echo $(( BUDGET - (SECONDS - START) )); }
say() { echo "[gpu_check +$((SECONDS - START))s] $*" | tee -a "$SUMMARY"; }
die() { echo "gpu_check: $*" | tee -a "$SUMMARY" >&2; exit 1; }

if [ "$DRY" = 1 ]; then
  export JAX_PLATFORMS=cpu
  CACHE=$(mktemp -d /tmp/rstar_gpu_check_dry.XXXXXX)
  MODEL=configs/models/tiny.yaml DTYPE=float32 B=2 HF_B=2 BIG=2 SMALL=1 VOCAB=4096 SAMPLE_B=1,2
  ENGINE=(--prompt 16 --new 8 --steps-per-call 4 --prefill-chunk 16 --prefill-tokens 64 --prefill-rows 1,2)
  PARTS=(--cache 64 --positions 16,48 --reps 2)
  PAGED_B=1,2 PAGED_REPS=1
else
  CACHE=/tmp/rstar_gpu_check_cache
  MODEL=configs/models/qwen2.5-math-1.5b.yaml DTYPE=bfloat16 B=1,64,256 HF_B=256 BIG=256 SMALL=64 VOCAB=152064 SAMPLE_B=1,64,256
  ENGINE=(--prompt 256 --new 128 --steps-per-call 8 --prefill-chunk 256 --prefill-tokens 8192 --prefill-rows 1,4,16)
  PARTS=(--cache 512 --positions 256,384 --reps 10)
  PAGED_B=1,64,256 PAGED_REPS=2
fi
export PYTHONPATH=$PWD
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # JAX and torch share the card
export JAX_COMPILATION_CACHE_DIR=$CACHE
export PYTHONUNBUFFERED=1
say "start: $([ "$DRY" = 1 ] && echo 'dry run (tiny, CPU)' || echo 'full'); budget ${BUDGET}s; out $OUT; cache $CACHE"

# 1. wheels
shopt -s nullglob
WHEELS=(.whl/*.whl)
if [ "${#WHEELS[@]}" -eq 0 ]; then
  say "wheels: none in .whl/ (bash benchmarks/fetch_gpu_wheels.sh fetches them); using what is installed"
elif [ "$DRY" = 1 ]; then
  say "wheels: dry run, ${#WHEELS[@]} in .whl/ not installed"
else
  say "wheels: installing ${#WHEELS[@]} into $($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  # The image's python3 is a venv; the variable only matters (and is only read) where
  # a system Python is marked externally managed.
  PIP_BREAK_SYSTEM_PACKAGES=1 $PY -m pip install --no-index --no-deps --no-compile --quiet \
    --disable-pip-version-check "${WHEELS[@]}" \
    >> "$LOG" 2>&1 || die "pip install of .whl/*.whl failed: $(grep -m1 -E 'ERROR|Error' "$LOG" | cut -c1-200) (see run.log)"
fi

# 2. imports: one line naming the first that fails
$PY - >> "$LOG" 2>&1 <<'EOF' || die "import check failed: $(tail -n 1 "$LOG" | cut -c1-240)"
import importlib, sys
# What the image lacks first (fails fast), then what it has, then ours.
for name in ("omegaconf", "math_verify", "latex2sympy2_extended", "antlr4", "grain", "tensorflow_datasets",
             "array_record", "jax", "flax", "optax", "orbax.checkpoint", "transformers", "tokenizers", "torch",
             "rstar_jax.inference", "rstar_jax.models", "rstar_jax.execution.grading", "rstar_jax.training.pipeline",
             "rstar_jax.data.benchmarks", "rstar_jax.data.tfds_builders.rstar_benchmark"):
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - the one line says which and why
        print(f"cannot import {name}: {type(e).__name__}: {e}".replace("\n", " "))
        sys.exit(1)
print("imports ok")
EOF
say "imports: ok"

# 3. the card and versions
{
  if command -v nvidia-smi > /dev/null; then nvidia-smi -L 2>&1; else echo "no nvidia-smi"; fi
  $PY -c "import jax, sys; print('python', sys.version.split()[0], 'jax', jax.__version__, jax.devices())" 2>&1
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)" 2>&1
} | tee -a "$SUMMARY"

FAILED=""
# Runs one stage under the deadline, its output appended to run.log.
stage() {  # stage NAME RESERVE_S CMD...: cut RESERVE_S before the deadline
  local name=$1 reserve=$2; shift 2
  local t=$(( $(left) - reserve ))
  if [ "$t" -lt 20 ]; then say "$name: skipped, $(left)s left"; FAILED="$FAILED $name(skipped)"; return 1; fi
  say "$name: running (up to ${t}s)"
  echo "===== $name" >> "$LOG"
  timeout --signal=INT --kill-after=10 "$t" "$@" >> "$LOG" 2>&1
  local rc=$?
  say "$name: rc=$rc$([ $rc = 124 ] && echo ' (cut at the deadline; figures so far kept)')"
  [ $rc = 0 ] || FAILED="$FAILED $name"
  return $rc
}
# One line from a JSON file: the attention paths and headline figures.
report() {  # report FILE KIND
  $PY - "$1" "$2" <<'EOF' 2>&1 | tee -a "$SUMMARY"
import json, sys
path, kind = sys.argv[1:]
try:
    d = json.load(open(path))
except Exception as e:  # noqa: BLE001
    print(f"  {path.rsplit('/', 1)[-1]}: no figures ({type(e).__name__})"); sys.exit(0)
f = lambda v: round(v, 3) if isinstance(v, float) else v  # noqa: E731
r = lambda x: {k: f(v) for k, v in x.items()} if isinstance(x, dict) else f(x)  # noqa: E731
if kind == "engine":
    paths = {b: w.get("decode_attention", "not reported") for b, w in d.get("warmup_report", {}).items()}
    print(f"  attention path (engine, per batch): {json.dumps(paths)}")
    for key in ("tokens_per_s", "decode_tokens_per_s", "e2e_over_decode", "decode_roofline_share", "warmup_s"):
        print(f"  {key}: {r(d.get(key, '-'))}")
    print(f"  init_s: {r(d.get('init_s', '-'))}; machine: {r(d.get('machine', '-'))}; "
          f"batched_prefill_speedup: {r(d.get('batched_prefill_speedup', '-'))}")
elif kind == "parts":
    print(f"  attention paths run: {json.dumps(d.get('decode_attention_paths'))}; failed: {json.dumps(d.get('failed'))}")
    for name, row in d.get("groups", {}).get("attention", {}).items():
        print(f"  attention {name}: {row['wall_ms']} ms wall, x{row['speedup_wall']} vs full ({d.get('reps')} reps)")
elif kind == "paged":
    for b, row in d.get("speed_paged_over_dense", {}).items():
        paths = d.get("attention_paths", {}).get(b, {})
        print(f"  batch {b}: paged/dense generate x{row['generate']:.2f}, decode x{row['decode']:.2f}, "
              f"tokens identical {d.get('speed_tokens_identical', {}).get(b)}, paths {paths}")
elif kind == "sampling":
    for b, row in d.get("batches", {}).items():
        print(f"  batch {b}: sorted {row['sorted_s'] * 1e3:.2f} ms, search {row['search_s'] * 1e3:.2f} ms, "
              f"sorted/search {row['sorted_over_search']:.1f}x")
EOF
}

# 4. the engine
stage bench_engine 140 $PY benchmarks/bench_engine.py --model "$MODEL" --dtype "$DTYPE" "${ENGINE[@]}" \
  --batches "$B" --hf-batches "$HF_B" --cache-dir "$CACHE" --out "$OUT/bench_engine.json"
report "$OUT/bench_engine.json" engine
# 5. the kernel A/B
for b in "$BIG" "$SMALL"; do
  stage "decode_parts_b$b" 60 $PY benchmarks/ab_decode_parts.py --model "$MODEL" --dtype "$DTYPE" --batch "$b" \
    "${PARTS[@]}" --out "$OUT/decode_parts_b$b.json"
  report "$OUT/decode_parts_b$b.json" parts
done
# 6. sampling thresholds
stage bench_sampling 45 $PY benchmarks/bench_sampling.py --vocab "$VOCAB" --batches "$SAMPLE_B" \
  --out "$OUT/bench_sampling.json"
report "$OUT/bench_sampling.json" sampling
# 7. the paged KV layout against the dense one
stage bench_paged 30 $PY benchmarks/bench_paged.py --model "$MODEL" --dtype "$DTYPE" --parts speed \
  --batches "$PAGED_B" --reps "$PAGED_REPS" --out "$OUT/bench_paged.json"
report "$OUT/bench_paged.json" paged
# 8. warm start
stage warm_start 5 $PY benchmarks/bench_engine.py --model "$MODEL" --dtype "$DTYPE" "${ENGINE[@]}" \
  --batches "$BIG" --skip-hf --skip-prefill-ab --cache-dir "$CACHE" --out "$OUT/warm_start.json"
report "$OUT/warm_start.json" engine
rm -f "$OUT"/*.tmp
[ "$DRY" = 1 ] && rm -rf "$CACHE"
say "done in $((SECONDS - START))s; files: $(cd "$OUT" && ls | tr '\n' ' ')"
[ -z "$FAILED" ] || { say "not complete:$FAILED"; exit 3; }
