"""Decode a data dir with ESPnet's asr_transducer ``Speech2Text``, offline or streaming, recording compute and time.

    python -m espnet_amortized.bin.asr_transducer_decode --asr_train_config exp/m/config.yaml \\
        --asr_model_file exp/m/valid.loss.ave.pth --data data/test_clean --output_dir exp/m/decode_test_clean \\
        [--config conf/decode.yaml] [--streaming true]

For models of ESPnet's own streaming transducer task (``asr_transducer``, e.g.
conf/tuning/train_espnet_transducer_conformer.yaml), the toolkit baseline. Reads
``wav.scp``: the task's front-end makes its features. Offline, ``Speech2Text``
decodes the whole utterance (the encoder then sees the whole utterance: no
chunk mask, so this is not a streaming figure). With ``--streaming true``,
``Speech2Text.streaming_decode`` gets successive windows of
``decoding_window`` ms with ``left_context`` encoder frames of history and
``is_final`` on the last, as ``espnet2.bin.asr_transducer_inference
--streaming true`` feeds it. Batch 1, ``--threads`` threads.

Decode YAML: ``beam_size`` (ESPnet's transducer beam search; our searches'
``length_bonus`` has no counterpart there and is ignored), and an optional
``asr_transducer`` section: ``decoding_window`` (ms), ``left_context``
(frames) and ``beam_search_config`` (ESPnet's BeamSearchTransducer options).
Writes ESPnet's layout (``1best_recog/text``, ``token``, ``score``),
``compute.jsonl`` and ``summary.json`` like ``asr_decode``: the encoder's MACs
come from torch's flop counter over its whole-utterance forward (2 FLOPs per
MAC; a stream's chunked attention spans fewer frames, so this slightly
over-counts it); streaming adds ``algorithmic_latency_ms`` (one decoding
window plus the front-end's window beyond its hop).
"""

import argparse
import json
import logging
import pathlib
import time

import numpy as np
import torch
import yaml

from espnet_amortized import register
from espnet_amortized._espnet import asr_transducer_speech2text_class
from espnet_amortized.bin.asr_decode import _flop_counted_macs, decode_parser, iterate_data, summarize

register()
log = logging.getLogger("asr_transducer_decode")
OPTIONS = ("decoding_window", "left_context", "beam_search_config")


def transducer_options(config_file) -> dict:
    """beam_size and the ``asr_transducer`` section of a decode YAML, with Speech2Text's defaults."""
    options = (yaml.safe_load(pathlib.Path(config_file).read_text(encoding="utf-8")) or {}) if config_file else {}
    section = options.get("asr_transducer") or {}
    unknown = sorted(set(section) - set(OPTIONS))
    if unknown:
        raise ValueError(f"{config_file}: asr_transducer: unknown option(s) {', '.join(unknown)}; "
                         f"known: {', '.join(OPTIONS)}")
    return {"beam_size": int(options.get("beam_size", 4)), "decoding_window": int(section.get("decoding_window", 640)),
            "left_context": int(section.get("left_context", 32)),
            "beam_search_config": section.get("beam_search_config") or {}}


def encoder_macs(model, speech: np.ndarray) -> float:
    """MACs of the encoder's whole-utterance forward on ``speech`` (the model's own features)."""
    samples = torch.as_tensor(np.asarray(speech, dtype=np.float32)).unsqueeze(0)
    lengths = torch.tensor([samples.size(1)])
    with torch.no_grad():
        feats, feats_lengths = model._extract_feats(samples, lengths)
        if model.normalize is not None:
            feats, feats_lengths = model.normalize(feats, feats_lengths)
    return _flop_counted_macs(model.encoder, (feats, feats_lengths))


def algorithmic_latency_ms(train_args, decoding_window: int) -> float:
    """One decoding window plus the front-end's analysis window beyond its hop (what the last frame waits for)."""
    frontend = train_args.frontend_conf or {}
    fs = frontend.get("fs", 16000)
    fs = float(str(fs).lower().replace("k", "")) * 1000 if isinstance(fs, str) else float(fs)
    n_fft, hop = frontend.get("n_fft", 512), frontend.get("hop_length", 128)
    return float(decoding_window) + 1000.0 * (n_fft - hop) / fs


def decode(args) -> dict:
    torch.set_num_threads(args.threads)
    options = transducer_options(args.config)
    for path in (args.asr_train_config, args.asr_model_file, args.data / "wav.scp"):
        if not pathlib.Path(path).is_file():
            raise FileNotFoundError(f"{path}: missing")
    speech2text = asr_transducer_speech2text_class()(
        asr_train_config=args.asr_train_config, asr_model_file=args.asr_model_file, device="cpu",
        beam_size=options["beam_size"], beam_search_config=options["beam_search_config"], nbest=1,
        streaming=args.streaming, decoding_window=options["decoding_window"], left_context=options["left_context"],
    )
    model = speech2text.asr_model
    window = speech2text.audio_processor.decoding_samples if args.streaming else None
    out = args.output_dir / "1best_recog"
    out.mkdir(parents=True, exist_ok=True)
    texts, tokens, scores, records, changes = [], [], [], [], []
    from tqdm import tqdm

    for key, speech, seconds in tqdm(list(iterate_data(args.data, changes)), desc=f"decoding {args.data.name}",
                                     unit="utt", disable=None):
        if np.ndim(speech) != 1:
            raise ValueError(f"{args.data}: {key} is not audio (the asr_transducer models read wav.scp)")
        start = time.perf_counter()
        with torch.no_grad():
            if window is None:
                hypotheses = speech2text(speech)
            else:  # as asr_transducer_inference --streaming true: whole windows, then the rest as the final one
                steps = len(speech) // window
                for step in range(steps):
                    speech2text.streaming_decode(speech[step * window: (step + 1) * window], is_final=False)
                hypotheses = speech2text.streaming_decode(speech[steps * window:], is_final=True)
        elapsed = time.perf_counter() - start
        text, token, _, hypothesis = speech2text.hypotheses_to_results(hypotheses)[0]
        texts.append(f"{key} {text}")
        tokens.append(f"{key} {' '.join(token)}")
        scores.append(f"{key} {float(hypothesis.score):.4f}")
        macs = encoder_macs(model, speech)
        records.append({"key": key, "seconds": seconds, "decode_seconds": elapsed,
                        "macs_encoder": macs, "macs_dense_encoder": macs, "compute_ratio_layers": 1.0,
                        "compute_ratio_encoder": 1.0, "gflops_per_second": 2.0 * macs / 1e9 / max(seconds, 1e-9)})
    for name, lines in (("text", texts), ("token", tokens), ("score", scores)):
        (out / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    with open(args.output_dir / "compute.jsonl", "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    summary = summarize(records)
    summary.update(gate_threshold=None, encoder=type(model.encoder).__name__, task="asr_transducer",
                   streaming=args.streaming, beam_size=options["beam_size"],
                   resampled_utterances=changes.count("resampled"), downmixed_utterances=changes.count("downmixed"))
    if args.streaming:
        summary["decoding_window_ms"] = options["decoding_window"]
        summary["left_context_frames"] = options["left_context"]
        summary["algorithmic_latency_ms"] = algorithmic_latency_ms(speech2text.asr_train_args, options["decoding_window"])
    (args.output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("%s: %s", args.output_dir, json.dumps(summary))
    return summary


def _boolean(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"true or false, not {value!r}")
    return value.lower() == "true"


def get_parser() -> argparse.ArgumentParser:
    parser = decode_parser(__doc__, "data dir with wav.scp",
                           "decode YAML: beam_size, asr_transducer: {decoding_window, left_context, beam_search_config}")
    parser.add_argument("--streaming", type=_boolean, default=False,
                        help="decode window by window with Speech2Text.streaming_decode (default false)")
    return parser


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (asr_transducer_decode) %(message)s")
    return decode(get_parser().parse_args(argv))


if __name__ == "__main__":
    main()
