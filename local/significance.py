#!/usr/bin/env python3
"""Bootstrap statistics for WER (Bisani and Ney, 2004): confidence intervals and paired tests.

    python local/significance.py exp/asr_dense/decode_test_clean/score_wer/per_utterance.tsv \
        exp/asr_amortized/decode_test_clean/score_wer/per_utterance.tsv

Utterances are resampled with replacement; WER of a resample is total errors
over total reference words. The paired test resamples the same utterances
for both systems and reports the WER difference (B - A) with its interval and
the probability that B is not worse than A. Numpy only, seeded.
"""

import argparse
import pathlib
from typing import Dict, Tuple

import numpy as np

DEFAULT_RESAMPLES = 1000


def read_per_utterance(path: pathlib.Path) -> Dict[str, Tuple[int, int]]:
    """``key<TAB>errors<TAB>words`` lines (local/score.py's per_utterance.tsv)."""
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            key, errors, words = line.split("\t")
            table[key] = (int(errors), int(words))
    if not table:
        raise ValueError(f"{path}: no utterances")
    return table


def _resample_indices(count: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, count, size=(resamples, count))


def bootstrap_interval(errors, words, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = 0.95):
    """(WER, low, high) in percent: the percentile interval of the resampled WERs."""
    errors, words = np.asarray(errors, dtype=float), np.asarray(words, dtype=float)
    if words.sum() <= 0:
        raise ValueError("no reference words to score")
    index = _resample_indices(len(errors), resamples, seed)
    wers = 100.0 * errors[index].sum(1) / np.maximum(words[index].sum(1), 1.0)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(wers, [tail, 100.0 - tail])
    return 100.0 * errors.sum() / words.sum(), float(low), float(high)


def paired_bootstrap(table_a: Dict, table_b: Dict, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = 0.95):
    """Difference WER(B) - WER(A) on the same utterances: delta, interval, P(B not worse than A)."""
    if set(table_a) != set(table_b):
        raise ValueError(f"the two systems were scored on different utterances ({len(table_a)} vs {len(table_b)})")
    keys = sorted(table_a)
    errors_a = np.array([table_a[k][0] for k in keys], dtype=float)
    errors_b = np.array([table_b[k][0] for k in keys], dtype=float)
    words = np.array([table_a[k][1] for k in keys], dtype=float)
    index = _resample_indices(len(keys), resamples, seed)
    total_words = np.maximum(words[index].sum(1), 1.0)
    deltas = 100.0 * (errors_b[index].sum(1) - errors_a[index].sum(1)) / total_words
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(deltas, [tail, 100.0 - tail])
    return {
        "delta": float(100.0 * (errors_b.sum() - errors_a.sum()) / words.sum()),
        "low": float(low),
        "high": float(high),
        "p_not_worse": float(np.mean(deltas <= 0.0)),
        "relative": float((errors_b.sum() - errors_a.sum()) / max(errors_a.sum(), 1.0)),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system_a", type=pathlib.Path, help="per_utterance.tsv of the baseline")
    parser.add_argument("system_b", type=pathlib.Path, help="per_utterance.tsv of the system compared")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    a, b = read_per_utterance(args.system_a), read_per_utterance(args.system_b)
    for name, table in (("A", a), ("B", b)):
        errors, words = zip(*table.values())
        wer, low, high = bootstrap_interval(errors, words, args.resamples, args.seed)
        print(f"{name}: WER {wer:.2f} [{low:.2f}, {high:.2f}]")
    paired = paired_bootstrap(a, b, args.resamples, args.seed)
    print(f"B - A: {paired['delta']:+.2f} [{paired['low']:+.2f}, {paired['high']:+.2f}] "
          f"(relative {100 * paired['relative']:+.1f}%), P(B not worse) = {paired['p_not_worse']:.3f}")


if __name__ == "__main__":
    main()
