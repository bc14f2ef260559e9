"""Decode a data dir with ESPnet's ``Speech2Text`` and record compute and time per utterance.

    python -m espnet_amortized.bin.asr_decode --asr_train_config exp/m/config.yaml \
        --asr_model_file exp/m/valid.loss.ave.pth --data dump/fbank/test_clean \
        --output_dir exp/m/decode_test_clean [--config conf/decode.yaml] [--gate_threshold 0.5]

Batch 1, one utterance after the other (``--threads`` CPU threads). The decode
YAML's ``search`` picks the transducer search on the whole-utterance encoder
output: ``beam`` (default) and ``greedy`` are our frame-synchronous searches
(espnet_amortized.search: up to ``max_symbols_per_frame`` labels per frame,
``beam_size``, ``score_norm`` and a ``length_bonus`` per emitted label), the
same searches that the streaming decoder runs chunk by chunk, for every
transducer encoder; ``espnet`` is ESPnet's BeamSearchTransducer (``beam_size``,
``transducer_conf``), which has no length bonus. Reads
``feats.scp`` (kaldiio) if the data dir has one, else ``wav.scp``. Writes
ESPnet's layout (``1best_recog/text``, ``token``, ``score``) plus
``compute.jsonl`` (per utterance: audio seconds, decode and encoder seconds,
MACs, compute ratios, per-layer unit rates) and ``summary.json``. For the
``amortized_transformer`` the MACs come from its counter (exactly what ran);
for any other encoder from ``torch.utils.flop_counter`` (matmuls and
convolutions, 2 FLOPs per MAC).
"""

import argparse
import contextlib
import json
import logging
import pathlib
import time
from typing import Dict, Iterator, Tuple

import numpy as np
import torch
import yaml

from espnet_amortized import register
from espnet_amortized._espnet import speech2text_class
from espnet_amortized.checks import frozen_units_from, load_asr_model, set_compute_knobs
from espnet_amortized.compute import SearchMacCounter, count_macs, summarize_records
from espnet_amortized.encoder import GateInfo

register()
log = logging.getLogger("asr_decode")
FRAME_SHIFT_S = 0.01


def iterate_data(data_dir: pathlib.Path, changes: list = None) -> Iterator[Tuple[str, np.ndarray, float]]:
    """(key, speech, seconds): fbank frames from feats.scp, or samples from wav.scp.

    Audio is read as the feature stage reads it (16 kHz mono); the changes
    made ("resampled", "downmixed") are appended to ``changes``.
    """
    feats = data_dir / "feats.scp"
    if feats.is_file():
        import kaldiio

        for key, features in kaldiio.load_scp_sequential(str(feats)):
            yield key, features, features.shape[0] * FRAME_SHIFT_S
        return
    from espnet_amortized.streaming import SAMPLE_RATE, load_audio

    for line in (data_dir / "wav.scp").read_text(encoding="utf-8").splitlines():
        if line.strip():
            key, path = line.split(maxsplit=1)
            audio = load_audio(path, changes)
            yield key, audio, audio.shape[0] / SAMPLE_RATE


def _flop_counted_macs(encoder, inputs) -> float:
    """MACs of ``encoder(*inputs)`` counted by torch's flop counter (2 FLOPs per MAC)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        encoder(*inputs)
    return counter.get_total_flops() / 2


class ComputeProbe:
    """Times the encoder's forward (torch forward hooks) and keeps what it executed: ``gate_info``, the
    decisions an ``amortized_transformer`` returns as its third output (None from any other encoder)."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.encoder_seconds = 0.0
        self.inputs = None
        self.gate_info = None
        self._start = 0.0

    def __enter__(self):
        def before(module, inputs):
            self.inputs = inputs
            self._start = time.perf_counter()

        def after(module, inputs, output):
            self.encoder_seconds += time.perf_counter() - self._start
            self.gate_info = output[2] if isinstance(output[2], GateInfo) else None

        self.handles = [self.encoder.register_forward_pre_hook(before), self.encoder.register_forward_hook(after)]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    def measure(self, seconds: float) -> Dict:
        info = self.gate_info
        if info is not None:
            report = count_macs(self.encoder, info.gates, info.valid, info.allowed, info.input_lengths.tolist())
            result = report.as_dict()
        else:  # any other encoder: count what its forward multiplies
            macs = _flop_counted_macs(self.encoder, self.inputs)
            result = {"macs_encoder": macs, "macs_dense_encoder": macs, "compute_ratio_layers": 1.0,
                      "compute_ratio_encoder": 1.0}
        result["gflops_per_second"] = 2.0 * result["macs_encoder"] / 1e9 / max(seconds, 1e-9)
        return result


def search_mac_counter(model):
    """The transducer's prediction + joint network MACs (``compute.SearchMacCounter``); none without a joint network."""
    if getattr(model, "joint_network", None) is None:
        return contextlib.nullcontext(NoSearchMacs())
    return SearchMacCounter(model.decoder, model.joint_network)


class NoSearchMacs:
    """An attention-decoder model: its search is not counted (no ``macs_prediction``/``macs_joint``)."""

    def reset(self) -> None:
        pass

    def as_dict(self) -> Dict:
        return {}


SEARCHES = ("beam", "greedy", "espnet")


class TransducerSpeech2Text:
    """``Speech2Text``'s call interface around our greedy or beam transducer search (whole utterances)."""

    def __init__(self, model, train_args, search: str = "beam", beam_size: int = 4, max_symbols_per_frame: int = 4,
                 length_bonus: float = 0.0, score_norm: bool = True):
        from espnet_amortized._espnet import text_converters
        from espnet_amortized.search import BeamTransducerSearch, GreedyTransducerSearch

        if getattr(model, "joint_network", None) is None:
            raise ValueError(f"search: {search} needs a transducer model")
        model.decoder.set_device(torch.device("cpu"))
        self.model = self.asr_model = model
        common = dict(blank_id=model.blank_id, max_symbols_per_frame=max_symbols_per_frame, length_bonus=length_bonus)
        if search == "greedy":
            self.search = GreedyTransducerSearch(model.decoder, model.joint_network, **common)
        else:
            self.search = BeamTransducerSearch(
                model.decoder, model.joint_network, beam_size=beam_size, score_norm=score_norm, **common
            )
        self.tokenizer, self.converter = text_converters(train_args.token_type, train_args.bpemodel, train_args.token_list)

    def __call__(self, speech):
        speech = torch.as_tensor(np.asarray(speech, dtype=np.float32)).unsqueeze(0)
        encoded, lengths = self.model.encode(speech, torch.tensor([speech.size(1)]))
        state = self.search.step(self.search.init_state(), encoded[0, : int(lengths[0])])
        ids = self.search.best_tokens(state)
        tokens = self.converter.ids2tokens(ids)

        class Hypothesis:  # what decode() reads of ESPnet's hypotheses
            score = self.search.best_score(state)

        return [(self.tokenizer.tokens2text(tokens), tokens, ids, Hypothesis())]


def decode(args) -> Dict:
    torch.set_num_threads(args.threads)
    options = yaml.safe_load(args.config.read_text()) if args.config else {}
    options = options or {}
    model, train_args = load_asr_model(args.asr_train_config, args.asr_model_file)  # readable errors first
    length_bonus = float(options.get("length_bonus", 0.0))
    search = options.get("search", "beam")
    if search not in SEARCHES:
        raise ValueError(f"{args.config}: search must be one of {', '.join(SEARCHES)}; got {search!r}")
    if search != "espnet":
        speech2text = TransducerSpeech2Text(
            model, train_args, search, beam_size=options.get("beam_size", 4),
            max_symbols_per_frame=options.get("max_symbols_per_frame", 4), length_bonus=length_bonus,
            score_norm=(options.get("transducer_conf") or {}).get("score_norm", True),
        )
    else:
        if length_bonus != 0.0:
            raise ValueError(
                f"{args.config}: length_bonus {length_bonus} needs search: beam or greedy "
                "(ESPnet's transducer beam search has no length bonus)"
            )
        speech2text = speech2text_class()(
            asr_train_config=args.asr_train_config,
            asr_model_file=args.asr_model_file,
            device="cpu",
            beam_size=options.get("beam_size", 4),
            ctc_weight=options.get("ctc_weight", 0.0),
            lm_weight=0.0,
            nbest=1,
            transducer_conf=options.get("transducer_conf"),
            maxlenratio=options.get("maxlenratio", 0.0),
            minlenratio=options.get("minlenratio", 0.0),
        )
    model = speech2text.asr_model
    encoder = model.encoder
    frozen = None if args.frozen_units_from is None else frozen_units_from(args.frozen_units_from)
    set_compute_knobs(encoder, args.gate_threshold, args.compute_budget, frozen)
    out = args.output_dir / "1best_recog"
    out.mkdir(parents=True, exist_ok=True)
    texts, tokens, scores, records = [], [], [], []
    from tqdm import tqdm

    changes = []
    with ComputeProbe(encoder) as probe, search_mac_counter(model) as search_macs:
        for key, speech, seconds in tqdm(list(iterate_data(args.data, changes)), desc=f"decoding {args.data.name}", unit="utt", disable=None):
            probe.encoder_seconds = 0.0
            search_macs.reset()
            start = time.perf_counter()
            if np.ndim(speech) == 1 and model.frontend is None:  # audio, for a model trained on the recipe's fbank
                from espnet_amortized.streaming import kaldi_fbank

                speech = kaldi_fbank(torch.as_tensor(speech)).numpy()
            with torch.no_grad():
                results = speech2text(speech)
            elapsed = time.perf_counter() - start
            text, token, _, hypothesis = results[0]
            texts.append(f"{key} {text}")
            tokens.append(f"{key} {' '.join(token)}")
            scores.append(f"{key} {float(hypothesis.score):.4f}")
            record = {"key": key, "seconds": seconds, "decode_seconds": elapsed, "encoder_seconds": probe.encoder_seconds}
            info = probe.gate_info
            if info is not None and len(records) < args.save_gates:  # for the compute-allocation plots
                (args.output_dir / "gates").mkdir(exist_ok=True)
                np.save(args.output_dir / "gates" / f"{key}.npy", info.gates[0].numpy().astype(np.uint8))
            record.update(probe.measure(seconds))
            record.update(search_macs.as_dict())
            records.append(record)
    for name, lines in (("text", texts), ("token", tokens), ("score", scores)):
        (out / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    with open(args.output_dir / "compute.jsonl", "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    summary = summarize(records)
    summary["gate_threshold"] = encoder.gate_threshold if getattr(encoder, "gated", False) else None
    summary["compute_budget"] = encoder.compute_budget if getattr(encoder, "budget_conditioning", False) else None
    summary["frozen_units"] = frozen
    summary["frozen_units_from"] = None if args.frozen_units_from is None else str(args.frozen_units_from)
    summary["encoder"] = type(encoder).__name__
    summary["resampled_utterances"] = changes.count("resampled")
    summary["downmixed_utterances"] = changes.count("downmixed")
    (args.output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("%s: %s", args.output_dir, json.dumps(summary))
    return summary


def summarize(records) -> Dict:
    audio = sum(r["seconds"] for r in records)
    summary = {
        "utterances": len(records),
        "audio_seconds": audio,
        "rtf": sum(r["decode_seconds"] for r in records) / max(audio, 1e-9),
        # None where the encoder is not timed apart from the search (ESPnet's asr_transducer Speech2Text)
        "encoder_rtf": (sum(r["encoder_seconds"] for r in records) / max(audio, 1e-9)
                        if all("encoder_seconds" in r for r in records) else None),
    }
    summary.update(summarize_records(records, audio))
    return summary


def decode_parser(description: str, data_help: str, config_help: str) -> argparse.ArgumentParser:
    """The options every decoding entry point shares, named as ESPnet's asr_inference names them."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asr_train_config", type=pathlib.Path, required=True)
    parser.add_argument("--asr_model_file", type=pathlib.Path, required=True)
    parser.add_argument("--data", type=pathlib.Path, required=True, help=data_help)
    parser.add_argument("--output_dir", type=pathlib.Path, required=True)
    parser.add_argument("--config", type=pathlib.Path, help=config_help)
    parser.add_argument("--threads", type=int, default=1)
    return parser


def add_compute_knobs(parser: argparse.ArgumentParser) -> None:
    """The decode-time compute options of a gated encoder (``checks.set_compute_knobs``)."""
    parser.add_argument("--gate_threshold", type=float, help="override the encoder's gate_threshold")
    parser.add_argument("--compute_budget", type=float,
                        help="whole-encoder compute budget in [0, 1] (a budget-conditioned encoder)")
    parser.add_argument("--frozen_units_from", type=pathlib.Path,
                        help="a gated decoding's summary.json (held-out data): every unit frozen to its majority "
                             "decision there, on every frame (issue 13's static control; overrides the other knobs)")


def get_parser() -> argparse.ArgumentParser:
    parser = decode_parser(__doc__, "data dir with feats.scp or wav.scp",
                           "decode YAML: search (beam | greedy | espnet), beam_size, max_symbols_per_frame, "
                           "length_bonus, transducer_conf (score_norm; espnet: ESPnet's options)")
    add_compute_knobs(parser)
    parser.add_argument("--save_gates", type=int, default=3, help="save the unit decisions of this many utterances")
    return parser


def main(argv=None) -> Dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (asr_decode) %(message)s")
    return decode(get_parser().parse_args(argv))


if __name__ == "__main__":
    main()
