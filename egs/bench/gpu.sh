#!/usr/bin/env bash
# Issue 12's toolkit comparison on a lent GPU machine, in one command that the device tool runs from the
# repository root (README, "On a GPU machine"):
#
#   bash egs/bench/gpu.sh --out "$OUT" [--bases "B1 B2 ..."] [--iters_per_epoch 500] [--max_epoch 15]
#        [--synthetic_size bench] [--nj 16] [--ngpu 1] [--workdir egs/bench] [--setup true] [--dry_run false]
#
# 1. local/setup_gpu.sh: the Python stack and the synthesisers from .gpu/ (--setup false: use the
#    environment that path.sh finds, e.g. to try the script on a CPU machine)
# 2. each base config derived at iters_per_epoch x max_epoch updates by egs/bench/run.sh's derivation
#    (conf_generated/<base>_bench_gpu_u<updates>.yaml: the base's warm-up, decay to the new last update)
# 3. ../../run.sh stages 0-6 in --workdir: the corpus, features and tokens (--nj jobs), every model trained
#    side by side on the one GPU, decoded (beam 4, batch 1, on the CPUs) and scored with paired tests
#    against the first base (exp/RESULTS.md, exp/summary.json, exp/plots)
# Defaults: the dense model and ESPnet's contextual block transformer at 670 ms at the bench's full
# 7,500 updates, which the 2-core CPU machine cannot afford for the transformer (4-5.5 hours).
# What comes back is under --out: gpu.log and a copy of exp/ without checkpoints, dumps or tensorboard
# (configs, train.log, decodes and scores, RESULTS.md, summary.json, plots), refreshed every 30 s so that a
# run cut short by the device's time limit still returns what it had.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (${0##*/}:${BASH_LINENO[0]}) $*" >&2; }

out=""
bases="conf/train_dense.yaml conf/tuning/train_contextual_block_transformer.yaml"
iters_per_epoch=500
max_epoch=15
synthetic_size=bench
nj=$(nproc)
ngpu=1
workdir=egs/bench
setup=true
dry_run=false
invocation="$0 $*"
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 1; }
  case "$1" in
    --out) out=$2 ;;
    --bases) bases=$2 ;;
    --iters_per_epoch) iters_per_epoch=$2 ;;
    --max_epoch) max_epoch=$2 ;;
    --synthetic_size) synthetic_size=$2 ;;
    --nj) nj=$2 ;;
    --ngpu) ngpu=$2 ;;
    --workdir) workdir=$2 ;;
    --setup) setup=$2 ;;
    --dry_run) dry_run=$2 ;;
    *) echo "$0: unknown option $1 (see the header)" >&2; exit 1 ;;
  esac
  shift 2
done
[ -n "${out}" ] || { echo "$0: --out DIR is required (on the device: --out \"\$OUT\")" >&2; exit 1; }
mkdir -p "${out}" "${workdir}"
out=$(cd "${out}" && pwd)
work=$(cd "${workdir}" && pwd)
exec > >(tee -a "${out}/gpu.log") 2>&1
log "command: ${invocation}"

if [ "${setup}" = true ]; then
  ./local/setup_gpu.sh
fi
updates=$((iters_per_epoch * max_epoch))
configs=()
for base in ${bases}; do  # a space-separated list of configs in the repository
  [ -f "${base}" ] || { echo "$0: --bases: no such training config ${base}" >&2; exit 1; }
  case "${base}" in /*) ;; *) base=${repo}/${base} ;; esac
  egs/bench/run.sh --base "${base}" --iters_per_epoch "${iters_per_epoch}" --max_epoch "${max_epoch}" \
    --variant "gpu_u${updates}" --dry_run true
  configs+=("${repo}/egs/bench/conf_generated/$(basename "${base}" .yaml)_bench_gpu_u${updates}.yaml")
done
command=("${repo}/run.sh" --synthetic_size "${synthetic_size}" --nj "${nj}" --ngpu "${ngpu}" --train_config "${configs[*]}")
if [ "${dry_run}" = true ]; then
  echo "would run in ${work}: ${command[*]}"
  exit 0
fi

copy_back() {  # the small files of exp/ (no checkpoints, features or tensorboard) -> ${out}/exp
  [ -d "${work}/exp" ] || return 0
  (cd "${work}" && find exp -type f -size -2M ! -name '*.pth' ! -name '*.ark' ! -path '*/tensorboard/*' \
    -exec cp --parents -t "${out}" {} +) || log "copying exp/ to ${out} failed (will retry)"
}
(while sleep 30; do copy_back; done) &
copier=$!
trap 'kill "${copier}" 2>/dev/null || true; copy_back' EXIT
start=$(date +%s)
(cd "${work}" && "${command[@]}")
log "all stages done in $(( $(date +%s) - start )) s"
copy_back
[ -f "${out}/exp/RESULTS.md" ] && cat "${out}/exp/RESULTS.md"
