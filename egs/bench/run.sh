#!/usr/bin/env bash
# Issue 11 bench: the dense streaming baseline on corpus v2 at size "bench" (6,000 training utterances
# before speed perturbation, 600 per test set), trained longer than the default run; issue 12: any other
# training config (--base, e.g. a toolkit baseline) on the same data and schedule.
#
#   egs/bench/run.sh [--base ../../conf/train_dense.yaml] [--iters_per_epoch 500] [--max_epoch 15]
#                    [--variant NAME --set KEY=VALUE ... [--allow_new KEY ...]]
#                    [--publish false] [--dry_run false] [any ../../run.sh option]
#
# Derives conf_generated/train_dense_bench.yaml from conf/train_dense.yaml (another --base B:
# conf_generated/B_bench.yaml, trained into exp/asr_B_bench) with
# iters_per_epoch x max_epoch updates (the base's warm-up to the same peak, then its linear decay
# to 1% of the peak at the new last update); an ablation names itself with --variant and changes
# the base with --set (local/derive_config.py's overrides, e.g. --set encoder_conf.dropout_rate=0.1),
# written as conf_generated/train_dense_bench_NAME.yaml and trained into exp/asr_dense_bench_NAME
# (two side by side: the corpus first with --stop_stage 3, then each with --stage 4, the second once
# exp/asr_stats_*/.done exists, since they share it). It runs ../../run.sh stages 0-6 with it on the bench corpus
# (beam-4 decoding of test_clean and test_other, conf/decode.yaml) and writes exp/RESULTS.md and
# exp/summary.json. --publish true then copies exp/summary.json to ../sweep/results/summary.json, the
# committed summary (RESULTS.md cites it); a different file already there is kept as summary.json.bak.
# --dry_run true writes and checks the config and prints the run.sh command without running it.
# The default (7,500 updates) took 127 minutes of training on one core of the 2-core development VM
# with one or two other jobs beside it (24.1% test-clean, 42.3% test-other; RESULTS.md, "Bench").
set -euo pipefail
cd "$(dirname "$0")"
log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (${0##*/}:${BASH_LINENO[0]}) $*" >&2; }
repo=../..
iters_per_epoch=500
max_epoch=15
publish=false
dry_run=false
variant=""
base=${repo}/conf/train_dense.yaml
overrides=()
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --base) base=$2; shift 2 ;;
    --iters_per_epoch) iters_per_epoch=$2; shift 2 ;;
    --max_epoch) max_epoch=$2; shift 2 ;;
    --publish) publish=$2; shift 2 ;;
    --dry_run) dry_run=$2; shift 2 ;;
    --variant) variant=$2; shift 2 ;;
    --set) overrides+=(--set "$2"); shift 2 ;;
    --allow_new) overrides+=(--allow_new "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
# shellcheck source=SCRIPTDIR/../../path.sh
. "${repo}/path.sh"

updates=$((iters_per_epoch * max_epoch))
[ -f "${base}" ] || { echo "$0: --base ${base}: no such training config" >&2; exit 1; }
base_name=$(basename "${base}" .yaml)
config=conf_generated/${base_name}_bench${variant:+_${variant}}.yaml
if [ -z "${variant}" ] && [ "${#overrides[@]}" -gt 0 ]; then
  echo "$0: --set/--allow_new change the bench config: name the ablation with --variant" >&2; exit 1
fi
if [ -n "${variant}" ] && [ "${publish}" = true ]; then
  echo "$0: --publish true with --variant ${variant}: an ablation is not the bench summary" >&2; exit 1
fi
if [ "${base_name}" != train_dense ] && [ "${publish}" = true ]; then
  echo "$0: --publish true with --base ${base}: the bench summary is the dense baseline's" >&2; exit 1
fi
# The base's schedule [0, warm-up, last update]: keep its warm-up, move its last point to the new end.
warmup=$(python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["scheduler_conf"]["warmup_steps_list"][1])' "${base}")
python "${repo}/local/derive_config.py" --base "${base}" --out "${config}" \
  --set "num_iters_per_epoch=${iters_per_epoch}" --set "max_epoch=${max_epoch}" \
  --set "scheduler_conf.warmup_steps_list=[0, ${warmup}, ${updates}]" ${overrides[@]+"${overrides[@]}"}
log "${base_name} on the bench corpus: ${updates} updates (${config})"
command=("${repo}/run.sh" --synthetic_size bench --train_config "${config}" "${args[@]}")
if [ "${dry_run}" = true ]; then
  python -m espnet_amortized.recipe.espnet_jobs check_config --config "${config}"
  echo "would run: ${command[*]}"
  exit 0
fi
"${command[@]}"
if [ "${publish}" = true ]; then
  target=../sweep/results/summary.json
  if [ -f "${target}" ] && ! cmp -s exp/summary.json "${target}"; then
    log "keeping the previous ${target} as ${target}.bak"
    cp "${target}" "${target}.bak"
  fi
  cp exp/summary.json "${target}"
  log "published exp/summary.json -> ${target}"
fi
log "done: exp/RESULTS.md, exp/summary.json"
