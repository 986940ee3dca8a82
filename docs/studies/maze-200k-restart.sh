#!/bin/bash
# RESULTS.md, Experiment 4, the main study: the 8 runs that had not finished when the first 22 runs' folders were lost
# (homogeneous and RNN seeds 7-9, plastic seeds 8-9), at the study's commit and settings, one run per command, as two
# drivers side by side (homogeneous 7-9 and RNN 9 in runs/study-200k; plastic 8-9 and RNN 7-8 in runs/study-200k-b).
# After each run, main's code writes its stability row (CONDITION_seed_N.csv) and, for plastic and homogeneous, its
# lesion evaluation (lesion/CONDITION_seed_N.json) into docs/results/maze/study-200k/restart/ of this repository, to
# be committed (main's virtual environment is made if missing); a run whose row is there is not run again on a
# machine without its folder.
# Resumable: run it again to go on; `--status` (alone) shows progress of the runs on this machine.
# Score: examples/maze_study_report.py (RESULTS.md).
source "$(dirname "$0")/worktree.sh"
study_worktree b67974a
EXPORT=$REPO/docs/results/maze/study-200k/restart
[ -x "$REPO/.venv/bin/plastic-rl" ] || make -C "$REPO" install  # main's code exports each run
common=(--timesteps 50000000 --jobs 1 --score heldout_curve --heldout-freq 5000000 --heldout-episodes 300
        -params "policy_kwargs:{hidden_size: 200, rule: oja}" learning_rate:0.0003 max_grad_norm:4.0 eta_lr_scale:0.1)
mkdir -p runs/study-200k runs/study-200k-b "$EXPORT/lesion"

export_run() {  # CONDITION SEED FOLDER: the run's stability row (its own table) and lesion evaluation
  local name=${1}_seed_$2 table
  table=$(mktemp -d)
  mkdir -p "$table/study-200k/$1/seed_$2/train"
  cp "runs/$3/$1/seed_$2/train/progress.csv" "$table/study-200k/$1/seed_$2/train/"
  "$REPO/.venv/bin/python" "$REPO/examples/maze_stability.py" "$table/study-200k" --out "$table" > /dev/null \
    && mv "$table/stability.csv" "$EXPORT/$name.csv" || return 1
  rm -rf "$table"
  if [ "$1" != rnn ] && [ ! -e "$EXPORT/lesion/$name.json" ]; then
    "$REPO/.venv/bin/plastic-rl" evaluate --model "runs/$3/$1/seed_$2/train/PlasticMaze-v0.zip" --n-episodes 300 \
      --no-random --lesion \
      --threads 1 --out "$EXPORT/lesion/$name.json" > /dev/null || return 1
    sed -i "s#$PWD/##g" "$EXPORT/lesion/$name.json" || return 1
    rm -f "$EXPORT/lesion/${name}_episodes.csv"
  fi
  echo "$(date -u '+%F %H:%M') exported $1 seed $2: commit $EXPORT"
}

one() {  # CONDITION SEED FOLDER
  if [ -e "$EXPORT/${1}_seed_$2.csv" ] && [ ! -e "runs/$3/$1/seed_$2/result.json" ]; then
    echo "$1 seed $2 finished on an earlier machine (its row is in $EXPORT): not run again"
    return 0
  fi
  plastic-rl experiment maze --conditions "$1" --first-seed "$2" --seeds 1 "${common[@]}" -f "runs/$3" \
    && export_run "$1" "$2" "$3"
}

if [ "$*" = --status ]; then
  plastic-rl experiment maze --conditions homogeneous --first-seed 7 --seeds 3 "${common[@]}" -f runs/study-200k --status
  plastic-rl experiment maze --conditions rnn --first-seed 9 --seeds 1 "${common[@]}" -f runs/study-200k --status
  plastic-rl experiment maze --conditions plastic --first-seed 8 --seeds 2 "${common[@]}" -f runs/study-200k-b --status
  plastic-rl experiment maze --conditions rnn --first-seed 7 --seeds 2 "${common[@]}" -f runs/study-200k-b --status
  exit 0
fi
# An RNN run takes about half as long as the others: four runs each.
{ one homogeneous 7 study-200k && one homogeneous 8 study-200k && one homogeneous 9 study-200k \
  && one rnn 9 study-200k; } & first=$!
{ one plastic 8 study-200k-b && one plastic 9 study-200k-b && one rnn 7 study-200k-b && one rnn 8 study-200k-b; } &
second=$!
status=0
wait "$first" || status=$?
wait "$second" || status=$?
exit "$status"
