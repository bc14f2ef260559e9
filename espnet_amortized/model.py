"""``amortized_espnet``: ESPnet's ASR model plus the compute term of the loss."""

import logging

import torch

from espnet_amortized._espnet import espnet_asr_model_class
from espnet_amortized.compute import count_macs, expected_layer_ratio
from espnet_amortized.loss import check_compute_options, compute_regularizer

ESPnetASRModel = espnet_asr_model_class()


class AmortizedESPnetASRModel(ESPnetASRModel):
    """``L = L_asr + compute_weight * R`` where R is the expected compute ratio term.

    ``L_asr`` is ESPnet's (transducer + ctc_weight * CTC, or attention). R is
    computed from the gate probabilities the ``amortized_transformer``
    encoder recorded in its forward; with any other encoder the model is
    ESPnet's. Adds to ``stats``: ``loss_compute`` (R), ``compute_expected``
    (E[C]), ``compute_ratio`` (executed / dense MACs of the gated layers,
    hard decisions), ``compute_ratio_encoder`` (whole encoder) and
    ``nonfinite_loss`` (1 for a batch whose loss is inf/NaN: ESPnet's trainer
    skips its update and leaves it out of the averages, so the epoch's
    ``nonfinite_loss`` is the fraction of such batches, weighted by size).

    Extra ``model_conf`` options:
        compute_weight: lambda (>= 0).
        compute_regularizer: "linear", "target" or "target_squared".
        compute_target: the budget for the target regularisers, in (0, 1].
        compute_warmup_steps: updates with lambda = 0 (learn to recognise first).
    """

    def __init__(
        self,
        *args,
        compute_weight: float = 0.0,
        compute_regularizer: str = "linear",
        compute_target: float = 0.4,
        compute_warmup_steps: int = 0,
        **kwargs,
    ):
        check_compute_options(compute_weight, compute_regularizer, compute_target)
        if compute_warmup_steps < 0:
            raise ValueError(f"compute_warmup_steps must be >= 0, got {compute_warmup_steps}")
        super().__init__(*args, **kwargs)
        self.compute_weight = compute_weight
        self.compute_regularizer = compute_regularizer
        self.compute_target = compute_target
        self.compute_warmup_steps = compute_warmup_steps
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.nonfinite_batches = 0  # in this process, for the warning

    def current_compute_weight(self) -> float:
        return self.compute_weight if int(self.num_updates) >= self.compute_warmup_steps else 0.0

    def forward(self, speech, speech_lengths, text, text_lengths, **kwargs):
        loss, stats, weight = super().forward(speech, speech_lengths, text, text_lengths, **kwargs)
        info = getattr(self.encoder, "gate_info", None)
        if info is not None:
            expected = expected_layer_ratio(self.encoder, info.probs, info.valid, info.allowed)
            regularizer = compute_regularizer(expected, self.compute_regularizer, self.compute_target)
            loss = loss + self.current_compute_weight() * regularizer
            if self.training:
                self.num_updates += 1
            report = count_macs(self.encoder, info.gates, info.valid, info.allowed, info.input_lengths.tolist())
            device = loss.device
            stats.update(
                loss=loss.detach(),
                loss_compute=regularizer.detach().reshape(1),
                compute_expected=expected.detach().reshape(1),
                compute_ratio=torch.tensor([report.layer_ratio], device=device),
                compute_ratio_encoder=torch.tensor([report.encoder_ratio], device=device),
            )
        finite = bool(torch.isfinite(loss.detach()).all())
        if not finite:
            self.nonfinite_batches += 1
            logging.warning(
                "loss is %s for a batch of %d utterance(s) (lengths %s): not used (%d such batch(es) in this run)",
                float(loss.detach()), speech.size(0), speech_lengths.tolist(), self.nonfinite_batches,
            )
        stats["nonfinite_loss"] = torch.tensor([0.0 if finite else 1.0], device=loss.device)
        return loss, stats, weight
