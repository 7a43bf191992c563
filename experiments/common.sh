#!/usr/bin/env bash
# Shared by the per-round launch scripts (sourced, not run): checks what a run
# needs and runs one round of `rstar-jax evolve` on this host. Every host of a
# pod slice runs the same command; jax.distributed.initialize joins them.
# Needs: RUN_DIR (storage every host sees), MODEL_DIR (HF dir of the base
# model), TRAIN_PROBLEMS (JSONL of training problems with gold answers),
# TEST_PROBLEMS (JSONL, e.g. MATH500). Optional: BOOTSTRAP_DIR (round 1 policy),
# RSTAR (the rstar-jax executable), extra key=value overrides as arguments.
set -euo pipefail
: "${RUN_DIR:?set RUN_DIR to a directory every host sees}"
: "${MODEL_DIR:?set MODEL_DIR to the base model HF directory}"
: "${TRAIN_PROBLEMS:?set TRAIN_PROBLEMS to the training problems JSONL}"
: "${TEST_PROBLEMS:?set TEST_PROBLEMS to the held-out problems JSONL}"
RSTAR="${RSTAR:-rstar-jax}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."  # config paths are relative to the repo root

run_round() {  # run_round CONFIG ROUND [overrides...]
  local config="$1" round="$2"
  shift 2
  local extra=() only="round${round}"
  if [[ "$round" == 1 ]]; then only="round0,round1"; fi  # round 0: the base model's greedy eval
  only="${RSTAR_ONLY:-$only}"
  if [[ -n "${BOOTSTRAP_DIR:-}" ]]; then extra+=("evolve.bootstrap_policy=${BOOTSTRAP_DIR}"); fi
  "$RSTAR" evolve --config "$config" --out "$RUN_DIR" --only "$only" \
    "evolve.base_policy=${MODEL_DIR}" "model.hf_dir=${MODEL_DIR}" \
    data.source=jsonl "data.path=${TRAIN_PROBLEMS}" "data.test_path=${TEST_PROBLEMS}" \
    "${extra[@]}" "$@"
}
