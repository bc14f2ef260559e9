"""Optimizer updates, counted where they happen.

The amortized model's schedules (compute warm-up, Gumbel temperature, the
budget multiplier's dual ascent) run in optimizer updates. Counting forward
passes runs them ``accum_grad`` times too fast, so the counters advance in a
step post-hook of the optimizer: an update the trainer skips (a non-finite
gradient, an AMP overflow) is not counted.
"""

from typing import List

import torch


def update_counters(model: torch.nn.Module) -> List[torch.nn.Module]:
    """The modules of ``model`` whose schedules count updates: our model, our encoder (explicitly, no walk)."""
    from espnet_amortized.encoder import AmortizedTransformerEncoder
    from espnet_amortized.model import AmortizedESPnetASRModel

    counters = []
    if isinstance(model, AmortizedESPnetASRModel):
        counters.append(model)
    if isinstance(getattr(model, "encoder", None), AmortizedTransformerEncoder):  # ESPnet's models' encoder
        counters.append(model.encoder)
    return counters


def count_updates(model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """After every ``optimizer.step()``, call ``count_update()`` of ``model``'s counters; returns the hook handle."""
    counters = update_counters(model)

    def after_step(optimizer, args, kwargs) -> None:
        for module in counters:
            module.count_update()

    return optimizer.register_step_post_hook(after_step)
