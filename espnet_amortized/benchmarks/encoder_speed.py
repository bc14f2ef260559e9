"""Encoder speed at forced execution rates: measured speedup versus MAC ratio.

A dense encoder (``gate_unit: none``) and the amortized encoder with the same
shape run on the same features; the amortized one executes a forced fraction
of its MHSA/FFN units (random frames, per unit) with sparse execution. Times
are medians over repeats, in eval mode, batch 1, ``--threads`` CPU threads.

    python -m espnet_amortized.benchmarks.encoder_speed --output exp/benchmarks/encoder_speed.json

Modes: ``offline`` is the full-utterance forward with the chunk mask (what
ESPnet's offline decoding runs); ``streaming`` feeds the encoder chunk by
chunk with its cache (``forward_chunk``), the way a streaming product runs.
"""

import argparse
import pathlib
import statistics
import time

import torch

from espnet_amortized.benchmarks import config_of, machine_info, report
from espnet_amortized.compute import count_macs
from espnet_amortized.encoder import AmortizedTransformerEncoder
from espnet_amortized.encoder.masks import chunk_attention_mask

FRAME_SHIFT_S = 0.01


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_blocks", type=int, default=12)
    parser.add_argument("--output_size", type=int, default=256)
    parser.add_argument("--attention_heads", type=int, default=4)
    parser.add_argument("--linear_units", type=int, default=1024)
    parser.add_argument("--chunk_size", type=int, default=16)
    parser.add_argument("--left_chunks", type=int, default=4)
    parser.add_argument("--kv_from_skipped", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length (100 feature frames/s)")
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0, 0.6, 0.4, 0.2])
    parser.add_argument("--input_layers", nargs="+", default=["conv2d", "stack"], choices=["conv2d", "stack"])
    parser.add_argument("--modes", nargs="+", default=["offline", "streaming"], choices=["offline", "streaming"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=pathlib.Path, default=pathlib.Path("exp/benchmarks/encoder_speed.json"))
    return parser


def forced_gates(frames: int, num_blocks: int, rate: float, generator: torch.Generator) -> torch.Tensor:
    """(1, frames, num_blocks, 2) with exactly round(rate * frames) executing frames per unit."""
    count = round(rate * frames)
    gates = torch.zeros(1, frames, num_blocks, 2)
    for layer in range(num_blocks):
        for unit in range(2):
            gates[0, torch.randperm(frames, generator=generator)[:count], layer, unit] = 1.0
    return gates


def _interleaved_median_times(functions: dict, repeats: int) -> dict:
    """Median seconds per function, timed round-robin so that drift hits all alike."""
    for function in functions.values():
        function()  # warm-up
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _stream(encoder, features, gates):
    """Chunk-by-chunk inference, one chunk of features per call, with forced decisions."""
    state = encoder.init_state(forced_gates=gates)
    step = encoder.chunk_size * encoder.embed.stride
    total = features.size(1)
    outputs = []
    for start in range(0, total, step):
        out, state = encoder.forward_chunk(features[:, start : start + step], state, is_final=start + step >= total)
        outputs.append(out)
    return torch.cat(outputs, dim=1)


def _offline(encoder, features, gates):
    return encoder(features, torch.tensor([features.size(1)]), forced_gates=gates)[0]


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    frames_in = int(round(args.seconds / FRAME_SHIFT_S))
    features = torch.randn(1, frames_in, 80, generator=generator)
    lengths = torch.tensor([frames_in])
    shape = dict(
        output_size=args.output_size, attention_heads=args.attention_heads, linear_units=args.linear_units,
        num_blocks=args.num_blocks, chunk_size=args.chunk_size, left_chunks=args.left_chunks,
    )
    rows = []
    for input_layer in args.input_layers:
        torch.manual_seed(args.seed)
        dense = AmortizedTransformerEncoder(80, input_layer=input_layer, gate_unit="none", **shape).eval()
        amortized = AmortizedTransformerEncoder(
            80, input_layer=input_layer, kv_from_skipped=args.kv_from_skipped, **shape
        ).eval()
        amortized.load_state_dict(dense.state_dict(), strict=False)
        with torch.no_grad():
            frames = dense(features, lengths)[0].size(1)
            masks = torch.ones(1, 1, frames_in, dtype=torch.bool)
            gates = {rate: forced_gates(frames, args.num_blocks, rate, generator) for rate in args.rates}
            for mode in args.modes:
                run_encoder = _offline if mode == "offline" else _stream
                functions = {"subsampling": lambda: dense.pos_enc(dense.embed(features, masks)[0])}
                functions["dense"] = lambda: run_encoder(dense, features, None)
                for rate in args.rates:
                    functions[rate] = lambda rate=rate: run_encoder(amortized, features, gates[rate])
                times = _interleaved_median_times(functions, args.repeats)
                for rate in args.rates:
                    valid = torch.ones(1, frames, dtype=torch.bool)
                    allowed = chunk_attention_mask(frames, args.chunk_size, args.left_chunks)
                    report = count_macs(amortized, gates[rate], valid, allowed, [frames_in])
                    rows.append(
                        dict(
                            input_layer=input_layer, mode=mode, rate=rate,
                            mac_ratio_layers=report.layer_ratio, mac_ratio_encoder=report.encoder_ratio,
                            dense_s=times["dense"], amortized_s=times[rate], subsampling_s=times["subsampling"],
                            speedup_encoder=times["dense"] / times[rate],
                            speedup_layers=(times["dense"] - times["subsampling"])
                            / max(times[rate] - times["subsampling"], 1e-9),
                            ideal_speedup_layers=1.0 / report.layer_ratio,
                            gflops_per_audio_second=report.gflops_per_second(args.seconds),
                        )
                    )
    return {
        "benchmark": "encoder_speed",
        "config": config_of(args),
        "machine": machine_info(args.threads),
        "rows": rows,
    }


def format_table(result: dict) -> str:
    header = (
        f"{'input':7} {'mode':9} {'exec':>5} {'MAC layers':>10} {'MAC enc':>8} {'dense ms':>9} "
        f"{'amort ms':>9} {'speedup layers':>14} {'(ideal)':>8} {'speedup enc':>11}"
    )
    lines = [header, "-" * len(header)]
    for row in result["rows"]:
        lines.append(
            f"{row['input_layer']:7} {row['mode']:9} {row['rate']:5.0%} {row['mac_ratio_layers']:10.3f} "
            f"{row['mac_ratio_encoder']:8.3f} {1e3 * row['dense_s']:9.1f} {1e3 * row['amortized_s']:9.1f} "
            f"{row['speedup_layers']:14.2f} {row['ideal_speedup_layers']:8.2f} {row['speedup_encoder']:11.2f}"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = get_parser().parse_args(argv)
    result = run(args)
    return report(result, format_table(result), args.output)


if __name__ == "__main__":
    main()
