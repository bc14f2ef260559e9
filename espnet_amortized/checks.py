"""Checks that a trained model, its config and its tokenizer belong together, before any decoding.

A token list that does not match the model's output layer makes ESPnet fail
with a bare tensor "size mismatch"; a BPE model retrained after training (say
``run.sh --stage 3`` with another ``--nbpe``) silently garbles every
hypothesis. Both become errors that name the files.
"""

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


def set_compute_knobs(encoder, gate_threshold=None, compute_budget=None) -> None:
    """The decode-time compute options (None: the trained model's), checked before any decoding.

    ``compute_budget`` (the whole encoder's executed / dense MACs, in [0, 1])
    needs gates decided per frame by the global arbitrator (the encoder checks
    which); ``gate_threshold`` any gated encoder.
    """
    if compute_budget is not None:
        if not 0.0 <= compute_budget <= 1.0:
            raise ValueError(f"--compute_budget must be in [0, 1], got {compute_budget}")
        if not hasattr(encoder, "compute_budget"):
            raise ValueError(f"--compute_budget {compute_budget}: the encoder {type(encoder).__name__} has no gates")
        try:
            encoder.compute_budget = compute_budget
        except ValueError as error:
            raise ValueError(f"--{error}") from error
    if gate_threshold is not None:
        if not hasattr(encoder, "gate_threshold"):
            raise ValueError(f"--gate_threshold: the encoder {type(encoder).__name__} has no gates")
        encoder.gate_threshold = gate_threshold  # the encoder checks the range


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
