#!/usr/bin/env bash
# local/setup.sh's counterpart for the lent GPU machine, which has Python 3.12 with torch and torchaudio
# (the versions pyproject.toml pins) but no ESPnet, no synthesisers and no network. It needs .gpu/ in the
# checkout (../shared/gpu copied there, plus .gpu/synth.tar.xz from `python local/gpu_bundle.py pack`;
# README, "On a GPU machine") and builds what path.sh expects:
#   .venv/           a virtual environment over the image's Python (its torch visible), the wheels of
#                    .gpu/wheels in it, this checkout importable, the empty nltk data
#   .venv/bin/       the synthesisers of .gpu/synth.tar.xz (unpacked to .gpu/synth), checked by synthesising
# Idempotent: a second run checks and returns.
set -euo pipefail
log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (setup_gpu) $*" >&2; }

cd "$(dirname "$0")/.."
repo=$(pwd)
venv="${repo}/.venv"
python=${PYTHON:-python3}
for need in .gpu/wheels .gpu/nltk_stub .gpu/synth.tar.xz; do
  [ -e "${need}" ] || { echo "$0: ${need} is missing: see README, 'On a GPU machine'" >&2; exit 1; }
done

if [ ! -x "${venv}/bin/python" ]; then
  log "creating ${venv} over $(command -v "${python}") (system site packages: the image's torch)"
  "${python}" -m venv --system-site-packages --without-pip "${venv}"
fi
site=$("${venv}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if ! "${venv}/bin/python" -c "import espnet2, espnet_amortized" 2>/dev/null; then
  log "installing $(find .gpu/wheels -name '*.whl' | wc -l) wheels into ${site}"
  "${python}" -m pip install -q --no-index --no-deps --no-compile --target "${site}" .gpu/wheels/*.whl
  echo "${repo}" > "${site}/espnet_amortized.pth"
fi
"${venv}/bin/python" - <<'PY'
import sys
try:  # fail here, not in stage 4, when the stack is incomplete
    import torch, torchaudio  # noqa: F401
except ImportError as error:
    sys.exit(f"setup_gpu: {error}: the GPU image's Python should have torch and torchaudio "
             f"(the versions pyproject.toml pins); PYTHON=... picks another interpreter")
import espnet, espnet_amortized  # noqa: F401
print(f"torch {torch.__version__} (CUDA {torch.cuda.is_available()}), espnet {espnet.__version__}")
PY
if [ ! -d "${venv}/nltk_data" ]; then
  cp -r .gpu/nltk_stub "${venv}/nltk_data"  # path.sh points NLTK_DATA here
fi

if [ ! -x .gpu/synth/bin/festival ]; then
  log "unpacking .gpu/synth.tar.xz"
  tar -xJf .gpu/synth.tar.xz -C .gpu
fi
for program in .gpu/synth/bin/*; do
  ln -sf "../../${program}" "${venv}/bin/"
done
"${venv}/bin/python" local/gpu_bundle.py check --dest .gpu/synth
log "done: . path.sh puts .venv on PATH"
