"""The whole streaming decoder (fbank, encoder, search), one stream and many: real-time streams per core.

    python -m espnet_amortized.benchmarks.multistream_speed \\
        --models dense=exp/asr_dense_bench budget=exp/asr_amortized_budget_bench --model_file ave_12_15epoch.pth \\
        --compute_budgets 0.35 0.6 --data data/test_clean --streams 1 8 32 128 \\
        --output exp/benchmarks/multistream_speed.json

The first setting is the baseline. Gated models run at each ``--compute_budgets`` value (budget-conditioned
or any model with the global per-frame arbitrator), others as trained. ``--dense_from NAME`` adds a dense
baseline in front: NAME's trained weights with ``gate_unit: none`` (its arbitrator dropped, every unit run),
the same network as NAME at budget 1 without the arbitrator's cost, for when no dense model of that shape
was trained.

For each setting and each N of ``--streams``, N streams run through one ``StreamingEngine``
(espnet_amortized.engine): every step, each open stream receives ``--piece_ms`` of its utterance and the
engine advances all of them in one batch; a finished stream closes and the next utterance of ``--data``
opens in its place (streams join and leave all the time; their first pieces are staggered over a chunk so
that chunks do not all complete on the same step). After ``--warmup_steps``, the steps of at least
``--min_audio_s`` seconds of audio (and at least ``--steps`` steps) are timed:

- realtime_streams: audio seconds fed / seconds of the steps (about N x piece duration / mean step time),
  the streams one core (``--threads``) can serve in real time at this load; speedup: that over the
  baseline's at the same N;
- step p50/p95 (ms): the time from a piece's arrival to its partial result under load, to compare with the
  piece's duration (the engine keeps up while steps are shorter) and the chunk's;
- rtf and encoder_rtf: decoder and encoder seconds per audio second; shares of features, encoder, search;
- compute_ratio_encoder: the encoder MACs that ran over the dense encoder's, of the streams that finished
  after the warm-up and those still open at the end.

Headline figures (issue 14): at N = 1, ``per_frame_efficiency`` (encoder speedup over the baseline /
theoretical 1 / compute ratio) and ``whole_decoder_speedup`` of the ``--claim_ratio`` setting (the first
whose compute ratio is at most it: ">= 60% less compute"), and ``multistream_speedup_n32`` (its real-time
streams over the baseline's at N = 32).
"""

import argparse
import math
import pathlib
import shlex
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np
import torch
import yaml

from espnet_amortized.benchmarks import config_of, machine_info, report
from espnet_amortized.benchmarks.streaming_speed import parse_models
from espnet_amortized.checks import set_compute_knobs
from espnet_amortized.streaming import SAMPLE_RATE, load_audio


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, metavar="NAME=EXP_DIR",
                        help="trained models (config.yaml + --model_file in EXP_DIR); the first is the baseline")
    parser.add_argument("--model_file", default="valid.loss.ave.pth")
    parser.add_argument("--dense_from", default=None, metavar="NAME",
                        help="a dense baseline (first) with the weights of model NAME and gate_unit: none")
    parser.add_argument("--compute_budgets", type=float, nargs="*", default=[],
                        help="decode-time budgets for each model with the budget allocation")
    parser.add_argument("--data", type=pathlib.Path, required=True, help="data dir with wav.scp (16 kHz audio)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--piece_ms", type=float, default=160.0, help="audio each stream receives per step")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting and N, at least")
    parser.add_argument("--min_audio_s", type=float, default=60.0, help="timed audio per setting and N, at least")
    parser.add_argument("--warmup_steps", type=int, default=5)
    parser.add_argument("--max_utterances", type=int, default=200, help="0: the whole set")
    parser.add_argument("--beam_size", type=int, default=1, help="1: greedy, the streaming default (conf/decode_streaming.yaml)")
    parser.add_argument("--claim_ratio", type=float, default=0.4,
                        help="the headline setting: the first whose encoder compute ratio is at most this")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=pathlib.Path, default=pathlib.Path("exp/benchmarks/multistream_speed.json"))
    return parser


def dense_variant(exp_dir: pathlib.Path, model_file: str, out: pathlib.Path):
    """config.yaml and weights of the model in ``exp_dir`` with ``gate_unit: none``: every layer, front-end,
    prediction and joint network weight copied; the arbitrator and the compute regulariser's state dropped."""
    from espnet_amortized._espnet import asr_task_class

    config = yaml.safe_load((exp_dir / "config.yaml").read_text(encoding="utf-8"))
    config["encoder_conf"] = dict(
        config["encoder_conf"], gate_unit="none", gate_conv=False, budget_conditioning=False,
        budget_training="regularize", budget_order="logit", compute_budget=None,
    )
    model = asr_task_class().build_model(argparse.Namespace(**config))
    own = model.state_dict()
    trained = torch.load(exp_dir / model_file, map_location="cpu")
    kept = {key: value for key, value in trained.items() if key in own and own[key].shape == value.shape}
    not_copied = sorted(key for key in own if key not in kept and key.startswith(("encoder.", "decoder.", "joint_network.")))
    if not_copied:
        raise ValueError(f"--dense_from {exp_dir}: the dense shape lacks trained weights for {', '.join(not_copied)}")
    model.load_state_dict(kept, strict=False)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    torch.save(model.state_dict(), out / model_file)
    return out / "config.yaml", out / model_file


def load_utterances(data: pathlib.Path, max_utterances: int) -> List[np.ndarray]:
    scp = data / "wav.scp"
    if not scp.is_file():
        raise FileNotFoundError(f"{scp}: missing (the recipe's data dirs have one)")
    audios = []
    for line in scp.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        _, path = line.split(maxsplit=1)
        audios.append(load_audio(path))
        if max_utterances and len(audios) >= max_utterances:
            break
    if not audios:
        raise ValueError(f"{scp}: no utterances")
    return audios


def drive(engine, audios: List[np.ndarray], streams: int, piece: int, stagger: int, warmup: int,
          steps: int) -> Dict:
    """N streams through ``engine`` over ``warmup`` + ``steps`` steps; timings of the last ``steps``."""
    slots: List[Optional[Dict]] = [None] * streams
    next_utterance, step_times, reports, fed_samples = 0, [], [], 0
    seconds_at_warmup = None
    for step in range(warmup + steps):
        if step == warmup:
            seconds_at_warmup = dict(engine.seconds)
            reports.clear()
        for slot in range(streams):
            if slots[slot] is None and step >= slot % stagger:  # staggered first pieces, then back to back
                audio = audios[next_utterance % len(audios)]
                stream_id = (slot, next_utterance)
                next_utterance += 1
                engine.open(stream_id)
                slots[slot] = {"id": stream_id, "audio": audio, "fed": 0}
            current = slots[slot]
            if current is None:
                continue
            samples = current["audio"][current["fed"] : current["fed"] + piece]
            current["fed"] += piece
            if step >= warmup:
                fed_samples += samples.size
            engine.accept(current["id"], samples, is_final=current["fed"] >= current["audio"].size)
        start = time.perf_counter()
        engine.step()
        if step >= warmup:
            step_times.append(time.perf_counter() - start)
        for slot, current in enumerate(slots):
            if current is not None and engine.finished(current["id"]):
                report_ = engine.compute_report(current["id"])
                if report_ is not None:
                    reports.append(report_)
                engine.close(current["id"])
                slots[slot] = None
    for current in slots:  # the streams still open at the end: what they ran so far counts too
        if current is not None:
            report_ = engine.compute_report(current["id"])
            if report_ is not None:
                reports.append(report_)
            engine.close(current["id"])
    spent = {part: engine.seconds[part] - seconds_at_warmup[part] for part in engine.seconds}
    return {"step_times": step_times, "seconds": spent, "reports": reports, "audio_seconds": fed_samples / SAMPLE_RATE}


def run(args) -> Dict:
    from espnet_amortized.engine import StreamingEngine

    torch.set_num_threads(args.threads)
    if args.piece_ms <= 0 or args.steps < 1 or args.warmup_steps < 0 or min(args.streams) < 1:
        raise ValueError("--piece_ms must be > 0, --steps and every --streams >= 1, --warmup_steps >= 0")
    for budget in args.compute_budgets:
        if not 0.0 <= budget <= 1.0:
            raise ValueError(f"--compute_budgets: {budget} is outside [0, 1]")
    models = parse_models(args.models)
    names = [name for name, _ in models]
    if args.dense_from is not None and args.dense_from not in names:
        raise ValueError(f"--dense_from {args.dense_from}: not one of --models ({', '.join(names)})")
    audios = load_utterances(args.data, args.max_utterances)
    piece = int(round(args.piece_ms * SAMPLE_RATE / 1000))
    piece_s = piece / SAMPLE_RATE
    options = dict(beam_size=args.beam_size)
    settings = []  # (label, model name, engine, budget)
    with tempfile.TemporaryDirectory() as tmp:
        if args.dense_from is not None:
            exp = dict(models)[args.dense_from]
            config, weights = dense_variant(exp, args.model_file, pathlib.Path(tmp) / "dense")
            settings.append(("dense", f"{args.dense_from} (gate_unit none)", StreamingEngine(config, weights, **options), None))
        for name, exp in models:
            engine = StreamingEngine(exp / "config.yaml", exp / args.model_file, **options)
            encoder = engine.model.encoder
            allocates = getattr(encoder, "gated", False) and encoder.arbitrator_type == "global" \
                and encoder.decision_unit == "frame"
            budgets = args.compute_budgets if allocates and args.compute_budgets else [None]
            for budget in budgets:
                label = name if budget is None else f"{name}@{budget:g}"
                settings.append((label, name, engine, budget))
        encoder = settings[0][2].model.encoder
        chunk_ms = encoder.chunk_size * encoder.embed.stride * 10.0
        stagger = max(1, int(round(chunk_ms / args.piece_ms)))
        rows = []
        for streams in args.streams:
            steps = max(args.steps, math.ceil(args.min_audio_s / (streams * piece_s)))
            for label, name, engine, budget in settings:
                if budget is not None:
                    set_compute_knobs(engine.model.encoder, compute_budget=budget)
                run_ = drive(engine, audios, streams, piece, stagger, args.warmup_steps, steps)
                rows.append(_row(label, name, budget, streams, run_))
                print(f"{label:>18} N={streams:<4} {rows[-1]['realtime_streams']:8.1f} real-time streams, "
                      f"step p95 {rows[-1]['step_p95_ms']:.1f} ms", flush=True)
    _compare(rows)
    return {
        "benchmark": "multistream_speed",
        "command": args.command,
        "config": config_of(args),
        "machine": machine_info(args.threads),
        "utterances": len(audios),
        "piece_ms": piece_s * 1e3,
        "chunk_ms": chunk_ms,
        "rows": rows,
        "headline": headline(rows, args.claim_ratio),
    }


def _row(label: str, model: str, budget, streams: int, run_: Dict) -> Dict:
    times = run_["step_times"]
    mean = statistics.fmean(times)
    audio = run_["audio_seconds"]  # the samples fed in the timed steps (a last piece is shorter)
    spent = run_["seconds"]
    total = sum(spent.values()) or 1.0
    reports = run_["reports"]
    ratio = (sum(r.encoder for r in reports) / sum(r.dense_encoder for r in reports)) if reports else None
    return {
        "setting": label, "model": model, "compute_budget": budget, "streams": streams, "steps": len(times),
        "realtime_streams": audio / sum(times),
        "step_mean_ms": 1e3 * mean,
        "step_p50_ms": 1e3 * float(np.percentile(times, 50)),
        "step_p95_ms": 1e3 * float(np.percentile(times, 95)),
        "rtf": sum(times) / audio,
        "encoder_rtf": spent["encoder"] / audio,
        **{f"{part}_share": seconds / total for part, seconds in spent.items()},
        "compute_ratio_encoder": ratio,
        "counted_streams": len(reports),
    }


def _compare(rows: List[Dict]) -> None:
    """Speedups over the baseline (the first setting) at the same N."""
    base = {}
    for row in rows:
        base.setdefault(row["streams"], row)
    for row in rows:
        reference = base[row["streams"]]
        row["speedup"] = row["realtime_streams"] / reference["realtime_streams"]
        row["encoder_speedup"] = reference["encoder_rtf"] / row["encoder_rtf"]
        if row["compute_ratio_encoder"] and reference["compute_ratio_encoder"]:
            row["theoretical_encoder_speedup"] = reference["compute_ratio_encoder"] / row["compute_ratio_encoder"]
            row["encoder_efficiency"] = row["encoder_speedup"] / row["theoretical_encoder_speedup"]


def headline(rows: List[Dict], claim_ratio: float) -> Dict:
    claim = next((row["setting"] for row in rows if row["compute_ratio_encoder"] is not None
                  and row["compute_ratio_encoder"] <= claim_ratio), None)
    out = {"claim_setting": claim, "claim_ratio": claim_ratio, "per_frame_efficiency": None,
           "whole_decoder_speedup": None, "multistream_speedup_n32": None}
    if claim is None:
        return out
    by = {(row["setting"], row["streams"]): row for row in rows}
    if (claim, 1) in by:
        out["per_frame_efficiency"] = by[(claim, 1)].get("encoder_efficiency")
        out["whole_decoder_speedup"] = by[(claim, 1)]["speedup"]
    if (claim, 32) in by:
        out["multistream_speedup_n32"] = by[(claim, 32)]["speedup"]
        out["p95_ms_n32"] = by[(claim, 32)]["step_p95_ms"]
    return out


def format_table(result: Dict) -> str:
    header = (f"{'setting':>18} {'N':>4} {'ratio enc':>9} {'RT streams':>10} {'speedup':>7} {'p50 ms':>7} "
              f"{'p95 ms':>7} {'RTF':>7} {'enc RTF':>8} {'enc x':>6} {'effic.':>6} {'feat':>5} {'enc':>5} {'search':>6}")
    lines = [f"{result['utterances']} utterances, pieces of {result['piece_ms']:.0f} ms, chunk {result['chunk_ms']:.0f} ms, "
             f"{result['machine']['threads']} thread(s)", header, "-" * len(header)]
    for row in result["rows"]:
        ratio = row["compute_ratio_encoder"]
        efficiency = row.get("encoder_efficiency")
        lines.append(
            f"{row['setting']:>18} {row['streams']:4d} {'-' if ratio is None else f'{ratio:.3f}':>9} "
            f"{row['realtime_streams']:10.1f} {row['speedup']:7.2f} {row['step_p50_ms']:7.1f} {row['step_p95_ms']:7.1f} "
            f"{row['rtf']:7.4f} {row['encoder_rtf']:8.4f} {row['encoder_speedup']:6.2f} "
            f"{'-' if efficiency is None else f'{efficiency:.2f}':>6} {row['features_share']:5.0%} "
            f"{row['encoder_share']:5.0%} {row['search_share']:6.0%}"
        )
    h = result["headline"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines.append(f"headline ({h['claim_setting']}): per-frame efficiency {fmt(h['per_frame_efficiency'])}, "
                 f"whole-decoder speedup {fmt(h['whole_decoder_speedup'])} (N = 1), "
                 f"real-time streams {fmt(h['multistream_speedup_n32'])}x at N = 32")
    return "\n".join(lines)


def main(argv=None) -> Dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = get_parser().parse_args(argv)
    args.command = " ".join(["python -m espnet_amortized.benchmarks.multistream_speed"] + [shlex.quote(a) for a in argv])
    result = run(args)
    return report(result, format_table(result), args.output)


if __name__ == "__main__":
    main()
