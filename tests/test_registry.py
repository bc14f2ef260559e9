import pytest
import torch

import espnet_amortized
from espnet_amortized.encoder import AmortizedTransformerEncoder
from espnet_amortized.model import AmortizedESPnetASRModel


def test_register_twice_is_harmless():
    from espnet2.tasks.asr import encoder_choices, model_choices

    before = (dict(encoder_choices.classes), dict(model_choices.classes))
    espnet_amortized.register()
    espnet_amortized.register()
    assert (dict(encoder_choices.classes), dict(model_choices.classes)) == before
    assert encoder_choices.classes["amortized_transformer"] is AmortizedTransformerEncoder
    assert model_choices.classes["amortized_espnet"] is AmortizedESPnetASRModel


def test_espnet_parser_accepts_our_names():
    from espnet2.tasks.asr import ASRTask

    args = ASRTask.get_parser().parse_args(
        ["--output_dir", "x", "--encoder", "amortized_transformer", "--model", "amortized_espnet"]
    )
    assert args.encoder == "amortized_transformer" and args.model == "amortized_espnet"


def test_warp_transducer_import_resolves_to_torchaudio_loss():
    from warprnnt_pytorch import RNNTLoss

    loss = RNNTLoss(blank=0, fastemit_lambda=0.0)
    logits = torch.randn(1, 3, 2, 4)
    value = loss(logits, torch.tensor([[1]]), torch.tensor([3]), torch.tensor([1]))
    assert value.ndim == 0 and torch.isfinite(value)


def test_bad_encoder_option_through_espnet_build_names_it():
    from tests.conftest import build_espnet_model

    with pytest.raises(ValueError, match="num_heads"):
        build_espnet_model(dict(output_size=32, num_heads=4), dict())
