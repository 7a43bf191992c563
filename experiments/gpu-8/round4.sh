#!/usr/bin/env bash
# Round 4 of rStar-Math self-evolution on one host with 8 GPUs (pip install -e '.[cuda]').
# Runs: PPM-augmented MCTS on the hardest problems (64, then up to 128 rollouts for unsolved problems, x 16 candidates, 2 seeds).
# Produces: $RUN_DIR/round_4/{problems,search,extract,sft,ppm,eval}/ (each with manifest.json)
#   and an updated $RUN_DIR/report.{md,json}; about a week (estimate).
# Needs: RUN_DIR, MODEL_DIR (HF dir of Qwen2.5-Math-1.5B), TRAIN_PROBLEMS, TEST_PROBLEMS, and round 3 finished in RUN_DIR.
# Rerun the same script to resume; add key=value overrides as arguments,
# or --only-style parts with RSTAR_ONLY (e.g. RSTAR_ONLY=round4.search).
source "$(dirname "$0")/../common.sh"
run_round experiments/gpu-8/evolve.yaml 4 "$@"
