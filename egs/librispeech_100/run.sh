#!/usr/bin/env bash
# LibriSpeech 100 h (train-clean-100): downloads the official tarballs (md5-checked,
# resumable) unless --librispeech_root points at an existing LibriSpeech/ folder.
# Outputs (downloads/ data/ dump/ exp/) go under this folder. Any ../../run.sh option
# can be added, e.g. ./run.sh --ngpu 1 --stage 4.
set -euo pipefail
cd "$(dirname "$0")"
exec ../../run.sh \
  --corpus librispeech \
  --librispeech_subsets "train-clean-100 dev-clean test-clean test-other" \
  --train_set train_clean_100 --train_subsets train-clean-100 \
  --valid_set dev_clean --test_sets "test_clean test_other" \
  --nbpe 500 \
  --train_config "../../conf/tuning/train_dense_librispeech.yaml ../../conf/tuning/train_amortized_librispeech.yaml" \
  "$@"
