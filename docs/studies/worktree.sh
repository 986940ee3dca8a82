# Sourced by the study scripts beside it: `study_worktree COMMIT` makes (once) a git worktree of this repository
# at COMMIT in ../studies/COMMIT, with its own virtual environment and C++ kernel, and changes into it, so that a long
# study runs fixed code while main moves on. DATA is the data folder (PLASTIC_RL_DATA, else ../shared/data).
set -euo pipefail
REPO=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
DATA=$(realpath -m "${PLASTIC_RL_DATA:-$REPO/../shared/data}")
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy

study_worktree() {
  local commit=$1 folder
  folder=$(realpath -m "$REPO/../studies/$commit")
  if [ ! -d "$folder" ]; then
    git -C "$REPO" worktree prune  # a worktree registered on a machine that is gone
    git -C "$REPO" worktree add --detach "$folder" "$commit"
  fi
  cd "$folder"
  if [ ! -x .venv/bin/plastic-rl ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check torch==2.13.0 -e .
  fi
  .venv/bin/plastic-rl build-kernel > /dev/null
  PATH=$folder/.venv/bin:$PATH
}
