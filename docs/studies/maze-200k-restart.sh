#!/bin/bash
# RESULTS.md, Experiment 4, the main study: the 8 runs that had not finished when the first 22 runs' folders were lost
# (homogeneous and RNN seeds 7-9, plastic seeds 8-9), at the study's commit and settings, one run per command, as two
# drivers side by side (homogeneous 7-9 in runs/study-200k; plastic 8-9, then RNN 7-9 in runs/study-200k-b).
# After each run, main's code writes the stability table of the restarted runs and, for plastic and homogeneous, the
# run's lesion evaluation into docs/results/maze/study-200k/restart/ of this repository, to be committed (main needs
# `make install`). Resumable: run it again to go on; `--status` (alone) shows progress.
# Score: examples/maze_study_report.py (RESULTS.md).
source "$(dirname "$0")/worktree.sh"
study_worktree b67974a
EXPORT=$REPO/docs/results/maze/study-200k/restart
common=(--timesteps 50000000 --jobs 1 --score heldout_curve --heldout-freq 5000000 --heldout-episodes 300
        -params "policy_kwargs:{hidden_size: 200, rule: oja}" learning_rate:0.0003 max_grad_norm:4.0 eta_lr_scale:0.1)
mkdir -p runs/study-200k runs/study-200k-b "$EXPORT/lesion"

export_run() {  # CONDITION SEED FOLDER
  "$REPO/.venv/bin/python" "$REPO/examples/maze_stability.py" runs/study-200k runs/study-200k-b --out "$EXPORT" \
    > /dev/null || return 1
  local lesion=$EXPORT/lesion/${1}_seed_$2.json
  if [ "$1" != rnn ] && [ ! -e "$lesion" ]; then
    "$REPO/.venv/bin/plastic-rl" evaluate -f "runs/$3/$1/seed_$2/train" --n-episodes 300 --no-random --lesion \
      --threads 1 --out "$lesion" > /dev/null || return 1
    sed -i "s#$PWD/##g" "$lesion" || return 1
    rm -f "${lesion%.json}_episodes.csv"
  fi
  echo "$(date -u '+%F %H:%M') exported $1 seed $2"
}

one() {  # CONDITION SEED FOLDER
  plastic-rl experiment maze --conditions "$1" --first-seed "$2" --seeds 1 "${common[@]}" -f "runs/$3" \
    && export_run "$1" "$2" "$3"
}

if [ "$*" = --status ]; then
  plastic-rl experiment maze --conditions homogeneous --first-seed 7 --seeds 3 "${common[@]}" -f runs/study-200k --status
  plastic-rl experiment maze --conditions plastic --first-seed 8 --seeds 2 "${common[@]}" -f runs/study-200k-b --status
  plastic-rl experiment maze --conditions rnn --first-seed 7 --seeds 3 "${common[@]}" -f runs/study-200k-b --status
  exit 0
fi
{ one homogeneous 7 study-200k && one homogeneous 8 study-200k && one homogeneous 9 study-200k; } & first=$!
{ one plastic 8 study-200k-b && one plastic 9 study-200k-b && one rnn 7 study-200k-b && one rnn 8 study-200k-b \
  && one rnn 9 study-200k-b; } & second=$!
status=0
wait "$first" || status=$?
wait "$second" || status=$?
exit "$status"
