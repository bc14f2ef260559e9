# shellcheck shell=bash
# Environment for the recipe: the project's virtual environment and the empty
# nltk data that keeps ESPnet's import from trying to download.
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ ! -x "${repo_root}/.venv/bin/python" ]; then
  echo "path.sh: ${repo_root}/.venv is missing: run ./local/setup.sh" >&2
  return 1
fi
# local/ holds the job launchers named in cmd.sh (run.py, slurm.py).
export PATH="${repo_root}/.venv/bin:${repo_root}/local:${PATH}"
export NLTK_DATA="${repo_root}/.venv/nltk_data"
export PYTHONUNBUFFERED=1
