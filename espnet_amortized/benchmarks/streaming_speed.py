"""Encoder speed of trained models on a test set: streaming batch 1 and offline batch 16.

    python -m espnet_amortized.benchmarks.streaming_speed \\
        --models dense=exp/asr_dense amortized=exp/asr_amortized --thresholds 0.3 0.7 \\
        --data dump/fbank/test_clean --output exp/benchmarks/streaming_speed.json

The first model is the baseline (a dense encoder of the same shape). Every
other model runs at its own gate threshold and at each ``--thresholds``
value. For each setting, on the recipe's features of the test set (global
CMVN of the model applied):

- streaming: each utterance is fed to ``encoder.forward_chunk`` in pieces of
  ``--piece_ms`` (the call pattern of ``asr_inference_streaming``), batch 1;
- offline: length-sorted batches of ``--batch_size`` through the full masked
  forward (sparse execution for gated encoders).

Times are encoder seconds summed over the set, the median of ``--repeats``
passes run round-robin over the settings (so drift hits all alike). The
table puts the measured speedup over the baseline next to the theoretical
``1 / compute_ratio`` (executed / dense encoder MACs, counted from the
decisions that ran); "efficiency" is their ratio. A GEMM table (time of the
model's FFN projection by number of rows) shows why skipping frames inside a
small chunk saves less time than MACs. ``--profile`` adds the top operators
of one streaming pass per setting.
"""

import argparse
import pathlib
import statistics
import time
from typing import Dict, List, Tuple

import torch

from espnet_amortized.checks import load_asr_model
from espnet_amortized.benchmarks import config_of, machine_info, report
from espnet_amortized.compute import count_macs, count_streaming_macs
from espnet_amortized.encoder import GateInfo

FRAME_SHIFT_S = 0.01


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, metavar="NAME=EXP_DIR",
                        help="trained models (config.yaml + --model_file in EXP_DIR); the first is the baseline")
    parser.add_argument("--model_file", default="valid.loss.ave.pth")
    parser.add_argument("--data", type=pathlib.Path, required=True, help="data dir with feats.scp (the recipe's dump)")
    parser.add_argument("--thresholds", type=float, nargs="*", default=[], help="extra gate thresholds per gated model")
    parser.add_argument("--piece_ms", type=float, default=160.0, help="streaming: audio per forward_chunk call")
    parser.add_argument("--batch_size", type=int, default=16, help="offline: utterances per batch")
    parser.add_argument("--max_utterances", type=int, default=0, help="0: the whole set")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true", help="top operators of one streaming pass per setting")
    parser.add_argument("--output", type=pathlib.Path, default=pathlib.Path("exp/benchmarks/streaming_speed.json"))
    return parser


def parse_models(specs: List[str]) -> List[Tuple[str, pathlib.Path]]:
    models = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--models: expected NAME=EXP_DIR, got {spec!r}")
        models.append((name, pathlib.Path(path)))
    return models


def load_model(exp_dir: pathlib.Path, model_file: str, device: str):
    model, _ = load_asr_model(exp_dir / "config.yaml", exp_dir / model_file, device)
    if not hasattr(model.encoder, "forward_chunk"):
        raise ValueError(f"{exp_dir / 'config.yaml'}: encoder {type(model.encoder).__name__} cannot stream")
    return model


def load_features(data: pathlib.Path, max_utterances: int) -> List[torch.Tensor]:
    import kaldiio

    scp = data / "feats.scp"
    if not scp.is_file():
        raise FileNotFoundError(f"{scp}: missing (the recipe writes it in stage 2)")
    features = []
    for _, matrix in kaldiio.load_scp_sequential(str(scp)):
        features.append(torch.from_numpy(matrix.copy()))
        if max_utterances and len(features) >= max_utterances:
            break
    if not features:
        raise ValueError(f"{scp}: no utterances")
    return features


def _normalize(model, features: List[torch.Tensor], device: str) -> List[torch.Tensor]:
    out = []
    with torch.no_grad():
        for x in features:
            x = x.unsqueeze(0).to(device, copy=True)  # GlobalMVN normalises in place
            if model.normalize is not None:
                x, _ = model.normalize(x, torch.tensor([x.size(1)], device=device))
            out.append(x)
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def stream_pass(encoder, features: List[torch.Tensor], piece_frames: int, device: str, reports: list = None) -> float:
    """Encoder seconds to stream every utterance (batch 1); MAC reports appended to ``reports``."""
    total = 0.0
    for x in features:
        _sync(device)
        start = time.perf_counter()
        state = encoder.init_state()
        length = x.size(1)
        for begin in range(0, length, piece_frames):
            encoder.forward_chunk(x[:, begin : begin + piece_frames], state, is_final=begin + piece_frames >= length)
        _sync(device)
        total += time.perf_counter() - start
        if reports is not None:
            reports.append(count_streaming_macs(encoder, state))
    return total


def _batches(features: List[torch.Tensor], batch_size: int):
    order = sorted(range(len(features)), key=lambda i: features[i].size(1))
    for first in range(0, len(order), batch_size):
        items = [features[i][0] for i in order[first : first + batch_size]]
        lengths = torch.tensor([item.size(0) for item in items])
        yield torch.nn.utils.rnn.pad_sequence(items, batch_first=True), lengths


@torch.no_grad()
def offline_pass(encoder, batches, device: str, reports: list = None) -> float:
    total = 0.0
    for xs, lengths in batches:
        _sync(device)
        start = time.perf_counter()
        _, _, info = encoder(xs, lengths.to(device))
        _sync(device)
        total += time.perf_counter() - start
        if reports is not None and isinstance(info, GateInfo):
            reports.append(count_macs(encoder, info.gates, info.valid, info.allowed, info.input_lengths.tolist()))
    return total


def _ratios(reports) -> Dict[str, float]:
    if not reports:  # a dense encoder offline records no decisions: it runs everything
        return {"compute_ratio_encoder": 1.0, "compute_ratio_layers": 1.0}
    return {
        "compute_ratio_encoder": sum(r.encoder for r in reports) / sum(r.dense_encoder for r in reports),
        "compute_ratio_layers": sum(r.layers + r.arbitrator for r in reports) / sum(r.dense_layers for r in reports),
    }


def gemm_rows(encoder, max_rows: int, device: str, repeats: int = 300) -> List[Dict]:
    """Time of the FFN's first projection (d -> d_ff) by number of rows: the cost of a partial chunk."""
    d, d_ff = encoder.output_size(), encoder.linear_units
    weight, bias = torch.randn(d_ff, d, device=device), torch.randn(d_ff, device=device)
    rows = []
    for count in sorted({1, 2, 4, max(1, max_rows // 4), max(1, max_rows // 2), max_rows}):
        x = torch.randn(1, count, d, device=device)
        for _ in range(20):
            torch.nn.functional.linear(x, weight, bias)
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.nn.functional.linear(x, weight, bias)
        _sync(device)
        rows.append({"rows": count, "microseconds": 1e6 * (time.perf_counter() - start) / repeats})
    full = rows[-1]["microseconds"]
    for row in rows:
        row["time_fraction"] = row["microseconds"] / full
        row["row_fraction"] = row["rows"] / max_rows
    return rows


def _profile(encoder, features, piece_frames, device, top: int = 8) -> List[Dict]:
    with torch.profiler.profile() as profiler:
        stream_pass(encoder, features, piece_frames, device)
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
             "share": e.self_cpu_time_total / total} for e in events[:top]]


def run(args) -> Dict:
    torch.set_num_threads(args.threads)
    if args.batch_size < 1 or args.repeats < 1 or args.piece_ms <= 0:
        raise ValueError("--batch_size and --repeats must be >= 1 and --piece_ms > 0")
    for threshold in args.thresholds:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"--thresholds: {threshold} is outside [0, 1]")
    models = [(name, load_model(path, args.model_file, args.device)) for name, path in parse_models(args.models)]
    raw = load_features(args.data, args.max_utterances)
    audio_seconds = sum(x.size(0) for x in raw) * FRAME_SHIFT_S
    piece_frames = max(1, int(round(args.piece_ms / 1000 / FRAME_SHIFT_S)))
    settings = []  # (label, model name, encoder, threshold or None, features, batches)
    for name, model in models:
        features = _normalize(model, raw, args.device)
        batches = list(_batches(features, args.batch_size))
        encoder = model.encoder
        thresholds = [None]
        if getattr(encoder, "gated", False):
            thresholds += [t for t in args.thresholds if t != encoder.gate_threshold]
        default = encoder.gate_threshold if getattr(encoder, "gated", False) else None
        for threshold in thresholds:
            used = default if threshold is None else threshold
            label = name if threshold is None else f"{name}@{threshold:g}"
            settings.append(dict(label=label, model=name, encoder=encoder, threshold=used, default=default,
                                 features=features, batches=batches))

    def use(setting):
        if setting["threshold"] is not None:
            setting["encoder"].gate_threshold = setting["threshold"]

    rows = []
    for setting in settings:  # decisions (and warm-up) once per setting
        use(setting)
        stream_reports, offline_reports = [], []
        stream_pass(setting["encoder"], setting["features"], piece_frames, args.device, stream_reports)
        offline_pass(setting["encoder"], setting["batches"], args.device, offline_reports)
        row = {"setting": setting["label"], "model": setting["model"], "gate_threshold": setting["threshold"]}
        row.update({f"streaming_{k}": v for k, v in _ratios(stream_reports).items()})
        row.update({f"offline_{k}": v for k, v in _ratios(offline_reports).items()})
        row["gflops_per_audio_second"] = 2.0 * sum(r.encoder for r in stream_reports) / 1e9 / audio_seconds
        rows.append(row)
    stream_times = {s["label"]: [] for s in settings}
    offline_times = {s["label"]: [] for s in settings}
    for _ in range(args.repeats):
        for setting in settings:
            use(setting)
            stream_times[setting["label"]].append(stream_pass(setting["encoder"], setting["features"], piece_frames, args.device))
            offline_times[setting["label"]].append(offline_pass(setting["encoder"], setting["batches"], args.device))
    for setting, row in zip(settings, rows):
        row["streaming_seconds"] = statistics.median(stream_times[setting["label"]])
        row["offline_seconds"] = statistics.median(offline_times[setting["label"]])
        row["streaming_rtf"] = row["streaming_seconds"] / audio_seconds
        row["offline_rtf"] = row["offline_seconds"] / audio_seconds
        if args.profile:
            use(setting)
            row["streaming_profile"] = _profile(setting["encoder"], setting["features"], piece_frames, args.device)
    base = rows[0]
    for row in rows:
        for mode in ("streaming", "offline"):
            row[f"{mode}_speedup"] = base[f"{mode}_seconds"] / row[f"{mode}_seconds"]
            row[f"{mode}_theoretical_speedup"] = (
                base[f"{mode}_compute_ratio_encoder"] / row[f"{mode}_compute_ratio_encoder"]
            )
            row[f"{mode}_efficiency"] = row[f"{mode}_speedup"] / row[f"{mode}_theoretical_speedup"]
    for setting in settings:  # leave every encoder at its own threshold
        if setting["default"] is not None:
            setting["encoder"].gate_threshold = setting["default"]
    gated = next((s["encoder"] for s in settings if getattr(s["encoder"], "gated", False)), settings[0]["encoder"])
    machine = dict(machine_info(args.threads), device=args.device)
    if args.device.startswith("cuda"):
        machine["gpu"] = torch.cuda.get_device_name()
    return {
        "benchmark": "streaming_speed",
        "config": config_of(args),
        "machine": machine,
        "utterances": len(raw),
        "audio_seconds": audio_seconds,
        "chunk_ms": gated.chunk_size * gated.embed.stride * FRAME_SHIFT_S * 1e3,
        "rows": rows,
        "gemm_rows": gemm_rows(gated, gated.chunk_size, args.device),
    }


def format_table(result: Dict) -> str:
    header = (
        f"{'setting':22} {'ratio enc':>9} {'stream RTF':>10} {'speedup':>8} {'theory':>7} {'effic.':>7} "
        f"{'b16 ratio':>9} {'b16 RTF':>8} {'speedup':>8} {'theory':>7}"
    )
    lines = [f"{result['utterances']} utterances, {result['audio_seconds']:.0f} s of audio, "
             f"chunk {result['chunk_ms']:.0f} ms, {result['machine']['device']}, {result['machine']['threads']} thread(s)",
             header, "-" * len(header)]
    for row in result["rows"]:
        lines.append(
            f"{row['setting']:22} {row['streaming_compute_ratio_encoder']:9.3f} {row['streaming_rtf']:10.5f} "
            f"{row['streaming_speedup']:8.2f} {row['streaming_theoretical_speedup']:7.2f} {row['streaming_efficiency']:7.2f} "
            f"{row['offline_compute_ratio_encoder']:9.3f} {row['offline_rtf']:8.5f} {row['offline_speedup']:8.2f} "
            f"{row['offline_theoretical_speedup']:7.2f}"
        )
    lines.append("")
    lines.append("FFN projection time by rows of a chunk (why frame skipping inside a chunk saves less than MACs):")
    lines.append("  " + "  ".join(f"{r['rows']} rows {r['microseconds']:.1f} us ({r['time_fraction']:.2f})"
                                  for r in result["gemm_rows"]))
    for row in result["rows"]:
        if "streaming_profile" in row:
            ops = ", ".join(f"{p['op']} {p['share']:.0%}" for p in row["streaming_profile"])
            lines.append(f"profile {row['setting']}: {ops}")
    return "\n".join(lines)


def main(argv=None) -> Dict:
    args = get_parser().parse_args(argv)
    result = run(args)
    return report(result, format_table(result), args.output)


if __name__ == "__main__":
    main()
