"""Binary gates: Gumbel-sigmoid straight-through in training; at inference thresholds or a budget allocation.

With logistic noise, P(hard gate = 1) = sigmoid(logit) exactly, whatever the
temperature; so ``sigmoid(logit)`` is both the inference score and the
probability the expected-compute regulariser differentiates.
"""

import math

import torch

# Keeps log(u) and log(1 - u) finite in float32.
_NOISE_EPS = 1e-6
# Logits beyond this saturate sigmoid in float32 anyway; clamping keeps
# (logit + noise) / temperature finite for any temperature >= min_temperature.
_LOGIT_CLAMP = 30.0
MIN_TEMPERATURE = 1e-3


def gumbel_sigmoid_straight_through(
    logits: torch.Tensor, temperature: float, generator: torch.Generator = None
) -> torch.Tensor:
    """Hard 0/1 gates in the forward pass, the relaxed sigmoid's gradient backward."""
    if not temperature > 0:
        raise ValueError(f"gate temperature must be > 0, got {temperature}")
    temperature = max(float(temperature), MIN_TEMPERATURE)
    uniform = torch.rand(
        logits.shape, device=logits.device, dtype=logits.dtype, generator=generator
    ).clamp_(_NOISE_EPS, 1.0 - _NOISE_EPS)
    noise = torch.log(uniform) - torch.log1p(-uniform)
    soft = torch.sigmoid((logits.clamp(-_LOGIT_CLAMP, _LOGIT_CLAMP) + noise) / temperature)
    hard = (soft > 0.5).to(soft.dtype)
    # (soft - soft.detach()) is exactly 0 forward, so the forward value is exactly hard.
    return hard + (soft - soft.detach())


def threshold_to_logit(threshold: float) -> float:
    """``sigmoid(l) > threshold``  <=>  ``l > threshold_to_logit(threshold)``."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"gate_threshold must be in [0, 1], got {threshold}")
    if threshold == 0.0:
        return -math.inf
    if threshold == 1.0:
        return math.inf
    return math.log(threshold) - math.log1p(-threshold)


def hard_gates(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Inference gates: 1 where ``sigmoid(logit) > threshold`` (0 keeps everything)."""
    return (logits > threshold_to_logit(threshold)).to(logits.dtype)


def annealed_temperature(
    step: int, initial: float, final: float, anneal_steps: int
) -> float:
    """Exponential decay from ``initial`` to ``final`` over ``anneal_steps`` updates."""
    if anneal_steps <= 0 or step >= anneal_steps:
        return final
    return initial * (final / initial) ** (step / anneal_steps)


def budget_allocation(scores: torch.Tensor, costs: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
    """0/1 decisions (N, M): per row, the items of highest score run while their summed cost fits the budget.

    scores, costs: (N, M); budgets: (N,). The items that run are a prefix of the
    row sorted by score (ties in order), so for the same scores a larger budget
    runs a superset; the item that crosses the budget runs if at least half of
    it fits, so a row's executed cost is within half an item of its budget.
    """
    order = scores.argsort(dim=-1, descending=True, stable=True)
    sorted_costs = costs.to(torch.float64).gather(-1, order)
    midpoints = sorted_costs.cumsum(-1) - 0.5 * sorted_costs
    chosen = (midpoints <= budgets.to(torch.float64).unsqueeze(-1)).to(scores.dtype)
    return torch.zeros_like(chosen).scatter(-1, order, chosen)
