"""Checks that a trained model, its config and its tokenizer belong together, before any decoding.

A token list that does not match the model's output layer makes ESPnet fail
with a bare tensor "size mismatch"; a BPE model retrained after training (say
``run.sh --stage 3`` with another ``--nbpe``) silently garbles every
hypothesis. Both become errors that name the files.
"""

import json
import pathlib
from typing import Sequence

from espnet_amortized._espnet import asr_task_class

SPECIAL_TOKENS = {"<blank>", "<unk>", "<sos/eos>"}


def load_asr_model(config, model_file, device: str = "cpu"):
    """ESPnet's ``build_model_from_file`` with readable errors; returns (model in eval mode, args)."""
    for path in (config, model_file):
        if not pathlib.Path(path).is_file():
            raise FileNotFoundError(f"{path}: missing")
    try:
        model, args = asr_task_class().build_model_from_file(config, model_file, device)
    except RuntimeError as error:
        if "size mismatch" not in str(error):
            raise
        raise ValueError(
            f"{model_file} does not match {config}: {mismatch_reason(str(error))} "
            "(was the model trained with another token list or shape?)"
        ) from error
    check_tokenizer(args.token_type, getattr(args, "bpemodel", None), args.token_list, config)
    model.eval()
    return model, args


def set_compute_knobs(encoder, gate_threshold=None, compute_budget=None, frozen_units=None) -> None:
    """The decode-time compute options (None: the trained model's), checked before any decoding.

    ``compute_budget`` (the whole encoder's executed / dense MACs, in [0, 1])
    needs gates decided per frame by the global arbitrator (the encoder checks
    which); ``gate_threshold`` any gated encoder; ``frozen_units``
    (``frozen_units_from``) replaces the decisions of any gated encoder.
    """
    if frozen_units is not None:
        _set_knob(encoder, "frozen_units", frozen_units, "--frozen_units_from", "--frozen_units_from: ")
    if compute_budget is not None:
        if not 0.0 <= compute_budget <= 1.0:
            raise ValueError(f"--compute_budget must be in [0, 1], got {compute_budget}")
        _set_knob(encoder, "compute_budget", compute_budget, f"--compute_budget {compute_budget}", "--")
    if gate_threshold is not None:
        if not hasattr(encoder, "gate_threshold"):
            raise ValueError(f"--gate_threshold: the encoder {type(encoder).__name__} has no gates")
        encoder.gate_threshold = gate_threshold  # the encoder checks the range


def _set_knob(encoder, name: str, value, option: str, prefix: str) -> None:
    """``encoder.<name> = value``; an encoder without the knob, or a value it refuses, is an error naming the option."""
    if not hasattr(encoder, name):
        raise ValueError(f"{option}: the encoder {type(encoder).__name__} has no gates")
    try:
        setattr(encoder, name, value)
    except ValueError as error:
        raise ValueError(f"{prefix}{error}") from error


def frozen_units_from(summary_path) -> dict:
    """Each unit frozen to its majority decision in a gated decoding: ``{"attention": [0/1 per layer], "ffn": ...,
    ("conv": ...)}`` from the ``<unit>_rates`` of that decoding's summary.json (1 where the unit ran on at least
    half of the frames). Take the decoding from held-out data, not the test set the control is scored on."""
    path = pathlib.Path(summary_path)
    if not path.is_file():
        raise FileNotFoundError(f"--frozen_units_from {path}: missing (a decoding's summary.json)")
    summary = json.loads(path.read_text())
    rates = {name: summary.get(f"{name}_rates") for name in ("attention", "ffn", "conv")}
    if rates["attention"] is None or rates["ffn"] is None:
        raise ValueError(f"--frozen_units_from {path}: no attention_rates/ffn_rates (not a gated model's decoding)")
    return {name: [int(rate >= 0.5) for rate in values] for name, values in rates.items() if values is not None}


def mismatch_reason(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if "size mismatch" in line]
    return lines[0] if lines else message.strip().splitlines()[0]


def check_tokenizer(token_type: str, bpemodel, token_list: Sequence[str], config="the config") -> None:
    """For BPE: the sentencepiece model's pieces must be the token list's (ESPnet layout)."""
    if token_type != "bpe" or bpemodel is None:
        return
    if not pathlib.Path(bpemodel).is_file():
        raise FileNotFoundError(f"{bpemodel}: the BPE model named by {config} is missing")
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(bpemodel))
    pieces = {processor.id_to_piece(i) for i in range(processor.get_piece_size())} - SPECIAL_TOKENS - {"<s>", "</s>"}
    tokens = set(token_list) - SPECIAL_TOKENS
    if pieces != tokens:
        raise ValueError(
            f"{bpemodel} does not match the token list of {config}: {len(pieces)} pieces vs {len(tokens)} tokens, "
            f"{len(pieces - tokens)} pieces not in the list, {len(tokens - pieces)} tokens not in the model "
            "(was data/token_list rebuilt after training, e.g. with another --nbpe?)"
        )
