import torch

from espnet_amortized.encoder.arbitrator import Arbitrator


def test_arbitrator_is_causal_and_streams_with_its_cache():
    torch.manual_seed(0)
    arbitrator = Arbitrator(16, num_gates=6, hidden_size=8, kernel_size=3)
    x = torch.randn(2, 10, 16)
    full, _ = arbitrator(x)
    assert full.shape == (2, 10, 6)
    changed = x.clone()
    changed[:, 7:] += 5.0
    assert torch.allclose(arbitrator(changed)[0][:, :7], full[:, :7])  # the future does not leak
    cache, pieces = None, []
    for start, end in [(0, 1), (1, 5), (5, 10)]:
        out, cache = arbitrator(x[:, start:end], cache)
        pieces.append(out)
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-6)


def test_arbitrator_starts_with_units_on_and_is_small():
    arbitrator = Arbitrator(256, num_gates=24)
    logits, _ = arbitrator(torch.randn(1, 5, 256))
    assert (torch.sigmoid(logits) > 0.9).all()
    dense_layer_macs_per_frame = 4 * 256 * 256 + 2 * 256 * 1024
    assert arbitrator.macs_per_frame() < 0.02 * 12 * dense_layer_macs_per_frame


def test_budget_conditioned_arbitrator_is_the_plain_one_at_full_budget_and_moves_below():
    torch.manual_seed(0)
    plain = Arbitrator(16, num_gates=6, hidden_size=8)
    conditioned = Arbitrator(16, num_gates=6, hidden_size=8, budget_conditioned=True)
    conditioned.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(3, 10, 16)
    budgets = torch.tensor([1.0, 0.5, 0.25])
    reference, _ = plain(x)
    assert torch.allclose(conditioned(x, budget=budgets)[0], reference)  # the budget network starts at zero
    torch.nn.init.normal_(conditioned.budget_net[2].weight)
    torch.nn.init.normal_(conditioned.budget_net[2].bias)
    logits, _ = conditioned(x, budget=budgets)
    assert torch.allclose(logits[0], reference[0], atol=1e-6)  # b = 1: the plain arbitrator, whatever the weights
    assert not torch.allclose(logits[1], reference[1]) and not torch.allclose(logits[2], logits[1])
    logits.sum().backward()
    assert conditioned.budget_net[0].weight.grad.abs().sum() > 0
    assert conditioned.macs_per_frame() == plain.macs_per_frame() + 8


def test_budget_conditioned_arbitrator_needs_the_budget():
    import pytest

    with pytest.raises(ValueError, match="budget"):
        Arbitrator(16, num_gates=6, hidden_size=8, budget_conditioned=True)(torch.randn(1, 4, 16))
