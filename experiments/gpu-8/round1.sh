#!/usr/bin/env bash
# Round 1 of rStar-Math self-evolution on one host with 8 GPUs (pip install -e '.[cuda]').
# Runs: terminal-guided MCTS bootstrap (8 rollouts x 5 candidates, few-shot prompt), SFT and PPM from the base.
# Produces: $RUN_DIR/round_1/{problems,search,extract,sft,ppm,eval}/ (each with manifest.json)
#   and an updated $RUN_DIR/report.{md,json}; about a week (estimate).
# Needs: RUN_DIR, MODEL_DIR (HF dir of Qwen2.5-Math-1.5B), TRAIN_PROBLEMS, TEST_PROBLEMS.
# Rerun the same script to resume; add key=value overrides as arguments,
# or --only-style parts with RSTAR_ONLY (e.g. RSTAR_ONLY=round1.search).
source "$(dirname "$0")/../common.sh"
run_round experiments/gpu-8/evolve.yaml 1 "$@"
