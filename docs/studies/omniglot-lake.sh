#!/bin/bash
# RESULTS.md, Experiment 3, the Lake et al. split (background alphabets for training, evaluation alphabets for test):
# the README recipe (plastic head) and a Prototypical Network at the same steps, 5-way 1-shot, and the plastic head
# trained 20-way (batch 9), seeds 0-2, then each scored on 1,000 test episodes. About 2 CPU-hours. Resumable.
source "$(dirname "$0")/worktree.sh"
study_worktree 56956af
recipe=(--embedding conv4 --queries 15 --steps 1400 --learning-rate 0.002 --learning-rate-schedule cosine
        --threads 1 --seeds 3 --split lake --data-dir "$DATA" --eval-interval 100 --eval-episodes 300 --jobs 2)
plastic=(--condition-set plastic normalize_features true --condition-set plastic alpha_init 10)
plastic-rl experiment omniglot --conditions plastic prototypical "${plastic[@]}" "${recipe[@]}" --batch-size 16 \
  -f runs/lake-5way "$@"
plastic-rl experiment omniglot --conditions plastic "${plastic[@]}" "${recipe[@]}" --ways 20 --batch-size 9 \
  -f runs/lake-20way "$@"
[ "${1:-}" = --status ] && exit 0
python examples/omniglot_summary.py runs/lake-5way/*/seed_* runs/lake-20way/*/seed_* --episodes 1000 \
  --settings 5x1 20x1 --out runs/lake-summary
