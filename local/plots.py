#!/usr/bin/env python3
"""Plots of a recipe run (PNG, written by the scoring stage).

    python local/plots.py --results exp/RESULTS.json --exps exp/asr_dense exp/asr_amortized \
        --dumpdir dump/fbank --out exp/plots

- ``pareto_<set>.png``: WER (95% bootstrap interval) against the encoder compute
  relative to the first model and against GFLOPs per second of audio, one point per model and
  decode-time threshold or budget (a budget-conditioned model's budgets are
  one curve, its frozen-majority controls crosses beside it); models with a dense encoder (ratio 1) are the baselines and
  drawn as stars. ``--also SUMMARY`` adds the models of the roles ``--also_roles`` (default: the toolkit
  baselines; ``SUMMARY:ROLE,ROLE`` picks others) from a committed summary.json, e.g. one measured in another
  run on the same corpus and test sets: drawn at their own WER and GFLOPs, the legend naming the file (no
  paired comparison).
- ``training_curves.png``: train/valid loss and compute ratio per epoch, from
  each experiment's ``train.log``.
- ``compute_<model>_<utterance>.png``: an utterance's fbank above and, below,
  which MHSA/FFN units ran on each encoder frame (the decoder saves these
  decisions as ``gates/<utterance>.npy`` for a few utterances).
"""

import argparse
import json
import pathlib
import re
from typing import Dict, List, Tuple

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def point_labels(row: Dict, test_set: str):
    """(annotation, legend entry or None) of one decoding in the Pareto plot: a model's own decoding is named
    with its algorithmic latency in the legend; its other decodings by their threshold or budget, or as full
    context."""
    name = row["model"].removeprefix("asr_")
    if row.get("own", row["decode"].endswith(test_set)):
        latency = row.get("latency_ms")
        source = f", {row['source']}" if row.get("source") else ""
        return name, f"{name} ({'latency unknown' if latency is None else f'{latency:.0f} ms'}{source})"
    if is_frozen(row):  # the units frozen to their majority decisions at a budget (issue 13's static control)
        return f"frozen b={row['compute_budget']:g}", None
    budget = re.search(r"_b([\d.]+)$", row["decode"])
    if budget:  # a budget-conditioned model at one of its budgets
        return f"b={float(budget.group(1)):g}", None
    if "_th" not in row["decode"]:  # an asr_transducer model's offline decode: its encoder saw the whole utterance
        return "full context", None
    threshold = row.get("gate_threshold")  # a dense model decoded at a threshold has none of its own: its folder's
    return "@" + (f"{threshold:g}" if threshold is not None else row["decode"].rsplit("_th", 1)[-1]), None


def is_frozen(row: Dict) -> bool:
    """A decoding with its units frozen to their majority decisions (local/report.py's rows say so)."""
    return bool(row.get("frozen", False))


def summary_rows(summary: Dict, source: str, roles) -> List[Dict]:
    """Pareto rows of the models of ``roles`` in a summary.json (local/report.py), one per test set and decoding:
    their own and, for a budget-conditioned model, each budget (its GFLOPs scaled by the budget's encoder compute),
    marked with ``source`` (the file they come from)."""
    rows = []
    for model in summary["models"]:
        if model.get("role") not in roles:
            continue
        common = {"model": model["name"], "role": model["role"], "latency_ms": model.get("latency_ms"),
                  "gate_threshold": None, "source": source}
        for test_set, (wer, low, high) in model["wer"].items():
            rows.append({**common, "test_set": test_set, "decode": f"decode_{test_set}", "own": True, "wer": wer,
                         "wer_low": low, "wer_high": high, "compute_ratio_layers": model["compute_ratio_layers"],
                         "gflops_per_second": model.get("gflops_per_second")})
        for budget, result in (model.get("budgets") or {}).items():
            gflops = model.get("gflops_per_second")
            if gflops is not None:
                gflops *= result["compute_ratio_encoder"] / model["compute_ratio_encoder"]
            for test_set, (wer, low, high) in result["wer"].items():
                rows.append({**common, "test_set": test_set, "decode": f"decode_{test_set}_b{budget}", "own": False,
                             "wer": wer, "wer_low": low, "wer_high": high, "compute_budget": float(budget),
                             # a budget has no layer ratio of its own: its encoder ratio orders the curve
                             "compute_ratio_layers": result["compute_ratio_encoder"], "gflops_per_second": gflops})
    if not rows:
        raise ValueError(f"--also {source}: no model of role {' or '.join(roles)} in it")
    return rows


# The left Pareto panel's right edge: a model of more compute than this share of the first model's is drawn there.
RELATIVE_COMPUTE_EDGE = 1.2


def relative_compute(row: Dict, reference_gflops) -> Tuple[float, str]:
    """(x on the left Pareto panel, note): the decoding's encoder GFLOPs over the first model's (so a smaller dense
    model, a static control, sits at its compute, not at its own ratio 1), at most ``RELATIVE_COMPUTE_EDGE``
    (the note then gives the true ratio); the layer compute ratio where GFLOPs are missing."""
    if not reference_gflops or row.get("gflops_per_second") is None:
        return row["compute_ratio_layers"], ""
    ratio = row["gflops_per_second"] / reference_gflops
    if ratio > RELATIVE_COMPUTE_EDGE:
        return RELATIVE_COMPUTE_EDGE, f" (x{ratio:.1f})"
    return ratio, ""


def pareto(rows: List[Dict], out: pathlib.Path) -> List[pathlib.Path]:
    """Left: WER against the encoder compute relative to the first model (the reference dense encoder); right:
    against GFLOPs per second of audio, which places encoders of different cost (e.g. ESPnet's contextual block encoder) where they
    are. One colour per model; its decode-time thresholds are joined by a line, its own threshold is the labelled
    point, and the legend gives each model's algorithmic latency (row ``latency_ms``: the figures compare at matched
    latency; an asr_transducer model's full-context offline decode is the point labelled so). Dashed guides: the
    first baseline's WER + 3% relative and 60% less compute (the published claim)."""
    plt = _pyplot()
    written = []
    for test_set in sorted({r["test_set"] for r in rows}):
        selected = [r for r in rows if r["test_set"] == test_set]
        figure, axes = plt.subplots(1, 2, figsize=(12, 5 + 0.1 * len({r["model"] for r in selected})))
        first_baseline = None
        first = next((r for r in selected if r.get("own", r["decode"].endswith(test_set))), selected[0])
        reference_gflops = first.get("gflops_per_second")
        for model in dict.fromkeys(r["model"] for r in selected):
            points = sorted((r for r in selected if r["model"] == model), key=lambda r: r["compute_ratio_layers"])
            color = None
            for row in points:
                # No gates (a dense or stock encoder): no threshold, or exactly the dense compute.
                if "role" in row:  # a row from a summary.json says what it is
                    baseline = row["role"] in ("dense", "static", "toolkit")
                else:
                    baseline = row.get("gate_threshold") is None or abs(row["compute_ratio_layers"] - 1.0) < 1e-9
                if baseline and first_baseline is None:
                    first_baseline = row
                own = row.get("own", row["decode"].endswith(test_set))
                low, high = row.get("wer_low", row["wer"]), row.get("wer_high", row["wer"])
                label, legend = point_labels(row, test_set)
                relative, note = relative_compute(row, reference_gflops)
                for axis, x in ((axes[0], relative), (axes[1], row.get("gflops_per_second"))):
                    if x is None:
                        continue
                    drawn = axis.errorbar(x, row["wer"], yerr=[[row["wer"] - low], [high - row["wer"]]],
                                          fmt="*" if baseline else ("x" if is_frozen(row) else "o" if own else "."),
                                          markersize=12 if baseline else 6,
                                          capsize=3, color=color, alpha=1.0 if own else 0.6,
                                          label=legend if axis is axes[1] else None)
                    color = drawn[0].get_color()
                    axis.annotate(label + (note if axis is axes[0] else ""), (x, row["wer"]), textcoords="offset points", xytext=(5, 4),
                                  fontsize=7 if own else 5, color=color)
            curve = [r for r in points if not is_frozen(r)]  # a frozen control is a point beside the curve
            if len(curve) > 1:
                axes[0].plot([relative_compute(r, reference_gflops)[0] for r in curve], [r["wer"] for r in curve], "-",
                             linewidth=0.8, alpha=0.6, color=color)
        if first_baseline is not None:
            limit = 1.03 * first_baseline["wer"]
            for axis in axes:
                axis.axhline(limit, linestyle="--", color="grey", linewidth=0.8)
                axis.annotate(f"{first_baseline['model'].removeprefix('asr_')} +3% rel.", (0.0, limit),
                              xycoords=("axes fraction", "data"), textcoords="offset points", xytext=(3, 3),
                              fontsize=7, color="grey")
            axes[0].axvline(0.4, linestyle="--", color="grey", linewidth=0.8)
        axes[0].set_xlabel(f"encoder compute relative to {first['model'].removeprefix('asr_')} (GFLOPs ratio)")
        axes[1].set_xlabel("encoder GFLOPs per second of audio (log scale)")
        axes[1].set_xscale("log")
        axes[1].xaxis.set_minor_formatter(plt.NullFormatter())  # minor labels overlap on a short log range
        for axis in axes:
            axis.set_ylabel("WER % (95% bootstrap interval)")
            axis.grid(alpha=0.3)
        models = len({r["model"] for r in selected})
        legend_height = 0.0  # a long legend goes below the panels, not over the points
        if models > 6:
            legend_height = (0.45 + 0.15 * ((models + 1) // 2)) / figure.get_figheight()
            figure.legend(*axes[1].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=7,
                          title="model (algorithmic latency)", title_fontsize=7)
        else:
            axes[1].legend(title="model (algorithmic latency)", fontsize=7, title_fontsize=7)
        figure.suptitle(f"{test_set}: WER against compute (stars: dense baselines; small dots: other thresholds or "
                        "budgets; x: units frozen to their majority)",
                        fontsize=10)
        figure.tight_layout(rect=(0, legend_height, 1, 1))
        path = out / f"pareto_{test_set}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


EPOCH_RESULTS = re.compile(r"(\d+)epoch results: \[train\] (.*?)\[valid\] (.*?), time=")


def read_epochs(train_log: pathlib.Path) -> Dict[int, Dict[str, Dict[str, float]]]:
    """Epoch -> {"train": {...}, "valid": {...}} from ESPnet's ``N epoch results`` lines (last one wins)."""
    epochs = {}
    for match in EPOCH_RESULTS.finditer(train_log.read_text(errors="replace")):
        parts = {}
        for split, text in (("train", match.group(2)), ("valid", match.group(3))):
            values = {}
            for key, value in re.findall(r"(\w+)=([-+\d.e]+|nan|inf)", text):
                try:
                    values[key] = float(value)
                except ValueError:
                    pass
            parts[split] = values
        epochs[int(match.group(1))] = parts
    return epochs


def training_curves(exps: List[pathlib.Path], out: pathlib.Path) -> pathlib.Path:
    plt = _pyplot()
    figure, (loss_axis, ratio_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for exp in exps:
        log = exp / "train.log"
        if not log.is_file():
            continue
        epochs = read_epochs(log)
        if not epochs:
            continue
        x = sorted(epochs)
        name = exp.name.removeprefix("asr_")
        line, = loss_axis.plot(x, [epochs[e]["valid"].get("loss", np.nan) for e in x], label=f"{name} valid")
        loss_axis.plot(x, [epochs[e]["train"].get("loss", np.nan) for e in x], "--", color=line.get_color(), alpha=0.6)
        if any("compute_ratio" in epochs[e]["train"] for e in x):
            ratio_axis.plot(x, [epochs[e]["train"].get("compute_ratio", np.nan) for e in x], color=line.get_color(), label=name)
    loss_axis.set(xlabel="epoch", ylabel="loss (solid: valid, dashed: train)", title="loss")
    ratio_axis.set(xlabel="epoch", ylabel="compute ratio (train batches)", title="executed compute", ylim=(0, 1.05))
    for axis in (loss_axis, ratio_axis):
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    figure.tight_layout()
    path = out / "training_curves.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def compute_allocation(features: np.ndarray, gates: np.ndarray, title: str, path: pathlib.Path) -> pathlib.Path:
    """features (T, 80); gates (T', L, U) 0/1 per encoder frame, layer and unit (MHSA, FFN and, U = 3, the
    gated convolution unit)."""
    plt = _pyplot()
    frames, layers, units = gates.shape
    rows = gates.transpose(1, 2, 0).reshape(units * layers, frames)  # layer 1 MHSA, layer 1 FFN, ...
    seconds = features.shape[0] / 100.0
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 4.5), sharex=True,
                                         gridspec_kw={"height_ratios": [1, 1.2]})
    top.imshow(features.T, origin="lower", aspect="auto", extent=(0, seconds, 0, features.shape[1]), cmap="magma")
    top.set(ylabel="fbank bin", title=title)
    bottom.imshow(rows, origin="upper", aspect="auto", extent=(0, seconds, units * layers, 0), cmap="Greys",
                  vmin=0, vmax=1, interpolation="nearest")
    bottom.set_yticks(np.arange(units * layers) + 0.5)
    names = ("MHSA", "FFN", "conv")
    bottom.set_yticklabels([f"L{i // units + 1} {names[i % units]}" for i in range(units * layers)], fontsize=6)
    bottom.set(xlabel="time (s)", ylabel="executed (black)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def allocation_plots(rows: List[Dict], dumpdir: pathlib.Path, out: pathlib.Path, per_model: int = 2) -> List[pathlib.Path]:
    import kaldiio

    written = []
    first_set = rows[0]["test_set"] if rows else None
    for row in rows:
        if row["test_set"] != first_set:  # a few utterances of one test set per model are enough
            continue
        gate_dir = pathlib.Path(row["per_utterance"]).parent.parent / "gates"
        if not gate_dir.is_dir() or not row["decode"].endswith(row["test_set"]):
            continue
        feats = {}
        scp = dumpdir / row["test_set"] / "feats.scp"
        wanted = sorted(p.stem for p in gate_dir.glob("*.npy"))[:per_model]
        for key, matrix in kaldiio.load_scp_sequential(str(scp)):
            if key in wanted:
                feats[key] = matrix
        for key in wanted:
            if key in feats:
                gates = np.load(gate_dir / f"{key}.npy")
                title = f"{row['model'].removeprefix('asr_')} {key}: {gates.mean():.0%} of units executed"
                written.append(compute_allocation(feats[key], gates, title, out / f"compute_{row['model']}_{key}.png"))
    return written


def read_summary(also: str, default_roles) -> Tuple[Dict, str, List[str]]:
    """``--also FILE`` or ``FILE:ROLE,ROLE`` -> (its summary, its file name, the roles taken from it)."""
    path, _, roles = also.partition(":")
    if not pathlib.Path(path).is_file():
        raise FileNotFoundError(f"--also {also}: no such summary.json")
    return json.loads(pathlib.Path(path).read_text()), pathlib.Path(path).name, roles.split(",") if roles else default_roles


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=pathlib.Path, required=True, help="RESULTS.json of local/report.py")
    parser.add_argument("--exps", type=pathlib.Path, nargs="+", required=True)
    parser.add_argument("--dumpdir", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--also", nargs="*", default=[],
                        help="committed summary.json files whose models join the Pareto plots: FILE (the --also_roles "
                             "models) or FILE:ROLE,ROLE")
    parser.add_argument("--also_roles", nargs="+", default=["toolkit"], help="the roles taken from an --also FILE")
    args = parser.parse_args(argv)
    rows = json.loads(args.results.read_text())
    others = [r for also in args.also for r in summary_rows(*read_summary(also, args.also_roles))
              if not rows or r["test_set"] in {row["test_set"] for row in rows}]  # beside these results' test sets
    args.out.mkdir(parents=True, exist_ok=True)
    written = pareto(rows + others, args.out) + [training_curves(args.exps, args.out)]
    written += allocation_plots(rows, args.dumpdir, args.out)
    print("\n".join(str(p) for p in written))


if __name__ == "__main__":
    main()
