#!/bin/bash
# RESULTS.md, Experiment 1, Figure 3 at the authors' setting: the RNN's and the LSTM's learning rates for batch 32, on
# tuning seeds 100-101 (20,000 episodes a run; rule fixed before they run: per condition, the learning rate with the
# lowest mean of each run's last three evaluations). About 1.3 CPU-hours. Resumable; `--status` shows progress.
source "$(dirname "$0")/worktree.sh"
study_worktree 56956af
plastic-rl experiment patterns --protocol comparison --conditions rnn lstm --batch-size 32 --steps 625 \
  --sweep learning_rate 3e-5 1e-4 3e-4 --condition-set lstm lstm_output clamped --lstm-hidden-size 2050 \
  --eval-interval 50 --eval-episodes 200 --reach 0.01 0.001 --seeds 2 --first-seed 100 --jobs 2 --threads 1 \
  -f runs/fig3-tuning "$@"
