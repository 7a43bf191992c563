#!/usr/bin/env bash
# Round 3 of rStar-Math self-evolution on one host with 8 GPUs (pip install -e '.[cuda]').
# Runs: PPM-augmented MCTS (round-2 PPM initial values), 16 x 8.
# Produces: $RUN_DIR/round_3/{problems,search,extract,sft,ppm,eval}/ (each with manifest.json)
#   and an updated $RUN_DIR/report.{md,json}; about 3-4 days (estimate).
# Needs: RUN_DIR, MODEL_DIR (HF dir of Qwen2.5-Math-1.5B), TRAIN_PROBLEMS, TEST_PROBLEMS, and round 2 finished in RUN_DIR.
# Rerun the same script to resume; add key=value overrides as arguments,
# or --only-style parts with RSTAR_ONLY (e.g. RSTAR_ONLY=round3.search).
source "$(dirname "$0")/../common.sh"
run_round experiments/gpu-8/evolve.yaml 3 "$@"
