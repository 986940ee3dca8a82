#!/bin/bash
# RESULTS.md, Experiment 2, scattered erasure: the README recipe trained at 25%, 50% and 75% of the pixels hidden at
# random, 4,000 episodes each, report seeds 0-2, scored on test images at its own fraction, then every network at every
# fraction beside the references (fig7). About 2 CPU-hours. Resumable; `--status` (first command only) shows progress.
source "$(dirname "$0")/worktree.sh"
study_worktree 56956af
plastic-rl experiment images --conditions plastic --degradation random_pixels --sweep degraded_fraction 0.25 0.5 0.75 \
  --seeds 3 --steps 500 --batch-size 8 --learning-rate 0.001 --eval-interval 25 --eval-episodes 32 \
  --checkpoint-interval 5 --jobs 2 --threads 1 --score test --data-dir "$DATA" -f runs/scattered "$@"
[ "${1:-}" = --status ] && exit 0
models=()
for fraction in 0.25 0.5 0.75; do
  for seed in 0 1 2; do
    models+=("trained at ${fraction}=runs/scattered/plastic__degraded_fraction=${fraction}/seed_${seed}/model.pt")
  done
done
plastic-rl report images --models "${models[@]}" --erasures 0.25 0.5 0.75 --episodes 1000 --threads 2 \
  --out runs/scattered/report
