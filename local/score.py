#!/usr/bin/env python3
"""Word error rate of hypotheses against references, written like ESPnet's score_wer/.

    python local/score.py --ref dump/fbank/test_clean/text \
        --hyp exp/asr_x/decode_test_clean/1best_recog/text --out exp/asr_x/decode_test_clean/score_wer

Writes ``ref.trn`` and ``hyp.trn`` (sclite's trn format), ``result.txt`` (an
sclite-style summary: sentences, words, correct/substitution/deletion/
insertion/error rates and sentence error rate, per speaker and overall) and
``result.json``. A reference without a hypothesis counts as all deletions
and is reported; a hypothesis without a reference is an error.
"""

import argparse
import collections
import json
import logging
import pathlib
from typing import Dict

log = logging.getLogger("score")


def read_text(path: pathlib.Path) -> Dict[str, str]:
    entries = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            parts = line.split(maxsplit=1)
            entries[parts[0]] = parts[1] if len(parts) > 1 else ""
    return entries


def word_counts(reference: str, hypothesis: str) -> Dict[str, int]:
    """Levenshtein alignment counts over words (hits, substitutions, deletions, insertions)."""
    import jiwer

    ref_words, hyp_words = reference.split(), hypothesis.split()
    if not ref_words:
        return {"hits": 0, "substitutions": 0, "deletions": 0, "insertions": len(hyp_words), "words": 0}
    if not hyp_words:
        return {"hits": 0, "substitutions": 0, "deletions": len(ref_words), "insertions": 0, "words": len(ref_words)}
    output = jiwer.process_words(reference, hypothesis)
    return {
        "hits": output.hits, "substitutions": output.substitutions, "deletions": output.deletions,
        "insertions": output.insertions, "words": len(ref_words),
    }


def score(ref: pathlib.Path, hyp: pathlib.Path, out: pathlib.Path, speaker_of=lambda key: key.split("-")[0]) -> Dict:
    references, hypotheses = read_text(ref), read_text(hyp)
    unknown = sorted(set(hypotheses) - set(references))
    if unknown:
        raise ValueError(f"{hyp}: {len(unknown)} hypotheses have no reference in {ref}, e.g. {unknown[0]}")
    missing = sorted(set(references) - set(hypotheses))
    if missing:
        log.warning("%s: %d references have no hypothesis (scored as deletions), e.g. %s", hyp, len(missing), missing[0])
    totals: Dict[str, Dict[str, int]] = collections.defaultdict(collections.Counter)
    per_utterance = []
    for key, reference in references.items():
        counts = word_counts(reference, hypotheses.get(key, ""))
        per_utterance.append(f"{key}\t{counts['substitutions'] + counts['deletions'] + counts['insertions']}\t{counts['words']}")
        counts["sentences"] = 1
        counts["sentence_errors"] = int(counts["hits"] != counts["words"] or counts["insertions"] > 0)
        for group in (speaker_of(key), "Sum/Avg"):
            totals[group].update(counts)
    out.mkdir(parents=True, exist_ok=True)
    for name, entries in (("ref.trn", references), ("hyp.trn", hypotheses)):
        lines = [f"{entries.get(key, '')} ({speaker_of(key)}-{key})" for key in sorted(references)]
        (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = {group: _rates(counts) for group, counts in totals.items()}
    result["Sum/Avg"]["missing_hypotheses"] = len(missing)
    (out / "result.txt").write_text(format_result(result), encoding="utf-8")
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    # Errors and reference words per utterance: what the bootstrap statistics resample.
    (out / "per_utterance.tsv").write_text("".join(line + "\n" for line in sorted(per_utterance)), encoding="utf-8")
    return result["Sum/Avg"]


def _rates(counts) -> Dict:
    words = max(counts["words"], 1)
    rate = lambda n: 100.0 * n / words  # noqa: E731
    return {
        "sentences": counts["sentences"], "words": counts["words"],
        "corr": rate(counts["hits"]), "sub": rate(counts["substitutions"]), "del": rate(counts["deletions"]),
        "ins": rate(counts["insertions"]),
        "err": rate(counts["substitutions"] + counts["deletions"] + counts["insertions"]),
        "sentence_err": 100.0 * counts["sentence_errors"] / max(counts["sentences"], 1),
    }


def format_result(result: Dict) -> str:
    header = f"| {'SPKR':^9} | {'# Snt':>5} {'# Wrd':>6} | {'Corr':>5} {'Sub':>5} {'Del':>5} {'Ins':>5} {'Err':>5} {'S.Err':>5} |"
    rule = "|" + "-" * (len(header) - 2) + "|"
    lines = [rule, header, rule]
    for group in sorted(g for g in result if g != "Sum/Avg") + ["Sum/Avg"]:
        r = result[group]
        if group == "Sum/Avg":
            lines.append(rule)
        lines.append(
            f"| {group:^9} | {r['sentences']:5d} {r['words']:6d} | {r['corr']:5.1f} {r['sub']:5.1f} {r['del']:5.1f} "
            f"{r['ins']:5.1f} {r['err']:5.1f} {r['sentence_err']:5.1f} |"
        )
    lines.append(rule)
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", type=pathlib.Path, required=True)
    parser.add_argument("--hyp", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (score) %(message)s")
    summary = score(args.ref, args.hyp, args.out)
    print(f"{args.hyp}: WER {summary['err']:.2f}% ({summary['words']} words)")


if __name__ == "__main__":
    main()
