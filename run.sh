#!/usr/bin/env bash
# Demo until the LibriSpeech recipe lands: a tiny espeak-ng corpus, an amortized
# T-T trained through ESPnet's trainer, decoded through ESPnet's inference.
#   ./run.sh [--stage N] [--stop_stage M] [--exp DIR]
set -euo pipefail
log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') ($(basename "$0"):${BASH_LINENO[0]}) $*" >&2; }

stage=0
stop_stage=100
exp=exp/demo
train_config=conf/tuning/train_amortized_demo.yaml
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop_stage) stop_stage=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --train_config) train_config=$2; shift 2 ;;
    *) echo "unknown option: $1" >&2; exit 1 ;;
  esac
done

cd "$(dirname "$0")"
[ -x .venv/bin/python ] || { echo "run ./local/setup.sh first" >&2; exit 1; }
export PATH="$PWD/.venv/bin:$PATH" NLTK_DATA="$PWD/.venv/nltk_data"
mkdir -p "${exp}"
echo "$0 $*" >> "${exp}/run.sh.cmd"

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ] && [ ! -f "${exp}/data/.done" ]; then
  log "stage 0: tiny espeak-ng corpus -> ${exp}/data"
  python local/make_tiny_corpus.py "${exp}/data" --repeat 4
  touch "${exp}/data/.done"
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
  log "stage 1: collect stats + train (${train_config}) -> ${exp}/model"
  python - "${exp}" "${train_config}" <<'PY'
import pathlib, sys
from espnet_amortized.recipe import espnet_jobs
exp, config = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
data = exp / "data"
stats = espnet_jobs.collect_stats(config, data, data, data / "tokens.txt", exp / "stats")
espnet_jobs.train(config, data, data, data / "tokens.txt", stats, exp / "model")
PY
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  log "stage 2: decode -> ${exp}/decode"
  python - "${exp}" <<'PY'
import pathlib, re, sys
import jiwer
from espnet_amortized.recipe import espnet_jobs
exp = pathlib.Path(sys.argv[1])
hyp_file = espnet_jobs.decode(exp / "model", exp / "data", exp / "decode", model_file="valid.loss.best.pth")
read = lambda p: dict((l.split(" ", 1) + [""])[:2] for l in p.read_text().splitlines())
ref, hyp = read(exp / "data" / "text"), read(hyp_file)
keys = sorted(ref)
wer = jiwer.wer([ref[k] for k in keys], [hyp.get(k, "") for k in keys])
log = (exp / "model" / "train.log").read_text()
ratio = re.findall(r"\[valid\].*?compute_ratio=([0-9.]+)", log)
print(f"demo: WER {100 * wer:.1f}% on {len(keys)} training utterances; valid compute_ratio {ratio[-1] if ratio else 'n/a'}")
PY
fi
log "done"
