"""Losses: the compute regulariser and an RNN-T loss for ESPnet's transducer path."""

import torch
import torchaudio

COMPUTE_REGULARIZERS = ("linear", "target", "target_squared", "budget")


def check_compute_options(compute_weight: float, compute_regularizer: str, compute_target: float) -> None:
    if compute_weight < 0:
        raise ValueError(f"compute_weight must be >= 0, got {compute_weight}")
    if compute_regularizer not in COMPUTE_REGULARIZERS:
        raise ValueError(
            f"compute_regularizer must be one of {', '.join(map(repr, COMPUTE_REGULARIZERS))}; "
            f"got {compute_regularizer!r}"
        )
    if not 0.0 < compute_target <= 1.0:
        raise ValueError(f"compute_target must be in (0, 1], got {compute_target}")


def compute_regularizer(expected_ratio: torch.Tensor, kind: str = "linear", target=0.4) -> torch.Tensor:
    """R from the expected compute ratio E[C] (per utterance; the caller averages), for a target that is
    one number or one per utterance (a budget-conditioned encoder's budgets):

    - ``linear``: E[C]  (always pushes compute down; lambda sets the trade-off)
    - ``target``: max(0, E[C] - target)  (no pressure below the budget)
    - ``target_squared``: max(0, E[C] - target)^2
    - ``budget``: E[C] - target, the constraint of a Lagrangian whose multiplier
      the model updates by dual ascent (pressure from both sides)
    """
    if kind == "linear":
        return expected_ratio
    if kind == "budget":
        return expected_ratio - target
    excess = torch.relu(expected_ratio - target)
    if kind == "target":
        return excess
    if kind == "target_squared":
        return excess * excess
    raise ValueError(f"unknown compute_regularizer {kind!r}")


class RNNTLoss(torch.nn.Module):
    """Drop-in for warp-transducer's ``warprnnt_pytorch.RNNTLoss`` on torchaudio.

    ESPnet's transducer path imports warp-transducer, which is not on the
    package registry. Same call: ``(logits (B, T, U+1, V), labels (B, U),
    logit_lengths, label_lengths)``; log-softmax is applied inside (fused);
    "mean" is the batch mean of per-utterance losses, as in warp-transducer.
    """

    def __init__(self, blank: int = 0, fastemit_lambda: float = 0.0, reduction: str = "mean"):
        super().__init__()
        if fastemit_lambda != 0.0:
            raise ValueError(
                "fastemit_lambda is not supported by torchaudio's rnnt_loss; got "
                f"{fastemit_lambda}"
            )
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")
        self.blank = blank
        self.reduction = reduction

    def forward(self, logits, labels, logit_lengths, label_lengths) -> torch.Tensor:
        return torchaudio.functional.rnnt_loss(
            logits.float(),
            labels.int(),
            logit_lengths.int(),
            label_lengths.int(),
            blank=self.blank,
            reduction=self.reduction,
        )
