#!/bin/bash
# RESULTS.md, Experiment 4, the main study: the 8 runs that had not finished when the first 22 runs' folders were lost
# (homogeneous and RNN seeds 7-9, plastic seeds 8-9), at the study's commit and settings, in its order.
# Resumable: run it again to go on; `--status` shows progress. Score: examples/maze_study_report.py (RESULTS.md).
source "$(dirname "$0")/worktree.sh"
study_worktree b67974a
common=(--timesteps 50000000 --jobs 2 --score heldout_curve --heldout-freq 5000000 --heldout-episodes 300
        -params "policy_kwargs:{hidden_size: 200, rule: oja}" learning_rate:0.0003 max_grad_norm:4.0 eta_lr_scale:0.1
        -f runs/study-200k)
plastic-rl experiment maze --conditions homogeneous rnn --first-seed 7 --seeds 1 "${common[@]}" "$@"
plastic-rl experiment maze --conditions plastic homogeneous rnn --first-seed 8 --seeds 2 "${common[@]}" "$@"
