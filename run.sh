#!/usr/bin/env bash
# Compute-amortized streaming Transformer-Transducer: LibriSpeech-layout corpus -> WER and compute tables.
#
#   ./run.sh [--stage N] [--stop_stage M] [options]     (./run.sh --help lists them)
#
# Stages (each guarded by --stage/--stop_stage, each safe to rerun: finished work
# has a .done marker and is skipped):
#   0 corpus        synthetic espeak-ng corpus (default) or LibriSpeech download
#   1 data prep     LibriSpeech layout -> data/<set>/ (wav.scp text utt2spk spk2utt utt2dur rejected.txt);
#                   speed perturbation of the training set -> data/<train_set>_sp/ (--speed_perturb_factors;
#                   stages 2-4 then use <train_set>_sp, the tokens its unperturbed text)
#   2 features      80-dim Kaldi fbank -> dump/fbank/<set>/ (ark/scp, feats_shape), global CMVN
#   3 tokens        sentencepiece -> data/token_list/bpe<nbpe>/ (bpe.model, tokens.txt)
#   4 training      ESPnet collect_stats + training, one exp/asr_<config>/ per --train_config
#   5 decoding      batch-1 decoding of every test set with compute and time statistics
#                   (--decode_mode streaming: chunk by chunk from the audio, with latency statistics;
#                   both modes take beam_size and score_norm from --decode_config; an asr_transducer
#                   model is decoded both ways offline, since only its streaming decode is at its latency)
#   6 scoring       WER per test set (score_wer/result.txt) with bootstrap intervals and paired tests
#                   against the first model, exp/RESULTS.md and exp/plots/ (Pareto, training curves,
#                   compute allocation); exp/RESULTS_streaming.md and exp/plots_streaming/ when streaming
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)  # scripts and configs; outputs go under the current folder
log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (${0##*/}:${BASH_LINENO[0]}) $*" >&2; }

# Options (--name value). Lists are space-separated in one argument.
stage=0
stop_stage=6
ngpu=0
nj=2                          # parallel jobs for synthesis, features and decoding
corpus=synthetic              # synthetic | librispeech
synthetic_size=default        # tiny | small | default | bench (see local/make_synthetic_librispeech.py)
librispeech_root=""           # an existing LibriSpeech/ folder (skips the download)
librispeech_subsets="train-clean-100 dev-clean test-clean test-other"
download_dir=downloads
train_set=train_clean_100
train_subsets=train-clean-100  # LibriSpeech subsets that make up train_set
speed_perturb_factors="0.9 1.0 1.1"  # speed perturbation of train_set (sox speed), as ESPnet's; empty: none
valid_set=dev_clean
test_sets="test_clean test_other"
train_config="conf/train_dense.yaml conf/train_amortized.yaml"  # relative to here or to the repository
decode_config=""              # empty: conf/decode.yaml offline, conf/decode_streaming.yaml streaming
decode_mode=offline           # offline (ESPnet beam search on whole utterances) | streaming (chunk by chunk, our beam search)
gate_thresholds=""            # decode-time gate thresholds, e.g. "0.3 0.5 0.7" (empty: each model's own)
compute_budgets=""            # decode-time whole-encoder budgets of budget-conditioned models, e.g. "0.25 0.35 0.5 0.7 1.0"
frozen_budgets=""             # budgets at which a budget-conditioned model is also decoded with every unit frozen to its
                              #   majority decision on valid_set at that budget (issue 13's static control), e.g. "0.35 0.6"
inference_model=valid.loss.ave.pth  # the checkpoint stages 5 and 6 decode and report, as asr.sh's --inference_asr_model;
                              #   another one (e.g. valid.loss.best.pth) decodes into exp/asr_*/decode_model_<name>/ and
                              #   reports as exp/RESULTS_model_<name>.md, beside the default's
plot_also=""                  # stage 6: committed summary.json files drawn in the Pareto plots too, e.g.
                              #   "egs/sweep/results/summary_toolkit_u2250.json" (its toolkit baselines) or FILE:ROLE,ROLE
nbpe=128
train_args=""                 # extra ESPnet options for every training, e.g. "--max_epoch 1"
train_jobs=0                  # trainings at once (0: all side by side)
train_procs=1                 # data-parallel processes per training on the CPU (gloo, torch.distributed.run); GPUs: --ngpu
datadir=data
expdir=exp
dumpdir=dump

options="stage stop_stage ngpu nj corpus synthetic_size librispeech_root librispeech_subsets download_dir
  train_set train_subsets speed_perturb_factors valid_set test_sets train_config decode_config decode_mode gate_thresholds compute_budgets frozen_budgets inference_model plot_also nbpe train_args train_jobs train_procs datadir expdir dumpdir"
invocation="$0 $*"  # before the options are consumed: exp/run.sh.cmd and summary.json record it
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      sed -n '2,/^set -euo/p' "$0" | sed '$d'
      for name in ${options}; do printf '  --%-20s %s\n' "${name}" "${!name}"; done
      exit 0 ;;
    --*)
      name=${1#--}
      # shellcheck disable=SC2086  # the option list is split into words on purpose
      case " $(echo ${options}) " in *" ${name} "*) ;; *) echo "$0: unknown option $1 (see --help)" >&2; exit 1 ;; esac
      [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 1; }
      printf -v "${name}" '%s' "$2"; shift 2 ;;
    *) echo "$0: unexpected argument $1 (see --help)" >&2; exit 1 ;;
  esac
done

# shellcheck source=path.sh
. "${repo}/path.sh"
# shellcheck source=cmd.sh
. "${repo}/cmd.sh"
mkdir -p "${expdir}"
echo "$(date '+%Y-%m-%dT%H:%M:%S') ${invocation}" >> "${expdir}/run.sh.cmd"
# Training configs: a space-separated list of files, found here or in the repository (whose own
# path may contain spaces).
# find_file OPTION PATH[:SUFFIX]: PATH here or in the repository (SUFFIX kept), or exit naming the option.
find_file() {
  if [ -f "${2%%:*}" ]; then echo "$2"
  elif [ -f "${repo}/${2%%:*}" ]; then echo "${repo}/$2"
  else echo "$0: --$1: ${2%%:*} is neither a file here nor in ${repo}" >&2; return 1; fi
}
configs=()
for config in ${train_config}; do configs+=("$(find_file train_config "${config}")") || exit 1; done
also=()  # --plot_also: FILE or FILE:ROLE,ROLE
for summary in ${plot_also}; do also+=("$(find_file plot_also "${summary}")") || exit 1; done
if [ -z "${decode_config}" ]; then
  decode_config=${repo}/conf/decode.yaml
  [ "${decode_mode}" = streaming ] && decode_config=${repo}/conf/decode_streaming.yaml
fi
run_stage() { [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ]; }
# Decodings of a checkpoint other than the default go to their own folder (local/report.py inference_model_tag).
inference_tag=""
if [ "${inference_model}" != valid.loss.ave.pth ]; then inference_tag=_model_${inference_model//\//_}; inference_tag=${inference_tag%.pth}; fi
# shellcheck disable=SC2086  # a list of factors, normalised to single spaces
speed_perturb_factors=$(echo ${speed_perturb_factors})
if [ -n "${speed_perturb_factors}" ] && run_stage 1; then
  # shellcheck disable=SC2086
  python "${repo}/local/speed_perturb.py" --check --factors ${speed_perturb_factors}
fi
if run_stage 4; then
  case "${train_procs}" in ''|*[!0-9]*|0) echo "$0: --train_procs must be a positive integer, got '${train_procs}'" >&2; exit 1 ;; esac
  if [ "${train_procs}" -gt 1 ] && [ "${ngpu}" -gt 0 ]; then
    echo "$0: --train_procs ${train_procs} is data parallelism on the CPU; with GPUs use --ngpu alone (one process per GPU)" >&2
    exit 1
  fi
  # Seconds now rather than a failed stage 4 after the corpus, features and statistics.
  log "checking the training configs: ${configs[*]}"
  # shellcheck disable=SC2086  # train_args: ESPnet options, split into words as in stage 4
  python -m espnet_amortized.recipe.espnet_jobs check_config --config "${configs[@]}" -- ${train_args}
fi
model_tag() { local name; name=$(basename "$1"); name=${name%.yaml}; echo "${name#train_}"; }

all_sets="${train_set} ${valid_set} ${test_sets}"
# The synthetic corpus lives in a folder per generator version (VERSION: version, size, seed).
synthetic_stamp=""; synthetic_dir=synthetic_${synthetic_size}
if [ "${corpus}" = synthetic ] && [ -z "${librispeech_root}" ]; then
  synthetic_stamp=$(python "${repo}/local/make_synthetic_librispeech.py" --print_version --size "${synthetic_size}" --out unused)
  synthetic_dir=synthetic_v$(python -c 'import json, sys; print(json.loads(sys.argv[1])["corpus_version"])' "${synthetic_stamp}")_${synthetic_size}
fi
# The training set of stages 2-4 (features, CMVN, collect_stats, training): the speed-perturbed copy if any.
train_sp_set=${train_set}; [ -n "${speed_perturb_factors}" ] && train_sp_set=${train_set}_sp
dump_sets="${train_sp_set} ${valid_set} ${test_sets}"
token_dir=${datadir}/token_list/bpe${nbpe}

if run_stage 0; then
  if [ -n "${librispeech_root}" ]; then
    log "stage 0: using the LibriSpeech copy at ${librispeech_root}"
  elif [ "${corpus}" = synthetic ]; then
    librispeech_root="${download_dir}/${synthetic_dir}/LibriSpeech"
    # A corpus of another generator version is never reused (nor overwritten: it has its own folder).
    if [ ! -f "${librispeech_root}/.done" ] || [ "$(cat "${librispeech_root}/VERSION" 2>/dev/null)" != "${synthetic_stamp}" ]; then
      log "stage 0: synthetic corpus (${synthetic_size}) -> ${librispeech_root}"
      python "${repo}/local/make_synthetic_librispeech.py" --out "${download_dir}/${synthetic_dir}" \
        --size "${synthetic_size}" --nj "${nj}"
      touch "${librispeech_root}/.done"
    fi
  else
    log "stage 0: LibriSpeech (${librispeech_subsets}) -> ${download_dir}"
    # shellcheck disable=SC2086  # a list of subset names
    python "${repo}/local/download_librispeech.py" --out "${download_dir}" --subsets ${librispeech_subsets}
    librispeech_root="${download_dir}/LibriSpeech"
  fi
fi
if [ -z "${librispeech_root}" ]; then
  if [ "${corpus}" = synthetic ]; then librispeech_root="${download_dir}/${synthetic_dir}/LibriSpeech";
  else librispeech_root="${download_dir}/LibriSpeech"; fi
fi
# What every data, feature and token marker records: a rerun after the corpus changed (another
# generator version, another --librispeech_root) stops instead of mixing old and new data.
corpus_id="${librispeech_root}"
[ -f "${librispeech_root}/VERSION" ] && corpus_id="${librispeech_root} $(cat "${librispeech_root}/VERSION")"
done_for_corpus() {  # marker -> 0: made from this corpus, 1: not made yet; another corpus: stop
  [ -f "$1" ] || return 1
  [ "$(cat "$1")" = "${corpus_id}" ] && return 0
  log "$1 was made from another corpus ($(head -c 300 "$1")); this run's corpus: ${corpus_id}." \
    "Remove ${datadir}, ${dumpdir} and ${expdir}/asr_stats_* (or pass other --datadir/--dumpdir/--expdir)"
  exit 1
}
mark_done() { echo "${corpus_id}" > "$1"; }

if run_stage 1; then
  for set in ${all_sets}; do
    if ! done_for_corpus "${datadir}/${set}/.done"; then
      subsets=${set//_/-}; [ "${set}" = "${train_set}" ] && subsets=${train_subsets}
      log "stage 1: data prep ${set} (${subsets})"
      # shellcheck disable=SC2086
      python "${repo}/local/data_prep.py" --librispeech_root "${librispeech_root}" --subset ${subsets} --out "${datadir}/${set}"
      mark_done "${datadir}/${set}/.done"
    fi
  done
  if [ -n "${speed_perturb_factors}" ]; then
    sp_dir="${datadir}/${train_sp_set}"
    if [ -f "${sp_dir}/.done" ] && [ "$(cat "${sp_dir}/factors")" != "${speed_perturb_factors}" ]; then
      log "stage 1: ${sp_dir} was made with speed factors '$(cat "${sp_dir}/factors")', not '${speed_perturb_factors}':" \
        "delete it and ${dumpdir}/fbank/${train_sp_set} to change them"
      exit 1
    fi
    if ! done_for_corpus "${sp_dir}/.done"; then
      log "stage 1: speed perturbation ${speed_perturb_factors} of ${train_set} -> ${sp_dir} (${nj} jobs)"
      # shellcheck disable=SC2086
      python "${repo}/local/speed_perturb.py" --data "${datadir}/${train_set}" --out "${sp_dir}" \
        --factors ${speed_perturb_factors} --nj "${nj}"
      mark_done "${sp_dir}/.done"
    fi
  fi
fi

if run_stage 2; then
  for set in ${dump_sets}; do
    out="${dumpdir}/fbank/${set}"
    if ! done_for_corpus "${out}/.done"; then
      log "stage 2: fbank ${set} (${nj} jobs)"
      features=(python "${repo}/local/features.py" --data "${datadir}/${set}" --out "${out}" --nj "${nj}")
      ${train_cmd} JOB=1:"${nj}" "${out}/log/fbank.JOB.log" "${features[@]}" --job JOB \
        || { log "stage 2: fbank ${set} failed: see ${out}/log/fbank.*.log"; exit 1; }
      cmvn=(); [ "${set}" = "${train_sp_set}" ] && cmvn=(--cmvn_out "${out}/cmvn.npz")
      ${train_cmd} "${out}/log/merge.log" "${features[@]}" --merge "${cmvn[@]}" \
        || { log "stage 2: merging fbank ${set} failed: see ${out}/log/merge.log"; exit 1; }
      mark_done "${out}/.done"
    fi
  done
fi

if run_stage 3 && ! done_for_corpus "${token_dir}/.done"; then
  log "stage 3: sentencepiece (${nbpe}) -> ${token_dir}"
  # The unperturbed transcripts (the perturbed copies repeat them).
  python "${repo}/local/tokens.py" --text "${datadir}/${train_set}/text" --nbpe "${nbpe}" --out "${token_dir}"
  mark_done "${token_dir}/.done"
fi

if run_stage 4; then
  sp_suffix=""; [ "${train_sp_set}" != "${train_set}" ] && sp_suffix=_sp  # as ESPnet's asr.sh
  # Each config's ESPnet task (asr, or asr_transducer for ESPnet's own streaming transducer) picks its entry
  # module and inputs: the fbank dump with our CMVN, or the audio with that task's front-end and statistics.
  data_args=(--train_dir "${dumpdir}/fbank/${train_sp_set}" --valid_dir "${dumpdir}/fbank/${valid_set}"
    --train_audio_dir "${datadir}/${train_sp_set}" --valid_audio_dir "${datadir}/${valid_set}"
    --fbank_cmvn "${dumpdir}/fbank/${train_sp_set}/cmvn.npz"
    --token_list "${token_dir}/tokens.txt" --token_type bpe --bpemodel "${token_dir}/bpe.model")
  stats_dir_of() { echo "${expdir}/$(python "${repo}/local/config_task.py" "$1")_stats_bpe${nbpe}${sp_suffix}"; }
  for config in "${configs[@]}"; do
    stats_dir=$(stats_dir_of "${config}")
    [ -f "${stats_dir}/.done" ] && continue
    log "stage 4: ESPnet collect_stats -> ${stats_dir}"
    ${train_cmd} --num_threads 2 "${stats_dir}/launch.log" \
      python -m espnet_amortized.recipe.espnet_jobs collect_stats --config "${config}" "${data_args[@]}" \
        --stats_dir "${stats_dir}"
    touch "${stats_dir}/.done"
  done
  pids=(); failed=0
  for config in "${configs[@]}"; do
    tag=$(model_tag "${config}")
    exp="${expdir}/asr_${tag}"
    [ -f "${exp}/.done" ] && continue
    log "stage 4: training ${tag} (${config}) -> ${exp}"
    mkdir -p "${exp}"
    # Models train side by side, one thread per process (ESPnet resumes an interrupted run); the job gets a
    # core per process: --train_procs on the CPU, one per GPU with --ngpu (as espnet2.bin.launch asks).
    # shellcheck disable=SC2086
    ${train_cmd} --num_threads "$(( ngpu > train_procs ? ngpu : train_procs ))" --gpu "${ngpu}" "${exp}/launch.log" \
      python -m espnet_amortized.recipe.espnet_jobs train --config "${config}" "${data_args[@]}" \
        --stats_dir "$(stats_dir_of "${config}")" --exp_dir "${exp}" --ngpu "${ngpu}" --threads 1 \
        --num_procs "${train_procs}" -- ${train_args} \
      && touch "${exp}/.done" &
    pids+=($!)
    if [ "${train_jobs}" -gt 0 ] && [ "${#pids[@]}" -ge "${train_jobs}" ]; then
      wait "${pids[0]}" || failed=$((failed + 1)); pids=("${pids[@]:1}")
    fi
  done
  for pid in "${pids[@]}"; do wait "${pid}" || failed=$((failed + 1)); done
  [ "${failed}" -eq 0 ] || { log "stage 4: ${failed} training job(s) failed: see ${expdir}/asr_*/train.log"; exit 1; }
fi

if run_stage 5; then
  for config in "${configs[@]}"; do  # every checkpoint before the first decoding starts
    model_file="${expdir}/asr_$(model_tag "${config}")/${inference_model}"
    [ -f "${model_file}" ] || { echo "$0: --inference_model ${inference_model}: no ${model_file} (stage 4 trains it)" >&2; exit 1; }
  done
  pids=()
  for config in "${configs[@]}"; do
    exp="${expdir}/asr_$(model_tag "${config}")"
    model_file="${exp}/${inference_model}"
    root="${exp}"; [ -n "${inference_tag}" ] && root="${exp}/decode${inference_tag}"
    task=$(python "${repo}/local/config_task.py" "${config}")
    # An asr_transducer model is at its streaming latency only when streamed (offline, its encoder sees the whole
    # utterance): offline mode decodes it both ways, and the report takes the streaming one.
    modes=${decode_mode}
    [ "${task}" = asr_transducer ] && [ "${decode_mode}" = offline ] && modes="offline streaming"
    # Decode-time compute knobs: each gate threshold (th), and each budget of a budget-conditioned model (b) and
    # each budget at which its units are frozen to their majorities (f).
    knobs=""
    for threshold in ${gate_thresholds}; do knobs="${knobs} th${threshold}"; done
    if [ -n "${compute_budgets}${frozen_budgets}" ] \
      && [ "$(python "${repo}/local/config_task.py" --budget_conditioned "${config}")" = true ]; then
      for budget in ${compute_budgets}; do knobs="${knobs} b${budget}"; done
      # The gate decisions do not depend on the search: the offline decoder, with the streaming mode's offline config.
      rates_config=${decode_config}; [ "${decode_mode}" = streaming ] && rates_config=${repo}/conf/decode.yaml
      for budget in ${frozen_budgets}; do
        case " ${knobs} " in *" b${budget} "*) ;; *) knobs="${knobs} b${budget}" ;; esac  # what the control is paired with
        knobs="${knobs} f${budget}"
        rates="${root}/decode_${valid_set}_b${budget}"  # each unit's majority on held-out data, not on the test sets
        [ -f "${rates}/.done" ] && continue
        log "stage 5: decoding ${valid_set} with ${exp} at budget ${budget} (the frozen control's majorities)"
        ${decode_cmd} --num_threads 1 "${rates}/decode.log" python -m espnet_amortized.bin.asr_decode \
          --data "${dumpdir}/fbank/${valid_set}" --config "${rates_config}" --asr_train_config "${exp}/config.yaml" \
          --asr_model_file "${model_file}" --output_dir "${rates}" --compute_budget "${budget}" \
          || { log "stage 5: decoding ${valid_set} failed: see ${rates}/decode.log"; exit 1; }
        touch "${rates}/.done"
      done
    fi
    for mode in ${modes}; do
      for set in ${test_sets}; do
        for knob in ${knobs:-default}; do
          out="${root}/decode_${set}"; threshold_args=()
          [ "${mode}" = streaming ] && out="${root}/decode_streaming_${set}"
          case "${knob}" in
            th*) out="${out}_${knob}"; threshold_args=(--gate_threshold "${knob#th}") ;;
            b*) out="${out}_${knob}"; threshold_args=(--compute_budget "${knob#b}") ;;
            f*) out="${out}_frozen${knob#f}"
                threshold_args=(--compute_budget "${knob#f}" --frozen_units_from "${root}/decode_${valid_set}_b${knob#f}/summary.json") ;;
          esac
          [ -f "${out}/.done" ] && continue
          log "stage 5: decoding ${set} with ${exp} (${mode}, compute knob: ${knob})"
          if [ "${task}" = asr_transducer ]; then  # ESPnet's own streaming transducer: its Speech2Text on audio
            streaming=false; [ "${mode}" = streaming ] && streaming=true
            decoder=(espnet_amortized.bin.asr_transducer_decode --data "${datadir}/${set}" --config "${decode_config}"
              --streaming "${streaming}")
          elif [ "${mode}" = streaming ]; then
            decoder=(espnet_amortized.bin.asr_inference_streaming --data "${datadir}/${set}" --config "${decode_config}")
          else
            decoder=(espnet_amortized.bin.asr_decode --data "${dumpdir}/fbank/${set}" --config "${decode_config}")
          fi
          ${decode_cmd} --num_threads 1 "${out}/decode.log" \
            python -m "${decoder[@]}" --asr_train_config "${exp}/config.yaml" \
              --asr_model_file "${model_file}" --output_dir "${out}" "${threshold_args[@]}" \
            && touch "${out}/.done" &
          pids+=($!)
          # At most nj decoding jobs at once.
          if [ "${#pids[@]}" -ge "${nj}" ]; then wait "${pids[0]}" || exit 1; pids=("${pids[@]:1}"); fi
        done
      done
    done
  done
  for pid in "${pids[@]}"; do wait "${pid}" || { log "stage 5: a decoding job failed: see ${expdir}/asr_*/decode_*/decode.log"; exit 1; }; done
fi

if run_stage 6; then
  results=${expdir}/RESULTS${inference_tag}.md
  [ "${decode_mode}" = streaming ] && results=${expdir}/RESULTS_streaming${inference_tag}.md
  log "stage 6: scoring -> ${results}"
  exps=()
  for config in "${configs[@]}"; do exps+=("${expdir}/asr_$(model_tag "${config}")"); done
  # shellcheck disable=SC2086  # a list of test set names
  python "${repo}/local/report.py" --dumpdir "${dumpdir}/fbank" --test_sets ${test_sets} --exps "${exps[@]}" \
    --mode "${decode_mode}" --corpus "${corpus_id}" --command "${invocation}" \
    --inference_model "${inference_model}" --out "${results}"
  plots=${expdir}/plots${inference_tag}
  [ "${decode_mode}" = streaming ] && plots=${expdir}/plots_streaming${inference_tag}
  python "${repo}/local/plots.py" --results "${results%.md}.json" --exps "${exps[@]}" --dumpdir "${dumpdir}/fbank" \
    --out "${plots}" ${also[@]+--also "${also[@]}"} > /dev/null
fi
log "done (stages ${stage}-${stop_stage})"
