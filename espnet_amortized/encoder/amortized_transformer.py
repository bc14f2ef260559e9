"""``amortized_transformer``: a streaming Transformer encoder with per-frame unit skipping."""

import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch.nn.utils.rnn import pad_sequence

from espnet_amortized._espnet import AbsEncoder, LayerNorm, StreamPositionalEncoding
from espnet_amortized.compute import (
    ATT,
    CONV,
    FFN,
    always_run_conv_macs_per_frame,
    arbitrator_macs_per_frame,
    gated_conv_macs_per_frame,
)
from espnet_amortized.encoder.arbitrator import Arbitrator
from espnet_amortized.encoder.gates import (
    annealed_temperature,
    allocated_straight_through,
    BOUND_GRADIENTS,
    bound_logits,
    budget_allocation,
    gumbel_sigmoid_straight_through,
    hard_gates,
)
from espnet_amortized.encoder.layers import GatedTransformerLayer, KeyValueCache
from espnet_amortized.encoder.masks import chunk_attention_mask, lengths_to_mask
from espnet_amortized.encoder.subsampling import build_subsampling

GATE_UNITS = ("unit", "layer", "none")
ARBITRATORS = ("global", "local")
DECISION_UNITS = ("frame", "chunk")
CONV_NORM_TYPES = ("layer_norm", "batch_norm")
BUDGET_ORDERS = ("logit", "logit_per_mac", "conv_first")


@dataclass
class GateInfo:
    """What one forward decided, for the compute loss and the MAC counter.

    ``probs`` and ``gates`` are (B, T, num_blocks, U): per frame, layer and
    unit (MHSA, FFN and, with ``gate_conv``, the convolution unit: U = 3).
    ``probs`` = sigmoid(logit) is differentiable; ``gates`` holds the 0/1
    decisions that ran.
    """

    probs: torch.Tensor
    gates: torch.Tensor
    valid: torch.Tensor  # (B, T) bool
    allowed: torch.Tensor  # (T, T) bool chunk mask used
    input_lengths: torch.Tensor  # (B,) feature frames before subsampling
    budgets: Optional[torch.Tensor] = None  # (B,) the compute budget of each utterance (budget_conditioning)


class AmortizedTransformerEncoder(AbsEncoder):
    """Streaming pre-LN Transformer whose MHSA/FFN units are skipped per frame.

    Args:
        input_size: feature dimension (80 for fbank).
        output_size: model dimension d.
        attention_heads, linear_units, num_blocks: Transformer shape.
        input_layer: "conv2d" (ESPnet's 4x conv), "conv2d6" (ESPnet's 6x conv),
            "dw_striding" (depthwise-separable striding convs, as NeMo's
            FastConformer; far cheaper than conv2d) or "stack" (stacked frames
            + linear). All run without time padding, so streaming is exact.
        stack_frames: frames stacked by ``input_layer: stack``.
        subsampling_factor: dw_striding's factor (2, 4 or 8; None: 4). The
            other input layers have a fixed factor, which a given value must match.
        subsampling_channels, subsampling_kernel_size: dw_striding's conv
            channels and kernel size (48 channels: ~12% of a dense 6x144
            encoder's MACs at factor 4; ESPnet's conv2d there: ~70%).
        conv_kernel_size: kernel of a causal convolution unit after each layer's
            MHSA (the Conformer's module with LayerNorm; 0: none). Always
            executed unless ``gate_conv``, and counted by the MAC counter.
        conv_norm_type: the convolution unit's norm after the depthwise conv:
            "layer_norm" (per frame) or "batch_norm" (ESPnet's conformer module's,
            statistics over the padded batch; an ablation, RESULTS.md issue 12).
        gate_conv: the convolution units are gated too (a third gate per layer
            with ``gate_unit: unit``; with ``layer`` the layer's gate decides all
            three): a skipped frame runs neither of its pointwise layers and
            gives the depthwise conv a zero input; needs ``conv_kernel_size`` and
            the global arbitrator. Without it they always run (the compute floor:
            0.288 of the dense encoder for conf/train_amortized.yaml).
        chunk_size: frames per chunk after subsampling (> 0).
        left_chunks: chunks of left context (-1: all of the past).
        dynamic_chunk_training: per training batch, a random chunk size in
            [1, 2 * chunk_size] (half of the batches keep ``chunk_size``).
        gate_unit: "unit" (MHSA and FFN gated separately), "layer" (one gate
            per layer) or "none" (a dense Transformer: the baseline).
        arbitrator: "global" (one small network before layer 1) or "local"
            (a linear gate per unit from that unit's input).
        decision_unit: "frame" or "chunk" (one decision per chunk: the mean logit).
        kv_from_skipped: whether frames whose MHSA is skipped still provide
            keys/values to other frames.
        key_gate_gradient: with ``kv_from_skipped: false``, whether the ASR
            loss's gradient reaches a gate through its frame's key/value (the
            attention weights are multiplied by the straight-through gates and
            renormalised; False: the key is removed without a gradient, so only
            the compute term sees what removing it saves).
        budget_conditioning: the global arbitrator takes a compute budget b
            (the whole encoder's executed / dense MACs) per utterance: in
            training drawn from [budget_min, 1) uniformly, or 1 for a
            ``budget_full_fraction`` and ``budget_min`` for a
            ``budget_min_fraction`` of the utterances, and held by the model's
            ``budget`` regulariser (``compute_measure: encoder``); at inference
            ``compute_budget`` (one trained model, every budget; 1 when unset).
        budget_training: how training holds each utterance's budget.
            ``regularize``: gates sampled per frame (Gumbel-sigmoid), the
            model's ``budget`` regulariser pulls the compute to b.
            ``allocate``: the per-chunk allocation that ``compute_budget`` uses
            at inference decides the training gates too, on the logits plus
            logistic noise (exploration), with the straight-through gradient:
            training runs exactly the decisions inference makes and every b
            lands by construction; a larger b runs a superset for the same
            logits. Needs ``budget_conditioning`` and per-frame decisions.
        budget_min: the smallest budget drawn in training, in (0, 1].
        budget_full_fraction: the share of training utterances at b = 1, in [0, 1].
        budget_min_fraction: the share of training utterances at b = budget_min
            (with ``budget_full_fraction``, the "sandwich rule" of slimmable
            networks: every batch trains the largest and the smallest model,
            so the low end is not left to the few uniform draws near it). 1 (with
            ``budget_full_fraction`` 0): every utterance at ``budget_min``, a
            dedicated model trained by the budget model's allocation (decode it
            with ``compute_budget`` = ``budget_min``; the report's ``target_budget``).
        budget_draw_power: the other utterances' b is budget_min + (1 - budget_min) * u ** power, u uniform
            on [0, 1): 1 draws b uniformly; 2 draws the lower half of the range for 71% of them (1 / sqrt(2))
            and b within 0.2 of budget_min = 0.25 for 52% (27% uniform), so the smallest models, the ones
            furthest from the rest, get more of the training without a fixed point as the sandwich rule's.
        compute_budget: None, or the inference budget b in [0, 1]: the whole
            encoder's executed / dense MACs. Then each chunk runs the units of
            highest logit (over its frames, layers and units) while their MACs
            fit b times the chunk's dense MACs, less what always runs
            (subsampling, convolution units, arbitrator): it lands on b by
            construction (to a unit's cost; only the always-run part where it
            exceeds b; every unit at 1), for any model with the global arbitrator and per-frame
            decisions, and a budget-conditioned one also gets b as its input.
            Ignored in training. None: thresholds (and budget input 1).
        budget_order: how the allocation (``compute_budget``, ``budget_training:
            allocate``) ranks a chunk's units. ``logit``: by logit. ``logit_per_mac``:
            by logit - log(the unit's MACs), the greedy knapsack order if exp(logit)
            is a unit's value: of two units of equal logit the cheaper runs first, so
            at equal logits (initialisation) a small budget runs the convolution units
            (the cheapest) before MHSA and the FFN (the dearest). ``conv_first`` (with
            ``gate_conv`` and ``gate_unit: unit``): every convolution unit ranks above
            every MHSA and FFN, each group by logit, so a budget above what the
            convolution units cost runs all of them (as a model without ``gate_conv``,
            the structure of the dedicated low-budget models) and only a budget below it
            skips convolution units; the arbitrator still decides which.
        budget_noise: ``budget_training: allocate`` ranks the logits plus this
            times logistic noise (1: the Gumbel-sigmoid's exploration; 0: training
            ranks exactly what inference ranks, so a unit near the cut-off is not
            switched at random from one step to the next).
        gate_threshold: inference gate ``sigmoid(logit) > gate_threshold``
            (without ``compute_budget``): a unit runs where its probability
            under the training noise, sigmoid(logit), exceeds it. Training
            drives the logits far from 0 (the noise makes every |logit| below
            ~4 a coin flip), so thresholds move compute little (0.02-0.98:
            0.404-0.381 of the layer MACs on the default model); the compute
            knob is ``compute_budget``.
        gate_initial_logit: initial arbitrator bias (units start on).
        gate_logit_bound: > 0: every gate logit is clamped to [-bound, bound]
            in the forward with an identity gradient (straight-through) except
            outward at the bound (``gates.bound_logits``), so a
            unit always runs with a probability in [sigmoid(-bound),
            sigmoid(bound)] and the compute term's gradient never vanishes
            (unbounded logits saturate at |logit| ~ 20 on the bench, where
            nothing moves them; RESULTS.md, issue 13); 0: unbounded.
        gate_logit_bound_gradient: ``inward`` (above) or ``identity``: the
            plain straight-through gradient, outward too (the raw logits can
            run far past the bound; the bench's dedicated models learned only
            with it, RESULTS.md issue 13, third round). Over 7,500 updates the
            arbitrator's weights grow with them until its gradient is nearly
            all of the norm that ``grad_clip`` clips, which starves every other
            module's step (``bin/gradient_norms``; RESULTS.md, 7,500 updates).
        gate_warmup_steps: optimizer updates during which every unit runs in
            training (gates 1, no gradient to the arbitrator), so that units learn
            before they can be skipped: with sampled gates from the first update,
            the ASR loss alone switches units off while they are still noise, and
            a unit that is off gets no training signal to come back (on the bench
            the whole-encoder compute fell from 1 to 0.39 within 450 updates of
            ASR loss alone, every MHSA off; RESULTS.md, issue 13). Pair it with
            the model's ``compute_warmup_steps``.
        temperature_initial, temperature_final, temperature_anneal_steps:
            Gumbel-sigmoid temperature schedule over training updates.
        sparse_inference: gather/scatter execution at inference (False: dense
            masked execution, the reference).
    """

    def __init__(
        self,
        input_size: int,
        output_size: int = 256,
        attention_heads: int = 4,
        linear_units: int = 1024,
        num_blocks: int = 6,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
        input_layer: str = "conv2d",
        stack_frames: int = 4,
        subsampling_factor: Optional[int] = None,
        subsampling_channels: int = 48,
        subsampling_kernel_size: int = 3,
        conv_kernel_size: int = 0,
        conv_norm_type: str = "layer_norm",
        gate_conv: bool = False,
        chunk_size: int = 16,
        left_chunks: int = 4,
        dynamic_chunk_training: bool = False,
        gate_unit: str = "unit",
        arbitrator: str = "global",
        arbitrator_hidden_size: int = 64,
        arbitrator_kernel_size: int = 3,
        decision_unit: str = "frame",
        kv_from_skipped: bool = False,
        key_gate_gradient: bool = True,
        budget_conditioning: bool = False,
        budget_min: float = 0.25,
        budget_full_fraction: float = 0.25,
        budget_min_fraction: float = 0.0,
        budget_draw_power: float = 1.0,
        budget_training: str = "regularize",
        budget_order: str = "logit",
        budget_noise: float = 1.0,
        compute_budget: Optional[float] = None,
        gate_threshold: float = 0.5,
        gate_initial_logit: float = 3.0,
        gate_logit_bound: float = 0.0,
        gate_logit_bound_gradient: str = "inward",
        gate_warmup_steps: int = 0,
        temperature_initial: float = 1.0,
        temperature_final: float = 0.1,
        temperature_anneal_steps: int = 10000,
        sparse_inference: bool = True,
        **unknown,
    ):
        if unknown:
            raise ValueError(
                f"amortized_transformer: unknown encoder_conf option(s) {sorted(unknown)}; "
                f"see espnet_amortized.encoder.AmortizedTransformerEncoder for the options"
            )
        _check_choice("gate_unit", gate_unit, GATE_UNITS)
        _check_choice("arbitrator", arbitrator, ARBITRATORS)
        _check_choice("decision_unit", decision_unit, DECISION_UNITS)
        _check_choice("conv_norm_type", conv_norm_type, CONV_NORM_TYPES)
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be > 0 (frames after subsampling), got {chunk_size}")
        if left_chunks < -1:
            raise ValueError(f"left_chunks must be >= 0, or -1 for the whole past; got {left_chunks}")
        if conv_kernel_size < 0:
            raise ValueError(f"conv_kernel_size must be >= 0 (0: no convolution unit), got {conv_kernel_size}")
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if gate_warmup_steps < 0:
            raise ValueError(f"gate_warmup_steps must be >= 0, got {gate_warmup_steps}")
        if gate_logit_bound < 0:
            raise ValueError(f"gate_logit_bound must be >= 0 (0: unbounded), got {gate_logit_bound}")
        if gate_logit_bound_gradient not in BOUND_GRADIENTS:
            raise ValueError(f"gate_logit_bound_gradient must be 'inward' or 'identity', got {gate_logit_bound_gradient!r}")
        if not 0 < temperature_final <= temperature_initial:
            raise ValueError(
                "need 0 < temperature_final <= temperature_initial, got "
                f"{temperature_final} and {temperature_initial}"
            )
        if budget_conditioning and (gate_unit == "none" or arbitrator != "global"):
            raise ValueError(
                "budget_conditioning needs the global arbitrator and gates (gate_unit unit or layer, "
                f"arbitrator global); got gate_unit {gate_unit!r}, arbitrator {arbitrator!r}"
            )
        if not 0.0 < budget_min <= 1.0:
            raise ValueError(f"budget_min must be in (0, 1], got {budget_min}")
        if not 0.0 <= budget_full_fraction <= 1.0:
            raise ValueError(f"budget_full_fraction must be in [0, 1], got {budget_full_fraction}")
        if not budget_draw_power > 0.0:
            raise ValueError(f"budget_draw_power must be > 0, got {budget_draw_power}")
        if not (0.0 <= budget_min_fraction and budget_full_fraction + budget_min_fraction <= 1.0):
            raise ValueError(
                "budget_min_fraction must be in [0, 1 - budget_full_fraction], got "
                f"{budget_min_fraction} with budget_full_fraction {budget_full_fraction}"
            )
        if gate_conv and not (conv_kernel_size and gate_unit != "none" and arbitrator == "global"):
            raise ValueError(
                "gate_conv needs convolution units (conv_kernel_size > 0), gates and the global arbitrator; got "
                f"conv_kernel_size {conv_kernel_size}, gate_unit {gate_unit!r}, arbitrator {arbitrator!r}"
            )
        if not budget_noise >= 0:
            raise ValueError(f"budget_noise must be >= 0, got {budget_noise}")
        if budget_order not in BUDGET_ORDERS:
            raise ValueError(f"budget_order must be one of {', '.join(map(repr, BUDGET_ORDERS))}, got {budget_order!r}")
        if budget_order == "conv_first" and not (gate_conv and gate_unit == "unit"):
            raise ValueError(
                "budget_order 'conv_first' ranks the convolution units apart, so it needs gate_conv: true and "
                f"gate_unit: unit; got gate_conv {gate_conv}, gate_unit {gate_unit!r}"
            )
        if budget_training not in ("regularize", "allocate"):
            raise ValueError(f"budget_training must be 'regularize' or 'allocate', got {budget_training!r}")
        if budget_training == "allocate" and not (budget_conditioning and decision_unit == "frame"):
            raise ValueError(
                "budget_training 'allocate' needs budget_conditioning: true and decision_unit: frame (it allocates "
                f"each frame's units); got budget_conditioning {budget_conditioning}, decision_unit {decision_unit!r}"
            )
        super().__init__()
        self.input_size = input_size
        self._output_size = output_size
        self.num_blocks = num_blocks
        self.attention_heads = attention_heads
        self.linear_units = linear_units
        self.conv_kernel_size = conv_kernel_size
        self.gate_conv = gate_conv
        # units per layer in the gate tensors: MHSA, FFN (and the convolution unit when gated)
        self.units_per_layer = 3 if gate_conv else 2
        # gates the arbitrator emits per layer
        self.gates_per_layer = 1 if gate_unit == "layer" else self.units_per_layer
        self.chunk_size = chunk_size
        self.left_chunks = left_chunks
        self.dynamic_chunk_training = dynamic_chunk_training
        self.gate_unit = gate_unit
        self.arbitrator_type = arbitrator
        self.decision_unit = decision_unit
        self.kv_from_skipped = kv_from_skipped
        self.key_gate_gradient = key_gate_gradient
        self.budget_conditioning = budget_conditioning
        self.budget_min = budget_min
        self.budget_full_fraction = budget_full_fraction
        self.budget_min_fraction = budget_min_fraction
        self.budget_draw_power = budget_draw_power
        self.budget_training = budget_training
        self.budget_order = budget_order
        self.budget_noise = budget_noise
        self.compute_budget = compute_budget
        self.frozen_units = None  # a decode-time knob only (set_compute_knobs): validation runs in eval mode too
        self.gate_threshold = gate_threshold
        self.gate_logit_bound = gate_logit_bound
        self.gate_logit_bound_gradient = gate_logit_bound_gradient
        self.gate_warmup_steps = gate_warmup_steps
        self.temperature_initial = temperature_initial
        self.temperature_final = temperature_final
        self.temperature_anneal_steps = temperature_anneal_steps
        self.sparse_inference = sparse_inference

        self.embed = build_subsampling(
            input_layer,
            input_size,
            output_size,
            dropout_rate,
            stack_frames,
            subsampling_factor,
            subsampling_channels,
            subsampling_kernel_size,
        )
        self.pos_enc = StreamPositionalEncoding(output_size, positional_dropout_rate)
        gates_per_layer = self.gates_per_layer
        local = gates_per_layer if (gate_unit != "none" and arbitrator == "local") else 0
        self.encoders = torch.nn.ModuleList(
            GatedTransformerLayer(
                output_size, attention_heads, linear_units, dropout_rate, attention_dropout_rate, local,
                conv_kernel_size, conv_norm_type,
            )
            for _ in range(num_blocks)
        )
        self.after_norm = LayerNorm(output_size)
        self.arbitrator = None
        if gate_unit != "none" and arbitrator == "global":
            self.arbitrator = Arbitrator(
                output_size,
                num_blocks * gates_per_layer,
                arbitrator_hidden_size,
                arbitrator_kernel_size,
                gate_initial_logit,
                budget_conditioned=budget_conditioning,
            )
        for layer in self.encoders:
            if layer.local_gate is not None:
                torch.nn.init.constant_(layer.local_gate.bias, gate_initial_logit)
        # Optimizer updates done, for the temperature schedule (``count_update``); saved with
        # the model so that a resumed run continues the schedule; floating point, so that
        # ESPnet's checkpoint averaging averages it (it sums integer buffers).
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.float64))

    def output_size(self) -> int:
        return self._output_size

    @property
    def gated(self) -> bool:
        return self.gate_unit != "none"

    @property
    def gate_threshold(self) -> float:
        return self._gate_threshold

    @gate_threshold.setter
    def gate_threshold(self, value: float) -> None:
        """The decode-time compute knob; checked wherever it is set (config or decoder option)."""
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"gate_threshold must be in [0, 1], got {value}")
        self._gate_threshold = float(value)

    @property
    def compute_budget(self) -> Optional[float]:
        return self._compute_budget

    @compute_budget.setter
    def compute_budget(self, value: Optional[float]) -> None:
        """The decode-time budget (whole-encoder compute ratio); checked wherever it is set."""
        if value is not None:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"compute_budget must be in [0, 1], got {value}")
            if not self.gated or self.arbitrator_type != "global" or self.decision_unit != "frame":
                raise ValueError(
                    f"compute_budget {value}: the budget allocation needs gates decided per frame by the global "
                    f"arbitrator; this encoder has gate_unit {self.gate_unit!r}, arbitrator "
                    f"{self.arbitrator_type!r}, decision_unit {self.decision_unit!r}"
                )
            value = float(value)
        self._compute_budget = value

    @property
    def frozen_units(self) -> Optional[Dict[str, List[int]]]:
        if self._frozen_units is None:
            return None
        return {name: [int(v) for v in self._frozen_units[:, unit]] for unit, name in enumerate(self.unit_names)}

    @frozen_units.setter
    def frozen_units(self, value: Optional[Dict[str, List[int]]]) -> None:
        """The decode-time static decisions: None, or ``{"attention": [...], "ffn": [...]}`` (and ``"conv"`` with
        ``gate_conv``), one 0/1 per layer. At inference every unit then runs on every frame where 1 and on none
        where 0, whatever the arbitrator decides; the arbitrator's MACs are still counted (about 0.013 of the
        dense encoder). The static control of issue 13: a gated model frozen to each unit's majority decision
        (``asr_decode --frozen_units_from``). Ignored in training."""
        if value is None:
            self._frozen_units = None
            return
        if not self.gated:
            raise ValueError("frozen_units: this encoder has no gates (gate_unit: none)")
        names = self.unit_names
        if not isinstance(value, dict) or sorted(value) != sorted(names):
            got = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise ValueError(f"frozen_units must map each of {', '.join(names)} to one 0/1 per layer; got {got}")
        for name in names:
            decisions = list(value[name])
            if len(decisions) != self.num_blocks or any(v not in (0, 1) for v in decisions):
                raise ValueError(
                    f"frozen_units[{name!r}] must be {self.num_blocks} values of 0 or 1 (one per layer), got {value[name]}"
                )
        self._frozen_units = torch.tensor([[float(value[name][layer]) for name in names] for layer in range(self.num_blocks)])

    @property
    def unit_names(self) -> Tuple[str, ...]:
        """The units of a layer in the gate tensors' last dimension."""
        return ("attention", "ffn", "conv")[: self.units_per_layer]

    def _frozen_gates(self, batch: int, length: int, device) -> Optional[torch.Tensor]:
        """(B, T, num_blocks, U) decisions of ``frozen_units`` at inference, else None."""
        if self._frozen_units is None or self.training:
            return None
        return self._frozen_units.to(device)[None, None].expand(batch, length, -1, -1)

    def _budgets(self, batch: int, device) -> Optional[torch.Tensor]:
        """(B,) budgets: drawn per utterance in training, ``compute_budget`` (or 1) at inference; None unconditioned."""
        if not self.budget_conditioning:
            return None
        if not self.training:
            budget = 1.0 if self.compute_budget is None else self.compute_budget
            return torch.full((batch,), budget, device=device)
        drawn = self.budget_min + (1.0 - self.budget_min) * torch.rand(batch, device=device) ** self.budget_draw_power
        kind = torch.rand(batch, device=device)  # [0, full): b = 1; [full, full + min): b = budget_min
        drawn = torch.where(kind < self.budget_full_fraction + self.budget_min_fraction,
                            torch.full_like(drawn, self.budget_min), drawn)
        return torch.where(kind < self.budget_full_fraction, torch.ones_like(drawn), drawn)

    @torch.no_grad()
    def count_update(self) -> None:
        """One optimizer update done (called by ``espnet_amortized.updates``, not per forward)."""
        self.num_updates += 1

    @property
    def temperature(self) -> float:
        return annealed_temperature(
            int(self.num_updates),
            self.temperature_initial,
            self.temperature_final,
            self.temperature_anneal_steps,
        )

    # -- gates ----------------------------------------------------------------
    def _decide(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> gates: straight-through samples in training, thresholds in eval."""
        if self.training:
            return gumbel_sigmoid_straight_through(logits, self.temperature)
        return hard_gates(logits, self.gate_threshold)

    def _chunk_means(self, logits: torch.Tensor, valid: torch.Tensor, chunk: int, offset: int = 0):
        """One decision per chunk: each chunk's mean logit over its valid frames.

        logits: (B, T, G); ``offset`` is the absolute position of frame 0.
        Returns (B, num_chunks, G) and ``expand``, which maps per-chunk values back to (B, T, G).
        """
        batch, length, num = logits.shape
        start = offset % chunk
        padded_length = -(-(start + length) // chunk) * chunk
        weights = logits.new_zeros(batch, padded_length, 1)
        weights[:, start : start + length, 0] = valid.to(logits.dtype)
        padded = logits.new_zeros(batch, padded_length, num)
        padded[:, start : start + length] = logits
        sums = (padded * weights).view(batch, -1, chunk, num).sum(2)
        counts = weights.view(batch, -1, chunk, 1).sum(2).clamp(min=1.0)

        def expand(values: torch.Tensor) -> torch.Tensor:
            return values.repeat_interleave(chunk, dim=1)[:, start : start + length]

        return sums / counts, expand

    def _decisions(
        self, logits: torch.Tensor, valid: torch.Tensor, chunk: int, offset: int, budgets: Optional[torch.Tensor] = None
    ):
        """Logits (B, T, L, G) with G gates per layer -> probs and gates (B, T, L, U).

        With ``gate_unit: layer`` (G = 1) one decision serves both units. With
        ``decision_unit: chunk`` one sample (training) or threshold (eval) decides
        the whole chunk, so training sees the decisions inference makes.
        """
        raw = logits
        if self.gate_logit_bound > 0:
            logits = bound_logits(logits, self.gate_logit_bound, self.gate_logit_bound_gradient)
        if not self.training and self.compute_budget is not None:
            probs = torch.sigmoid(logits)
            gates = self._budget_decisions(raw, valid, chunk, offset)  # ranks by the raw logits: no ties at the bound
        elif self.budget_training == "allocate" and budgets is not None:
            probs = torch.sigmoid(logits)
            if self.training:
                gates = allocated_straight_through(
                    raw, lambda noisy: self._budget_decisions(noisy, valid, chunk, offset, budgets), self.temperature,
                    noise_scale=self.budget_noise,
                )
            else:  # the budget input (1 without compute_budget: every unit)
                gates = self._budget_decisions(raw, valid, chunk, offset, budgets)
        elif self.decision_unit == "chunk":
            shape = logits.shape
            means, expand = self._chunk_means(logits.flatten(2), valid, chunk, offset)
            probs = expand(torch.sigmoid(means)).reshape(shape)
            gates = expand(self._decide(means)).reshape(shape)
        else:
            probs, gates = torch.sigmoid(logits), self._decide(logits)
        if self.training and int(self.num_updates) < self.gate_warmup_steps:
            gates = torch.ones_like(probs).detach()  # the dense model first
        if logits.size(-1) == 1:
            units = self.units_per_layer
            probs, gates = probs.expand(-1, -1, -1, units), gates.expand(-1, -1, -1, units)
        return probs, gates * valid[:, :, None, None].to(gates.dtype)

    def _local_decisions(self, layer, x: torch.Tensor, unit: int, valid: torch.Tensor, chunk: int, offset: int):
        """Local arbitration: (unit, (probs, gates) (B, T)) for each unit that ``layer``'s gate on its input x
        decides before ``unit`` runs (the MHSA's decides both with ``gate_unit: layer``); none for a global
        arbitrator or an FFN already decided."""
        per_layer = 1 if self.gate_unit == "layer" else 2
        if layer.local_gate is None or (unit == FFN and per_layer == 1):
            return []
        logits = layer.local_gate(x.detach())[:, :, None, unit : unit + 1]  # as the global arbitrator: reads, does not train x
        probs, gates = self._decisions(logits, valid, chunk, offset)  # (B, T, 1, 2)
        return [(decided, (probs[:, :, 0, decided], gates[:, :, 0, decided]))
                for decided in ((unit,) if per_layer == 2 else (ATT, FFN))]

    def _budget_decisions(
        self, logits: torch.Tensor, valid: torch.Tensor, chunk: int, offset: int, budgets: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Logits (B, T, L, G) -> 0/1 gates that spend ``compute_budget`` (or each utterance's
        ``budgets`` (B,)) of each chunk's dense encoder MACs.

        Per chunk (``offset``: the absolute position of frame 0, so that streaming
        and the whole utterance cut the same chunks): the gated units may spend
        b x (the chunk's dense MACs) less what always runs; the units of highest
        logit run while their MACs fit (``budget_allocation``). A unit costs
        what the MAC counter charges a frame: FFN 2 d d_ff, MHSA 4 d^2 plus the
        scores over the chunk's dense window (an upper bound: skipped frames
        provide no keys), so a chunk lands on or below its budget.
        """
        batch, length, layers, per_layer = logits.shape
        d, d_ff = self._output_size, self.linear_units
        start = offset % chunk
        chunks = -(-(start + length) // chunk)
        scores = logits.new_full((batch, chunks * chunk, layers, per_layer), float("-inf"))
        scores[:, start : start + length] = logits
        frames = valid.new_zeros(batch, chunks * chunk)
        frames[:, start : start + length] = valid
        frames = frames.view(batch, chunks, chunk).to(torch.float64)
        counts = frames.sum(-1)  # (B, C) valid frames per chunk
        index = torch.arange(offset // chunk, offset // chunk + chunks, device=logits.device, dtype=torch.float64)
        left = index if self.left_chunks < 0 else index.clamp(max=self.left_chunks)
        attention = 4 * d * d + 2 * d * (left * chunk + counts)  # (B, C): MHSA per frame, dense window
        ffn = torch.full_like(attention, 2.0 * d * d_ff)
        conv = torch.full_like(attention, float(gated_conv_macs_per_frame(self)))  # per layer
        dense_frame = layers * (attention + ffn + conv) + self._always_run_macs(chunk, arbitrator=False)
        if budgets is None:
            budgets = torch.full((batch,), float(self.compute_budget), device=logits.device)
        budgets = budgets.to(torch.float64).view(-1, 1)
        spend = counts * (budgets * dense_frame - self._always_run_macs(chunk)).clamp(min=0.0)
        # b = 1: every unit (1.0 + the arbitrator's share of the dense encoder)
        spend = torch.where(budgets >= 1.0, torch.full_like(spend, float("inf")), spend)
        units = [attention, ffn] + ([conv] if self.gate_conv else [])
        unit_costs = torch.stack(units, -1) if per_layer > 1 else sum(units).unsqueeze(-1)  # (B, C, G)
        if self.budget_order == "logit_per_mac":
            per_mac = unit_costs.log().to(scores.dtype)[:, :, None, None, :].expand(-1, -1, chunk, layers, -1)
            scores = scores - per_mac.reshape(batch, chunks * chunk, layers, per_layer)
        elif self.budget_order == "conv_first":
            # A lead larger than any two finite scores differ by: a lexicographic order (convolution units, then by
            # score) that keeps the logits' precision, unlike a huge constant. Padding stays at -inf.
            lead = 2 * scores.masked_fill(~scores.isfinite(), 0.0).abs().amax() + 1
            scores = scores + lead * (torch.arange(per_layer, device=scores.device) == CONV)
        costs = frames[..., None, None] * unit_costs[:, :, None, None, :]  # (B, C, chunk, 1, G); padding costs 0
        costs = costs.expand(-1, -1, -1, layers, -1).reshape(batch * chunks, -1)
        decided = budget_allocation(scores.reshape(batch * chunks, -1), costs, spend.reshape(-1))
        return decided.view(batch, chunks * chunk, layers, per_layer)[:, start : start + length]

    def _always_run_macs(self, chunk: int, arbitrator: bool = True) -> float:
        """MACs per frame that run whatever the gates: subsampling (at a chunk's input), convolution units,
        and the arbitrator (which a dense encoder does not have)."""
        inputs = (chunk - 1) * self.embed.stride + self.embed.receptive_field
        macs = self.embed.macs(inputs) / max(self.embed.num_output_frames(inputs), 1)
        macs += always_run_conv_macs_per_frame(self)
        return macs + (arbitrator_macs_per_frame(self) if arbitrator else 0.0)

    # -- the layer stack --------------------------------------------------------
    def _run_layers(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        position: torch.Tensor,
        chunk: int,
        forced_gates: Optional[torch.Tensor] = None,
        budgets: Optional[torch.Tensor] = None,
    ):
        """Run every layer on whole utterances x (B, T, D); returns x, probs and gates.

        ``probs`` and ``gates`` (B, T, num_blocks, U) are 1 for a dense
        encoder; ``gates`` are 0 on padding. Attention sees the chunk windows of
        ``chunk`` frames and ``left_chunks`` (streaming: ``_process_streams``).
        """
        batch, length, _ = x.shape
        offset = int(position[0]) if length else 0
        per_layer = self.gates_per_layer
        if not self.gated:
            probs = gates = valid[:, :, None, None].to(x.dtype).expand(-1, -1, self.num_blocks, 2)
        elif self.arbitrator is not None:
            # The arbitrator reads the features but does not train them: its straight-through and compute
            # gradients dominated what reached the front-end (RESULTS.md, issue 13) and trained it for the
            # gates instead of for recognition.
            logits, _ = self.arbitrator(x.detach(), None, budgets)
            probs, gates = self._decisions(
                logits.view(batch, length, self.num_blocks, per_layer), valid, chunk, offset, budgets
            )
        else:  # local gates: decided layer by layer from each unit's input, stacked at the end
            probs = gates = None
        if forced_gates is not None and self.gated:
            gates = forced_gates.to(x.dtype) * valid[:, :, None, None]
            if probs is None:
                probs = torch.ones_like(gates)
        # Local decisions per (layer, unit); collected, not written into a tensor the graph already uses.
        local_probs: List[List[torch.Tensor]] = [[None, None] for _ in self.encoders]
        local_gates: List[List[torch.Tensor]] = [[None, None] for _ in self.encoders]
        # A dense encoder (gate_unit "none") runs the plain path.
        sparse = self.gated and not self.training and self.sparse_inference
        for index, layer in enumerate(self.encoders):
            for unit in (ATT, FFN):
                if forced_gates is None:
                    for decided, (unit_probs, unit_gates) in self._local_decisions(layer, x, unit, valid, chunk, offset):
                        local_probs[index][decided], local_gates[index][decided] = unit_probs, unit_gates
                if not self.gated:
                    gate = None
                elif gates is not None:
                    gate = gates[:, :, index, unit]
                else:
                    gate = local_gates[index][unit]
                if sparse:
                    execute = valid if gate is None else gate > 0.5
                    if unit == ATT:
                        provides_key = valid if self.kv_from_skipped else None
                        x = layer.attention_windows(x, execute, provides_key, chunk, self.left_chunks)
                    else:
                        rows = execute.reshape(-1).nonzero().squeeze(1)
                        if rows.numel():
                            x = layer.ffn_sparse(x, rows)
                elif unit == ATT:
                    key_gate = None
                    if gate is not None and not self.kv_from_skipped:
                        key_gate = gate if self.key_gate_gradient else gate.detach()
                    x = layer.attention_dense(x, valid, chunk, self.left_chunks, gate, key_gate)
                else:
                    x = layer.ffn_dense(x, gate)
                if unit == ATT and self.conv_kernel_size:
                    conv_gate = gates[:, :, index, CONV] if self.gate_conv else None
                    if sparse and conv_gate is not None:
                        rows = (conv_gate > 0.5).reshape(-1).nonzero().squeeze(1)
                        x, _ = layer.conv_dense(x, valid, rows=rows)
                    else:
                        x, _ = layer.conv_dense(x, valid, gate=conv_gate)
        if gates is None:  # local arbitration
            probs = torch.stack([torch.stack(pair, dim=-1) for pair in local_probs], dim=2)
            gates = torch.stack([torch.stack(pair, dim=-1) for pair in local_gates], dim=2)
        return x, probs, gates

    def _training_chunk_size(self) -> int:
        if self.training and self.dynamic_chunk_training and random.random() < 0.5:
            return random.randint(1, 2 * self.chunk_size)
        return self.chunk_size

    def forward(
        self,
        xs_pad: torch.Tensor,
        ilens: torch.Tensor,
        prev_states: torch.Tensor = None,
        forced_gates: Optional[torch.Tensor] = None,
        budgets: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[GateInfo]]:
        """Full-utterance forward with the chunk mask.

        Args:
            xs_pad: (B, L, input_size) features.
            ilens: (B,) feature lengths.
            prev_states: unused (ESPnet's interface); streaming uses ``forward_chunk``.
            forced_gates: optional (B, T', num_blocks, U) 0/1 decisions that
                replace the arbitrator's (tests and benchmarks).
            budgets: optional (B,) compute budgets that replace the drawn ones
                (training) or ``compute_budget`` (budget_conditioning only).
        Returns:
            (B, T', output_size), (B,) output lengths, and in ESPnet's states
            slot (which its model ignores) what this forward decided (``GateInfo``;
            None for ``gate_unit: none``), for the compute loss and the counters.
        """
        masks = lengths_to_mask(ilens, xs_pad.size(1)).unsqueeze(1)
        x, _ = self.embed(xs_pad, masks)
        x = self.pos_enc(x)
        # From the lengths, not from the subsampled mask: ESPnet's conv2d mask
        # also marks frames whose receptive field reaches into the padding, so a
        # padded utterance would differ from the same utterance alone.
        output_lengths = torch.tensor(
            [self.embed.num_output_frames(int(n)) for n in ilens], device=x.device
        )
        valid = lengths_to_mask(output_lengths, x.size(1))
        chunk = self._training_chunk_size()
        allowed = chunk_attention_mask(x.size(1), chunk, self.left_chunks, x.device)
        position = torch.arange(x.size(1), device=x.device)
        if forced_gates is None:
            forced_gates = self._frozen_gates(x.size(0), x.size(1), x.device)
        if budgets is None:
            budgets = self._budgets(x.size(0), x.device)
        elif not self.budget_conditioning:
            raise ValueError("budgets: this encoder has no budget input (budget_conditioning: false)")
        x, probs, gates = self._run_layers(
            x, valid, position, chunk, forced_gates=forced_gates, budgets=budgets
        )
        info = GateInfo(probs, gates, valid, allowed, ilens, budgets) if self.gated else None
        return self.after_norm(x), valid.sum(dim=1), info

    # -- streaming ------------------------------------------------------------------
    # One path: ``forward_streams`` advances any number of streams, each at its own position, a chunk at a
    # time in one batch (``_process_streams``); ``forward_chunk`` is that path for one utterance, or for B
    # utterances of equal length as B streams.
    def init_state(self, forced_gates: Optional[torch.Tensor] = None) -> Dict:
        """The streaming state of one utterance (or of B utterances of equal length for ``forward_chunk``).

        ``forced_gates`` (B, T', num_blocks, U), indexed by subsampled frame,
        replaces the arbitrator's decisions (tests and benchmarks).
        """
        return {
            "forced_gates": forced_gates,
            "features": [],  # input frames not yet consumed by the subsampling (pieces)
            "feature_frames": 0,
            "frames": None,  # subsampled frames waiting for a full chunk
            "produced": 0,  # subsampled frames produced so far (positional encoding)
            "processed": 0,  # subsampled frames through the layers so far
            "arbitrator": None,  # the arbitrator's causal conv inputs of the last frames
            "kv": [KeyValueCache() for _ in self.encoders],  # keys/values of the visible left chunks
            "conv": [None] * self.num_blocks,  # convolution unit inputs of the last K-1 frames
            "gates": [],  # (B, C, num_blocks, U) decisions per chunk, for compute accounting
            "input_frames": [],  # feature frames fed to the subsampling per call
            "final": False,  # the last piece arrived
        }

    @torch.no_grad()
    def forward_chunk(self, xs: torch.Tensor, state: Dict, is_final: bool = False) -> Tuple[torch.Tensor, Dict]:
        """Feed feature frames (B, L, input_size); returns newly finished outputs (B, n, D).

        Outputs appear a chunk at a time; ``is_final`` flushes the last,
        partial chunk. The concatenated outputs equal ``forward`` (eval) of the
        whole utterance. B > 1 utterances (of equal length) run as B streams of
        ``forward_streams``, their states in ``state["streams"]``.
        """
        if xs.dim() != 3:
            raise ValueError(f"forward_chunk: features must be (batch, frames, input_size), got shape {tuple(xs.shape)}")
        if xs.size(0) == 1 and "streams" not in state:
            return self.forward_streams([xs], [state], [is_final])[0], state
        if "streams" not in state:
            forced = state["forced_gates"]
            state["streams"] = [self.init_state(None if forced is None else forced[b : b + 1]) for b in range(xs.size(0))]
        streams = state["streams"]
        if len(streams) != xs.size(0):
            raise ValueError(f"forward_chunk: this state streams {len(streams)} utterances, got a batch of {xs.size(0)}")
        outputs = self.forward_streams(list(xs.split(1)), streams, [is_final] * len(streams))
        for chunk in range(len(state["gates"]), len(streams[0]["gates"])):
            state["gates"].append(torch.cat([stream["gates"][chunk] for stream in streams]))
        state["input_frames"] = streams[0]["input_frames"]
        return torch.cat(outputs), state

    @torch.no_grad()
    def forward_streams(
        self, xs: List[torch.Tensor], states: List[Dict], is_final: List[bool]
    ) -> List[torch.Tensor]:
        """Advance N independent streams: feature frames xs[n] (1, L_n, input_size) for the stream of
        ``states[n]`` (``init_state``), ``is_final[n]`` with its last piece; returns each stream's newly
        finished outputs (1, n_n, D).

        Streams may be at any position and join or leave between calls. Every stream with a complete chunk
        (or its last, partial one) goes through the layers together with the others, one chunk of each per
        batch: the decisions, the executing frames of all streams per unit, and one attention over each
        stream's own cached window. Each stream's outputs equal ``forward_chunk`` of it alone.
        """
        if self.training:
            raise RuntimeError("forward_streams is for inference: call encoder.eval() first")
        if not len(xs) == len(states) == len(is_final):
            raise ValueError(
                f"forward_streams: {len(xs)} feature pieces, {len(states)} states and {len(is_final)} is_final flags"
            )
        for n, (x, state) in enumerate(zip(xs, states)):  # every stream checked before any changes
            if x.dim() != 3 or x.size(0) != 1 or x.size(2) != self.input_size:
                raise ValueError(
                    f"forward_streams: stream {n}: features must be (1, frames, {self.input_size}), got {tuple(x.shape)}"
                )
            if state["final"]:
                raise ValueError(f"forward_streams: stream {n} already had its final piece; start a new state (init_state)")
        for x, state, final in zip(xs, states, is_final):
            self._accept_features(x, state, final)
        outputs: List[List[torch.Tensor]] = [[] for _ in states]
        while True:
            ready = [n for n, state in enumerate(states) if self._has_chunk(state, is_final[n])]
            if not ready:
                break
            chunks = [self._next_chunk(states[n]) for n in ready]
            for n, out in zip(ready, self._process_streams(chunks, [states[n] for n in ready])):
                outputs[n].append(out)
        for state, final in zip(states, is_final):
            state["final"] = bool(final)
        return [
            torch.cat(out, dim=1) if out else x.new_zeros(1, 0, self._output_size) for out, x in zip(outputs, xs)
        ]

    def _accept_features(self, xs: torch.Tensor, state: Dict, is_final: bool) -> None:
        """Buffer a stream's features; subsample them once they complete a chunk (or at the end), so that
        the subsampling runs once per chunk instead of once per call (the same frames either way)."""
        state["features"].append(xs)
        state["feature_frames"] += xs.size(1)
        waiting = 0 if state["frames"] is None else state["frames"].size(1)
        if waiting + self.embed.num_output_frames(state["feature_frames"]) < self.chunk_size and not is_final:
            return
        features = torch.cat(state["features"], dim=1) if len(state["features"]) > 1 else state["features"][0]
        num_out = self.embed.num_output_frames(features.size(1))
        if num_out > 0:
            used = (num_out - 1) * self.embed.stride + self.embed.receptive_field
            state["input_frames"].append(used)
            part = features[:, :used]
            masks = torch.ones(1, 1, part.size(1), dtype=torch.bool, device=part.device)
            frames, _ = self.embed(part, masks)
            frames = self.pos_enc(frames, state["produced"])
            state["produced"] += frames.size(1)
            features = features[:, num_out * self.embed.stride :]
            if state["frames"] is not None:
                frames = torch.cat([state["frames"], frames], dim=1)
            state["frames"] = frames
        state["features"], state["feature_frames"] = [features], features.size(1)

    def feature_frames_wanted(self, state: Dict) -> int:
        """Feature frames a stream (``init_state``) still needs before its next chunk is complete (0: it has
        one). Nothing runs on fewer, so a caller may hold features back until then (the streaming fbank
        does, to compute a chunk's features in one call): the outputs, and the call that returns them, stay
        the same."""
        waiting = 0 if state["frames"] is None else state["frames"].size(1)
        missing = self.chunk_size - waiting
        if missing <= 0:
            return 0
        needed = (missing - 1) * self.embed.stride + self.embed.receptive_field  # input frames for `missing` outputs
        return max(0, needed - state["feature_frames"])

    def _has_chunk(self, state: Dict, is_final: bool) -> bool:
        pending = state["frames"]
        return pending is not None and (pending.size(1) >= self.chunk_size or (is_final and pending.size(1) > 0))

    def _next_chunk(self, state: Dict) -> torch.Tensor:
        pending = state["frames"]
        chunk, rest = pending[:, : self.chunk_size], pending[:, self.chunk_size :]
        state["frames"] = rest if rest.size(1) > 0 else None
        return chunk

    def _stream_forced_gates(self, states: List[Dict], lengths: List[int], device) -> Optional[torch.Tensor]:
        """(N, length, num_blocks, U) forced (or frozen) decisions of this chunk of each stream, else None."""
        forced = [state["forced_gates"] for state in states]
        if all(gates is None for gates in forced):
            return self._frozen_gates(len(states), max(lengths), device)
        if any(gates is None for gates in forced):
            missing = [n for n, gates in enumerate(forced) if gates is None]
            raise ValueError(f"forced_gates: streams {missing} have none; give them to every stream of a batch or to none")
        pieces = [gates[0, state["processed"] : state["processed"] + length]
                  for gates, state, length in zip(forced, states, lengths)]
        for n, (piece, length) in enumerate(zip(pieces, lengths)):
            if piece.size(0) < length:
                end = states[n]["processed"] + length
                raise ValueError(f"forced_gates: stream {n} has decisions for fewer frames than its chunk ends at ({end})")
        return pad_sequence(pieces, batch_first=True).to(device)

    def _stream_decisions(
        self, logits: torch.Tensor, valid: torch.Tensor, starts: List[int], budgets: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """The global arbitrator's logits (N, C, L, G) of one chunk per stream -> gates (N, C, L, U).

        A budget allocation charges a chunk's MHSA for its window, which grows over the first ``left_chunks``
        chunks: streams are decided in groups of equal window (a frame's decision does not depend on it
        otherwise; every chunk starts at a multiple of ``chunk_size``).
        """
        if self.compute_budget is None and not (self.budget_training == "allocate" and budgets is not None):
            return self._decisions(logits, valid, self.chunk_size, 0, budgets)[1]
        windows: Dict[int, List[int]] = {}
        for n, start in enumerate(starts):
            window = start // self.chunk_size
            windows.setdefault(window if self.left_chunks < 0 else min(window, self.left_chunks), []).append(n)
        if len(windows) == 1:
            window = next(iter(windows))
            return self._decisions(logits, valid, self.chunk_size, window * self.chunk_size, budgets)[1]
        gates = logits.new_zeros(*logits.shape[:3], self.units_per_layer)
        for window, members in windows.items():
            index = torch.tensor(members, device=logits.device)
            _, gates[index] = self._decisions(
                logits[index], valid[index], self.chunk_size, window * self.chunk_size,
                None if budgets is None else budgets[index],
            )
        return gates

    def _process_streams(self, chunks: List[torch.Tensor], states: List[Dict]) -> List[torch.Tensor]:
        """One chunk (1, C_n, D) of each of N streams through the layers; returns each stream's outputs.

        How many frames run each unit goes to Python once per chunk (and each stream's count per attention
        unit): a unit that no frame runs costs nothing, one that every frame runs needs no gather/scatter.
        One stream (batch 1) needs no stacking of its caches.
        """
        lengths = [chunk.size(1) for chunk in chunks]
        batch, length = len(chunks), max(lengths)
        if batch == 1:
            x = chunks[0]
        elif all(n == length for n in lengths):
            x = torch.cat(chunks)
        else:  # a stream's last, partial chunk: padded, and never executed
            x = pad_sequence([chunk[0] for chunk in chunks], batch_first=True)
        slots = batch * length
        if sum(lengths) == slots:
            valid = torch.ones(batch, length, dtype=torch.bool, device=x.device)
        else:
            valid = torch.arange(length, device=x.device) < torch.tensor(lengths, device=x.device).unsqueeze(1)
        forced = self._stream_forced_gates(states, lengths, x.device)
        gates = None
        if not self.gated:
            gates = valid[:, :, None, None].to(x.dtype).expand(-1, -1, self.num_blocks, 2)
        elif forced is not None:
            gates = forced.to(x.dtype) * valid[:, :, None, None]
        elif self.arbitrator is not None:
            budgets = self._budgets(batch, x.device)
            if batch == 1:
                cache = states[0]["arbitrator"]
            else:
                cache = torch.cat([
                    self.arbitrator.init_cache(1, x.device, x.dtype) if state["arbitrator"] is None
                    else state["arbitrator"] for state in states
                ])
            logits, cache = self.arbitrator(x, cache, budgets)
            for n, state in enumerate(states):
                state["arbitrator"] = cache if batch == 1 else cache[n : n + 1]
            logits = logits.view(batch, length, self.num_blocks, self.gates_per_layer)
            gates = self._stream_decisions(logits, valid, [state["processed"] for state in states], budgets)
        local = gates is None
        if local:  # local gates, decided unit by unit below
            gates = x.new_zeros(batch, length, self.num_blocks, 2)
            counts = None
        else:  # frames running each unit, all streams together: (num_blocks, U)
            counts = gates.sum(dim=(0, 1)).round().long().tolist()
        provides_key = valid if (self.kv_from_skipped or not self.gated) else None
        for index, layer in enumerate(self.encoders):
            for unit in (ATT, FFN):
                if local:
                    for decided, (_, unit_gates) in self._local_decisions(layer, x, unit, valid, self.chunk_size, 0):
                        gates[:, :, index, decided] = unit_gates
                count = int(gates[:, :, index, unit].sum()) if local else counts[index][unit]
                execute = gates[:, :, index, unit] > 0.5
                if unit == FFN:
                    if count:
                        rows = None if count == slots else execute.reshape(-1).nonzero().squeeze(1)
                        x = layer.ffn_sparse(x, rows)
                    continue
                x = layer.attention_streams(x, execute, provides_key, [s["kv"][index] for s in states], self.left_chunks)
                if self.conv_kernel_size:
                    x = self._conv_streams(layer, index, x, valid, gates, counts, states)
        x = self.after_norm(x)
        outputs = []
        for n, state in enumerate(states):
            state["processed"] += lengths[n]
            state["gates"].append(gates[n : n + 1, : lengths[n]])
            outputs.append(x[n : n + 1, : lengths[n]])
        return outputs

    def _conv_streams(self, layer, index: int, x, valid, gates, counts, states) -> torch.Tensor:
        """Layer ``index``'s convolution unit on one chunk of each stream, with each stream's past inputs."""
        if len(states) == 1:
            past = states[0]["conv"][index]
        else:
            past = torch.cat([
                x.new_zeros(1, self.conv_kernel_size - 1, x.size(2)) if state["conv"][index] is None
                else state["conv"][index] for state in states
            ])
        rows = None
        if self.gate_conv and counts[index][CONV] < valid.numel():
            rows = (gates[:, :, index, CONV] > 0.5).reshape(-1).nonzero().squeeze(1)
        x, past = layer.conv_dense(x, valid, past, rows=rows)
        for n, state in enumerate(states):
            state["conv"][index] = past if len(states) == 1 else past[n : n + 1]
        return x


def _check_choice(name: str, value: str, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
