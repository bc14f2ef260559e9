"""``amortized_espnet``: ESPnet's ASR model plus the compute term of the loss."""

import logging
from typing import List, Optional, Tuple

import torch

from espnet_amortized._espnet import espnet_asr_model_class
from espnet_amortized.compute import COMPUTE_MEASURES, count_macs, expected_compute
from espnet_amortized.encoder import AmortizedTransformerEncoder
from espnet_amortized.encoder.masks import lengths_to_mask
from espnet_amortized.loss import check_compute_options, compute_regularizer

ESPnetASRModel = espnet_asr_model_class()


def all_ranks_sum(tensor: torch.Tensor, device) -> torch.Tensor:
    """``tensor`` summed over the ranks of the default process group (itself without one)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensor
    if torch.distributed.get_world_size() == 1:
        return tensor
    # NCCL reduces on the GPU; gloo on either.
    if torch.distributed.get_backend() == "nccl":
        tensor = tensor.to(device)
    torch.distributed.all_reduce(tensor)
    return tensor.cpu()


class AmortizedESPnetASRModel(ESPnetASRModel):
    """``L = L_asr + compute_weight * R`` in training, where R is the expected compute term.

    ``L_asr`` is ESPnet's (transducer + ctc_weight * CTC, or attention). R is
    the mean over utterances of a regulariser of each utterance's expected
    compute ratio, from the gate probabilities the ``amortized_transformer``
    encoder recorded in its forward; with any other encoder the model is
    ESPnet's. In validation (eval mode) the loss is ``L_asr`` alone, so that
    ESPnet's model selection and checkpoint averaging (``valid loss``) rank
    models by recognition, not by how far they are from their budget.

    Adds to ``stats``: ``loss_asr``, ``loss_compute`` (R), ``loss_distillation``
    (``budget_distillation_weight``), ``compute_expected``
    (mean E[C] of the measure), ``compute_ratio`` (executed / dense MACs of
    the gated layers, hard decisions), ``compute_ratio_encoder`` (whole
    encoder), ``compute_multiplier`` (regulariser ``budget``) and
    ``nonfinite_loss`` (1 for a batch whose loss is inf/NaN: ESPnet's trainer
    skips its update and leaves it out of the averages, so the epoch's
    ``nonfinite_loss`` is the fraction of such batches, weighted by size).

    Extra ``model_conf`` options:
        compute_weight: lambda (>= 0); with ``budget``, the multiplier's initial value.
        compute_regularizer: "linear", "target", "target_squared" or "budget"
            (``multiplier * (E[C] - compute_target)``, the multiplier updated
            after every optimizer update by dual ascent,
            ``multiplier += compute_multiplier_rate * (C - compute_target)``
            with C the mean executed compute of that update's batches, plus
            ``compute_penalty / 2 * (E[C] - compute_target)^2`` (an augmented
            Lagrangian: the quadratic term is a proportional force that damps
            the multiplier's oscillation), so that training holds compute at
            the target from either side).
        compute_target: the budget for the target regularisers, in (0, 1].
        compute_measure: "layers" (the gated layers and the arbitrator, as
            ``compute_ratio``) or "encoder" (the whole encoder, as
            ``compute_ratio_encoder``): what R and the target measure.
        compute_multiplier_rate: the dual-ascent step (>= 0; 0 keeps the multiplier).
        compute_penalty: the quadratic term's weight rho (>= 0) for ``budget``.
        compute_warmup_steps: optimizer updates with no compute term (learn to
            recognise first); the multiplier starts moving after them.
        compute_budget_bins: with a budget-conditioned encoder
            (``budget_conditioning``), each utterance's target is its own
            budget b, and the multiplier is one per bin of b: this many equal
            bins over [budget_min, 1) and one for b = 1 (a single multiplier
            cannot hold every budget: the ASR loss pulls harder at some).
        budget_distillation_weight: with a budget-conditioned encoder, the
            weight of in-place distillation (slimmable networks): each
            training batch also runs the encoder at b = 1 without gradient,
            and every utterance pays the KL divergence, summed over its
            frames, from those CTC posteriors to its own at its drawn budget
            (0: off; needs ``ctc_weight`` > 0). The low budgets learn from
            the full model's outputs instead of from the labels alone.

    Updates are counted by ``count_update`` after each optimizer step
    (``espnet_amortized.updates``), not per forward: with ``accum_grad`` N
    one update takes N forwards. The counter and the multiplier are floating
    point buffers, so ESPnet's checkpoint averaging averages them (it sums
    integer buffers), and a resumed run continues both.
    """

    def __init__(
        self,
        *args,
        compute_weight: float = 0.0,
        compute_regularizer: str = "linear",
        compute_target: float = 0.4,
        compute_measure: str = "layers",
        compute_multiplier_rate: float = 0.5,
        compute_warmup_steps: int = 0,
        compute_penalty: float = 100.0,
        compute_budget_bins: int = 8,
        budget_distillation_weight: float = 0.0,
        **kwargs,
    ):
        check_compute_options(compute_weight, compute_regularizer, compute_target)
        if compute_measure not in COMPUTE_MEASURES:
            raise ValueError(
                f"compute_measure must be one of {', '.join(map(repr, COMPUTE_MEASURES))}; got {compute_measure!r}"
            )
        if compute_multiplier_rate < 0:
            raise ValueError(f"compute_multiplier_rate must be >= 0, got {compute_multiplier_rate}")
        if compute_penalty < 0:
            raise ValueError(f"compute_penalty must be >= 0, got {compute_penalty}")
        if compute_warmup_steps < 0:
            raise ValueError(f"compute_warmup_steps must be >= 0, got {compute_warmup_steps}")
        if compute_budget_bins < 1:
            raise ValueError(f"compute_budget_bins must be >= 1, got {compute_budget_bins}")
        if budget_distillation_weight < 0:
            raise ValueError(f"budget_distillation_weight must be >= 0, got {budget_distillation_weight}")
        super().__init__(*args, **kwargs)
        self.budget_conditioned = isinstance(self.encoder, AmortizedTransformerEncoder) and self.encoder.budget_conditioning
        if budget_distillation_weight > 0 and not (self.budget_conditioned and self.ctc is not None):
            raise ValueError(
                "budget_distillation_weight > 0 needs a budget-conditioned encoder (budget_conditioning: true) and "
                f"a CTC head (ctc_weight > 0); got budget_conditioning {self.budget_conditioned}, "
                f"ctc_weight {self.ctc_weight}"
            )
        self.budget_distillation_weight = budget_distillation_weight
        if self.budget_conditioned and (compute_regularizer != "budget" or compute_measure != "encoder"):
            raise ValueError(
                "a budget-conditioned encoder (budget_conditioning: true) needs compute_regularizer: budget and "
                f"compute_measure: encoder (its budget is the whole encoder's); got {compute_regularizer!r}, "
                f"{compute_measure!r}"
            )
        self.compute_weight = compute_weight
        self.compute_regularizer = compute_regularizer
        self.compute_target = compute_target
        self.compute_measure = compute_measure
        self.compute_multiplier_rate = compute_multiplier_rate
        self.compute_warmup_steps = compute_warmup_steps
        self.compute_penalty = compute_penalty
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.float64))
        self.compute_budget_bins = compute_budget_bins
        bins = (compute_budget_bins + 1,) if self.budget_conditioned else ()
        self.register_buffer("compute_multiplier", torch.full(bins, float(compute_weight), dtype=torch.float64))
        # Per forward: each utterance's executed compute minus its target, and its multiplier bin (dual ascent).
        self._violations_since_update: List[Tuple[torch.Tensor, torch.Tensor]] = []
        # ESPnet's encode() drops the encoder's third output, where amortized_transformer returns its
        # decisions (GateInfo): a forward hook of the model's own keeps that output for this forward.
        self._gate_info = None
        self._encoder_call = None  # (inputs, outputs) of this forward's encoder call, for the distillation
        if isinstance(self.encoder, AmortizedTransformerEncoder):
            self.encoder.register_forward_hook(self._keep_gate_info)
        self.nonfinite_batches = 0  # in this process, for the warning

    def _keep_gate_info(self, encoder, inputs, outputs) -> None:
        self._gate_info = outputs[2]
        if self.budget_distillation_weight > 0 and self.training:
            self._encoder_call = (inputs[0], inputs[1], outputs[0], outputs[1])

    def distillation(self, xs_pad, ilens, student, output_lengths) -> torch.Tensor:
        """(B,) KL(p_full || p_student) of the CTC posteriors, summed over each utterance's frames.

        The teacher is this model's encoder at b = 1 on the same features, without gradient.
        """
        with torch.no_grad():
            teacher, _, _ = self.encoder(xs_pad, ilens, budgets=xs_pad.new_ones(xs_pad.size(0)))
            teacher = self.ctc.log_softmax(teacher)
        student = self.ctc.log_softmax(student)
        per_frame = (teacher.exp() * (teacher - student)).sum(-1)
        return (per_frame * lengths_to_mask(output_lengths.to(student.device), student.size(1))).sum(-1)

    @property
    def warming_up(self) -> bool:
        return int(self.num_updates) < self.compute_warmup_steps

    def budget_bins(self, budgets: Optional[torch.Tensor], batch: int, device) -> torch.Tensor:
        """(B,) multiplier index per utterance: 0 without budgets; b = 1 has the last bin."""
        if budgets is None:
            return torch.zeros(batch, dtype=torch.long, device=device)
        low, bins = self.encoder.budget_min, self.compute_budget_bins
        index = ((budgets - low) / max(1.0 - low, 1e-9) * bins).floor().long().clamp(0, bins - 1)
        return torch.where(budgets >= 1.0, torch.full_like(index, bins), index)

    def compute_term(self, regularizer: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
        """The training loss's compute term for per-utterance regularisers (B,) (0 while warming up).

        ``budget``: sum over bins k of (n_k / B) (multiplier_k v_k + rho / 2 v_k^2), v_k the mean of
        bin k's utterances; the others: ``compute_weight`` times the mean.
        """
        if self.warming_up:
            return regularizer.new_zeros(())
        if self.compute_regularizer != "budget":
            return self.compute_weight * regularizer.mean()
        count = self.compute_multiplier.numel()
        sizes = torch.bincount(bins, minlength=count).to(regularizer.dtype)
        sums = regularizer.new_zeros(count).index_add(0, bins, regularizer)
        means = sums / sizes.clamp(min=1.0)
        multipliers = self.compute_multiplier.reshape(-1).to(regularizer.dtype)
        return ((sizes / regularizer.numel()) * (multipliers * means + 0.5 * self.compute_penalty * means**2)).sum()

    @torch.no_grad()
    def count_update(self) -> None:
        """One optimizer update done: advance the counter and take the multipliers' dual-ascent step.

        Under data-parallel training each rank sees its share of the global batch: the per-bin sums and
        counts are summed over the ranks first, so every rank takes the same step, the one a single process
        takes on the whole batch (and the multipliers stay equal on every rank without a broadcast). Every rank
        calls this once per update, with or without violations of its own. A batch whose update the trainer skips
        (a non-finite gradient) leaves its violations to the next update's step, in one process as in several.
        """
        violations, self._violations_since_update = self._violations_since_update, []
        if self.compute_regularizer == "budget" and not self.warming_up:
            count = self.compute_multiplier.numel()
            totals = torch.zeros(2, count, dtype=torch.float64)  # per bin: sum of violations, utterances
            if violations:
                bins = torch.cat([b for _, b in violations]).cpu()
                totals[0].index_add_(0, bins, torch.cat([v for v, _ in violations]).to(torch.float64).cpu())
                totals[1] = torch.bincount(bins, minlength=count).to(torch.float64)
            totals = all_ranks_sum(totals, self.compute_multiplier.device)
            means = totals[0] / totals[1].clamp(min=1.0)
            step = (self.compute_multiplier_rate * means).reshape(self.compute_multiplier.shape)
            self.compute_multiplier += step.to(self.compute_multiplier.device)  # bins without utterances: 0
        self.num_updates += 1

    def forward(self, speech, speech_lengths, text, text_lengths, **kwargs):
        self._gate_info = self._encoder_call = None
        loss, stats, weight = super().forward(speech, speech_lengths, text, text_lengths, **kwargs)
        info, self._gate_info = self._gate_info, None
        call, self._encoder_call = self._encoder_call, None
        distillation = None
        if call is not None:
            distillation = self.distillation(*call).mean()
            self._gate_info = self._encoder_call = None  # the teacher's call is not this forward's
        violations = None
        if info is not None:
            lengths = info.input_lengths.tolist()
            expected = expected_compute(self.encoder, info.probs, info.valid, info.allowed, lengths)
            expected = expected.measure(self.compute_measure)
            targets = self.compute_target if info.budgets is None else info.budgets.to(expected.dtype)
            regularizer = compute_regularizer(expected, self.compute_regularizer, targets)  # (B,)
            bins = self.budget_bins(info.budgets, expected.numel(), expected.device)
            stats["loss_asr"] = loss.detach()
            violations = None
            if self.training:
                loss = loss + self.compute_term(regularizer, bins)
                if distillation is not None:
                    stats["loss_distillation"] = distillation.detach().reshape(1)
                    loss = loss + self.budget_distillation_weight * distillation
                executed = expected_compute(self.encoder, info.gates.detach(), info.valid, info.allowed, lengths)
                violations = (executed.measure(self.compute_measure).detach() - targets, bins)
            report = count_macs(self.encoder, info.gates, info.valid, info.allowed, lengths)
            device = loss.device
            stats.update(
                loss=loss.detach(),
                loss_compute=regularizer.detach().mean().reshape(1),
                compute_expected=expected.detach().mean().reshape(1),
                compute_ratio=torch.tensor([report.layer_ratio], device=device),
                compute_ratio_encoder=torch.tensor([report.encoder_ratio], device=device),
            )
            if self.compute_regularizer == "budget":
                multiplier = self.compute_multiplier.detach().mean()  # of the bins, with budgets
                stats["compute_multiplier"] = multiplier.to(device, torch.float32).reshape(1)
        finite = bool(torch.isfinite(loss.detach()).all())
        if finite and violations is not None:
            # ESPnet skips the update of a non-finite batch: its compute must not move the multipliers either
            self._violations_since_update.append(violations)
        if not finite:
            self.nonfinite_batches += 1
            logging.warning(
                "loss is %s for a batch of %d utterance(s) (lengths %s): not used (%d such batch(es) in this run)",
                float(loss.detach()), speech.size(0), speech_lengths.tolist(), self.nonfinite_batches,
            )
        stats["nonfinite_loss"] = torch.tensor([0.0 if finite else 1.0], device=loss.device)
        return loss, stats, weight
