"""Chunk-by-chunk decoding of a data dir with per-utterance compute and latency statistics.

    python -m espnet_amortized.bin.asr_inference_streaming --asr_train_config exp/m/config.yaml \\
        --asr_model_file exp/m/valid.loss.ave.pth --data data/test_clean --output_dir exp/m/stream_test_clean \\
        [--config conf/decode.yaml] [--beam_size 4] [--length_bonus 0.0] [--piece_ms 160] [--gate_threshold 0.5] [--compute_budget 0.5]

Reads ``wav.scp`` (16 kHz audio) and feeds each utterance in pieces of
``--piece_ms`` to ``Speech2TextStreaming`` (streaming fbank, encoder cache,
sparse execution, frame-synchronous transducer search: greedy for beam size 1,
else beam search), batch 1, ``--threads`` threads. The decode YAML is the
offline decoder's: ``beam_size``, ``length_bonus`` and ``transducer_conf.score_norm`` apply.
Writes ``1best_recog/text``, ``partial.jsonl`` (the hypothesis after each
piece), ``compute.jsonl`` (per utterance: MACs and ratios, per-layer unit
rates, GFLOPs per audio second, encoder and total RTF, per-piece latency mean
and p95) and ``summary.json``. Algorithmic latency is one encoder chunk
(chunk_size x the subsampling stride x 10 ms; ``--chunk_size`` changes it); no look-ahead.
"""

import argparse
import json
import logging
import time

import numpy as np
import torch
import yaml

from espnet_amortized.bin.asr_decode import add_compute_knobs, decode_parser
from espnet_amortized.checks import frozen_units_from
from espnet_amortized.compute import summarize_records
from espnet_amortized.streaming import SAMPLE_RATE, Speech2TextStreaming, load_audio

log = logging.getLogger("asr_inference_streaming")


def decode(args) -> dict:
    torch.set_num_threads(args.threads)
    options = (yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}) if args.config else {}
    beam_size = args.beam_size if args.beam_size is not None else options.get("beam_size", 1)
    score_norm = bool((options.get("transducer_conf") or {}).get("score_norm", False))
    length_bonus = args.length_bonus if args.length_bonus is not None else float(options.get("length_bonus", 0.0))
    frozen = None if args.frozen_units_from is None else frozen_units_from(args.frozen_units_from)
    s2t = Speech2TextStreaming(
        args.asr_train_config, args.asr_model_file, gate_threshold=args.gate_threshold, chunk_size=args.chunk_size,
        compute_budget=args.compute_budget,
        frozen_units=frozen,
        beam_size=beam_size,
        max_symbols_per_frame=args.max_symbols_per_frame, score_norm=score_norm, length_bonus=length_bonus,
    )
    encoder = s2t.model.encoder
    piece = int(args.piece_ms * SAMPLE_RATE / 1000)
    out = args.output_dir / "1best_recog"
    out.mkdir(parents=True, exist_ok=True)
    entries = [line.split(maxsplit=1) for line in (args.data / "wav.scp").read_text(encoding="utf-8").splitlines() if line.strip()]
    texts, records = [], []
    with open(args.output_dir / "partial.jsonl", "w") as partial_file:
        for key, path in entries:
            changes = []
            audio = load_audio(path, changes)
            seconds = audio.size / SAMPLE_RATE
            s2t.reset()
            latencies, partials = [], []
            for start in range(0, max(audio.size, 1), piece):
                is_final = start + piece >= audio.size
                begin = time.perf_counter()
                partials.append(s2t(audio[start : start + piece], is_final=is_final))
                latencies.append(time.perf_counter() - begin)
            texts.append(f"{key} {partials[-1]}")
            partial_file.write(json.dumps({"key": key, "partials": partials}) + "\n")
            report = s2t.compute_report()
            record = {"key": key, "seconds": seconds, "decode_seconds": sum(latencies),
                      "encoder_seconds": s2t.encoder_seconds,
                      "piece_latency_mean_ms": 1e3 * float(np.mean(latencies)),
                      "piece_latency_p95_ms": 1e3 * float(np.percentile(latencies, 95)),
                      "audio_changes": changes, **s2t.search_macs.as_dict()}
            if report is not None:
                record.update(report.as_dict())
                record["gflops_per_second"] = report.gflops_per_second(seconds)
            records.append(record)
    (out / "text").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    with open(args.output_dir / "compute.jsonl", "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    audio_total = sum(r["seconds"] for r in records)
    latencies_ms = [r["piece_latency_mean_ms"] for r in records]
    summary = {
        "utterances": len(records),
        "audio_seconds": audio_total,
        "rtf": sum(r["decode_seconds"] for r in records) / max(audio_total, 1e-9),
        "encoder_rtf": sum(r["encoder_seconds"] for r in records) / max(audio_total, 1e-9),
        "piece_ms": args.piece_ms,
        "piece_latency_mean_ms": float(np.mean(latencies_ms)) if latencies_ms else None,
        "piece_latency_p95_ms": float(np.percentile([r["piece_latency_p95_ms"] for r in records], 95)) if records else None,
        "algorithmic_latency_ms": encoder.chunk_size * encoder.embed.stride * 10.0,
        "gate_threshold": encoder.gate_threshold if getattr(encoder, "gated", False) else None,
        "compute_budget": encoder.compute_budget if getattr(encoder, "budget_conditioning", False) else None,
        "frozen_units": frozen,
        "frozen_units_from": None if args.frozen_units_from is None else str(args.frozen_units_from),
        "beam_size": beam_size,
        "length_bonus": length_bonus,
        # Utterances read with a change (other sample rate, several channels); data prep's notes.txt lists them.
        "resampled_utterances": sum("resampled" in r["audio_changes"] for r in records),
        "downmixed_utterances": sum("downmixed" in r["audio_changes"] for r in records),
    }
    if records and all("macs_encoder" in r for r in records):
        summary.update(summarize_records(records, audio_total))
    (args.output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("%s: %s", args.output_dir, json.dumps(summary))
    return summary


def get_parser() -> argparse.ArgumentParser:
    parser = decode_parser(__doc__, "data dir with wav.scp (16 kHz)",
                           "decode YAML (beam_size, length_bonus, transducer_conf.score_norm)")
    parser.add_argument("--beam_size", type=int, help="1: greedy; overrides the decode YAML (default there: 1)")
    parser.add_argument("--max_symbols_per_frame", type=int, default=4)
    parser.add_argument("--length_bonus", type=float,
                        help="reward per emitted label (insertion reward) in the search's scores; overrides the "
                             "decode YAML (default there: 0.0)")
    parser.add_argument("--piece_ms", type=float, default=160.0, help="audio fed per call")
    add_compute_knobs(parser)
    parser.add_argument("--chunk_size", type=int,
                        help="override the encoder's chunk (encoder frames; for models trained with dynamic chunks)")
    return parser


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (asr_inference_streaming) %(message)s")
    args = get_parser().parse_args(argv)
    if args.piece_ms <= 0:
        raise SystemExit(f"--piece_ms must be > 0, got {args.piece_ms}")
    return decode(args)


if __name__ == "__main__":
    main()
