#!/usr/bin/env bash
# Install everything the project needs on a fresh Debian machine with Python 3.11:
# apt packages, a virtual environment at .venv (git-ignored), the pinned Python stack
# and this package (editable). Idempotent: a second run checks and returns in seconds.
set -euo pipefail
log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (setup) $*" >&2; }

cd "$(dirname "$0")/.."
repo=$(pwd)
venv="${repo}/.venv"
python=${PYTHON:-python3.11}
command -v "${python}" >/dev/null 2>&1 || python=python3

# 1. System packages: espeak-ng, flite and festival (with three English voices) synthesise the
#    offline corpus, flac/sox handle audio, g++ builds pyworld (an ESPnet dependency) from source;
#    slurm-wlm and munge run the tests' single-node Slurm cluster (the tests start their own daemons).
apt_pkgs=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flac sox libsndfile1 g++
  slurm-wlm munge)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "${p}" 2>/dev/null | grep -q "install ok installed" || missing+=("${p}")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd=sudo
  ${sudo_cmd} apt-get update -qq
  DEBIAN_FRONTEND=noninteractive ${sudo_cmd} apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. Virtual environment. The stamp records the hash of pyproject.toml so that an
#    edited dependency list reinstalls, and an unchanged one costs nothing.
stamp="${venv}/.espnet_amortized.stamp"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${want}" ] && "${venv}/bin/python" -c "import espnet_amortized" 2>/dev/null; then
  log "environment up to date (${venv})"
else
  [ -x "${venv}/bin/python" ] || { log "creating ${venv}"; "${python}" -m venv "${venv}"; }
  # pip 26.3 refuses ESPnet's direct-URL dependency ci_sdr.
  "${venv}/bin/python" -m pip install -q "pip<26.3" "setuptools<74" wheel
  log "installing the pinned stack (first run: several minutes, ~3 GB of wheels)"
  "${venv}/bin/python" -m pip install -q -e ".[test]"
  "${venv}/bin/python" -m pip check
  echo "${want}" > "${stamp}"
fi

# 3. ESPnet's import makes nltk try to download data (g2p_en); two valid empty zips
#    keep it quiet offline. path.sh points NLTK_DATA here.
nltk="${venv}/nltk_data"
if [ ! -f "${nltk}/corpora/cmudict.zip" ]; then
  "${venv}/bin/python" - "${nltk}" <<'PY'
import pathlib, sys, zipfile
root = pathlib.Path(sys.argv[1])
for rel in ("taggers/averaged_perceptron_tagger_eng.zip", "corpora/cmudict.zip"):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    zipfile.ZipFile(path, "w").close()
PY
fi
log "done: . path.sh puts .venv on PATH"
