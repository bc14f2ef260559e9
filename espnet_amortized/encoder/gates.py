"""Binary gates: Gumbel-sigmoid straight-through in training, thresholds at inference.

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
