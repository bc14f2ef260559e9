"""The arbitrator: a small causal network that decides which units run per frame."""

from typing import Optional, Tuple

import torch


class Arbitrator(torch.nn.Module):
    """LayerNorm -> causal 1-D conv -> ReLU -> Linear, once per frame.

    Emits one logit per gated unit of every layer. The conv only looks back
    (``kernel_size - 1`` frames of left padding), so a frame's decision depends
    on its past and itself: streaming-safe, and chunk-by-chunk inference with
    the conv cache equals the full-utterance forward.
    """

    def __init__(
        self,
        input_size: int,
        num_gates: int,
        hidden_size: int = 64,
        kernel_size: int = 3,
        initial_logit: float = 3.0,
    ):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"arbitrator_kernel_size must be >= 1, got {kernel_size}")
        if hidden_size < 1:
            raise ValueError(f"arbitrator_hidden_size must be >= 1, got {hidden_size}")
        self.input_size = input_size
        self.num_gates = num_gates
        self.hidden_size = hidden_size
        self.kernel_size = kernel_size
        self.norm = torch.nn.LayerNorm(input_size)
        self.conv = torch.nn.Conv1d(input_size, hidden_size, kernel_size)
        self.out = torch.nn.Linear(hidden_size, num_gates)
        # Start with (almost) every unit on: the model first learns as a dense
        # Transformer and the compute loss then switches units off.
        torch.nn.init.normal_(self.out.weight, std=0.01)
        torch.nn.init.constant_(self.out.bias, initial_logit)

    def init_cache(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        return torch.zeros(batch_size, self.kernel_size - 1, self.input_size, device=device, dtype=dtype)

    def forward(
        self, x: torch.Tensor, cache: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, D) -> logits (B, T, num_gates), new cache (B, kernel-1, D)."""
        normed = self.norm(x)
        if cache is None:
            cache = self.init_cache(x.size(0), x.device, x.dtype)
        padded = torch.cat([cache, normed], dim=1)
        hidden = torch.relu(self.conv(padded.transpose(1, 2))).transpose(1, 2)
        new_cache = padded[:, padded.size(1) - (self.kernel_size - 1) :]
        return self.out(hidden), new_cache

    def macs_per_frame(self) -> int:
        return self.input_size * self.hidden_size * self.kernel_size + self.hidden_size * self.num_gates
