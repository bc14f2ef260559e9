import math

import pytest
import torch

from espnet_amortized.encoder.gates import (
    allocated_straight_through,
    annealed_temperature,
    bound_logits,
    gumbel_sigmoid_straight_through,
    hard_gates,
    threshold_to_logit,
)


def test_straight_through_forward_is_hard_and_backward_is_sigmoid_gradient():
    logits = torch.randn(200, requires_grad=True)
    gates = gumbel_sigmoid_straight_through(logits, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert set(gates.detach().unique().tolist()) <= {0.0, 1.0}
    gates.sum().backward()
    assert logits.grad is not None and (logits.grad > 0).all()


def test_allocated_straight_through_runs_what_decide_picks_on_the_noisy_logits():
    logits = torch.linspace(-3, 3, 50, requires_grad=True)
    seen = {}

    def top_ten(noisy):
        seen["noisy"] = noisy
        return torch.zeros_like(noisy).scatter(0, noisy.topk(10).indices, 1.0)

    gates = allocated_straight_through(logits, top_ten, 1.0, torch.Generator().manual_seed(0))
    assert not seen["noisy"].requires_grad and float(gates.detach().sum()) == 10.0
    assert torch.equal(gates.detach(), top_ten(seen["noisy"]))
    assert not torch.equal(seen["noisy"], logits.detach())  # explored: noise on the ranking
    gates.sum().backward()
    assert (logits.grad > 0).all()  # the relaxed sigmoid's gradient, whatever decide did

    exact = allocated_straight_through(logits, top_ten, 1.0, torch.Generator().manual_seed(0), noise_scale=0.0)
    assert torch.equal(seen["noisy"], logits.detach()) and torch.equal(exact.detach(), top_ten(logits.detach()))
    with pytest.raises(ValueError, match="noise scale must be >= 0"):
        allocated_straight_through(logits, top_ten, 1.0, noise_scale=-1.0)


def test_gate_probability_is_sigmoid_of_logit_at_any_temperature():
    logits = torch.full((20000,), 0.8)
    for temperature in (0.1, 1.0, 5.0):
        gates = gumbel_sigmoid_straight_through(logits, temperature, torch.Generator().manual_seed(1))
        assert abs(float(gates.mean()) - float(torch.sigmoid(torch.tensor(0.8)))) < 0.02


@pytest.mark.parametrize("temperature", [1e-8, 1e-3, 1.0, 1e4])
def test_extreme_logits_and_temperatures_stay_finite(temperature):
    logits = torch.tensor([-float("inf"), -1e30, -1e4, -50.0, 0.0, 50.0, 1e4, 1e30, float("inf")], requires_grad=True)
    gates = gumbel_sigmoid_straight_through(logits, temperature)
    gates.sum().backward()
    assert torch.isfinite(gates).all() and torch.isfinite(logits.grad).all()
    assert set(gates.detach().tolist()) <= {0.0, 1.0}
    assert set(hard_gates(logits.detach(), 0.5).tolist()) <= {0.0, 1.0}


def test_nonpositive_temperature_is_rejected():
    with pytest.raises(ValueError, match="temperature"):
        gumbel_sigmoid_straight_through(torch.zeros(3), 0.0)


def test_hard_gates_follow_the_threshold():
    logits = torch.tensor([-2.0, 0.0, 2.0])
    assert hard_gates(logits, 0.5).tolist() == [0.0, 0.0, 1.0]
    assert hard_gates(logits, 0.0).tolist() == [1.0, 1.0, 1.0]
    assert hard_gates(logits, 1.0).tolist() == [0.0, 0.0, 0.0]
    assert hard_gates(logits, 0.2).tolist() == [0.0, 1.0, 1.0]  # sigmoid(-2) = 0.12


@pytest.mark.parametrize("threshold", [-0.1, 1.5, math.nan])
def test_threshold_outside_unit_interval_is_rejected(threshold):
    with pytest.raises(ValueError, match="gate_threshold"):
        threshold_to_logit(threshold)


def test_temperature_anneals_from_initial_to_final():
    assert annealed_temperature(0, 1.0, 0.1, 100) == pytest.approx(1.0)
    assert annealed_temperature(50, 1.0, 0.1, 100) == pytest.approx(0.1**0.5)
    assert annealed_temperature(100, 1.0, 0.1, 100) == pytest.approx(0.1)
    assert annealed_temperature(10**6, 1.0, 0.1, 100) == pytest.approx(0.1)


def test_budget_allocation_runs_the_best_scored_prefix_that_fits():
    from espnet_amortized.encoder.gates import budget_allocation

    scores = torch.tensor([[0.5, 3.0, -1.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    costs = torch.tensor([[1.0, 2.0, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    chosen = budget_allocation(scores, costs, torch.tensor([4.4, 2.0]))
    # row 0: 3.0 (2) + 2.0 (2) fit 4.4, 0.5 (1) less than half; row 1: ties taken in order
    assert chosen.tolist() == [[0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]]
    # half of the item that crosses the budget fits: it runs
    assert budget_allocation(scores, costs, torch.tensor([4.5, 2.5])).tolist() == [[1.0, 1.0, 0.0, 1.0], [1.0] * 3 + [0.0]]
    assert budget_allocation(scores, costs, torch.tensor([0.0, 0.0])).sum() == 0
    assert budget_allocation(scores, costs, torch.tensor([6.0, 4.0])).sum() == 8


def test_budget_allocation_is_monotone_and_lands_within_half_an_item():
    from espnet_amortized.encoder.gates import budget_allocation

    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(20, 50, generator=generator)
    costs = torch.rand(20, 50, generator=generator) + 0.5
    previous = torch.zeros_like(scores)
    for fraction in (0.1, 0.3, 0.5, 0.9, 1.0):
        budgets = fraction * costs.sum(-1)
        chosen = budget_allocation(scores, costs, budgets)
        spent = (chosen * costs).sum(-1)
        assert bool(((spent - budgets).abs() <= 0.5 * costs.max(-1).values + 1e-4).all())
        assert bool((chosen >= previous).all())  # a larger budget runs a superset
        previous = chosen


def test_bounded_logits_pass_gradients_inward_but_not_outward_at_the_bound():
    logits = torch.tensor([-9.0, -4.0, 0.5, 4.0, 9.0], requires_grad=True)
    bounded = bound_logits(logits, 4.0)
    assert bounded.tolist() == [-4.0, -4.0, 0.5, 4.0, 4.0]
    bounded.sum().backward()  # descent lowers every logit: outward at -4 and -9, inward at 4 and 9
    assert logits.grad.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    logits.grad = None
    (-bound_logits(logits, 4.0).sum()).backward()  # descent raises every logit
    assert logits.grad.tolist() == [-1.0, -1.0, -1.0, 0.0, 0.0]


def test_bounded_logits_with_the_identity_gradient_pass_every_gradient():
    logits = torch.tensor([-9.0, -4.0, 0.5, 4.0, 9.0], requires_grad=True)
    bounded = bound_logits(logits, 4.0, "identity")
    assert bounded.tolist() == [-4.0, -4.0, 0.5, 4.0, 4.0]
    bounded.sum().backward()
    assert logits.grad.tolist() == [1.0] * 5
    with pytest.raises(ValueError, match="gate_logit_bound_gradient must be 'inward' or 'identity'"):
        bound_logits(logits, 4.0, "outward")
