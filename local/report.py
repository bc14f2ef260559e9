#!/usr/bin/env python3
"""Score every decoded test set and gather WER, compute and speed into one table.

    python local/report.py --dumpdir dump/fbank --test_sets test_clean test_other \
        --exps exp/asr_dense exp/asr_amortized --out exp/RESULTS.md

For each experiment and test set: ``score_wer/`` (local/score.py) from
``decode_<set>/1best_recog/text``, and the compute summary the decoder wrote
(``decode_<set>/summary.json``). Prints the table, writes it as Markdown to
--out and as JSON next to it, and (offline mode) ``summary.json`` beside
--out: one object per model under ``"models"`` (name, role, config,
front_end, params_m, latency_ms, epochs, training_minutes, compute ratios,
gflops_per_audio_second, wer = {set: [wer, ci_low, ci_high]}, the paired
test against the first model, streaming RTF, hardware) and, at the top,
``corpus``, ``machine`` and ``command`` (from --corpus and --command).
With ``--inference_model`` other than valid.loss.ave.pth (run.sh's option of the same name), each
experiment's decodings of that checkpoint are read from ``decode_model_<name>/`` (``inference_model_dir``)
and the summary is written as ``summary_model_<name>.json``.
"""

import argparse
import json
import pathlib
import platform
import re
import time
from typing import Optional

from config_task import load_tasks_module
from score import score

task_of = load_tasks_module().task_of  # the recipe's rule: which ESPnet task trained a config

# The checkpoint decoded by default, as ESPnet's asr.sh (--inference_asr_model): the n-best average.
DEFAULT_INFERENCE_MODEL = "valid.loss.ave.pth"


def inference_model_tag(inference_model: str) -> str:
    """"" for the default checkpoint, else ``_model_<name>`` (valid.loss.best.pth: _model_valid.loss.best), the
    suffix of its decoding folder and its results files, as asr.sh tags its inference folders."""
    if inference_model == DEFAULT_INFERENCE_MODEL:
        return ""
    return "_model_" + inference_model.replace("/", "_").removesuffix(".pth")


def inference_model_dir(exp: pathlib.Path, inference_model: str = DEFAULT_INFERENCE_MODEL) -> pathlib.Path:
    """Where the decodings of a checkpoint are: the experiment itself for the default one, else
    ``decode<tag>/`` in it (its own folder, so that no decoding of another checkpoint is overwritten)."""
    tag = inference_model_tag(inference_model)
    return exp / f"decode{tag}" if tag else exp

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent


def describe_machine() -> str:
    import os

    model = platform.processor() or platform.machine()
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        model = names[0] if names else model
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def count_parameters(model_file: pathlib.Path) -> int:
    import torch

    state = torch.load(model_file, map_location="cpu", weights_only=True)
    counters = ("num_updates", "compute_multiplier")  # the amortized model's schedule buffers, not weights
    return sum(tensor.numel() for name, tensor in state.items()
               if tensor.is_floating_point() and not name.endswith(counters))


def streams_only_when_streamed(exp: pathlib.Path) -> bool:
    """ESPnet's asr_transducer models: their offline decode gives the encoder the whole utterance, so only their
    streaming decode is at their streaming latency. Our encoders (chunk mask) and ESPnet's contextual block
    encoders (block processing) are at it offline too."""
    return task_of(exp / "config.yaml") == "asr_transducer"


def decode_dirs(exp: pathlib.Path, test_set: str, mode: str = "offline",
                inference_model: str = DEFAULT_INFERENCE_MODEL):
    """decode_<set>, decode_<set>_th<threshold> (one per decode-time gate threshold), decode_<set>_b<budget>
    (one per budget of a budget-conditioned model, by budget) and decode_<set>_frozen<budget> (that budget's
    units frozen to their majority decisions, by budget); decode_streaming_<set>* for streaming decoding. Offline, a model that is at its streaming latency only when
    streamed (streams_only_when_streamed) comes with its streaming decode first: the row its summary reports.
    All of them in inference_model_dir(exp, inference_model)."""
    prefix = f"decode_{test_set}" if mode == "offline" else f"decode_streaming_{test_set}"
    root = inference_model_dir(exp, inference_model)
    budgets = sorted(root.glob(f"{prefix}_b*"), key=lambda d: float(d.name[len(prefix) + 2:]))
    frozen = sorted(root.glob(f"{prefix}_frozen*"), key=lambda d: float(d.name[len(prefix) + 7:]))
    found = [d for d in [root / prefix, *sorted(root.glob(f"{prefix}_th*")), *budgets, *frozen] if d.is_dir()]
    if mode == "offline" and streams_only_when_streamed(exp):
        streamed = root / f"decode_streaming_{test_set}"
        if not streamed.is_dir():
            raise FileNotFoundError(f"{streamed} is missing: an asr_transducer model is at its streaming latency only "
                                    "when streamed; run stage 5 (it decodes such models both ways)")
        found.insert(0, streamed)
    if not found:
        raise FileNotFoundError(f"{root}/{prefix}* is missing: run stage 5 (decoding) first"
                                + (f" with --inference_model {inference_model}" if root != exp else ""))
    return found


def is_default_decoding(decode: pathlib.Path, test_set: str) -> bool:
    """decode_<set> or decode_streaming_<set>, not a decode-time variant (_th<T>, _b<budget>, _frozen<budget>)."""
    return decode.name.endswith(test_set)


def own_decoding(found, test_set: str):
    """The decoding a model's summary row reports: its first default decoding, else (a budget-conditioned
    model decoded only at budgets) its largest budget's."""
    if is_default_decoding(found[0], test_set):
        return found[0]
    budgets = [d for d in found if re.search(r"_b[\d.]+$", d.name)]
    return budgets[-1] if budgets else None


def add_statistics(rows, resamples: int = 1000) -> None:
    """95% bootstrap interval of each WER and a paired bootstrap against the first model's default decoding."""
    from significance import bootstrap_interval, paired_bootstrap, read_per_utterance

    tables = {id(row): read_per_utterance(row["per_utterance"]) for row in rows}
    baselines = {}
    for row in rows:
        if row["test_set"] not in baselines and row["own"]:
            baselines[row["test_set"]] = row
    for row in rows:
        errors, words = zip(*tables[id(row)].values())
        _, row["wer_low"], row["wer_high"] = bootstrap_interval(errors, words, resamples)
        base = baselines.get(row["test_set"])
        row["baseline"] = None if base is None else base["model"]
        if base is not None and base is not row:
            row["vs_baseline"] = paired_bootstrap(tables[id(base)], tables[id(row)], resamples)


def gather(dumpdir: pathlib.Path, test_sets, exps, mode: str = "offline",
           inference_model: str = DEFAULT_INFERENCE_MODEL):
    rows = []
    for exp in exps:
        model_file = exp / inference_model
        parameters = count_parameters(model_file) if model_file.is_file() else None
        latency_ms, full_context_offline = describe_model(exp)["latency_ms"], streams_only_when_streamed(exp)
        for test_set in test_sets:
            found = decode_dirs(exp, test_set, mode, inference_model)
            own_decode = own_decoding(found, test_set)
            for decode in found:
                hyp = decode / "1best_recog" / "text"
                if not hyp.is_file():
                    raise FileNotFoundError(f"{hyp} is missing: rerun stage 5 (decoding)")
                wer = score(dumpdir / test_set / "text", hyp, decode / "score_wer")
                summary = json.loads((decode / "summary.json").read_text())
                rows.append(
                    {
                        "model": exp.name, "test_set": test_set, "parameters": parameters,
                        "decode": decode.name, "gate_threshold": summary.get("gate_threshold"),
                        "compute_budget": summary.get("compute_budget"),
                        "frozen": summary.get("frozen_units") is not None,
                        "own": decode == own_decode,
                        # None: this decoding is not streamed (an asr_transducer model decoded offline)
                        "latency_ms": (None if full_context_offline and not decode.name.startswith("decode_streaming_")
                                       else latency_ms),
                        "per_utterance": decode / "score_wer" / "per_utterance.tsv",
                        "wer": wer["err"], "sub": wer["sub"], "del": wer["del"], "ins": wer["ins"],
                        "sentences": wer["sentences"], "words": wer["words"],
                        "compute_ratio_layers": summary.get("compute_ratio_layers"),
                        "compute_ratio_encoder": summary.get("compute_ratio_encoder"),
                        "gflops_per_second": summary["gflops_per_second"],
                        "gflops_per_second_search": search_gflops(summary),
                        # gated models: how often each unit runs, and the saving's dynamic share (issue 13)
                        "unit_rates": ({unit: summary[f"{unit}_rates"] for unit in ("attention", "ffn", "conv")
                                        if f"{unit}_rates" in summary} if "attention_rates" in summary else None),
                        "dynamic_saving_share": summary.get("dynamic_saving_share"),
                        "rtf": summary["rtf"], "encoder_rtf": summary.get("encoder_rtf"),
                        # streaming decodings only
                        "beam_size": summary.get("beam_size"),
                        "piece_latency_mean_ms": summary.get("piece_latency_mean_ms"),
                        "piece_latency_p95_ms": summary.get("piece_latency_p95_ms"),
                        "algorithmic_latency_ms": summary.get("algorithmic_latency_ms"),
                    }
                )
    return rows


LAUNCH_STAMP = re.compile(r"^# (started|ended) at (.+?)(?: with exit code -?\d+)?$")


def training_seconds(exp: pathlib.Path):
    """Wall time of the training job from the started/ended lines local/run.py writes to launch.log, summed over
    resumed runs (a run killed before its "ended" line is not counted); None when there is no finished run."""
    launch = exp / "launch.log"
    if not launch.is_file():
        return None
    finished, started = [], None
    for line in launch.read_text(errors="replace").splitlines():
        match = LAUNCH_STAMP.match(line)
        if match is None:
            continue
        stamp = time.mktime(time.strptime(match.group(2).strip(), "%a %b %d %H:%M:%S %Y"))
        if match.group(1) == "started":
            started = stamp
        elif started is not None:
            finished.append(stamp - started)
            started = None
    return sum(finished) if finished else None


def training_config(exp: pathlib.Path):
    """The --config of the training command (first line of launch.log), relative to the repository or else the
    working directory when it lies below one of them."""
    launch = exp / "launch.log"
    if not launch.is_file():
        return None
    match = re.search(r"--config (\S+)", launch.read_text(errors="replace").split("\n", 1)[0])
    if match is None:
        return None
    config = pathlib.Path(match.group(1)).resolve()
    for root in (REPOSITORY, pathlib.Path.cwd().resolve()):
        if config.is_relative_to(root):
            return str(config.relative_to(root))
    return str(config)


# Encoders that are ours (roles dense / gated); any other encoder is a toolkit baseline.
OUR_ENCODERS = ("amortized_transformer",)


def describe_model(exp: pathlib.Path):
    """Role, front-end, algorithmic latency and epochs from the experiment's config.yaml (ESPnet's copy).

    Latency: a chunk's first frame waits for the whole chunk, plus the input
    frames the front-end needs beyond its stride (ours: chunk_size frames after
    subsampling; ESPnet's contextual block encoders: hop_size + look_ahead; ESPnet's asr_transducer
    models: the decoding window of their streaming decode, when they have one).
    """
    import yaml

    config = exp / "config.yaml"
    conf = (yaml.safe_load(config.read_text()) or {}) if config.is_file() else {}
    encoder = conf.get("encoder")
    encoder_conf = conf.get("encoder_conf") or {}
    description = {"role": None, "front_end": encoder_conf.get("input_layer"), "latency_ms": None,
                   "epochs": _epochs_trained(exp, conf)}
    if task_of(config) == "asr_transducer":  # ESPnet's own streaming transducer: a toolkit baseline
        input_conf = encoder_conf.get("input_conf") or {}
        description["role"] = "toolkit"
        description["front_end"] = (f"{'vgg' if input_conf.get('vgg_like') else 'conv2d'} "
                                    f"x{input_conf.get('subsampling_factor', 4)}")
        # Its latency is set when it streams (the decoding window): decode_streaming_*/summary.json says it.
        streamed = sorted(exp.glob("decode_streaming_*/summary.json"))
        if streamed:
            description["latency_ms"] = json.loads(streamed[0].read_text()).get("algorithmic_latency_ms")
        return description
    if encoder is None:
        return description
    if encoder in OUR_ENCODERS:
        from espnet_amortized.encoder.subsampling import build_subsampling

        embed = build_subsampling(
            encoder_conf.get("input_layer", "conv2d"), 80, 8, 0.0, encoder_conf.get("stack_frames", 4),
            encoder_conf.get("subsampling_factor"), encoder_conf.get("subsampling_channels", 48),
            encoder_conf.get("subsampling_kernel_size", 3),
        )
        gated = encoder_conf.get("gate_unit", "unit") != "none"
        description["role"] = "gated" if gated else "dense"
        model_conf = conf.get("model_conf") or {}
        if gated and encoder_conf.get("budget_conditioning", False):
            if encoder_conf.get("budget_min_fraction", 0.0) >= 1.0:  # trained at budget_min alone: a dedicated model
                description["target_budget"] = encoder_conf.get("budget_min", 0.25)
            else:
                description["role"] = "budget"
        elif gated and model_conf.get("compute_regularizer") == "budget":
            description["target_budget"] = model_conf.get("compute_target", 0.4)  # a dedicated model's budget
        chunk_frames = encoder_conf.get("chunk_size", 16) * embed.stride
        description["latency_ms"] = 10.0 * (chunk_frames + embed.receptive_field - embed.stride)
        if description["front_end"] == "dw_striding":
            description["front_end"] = (f"dw_striding x{embed.stride}, {encoder_conf.get('subsampling_channels', 48)} "
                                        f"channels")
        elif description["front_end"] == "stack":
            description["front_end"] = f"stack {embed.stride}"
    else:
        description["role"] = "toolkit"
        strides = {"conv2d": (4, 7), "conv2d6": (6, 11), "conv2d8": (8, 15)}
        stride, field = strides.get(encoder_conf.get("input_layer", "conv2d"), (None, None))
        if stride is not None and "hop_size" in encoder_conf:
            block = encoder_conf["hop_size"] + encoder_conf.get("look_ahead", 0)
            description["latency_ms"] = 10.0 * (block * stride + field - stride)
    return description


def _epochs_trained(exp: pathlib.Path, conf: dict):
    """Epochs ESPnet finished (its N.pth checkpoints, or the last "N epoch results" line), else max_epoch."""
    finished = [int(p.stem) for p in exp.glob("[0-9]*.pth") if p.stem.isdigit()]
    train_log = exp / "train.log"
    if train_log.is_file():
        found = re.findall(r"(\d+)epoch results:", train_log.read_text(errors="replace"))
        finished += [int(n) for n in found]
    return max(finished) if finished else conf.get("max_epoch")


def summarize(rows, exps, test_sets, inference_model: str = DEFAULT_INFERENCE_MODEL):
    """One row per model in the style of ESPnet's RESULTS.md: its own gate threshold at its streaming latency
    (decode_dirs' first decoding), WER per test set with its interval and the paired test against the first model,
    the compute and decode RTF of the first test set, the streaming RTF of decode_streaming_<first set> when it
    was decoded that way, training wall time and hardware, and the checkpoint decoded (``inference_model``)."""
    import yaml

    summary = []
    for exp in exps:
        own = {r["test_set"]: r for r in rows if r["model"] == exp.name and r["own"]}
        if test_sets[0] not in own:
            continue
        first = own[test_sets[0]]
        streaming = inference_model_dir(exp, inference_model) / f"decode_streaming_{test_sets[0]}" / "summary.json"
        config = exp / "config.yaml"
        ngpu = (yaml.safe_load(config.read_text()) or {}).get("ngpu", 0) if config.is_file() else None
        seconds = training_seconds(exp)
        summary.append({
            "name": exp.name, **describe_model(exp),
            "params_m": None if first["parameters"] is None else round(first["parameters"] / 1e6, 3),
            "training_minutes": None if seconds is None else round(seconds / 60, 1),
            "gflops_per_audio_second": first["gflops_per_second"],
            "wer": {name: [row["wer"], row.get("wer_low"), row.get("wer_high")] for name, row in own.items()},
            "model": exp.name, "config": training_config(exp), "inference_model": inference_model,
            "parameters": first["parameters"],
            "compute_ratio_layers": first["compute_ratio_layers"], "compute_ratio_encoder": first["compute_ratio_encoder"],
            "gflops_per_second": first["gflops_per_second"], "decoding": first["decode"].replace(test_sets[0], "<set>"),
            "gflops_per_second_search": first["gflops_per_second_search"],
            "unit_rates": first["unit_rates"], "dynamic_saving_share": first["dynamic_saving_share"],
            "decode_rtf": first["rtf"],
            "sets": {name: {key: row.get(key) for key in ("wer", "wer_low", "wer_high", "vs_baseline")}
                     for name, row in own.items()},
            "streaming_rtf": json.loads(streaming.read_text())["rtf"] if streaming.is_file() else None,
            **budget_results(rows, exp.name),
            "training_seconds": seconds,
            "hardware": None if ngpu is None else (f"{ngpu} GPU" if ngpu else "CPU, 1 thread"),
        })
    mark_static_controls(summary)
    return summary


# A dense model below this share of the reference dense model's GFLOPs is a static control (issue 13).
STATIC_CONTROL_SHARE = 0.9


def mark_static_controls(summary) -> None:
    """With a dense model first (the reference), a later dense model that runs less than ``STATIC_CONTROL_SHARE``
    of its GFLOPs per audio second is a static control: a smaller dense model of a gated model's compute (role
    "static", with ``compute_ratio_vs_reference``, its whole encoder's GFLOPs over the reference's)."""
    if not summary or summary[0]["role"] != "dense" or not summary[0]["gflops_per_audio_second"]:
        return
    reference = summary[0]["gflops_per_audio_second"]
    for model in summary[1:]:
        share = (model["gflops_per_audio_second"] or reference) / reference
        if model["role"] == "dense" and share < STATIC_CONTROL_SHARE:
            model["role"] = "static"
            model["compute_ratio_vs_reference"] = round(share, 4)


# A decoding is compared with the model nearest in compute within this share of the reference's.
EQUAL_COMPUTE = 0.05


def compare_at_equal_compute(summary, rows, resamples: int = 1000) -> None:
    """Paired bootstraps on the same utterances against the model of (about) the same whole-encoder compute:
    each gated decoding against the static control (``vs_static``), and each budget of a budget-conditioned
    model against the dedicated gated model (``vs_dedicated``): ``sets[<set>][key]`` of a dedicated model,
    ``budgets[<b>][key][<set>]`` of a budget-conditioned one, and each of its frozen controls against the dynamic
    decoding at the same budget (``frozen[<b>]["vs_dynamic"][<set>]``); each ``{"model": name, "compute_ratio_vs_reference",
    "delta": WER(this) - WER(that), "low", "high", "relative", ...}`` (negative: this one is better). Compute is
    GFLOPs per audio second over the first model's (the reference dense model); none within
    ``EQUAL_COMPUTE``: no entry."""
    from significance import paired_bootstrap, read_per_utterance

    if not summary or not summary[0]["gflops_per_audio_second"]:
        return
    reference = summary[0]["gflops_per_audio_second"]
    own = {(r["model"], r["test_set"]): r for r in rows if r["own"]}

    def versus(row, role):
        share = row["gflops_per_second"] / reference
        others = [m for m in summary if m["role"] == role]
        if not others:
            return None
        other = min(others, key=lambda m: abs(m["gflops_per_audio_second"] / reference - share))
        base = own.get((other["model"], row["test_set"]))
        if base is None or abs(other["gflops_per_audio_second"] / reference - share) > EQUAL_COMPUTE:
            return None
        paired = paired_bootstrap(read_per_utterance(base["per_utterance"]), read_per_utterance(row["per_utterance"]),
                                  resamples)
        return {"model": other["model"], "compute_ratio_vs_reference": round(share, 4), **paired}

    for model in summary:
        if model["role"] == "gated":
            for test_set, result in model["sets"].items():
                row = own.get((model["model"], test_set))
                if row is not None and (compared := versus(row, "static")) is not None:
                    result["vs_static"] = compared
        elif model["role"] == "budget":
            dynamic = {(r["compute_budget"], r["test_set"]): r for r in rows if r["model"] == model["model"]
                       and r.get("compute_budget") is not None and not r.get("frozen")}
            for row in rows:
                entry = model.get("frozen", {}).get(f"{row['compute_budget']:g}") if (
                    row["model"] == model["model"] and row.get("frozen") and row.get("compute_budget") is not None
                ) else None
                base = dynamic.get((row.get("compute_budget"), row["test_set"]))
                if entry is not None and base is not None:
                    paired = paired_bootstrap(read_per_utterance(base["per_utterance"]),
                                              read_per_utterance(row["per_utterance"]), resamples)
                    entry.setdefault("vs_dynamic", {})[row["test_set"]] = {"model": model["model"], **paired}
            for row in rows:
                entry = model.get("budgets", {}).get(f"{row['compute_budget']:g}") if (
                    row["model"] == model["model"] and row.get("compute_budget") is not None
                    and not row.get("frozen")) else None
                if entry is None:
                    continue
                for role, key in (("static", "vs_static"), ("gated", "vs_dedicated")):
                    if (compared := versus(row, role)) is not None:
                        entry.setdefault(key, {})[row["test_set"]] = compared


def search_gflops(summary) -> Optional[float]:
    """The transducer search's prediction + joint network GFLOPs per audio second (None: not counted)."""
    parts = [summary.get(f"gflops_per_second_{network}") for network in ("prediction", "joint")]
    return None if None in parts else sum(parts)


def budget_results(rows, model: str) -> dict:
    """A budget-conditioned model's decodings per budget: {"budgets": {"0.35": {"compute_ratio_encoder": ...,
    "wer": {set: [wer, low, high]}}, ...}} (the first test set's compute), and its frozen controls
    (decode_<set>_frozen<b>) as {"frozen": {"0.35": {..., "unit_rates"}}}; {} for other models."""
    results = {}
    for row in rows:
        if row["model"] != model or row.get("compute_budget") is None:
            continue
        frozen = row.get("frozen", False)
        if not frozen and not re.search(r"_b[\d.]+$", row["decode"]):
            continue
        entry = results.setdefault("frozen" if frozen else "budgets", {}).setdefault(
            f"{row['compute_budget']:g}", {"compute_ratio_encoder": None, "wer": {}})
        if entry["compute_ratio_encoder"] is None:
            entry["compute_ratio_encoder"] = row["compute_ratio_encoder"]
        entry["wer"][row["test_set"]] = [row["wer"], row.get("wer_low"), row.get("wer_high")]
        if row.get("vs_baseline") is not None:  # the paired test against the first model
            entry.setdefault("vs_baseline", {})[row["test_set"]] = row["vs_baseline"]
        if frozen:
            entry.setdefault("unit_rates", row["unit_rates"])
    return results


def format_summary(summary, test_sets) -> str:
    header = ("| model | role | training config | params | latency ms | compute ratio layers / encoder "
              "| GFLOPs / audio s |")
    for name in test_sets:
        header += f" {name} WER [95% CI] | vs first model |"
    header += " decode RTF | streaming RTF | training time | hardware |"
    lines = [header, "|" + "---|" * (11 + 2 * len(test_sets))]
    for s in summary:
        params = f"{s['parameters'] / 1e6:.2f} M" if s["parameters"] else "-"
        line = (f"| {s['model']} | {s['role'] or '-'} | {s['config'] or '-'} | {params} | {_number(s['latency_ms'], 0)} "
                f"| {s['compute_ratio_layers']:.3f} / {s['compute_ratio_encoder']:.3f} | {s['gflops_per_second']:.3f} |")
        for name in test_sets:
            result = s["sets"].get(name)
            if result is None:
                line += " - | - |"
                continue
            interval = f" [{result['wer_low']:.2f}, {result['wer_high']:.2f}]" if result["wer_low"] is not None else ""
            line += f" {result['wer']:.2f}{interval} | {_versus(result)} |"
        minutes = "-" if s["training_seconds"] is None else f"{s['training_seconds'] / 60:.0f} min"
        line += (f" {_number(s['decode_rtf'], 4)} | {_number(s['streaming_rtf'], 4)} | {minutes} "
                 f"| {s['hardware'] or '-'} |")
        lines.append(line)
    return "\n".join(lines) + "\n"


def format_markdown(rows, mode: str = "offline") -> str:
    header = (
        "| model | params | decoding | gate threshold | compute budget | WER % (S/D/I) | 95% CI | vs first model: delta [95% CI], P(not worse) "
        "| compute ratio layers | compute ratio encoder | GFLOPs / audio s | search GFLOPs / audio s | RTF | encoder RTF |"
    )
    columns = 14
    if mode == "streaming":
        header += " beam | piece latency mean / p95 ms | algorithmic latency ms |"
        columns += 3
    lines = [header, "|" + "---|" * columns]
    for r in rows:
        params = f"{r['parameters'] / 1e6:.2f} M" if r["parameters"] else "-"
        threshold = "-" if r["gate_threshold"] is None else f"{r['gate_threshold']:g}"
        budget = "-" if r.get("compute_budget") is None else f"{r['compute_budget']:g}"
        encoder_rtf = "-" if r["encoder_rtf"] is None else f"{r['encoder_rtf']:.4f}"
        line = (
            f"| {r['model']} | {params} | {r['decode']} | {threshold} | {budget} | {r['wer']:.2f} ({r['sub']:.1f}/{r['del']:.1f}/{r['ins']:.1f}) "
            f"| {_interval(r)} | {_versus(r)} "
            f"| {r['compute_ratio_layers']:.3f} | {r['compute_ratio_encoder']:.3f} | {r['gflops_per_second']:.3f} "
            f"| {_number(r['gflops_per_second_search'], 3)} | {r['rtf']:.4f} | {encoder_rtf} |"
        )
        if mode == "streaming":
            line += (
                f" {r['beam_size'] or '-'} | {_number(r['piece_latency_mean_ms'])} / {_number(r['piece_latency_p95_ms'])} "
                f"| {_number(r['algorithmic_latency_ms'], 0)} |"
            )
        lines.append(line)
    return "\n".join(lines) + "\n"


def _interval(row) -> str:
    return f"{row['wer_low']:.2f}-{row['wer_high']:.2f}" if "wer_low" in row else "-"


def _versus(row) -> str:
    versus = row.get("vs_baseline")
    if versus is None:
        return "-"
    return (f"{versus['delta']:+.2f} [{versus['low']:+.2f}, {versus['high']:+.2f}] "
            f"({100 * versus['relative']:+.0f}% rel.), {versus['p_not_worse']:.2f}")


def _number(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dumpdir", type=pathlib.Path, required=True, help="folder of the test sets' text files")
    parser.add_argument("--test_sets", nargs="+", required=True)
    parser.add_argument("--exps", type=pathlib.Path, nargs="+", required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--mode", default="offline", choices=["offline", "streaming"], help="which decodings")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (0: none)")
    parser.add_argument("--corpus", default=None, help="what the models were trained and tested on (summary.json)")
    parser.add_argument("--command", default=None, help="the command that made these results (summary.json)")
    parser.add_argument("--inference_model", default=DEFAULT_INFERENCE_MODEL,
                        help="the checkpoint whose decodings are reported (run.sh --inference_model)")
    args = parser.parse_args(argv)
    rows = gather(args.dumpdir, args.test_sets, args.exps, args.mode, args.inference_model)
    if args.bootstrap > 0:
        add_statistics(rows, args.bootstrap)
    table = format_markdown(rows, args.mode)
    machine = describe_machine()
    text = (
        f"# Results ({time.strftime('%Y-%m-%d %H:%M')})\n\n"
        f"Batch-1 {args.mode} decoding on the CPU, 1 thread (see each decode_*/summary.json); compute ratios are executed/dense "
        "MACs (layers: the gated layers plus the arbitrator; encoder: with the subsampling).\n"
        f"Machine: {machine}. Checkpoint decoded: {args.inference_model}.\n\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.mode == "offline":
        summary = summarize(rows, args.exps, args.test_sets, args.inference_model)
        if args.bootstrap > 0:
            compare_at_equal_compute(summary, rows, args.bootstrap)
        text += ("One row per model at its own gate threshold and its streaming latency (an asr_transducer model: "
                 "its streaming decode); compute and decode RTF of the first test set; streaming RTF of "
                 "decode_streaming_<first set> where decoded that way; training wall time from launch.log:\n\n"
                 f"{format_summary(summary, args.test_sets)}\nEvery decoding:\n\n")
        document = {"corpus": args.corpus, "machine": machine, "command": args.command, "test_sets": list(args.test_sets),
                    "models": summary}
        args.out.with_name(f"summary{inference_model_tag(args.inference_model)}.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    text += table
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    print(text, end="")


if __name__ == "__main__":
    main()
