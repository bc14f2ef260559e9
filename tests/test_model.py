import pytest
import torch

from espnet_amortized.model import AmortizedESPnetASRModel
from tests.conftest import build_espnet_model

ENCODER = dict(output_size=32, attention_heads=4, linear_units=64, num_blocks=2, chunk_size=4,
               dropout_rate=0.0, gate_initial_logit=1.0)


def _toy_batch():
    generator = torch.Generator().manual_seed(1)
    speech = torch.randn(4, 120, 80, generator=generator)
    text = torch.randint(3, 24, (4, 6), generator=generator)
    return speech, torch.tensor([120, 110, 100, 90]), text, torch.tensor([6, 5, 4, 6])


def _expected_compute_over_steps(compute_weight, steps=6, **model_conf):
    torch.manual_seed(0)
    model = build_espnet_model(ENCODER, dict(compute_weight=compute_weight, ctc_weight=0.3, **model_conf))
    assert isinstance(model, AmortizedESPnetASRModel)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    speech, speech_lengths, text, text_lengths = _toy_batch()
    history = []
    for _ in range(steps):
        loss, stats, _ = model(speech, speech_lengths, text.clone(), text_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(float(stats["compute_expected"]))
    return model, history, stats


def test_stats_report_compute_terms():
    _, _, stats = _expected_compute_over_steps(0.5, steps=1)
    for key in ("loss", "loss_transducer", "loss_compute", "compute_expected", "compute_ratio", "compute_ratio_encoder"):
        assert key in stats and torch.isfinite(stats[key]).all(), key


def test_gradients_reach_the_arbitrator():
    torch.manual_seed(0)
    model = build_espnet_model(ENCODER, dict(compute_weight=0.0))
    loss, _, _ = model(*_toy_batch())
    loss.backward()
    assert model.encoder.arbitrator.out.weight.grad.abs().sum() > 0


def test_compute_weight_lowers_expected_compute_and_zero_weight_leaves_it():
    _, with_weight, _ = _expected_compute_over_steps(2.0)
    _, without, _ = _expected_compute_over_steps(0.0)
    assert with_weight[-1] < with_weight[0] - 0.1
    assert abs(without[-1] - without[0]) < 0.03


def test_warmup_keeps_the_weight_at_zero():
    _, history, _ = _expected_compute_over_steps(2.0, steps=4, compute_warmup_steps=100)
    assert abs(history[-1] - history[0]) < 0.03


def test_bad_model_options_fail_before_training():
    with pytest.raises(ValueError, match="compute_weight"):
        build_espnet_model(ENCODER, dict(compute_weight=-1.0))
    with pytest.raises(ValueError, match="compute_target"):
        build_espnet_model(ENCODER, dict(compute_regularizer="target", compute_target=0.0))


def test_stock_encoder_trains_through_the_amortized_model_unchanged():
    model = build_espnet_model(
        dict(output_size=32, attention_heads=4, linear_units=64, num_blocks=1), dict(compute_weight=0.5), encoder="transformer"
    )
    loss, stats, _ = model(*_toy_batch())
    assert torch.isfinite(loss).all() and "compute_ratio" not in stats
