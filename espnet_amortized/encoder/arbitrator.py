"""The arbitrator: a small causal network that decides which units run per frame."""

from typing import Optional, Tuple

import torch


class Arbitrator(torch.nn.Module):
    """LayerNorm -> causal 1-D conv -> ReLU -> Linear, once per frame.

    Emits one logit per gated unit of every layer. The conv only looks back
    (``kernel_size - 1`` frames of left padding), so a frame's decision depends
    on its past and itself: streaming-safe, and chunk-by-chunk inference with
    the conv cache equals the full-utterance forward.

    ``budget_conditioned``: the compute budget b (one per utterance) is an
    input. A small network of (1 - b), minus its value at b = 1, gives FiLM
    scales and shifts for the conv's output (before the ReLU) and a bias per
    gate: at b = 1 the arbitrator is the plain one, and its last layer starts
    at zero, so at initialisation it is for every budget.
    """

    def __init__(
        self,
        input_size: int,
        num_gates: int,
        hidden_size: int = 64,
        kernel_size: int = 3,
        initial_logit: float = 3.0,
        budget_conditioned: bool = False,
        budget_hidden_size: int = 16,
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
        self.budget_net = None
        if budget_conditioned:
            self.budget_net = torch.nn.Sequential(
                torch.nn.Linear(1, budget_hidden_size),
                torch.nn.Tanh(),
                torch.nn.Linear(budget_hidden_size, 2 * hidden_size + num_gates),
            )
            torch.nn.init.zeros_(self.budget_net[2].weight)
            torch.nn.init.zeros_(self.budget_net[2].bias)

    def init_cache(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        return torch.zeros(batch_size, self.kernel_size - 1, self.input_size, device=device, dtype=dtype)

    @property
    def budget_conditioned(self) -> bool:
        return self.budget_net is not None

    def forward(
        self, x: torch.Tensor, cache: Optional[torch.Tensor] = None, budget: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, D), budget (B,) in [0, 1] -> logits (B, T, num_gates), new cache (B, kernel-1, D)."""
        if self.budget_conditioned and budget is None:
            raise ValueError("a budget-conditioned arbitrator needs the budget of each utterance")
        normed = self.norm(x)
        if cache is None:
            cache = self.init_cache(x.size(0), x.device, x.dtype)
        padded = torch.cat([cache, normed], dim=1)
        hidden = self.conv(padded.transpose(1, 2)).transpose(1, 2)
        new_cache = padded[:, padded.size(1) - (self.kernel_size - 1) :]
        if not self.budget_conditioned:
            return self.out(torch.relu(hidden)), new_cache
        remaining = torch.cat([(1.0 - budget.to(x.dtype)).view(-1, 1), x.new_zeros(1, 1)])
        condition = self.budget_net(remaining)
        condition = (condition[:-1] - condition[-1:]).unsqueeze(1)  # (B, 1, 2H + G), zero at b = 1
        scale, shift, gate_bias = condition.split([self.hidden_size, self.hidden_size, self.num_gates], dim=-1)
        return self.out(torch.relu(hidden * (1.0 + scale) + shift)) + gate_bias, new_cache

    def macs_per_frame(self) -> int:
        """Per frame; with a budget, the FiLM multiply-add (the budget network runs once per utterance)."""
        macs = self.input_size * self.hidden_size * self.kernel_size + self.hidden_size * self.num_gates
        return macs + (self.hidden_size if self.budget_conditioned else 0)
