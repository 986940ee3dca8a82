#!/bin/bash
# RESULTS.md, Experiment 4, the main study: the 8 runs that had not finished when the first 22 runs' folders were lost
# (homogeneous and RNN seeds 7-9, plastic seeds 8-9), at the study's commit and settings, as two drivers of one run
# each so that neither core waits for the other: homogeneous 7-9 in runs/study-200k, then plastic 8-9 and RNN 7-9 in
# runs/study-200k-b. Resumable: run it again to go on; `--status` shows progress.
# Score: examples/maze_study_report.py (RESULTS.md).
source "$(dirname "$0")/worktree.sh"
study_worktree b67974a
common=(--timesteps 50000000 --jobs 1 --score heldout_curve --heldout-freq 5000000 --heldout-episodes 300
        -params "policy_kwargs:{hidden_size: 200, rule: oja}" learning_rate:0.0003 max_grad_norm:4.0 eta_lr_scale:0.1)
first() { plastic-rl experiment maze --conditions homogeneous --first-seed 7 --seeds 3 "${common[@]}" -f runs/study-200k "$@"; }
second() {
  plastic-rl experiment maze --conditions plastic --first-seed 8 --seeds 2 "${common[@]}" -f runs/study-200k-b "$@"
  plastic-rl experiment maze --conditions rnn --first-seed 7 --seeds 3 "${common[@]}" -f runs/study-200k-b "$@"
}
if [ "${1:-}" = --status ]; then
  first "$@"; second "$@"
else
  first "$@" & second "$@" & wait
fi
