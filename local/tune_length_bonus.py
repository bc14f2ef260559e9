#!/usr/bin/env python3
"""Tune the decoder's per-label length bonus on a development set.

    python local/tune_length_bonus.py --exp exp/asr_dense --data dump/fbank/dev_clean \
        --decode_config conf/decode.yaml --bonuses 0 0.5 1 1.5 2 --out exp/asr_dense/tune_length_bonus

Decodes --data once per bonus with espnet_amortized.bin.asr_decode (the
decode config with ``length_bonus`` replaced), scores each decoding
(local/score.py), prints a table and writes ``tuning.json`` with every WER
and the best bonus (lowest WER; the smallest bonus among ties). The chosen
value belongs in the decode config, with the measurement in RESULTS.md.
"""

import argparse
import json
import logging
import pathlib

import yaml

from score import score

log = logging.getLogger("tune_length_bonus")


def tune(exp: pathlib.Path, data: pathlib.Path, decode_config: pathlib.Path, bonuses, out: pathlib.Path,
         model_file: str = "valid.loss.ave.pth"):
    from espnet_amortized.bin import asr_decode

    if not bonuses:
        raise ValueError("--bonuses: give at least one value")
    options = yaml.safe_load(decode_config.read_text()) or {}
    if options.get("search", "beam") == "espnet":
        raise ValueError(f"{decode_config}: search: espnet has no length bonus; use search: beam or greedy")
    results = []
    for bonus in bonuses:
        folder = out / f"bonus{bonus:g}"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "decode.yaml"
        config.write_text(yaml.safe_dump({**options, "length_bonus": float(bonus)}, sort_keys=False))
        asr_decode.main(["--asr_train_config", str(exp / "config.yaml"), "--asr_model_file", str(exp / model_file),
                         "--data", str(data), "--output_dir", str(folder), "--config", str(config), "--save_gates", "0"])
        wer = score(data / "text", folder / "1best_recog" / "text", folder / "score_wer")
        results.append({"length_bonus": float(bonus), "wer": wer["err"], "sub": wer["sub"], "del": wer["del"],
                        "ins": wer["ins"]})
    best = min(results, key=lambda r: (r["wer"], r["length_bonus"]))
    document = {"exp": str(exp), "data": str(data), "decode_config": str(decode_config), "results": results,
                "best_length_bonus": best["length_bonus"]}
    (out / "tuning.json").write_text(json.dumps(document, indent=2) + "\n")
    print(format_table(results, best))
    return document


def format_table(results, best) -> str:
    lines = ["| length bonus | WER % (S/D/I) |", "|---|---|"]
    for r in results:
        mark = " (best)" if r is best else ""
        lines.append(f"| {r['length_bonus']:g}{mark} | {r['wer']:.2f} ({r['sub']:.1f}/{r['del']:.1f}/{r['ins']:.1f}) |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", type=pathlib.Path, required=True, help="experiment dir (config.yaml + model)")
    parser.add_argument("--data", type=pathlib.Path, required=True, help="dump dir of the development set (feats.scp, text)")
    parser.add_argument("--decode_config", type=pathlib.Path, required=True)
    parser.add_argument("--bonuses", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0])
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--model_file", default="valid.loss.ave.pth")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (tune_length_bonus) %(message)s")
    tune(args.exp, args.data, args.decode_config, args.bonuses, args.out, args.model_file)


if __name__ == "__main__":
    main()
