"""Binary gates: Gumbel-sigmoid straight-through in training; at inference thresholds or a budget allocation.

With logistic noise, P(hard gate = 1) = sigmoid(logit) exactly, whatever the
temperature; so ``sigmoid(logit)`` is both the inference score and the
probability the expected-compute regulariser differentiates.
"""

import math
from typing import Callable

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
    return allocated_straight_through(logits, lambda noisy: (noisy > 0).to(logits.dtype), temperature, generator)


def allocated_straight_through(
    logits: torch.Tensor, decide: Callable[[torch.Tensor], torch.Tensor], temperature: float,
    generator: torch.Generator = None, noise_scale: float = 1.0,
) -> torch.Tensor:
    """Hard 0/1 gates ``decide(logits + noise_scale x logistic noise)`` forward, the relaxed sigmoid's
    gradient backward.

    ``decide`` sees the noisy logits detached: a threshold at 0 (the Gumbel-sigmoid
    sample) or a budget allocation that ranks them. ``noise_scale`` 0: ``decide``
    sees the logits themselves (what inference ranks), no exploration.
    """
    if not temperature > 0:
        raise ValueError(f"gate temperature must be > 0, got {temperature}")
    if not noise_scale >= 0:
        raise ValueError(f"the gate noise scale must be >= 0, got {noise_scale}")
    temperature = max(float(temperature), MIN_TEMPERATURE)
    uniform = torch.rand(
        logits.shape, device=logits.device, dtype=logits.dtype, generator=generator
    ).clamp_(_NOISE_EPS, 1.0 - _NOISE_EPS)
    noisy = logits.clamp(-_LOGIT_CLAMP, _LOGIT_CLAMP) + noise_scale * (torch.log(uniform) - torch.log1p(-uniform))
    soft = torch.sigmoid(noisy / temperature)
    hard = decide(noisy.detach()).to(soft.dtype)
    # (soft - soft.detach()) is exactly 0 forward, so the forward value is exactly hard.
    return hard + (soft - soft.detach())


class _BoundedLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, bound, inward_only):
        ctx.save_for_backward(logits)
        ctx.bound, ctx.inward_only = bound, inward_only
        return logits.clamp(-bound, bound)

    @staticmethod
    def backward(ctx, grad):
        if not ctx.inward_only:
            return grad, None, None
        (logits,) = ctx.saved_tensors
        outward = ((logits >= ctx.bound) & (grad < 0)) | ((logits <= -ctx.bound) & (grad > 0))
        return grad.masked_fill(outward, 0.0), None, None


BOUND_GRADIENTS = ("inward", "identity")  # gate_logit_bound_gradient's values


def bound_logits(logits: torch.Tensor, bound: float, gradient: str = "inward") -> torch.Tensor:
    """``logits`` clamped to [-bound, bound] forward; backward the identity's gradient (``gradient:
    identity``), or (``inward``) that except where a descent step would push a logit already at or beyond
    the bound further out (dropped there).

    With the identity gradient the raw logits kept running outward (|logit| ~1e4 after 2,250 bench
    updates, RESULTS.md issue 13), so no decision could come back; ``inward`` keeps them at the bound. But
    the bench's dedicated models learned only with ``identity`` (third round), so both are kept.
    """
    if gradient not in BOUND_GRADIENTS:
        raise ValueError(f"gate_logit_bound_gradient must be 'inward' or 'identity', got {gradient!r}")
    return _BoundedLogits.apply(logits, float(bound), gradient == "inward")


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
