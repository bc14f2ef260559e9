import torch

from espnet_amortized.updates import count_updates, update_counters
from tests.conftest import build_espnet_model
from tests.test_model import ENCODER, _toy_batch


def test_counters_advance_once_per_optimizer_update_not_per_forward():
    torch.manual_seed(0)
    model = build_espnet_model(ENCODER, dict(compute_weight=0.1))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    count_updates(model, optimizer)
    for _ in range(2):  # two updates of accum_grad 4, as ESPnet's trainer runs them
        for _ in range(4):
            loss, _, _ = model(*_toy_batch())
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    loss, _, _ = model(*_toy_batch())  # a forward whose update is skipped (as for a non-finite gradient)
    assert int(model.num_updates) == 2 and int(model.encoder.num_updates) == 2


def test_our_encoder_in_espnets_own_model_counts_too():
    from espnet_amortized.encoder import AmortizedTransformerEncoder

    model = torch.nn.Module()
    model.encoder = AmortizedTransformerEncoder(80, output_size=32, num_blocks=1)
    assert update_counters(model) == [model.encoder]
    optimizer = torch.optim.SGD(model.encoder.parameters(), lr=1e-3)
    count_updates(model, optimizer)
    optimizer.step()
    assert int(model.encoder.num_updates) == 1
    assert update_counters(torch.nn.Linear(2, 2)) == []
