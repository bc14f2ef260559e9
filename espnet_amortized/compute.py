"""Multiply-accumulate (MAC) accounting for what the encoder actually executes.

Per layer and frame, with d = output_size and d_ff = linear_units:
- MHSA: Q and output projections 2*d^2 per executing frame; K and V
  projections 2*d^2 per frame that provides keys; scores and weighted sum
  2*d per (executing query, visible key) pair, where visible keys are the
  key-providing frames inside the query's chunk window. This is what the
  streaming (chunk + cache) and sparse paths run.
- FFN: 2*d*d_ff per executing frame.
- Convolution unit (``conv_kernel_size`` K > 0): 3*d^2 + K*d per frame
  (pointwise GLU in, depthwise, pointwise out); always run, unless
  ``gate_conv``: then 3*d^2 per executing frame and the depthwise K*d per
  frame (it runs over the whole window, zeros for skipped frames).
- Arbitrator (global conv or local linear gates) and subsampling: always run.
LayerNorms, softmax, residual adds and gathers are not MACs and not counted.

The transducer search's prediction network (ESPnet's RNN decoder) and joint
network are counted apart by ``SearchMacCounter``, from what they are called
with: per row, an RNN layer costs its weight matrices, a linear layer its
weight.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch

ATT, FFN, CONV = 0, 1, 2  # unit index in the gate tensors (CONV only with ``gate_conv``)


@dataclass
class MacReport:
    """Executed and dense MACs of one forward (summed over the batch)."""

    subsampling: float
    arbitrator: float
    attention: List[float]  # executed, per layer
    ffn: List[float]
    dense_attention: List[float]
    dense_ffn: List[float]
    frames: int  # valid subsampled frames
    conv: float = 0.0  # convolution units, all layers, executed
    unit_rates: Dict[str, List[float]] = field(default_factory=dict)  # fraction executed per layer
    dense_conv: Optional[float] = None  # all frames through every convolution unit (None: ``conv``, never gated)
    # gated convolution units only: executed and dense MACs of their pointwise layers, per layer
    conv_units: List[float] = field(default_factory=list)
    dense_conv_units: List[float] = field(default_factory=list)

    @property
    def layers(self) -> float:
        return sum(self.attention) + sum(self.ffn) + self.conv

    @property
    def dense_layers(self) -> float:
        return sum(self.dense_attention) + sum(self.dense_ffn) + (self.conv if self.dense_conv is None else self.dense_conv)

    @property
    def encoder(self) -> float:
        return self.subsampling + self.arbitrator + self.layers

    @property
    def dense_encoder(self) -> float:
        """A dense encoder has the same subsampling and no arbitrator."""
        return self.subsampling + self.dense_layers

    @property
    def layer_ratio(self) -> float:
        """Executed / dense MACs of the gated layers (the arbitrator counted as executed)."""
        return (self.layers + self.arbitrator) / max(self.dense_layers, 1.0)

    @property
    def encoder_ratio(self) -> float:
        return self.encoder / max(self.dense_encoder, 1.0)

    def gflops_per_second(self, audio_seconds: float) -> float:
        """Executed GFLOPs (2 FLOPs per MAC) per second of audio."""
        return 2.0 * self.encoder / 1e9 / max(audio_seconds, 1e-9)

    def as_dict(self) -> Dict:
        return {
            "macs_encoder": self.encoder,
            "macs_dense_encoder": self.dense_encoder,
            "macs_layers": self.layers,
            "macs_dense_layers": self.dense_layers,
            "macs_subsampling": self.subsampling,
            "macs_arbitrator": self.arbitrator,
            "macs_conv": self.conv,
            "compute_ratio_layers": self.layer_ratio,
            "compute_ratio_encoder": self.encoder_ratio,
            "frames": self.frames,
            "unit_rates": self.unit_rates,
            # per layer, for the static / dynamic split of the saving (summarize_records)
            "macs_units": {"attention": self.attention, "ffn": self.ffn,
                           **({"conv": self.conv_units} if self.conv_units else {})},
            "macs_dense_units": {"attention": self.dense_attention, "ffn": self.dense_ffn,
                                 **({"conv": self.dense_conv_units} if self.conv_units else {})},
        }


def _visible_keys(provides_key: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """(B, T) float count of key-providing frames each query may attend."""
    return provides_key @ allowed.transpose(0, 1).to(provides_key.dtype)


def conv_macs_per_frame(encoder) -> int:
    """MACs of one frame through every layer's convolution unit (0 without them)."""
    d, kernel = encoder.output_size(), encoder.conv_kernel_size
    return encoder.num_blocks * (3 * d * d + kernel * d) if kernel else 0


def gated_conv_macs_per_frame(encoder) -> int:
    """What a gated convolution unit saves on a skipped frame, per layer: its pointwise layers (0 ungated)."""
    d = encoder.output_size()
    return 3 * d * d if encoder.gate_conv else 0


def always_run_conv_macs_per_frame(encoder) -> int:
    """The convolution units' MACs per frame that no gate skips, all layers (the depthwise conv when gated)."""
    return conv_macs_per_frame(encoder) - encoder.num_blocks * gated_conv_macs_per_frame(encoder)


def arbitrator_macs_per_frame(encoder) -> int:
    if encoder.arbitrator is not None:
        return encoder.arbitrator.macs_per_frame()
    return sum(layer.local_gate.weight.numel() for layer in encoder.encoders if layer.local_gate is not None)


def count_macs(
    encoder,
    gates: torch.Tensor,
    valid: torch.Tensor,
    allowed: torch.Tensor,
    input_lengths: List[int],
) -> MacReport:
    """Exact MACs for hard decisions ``gates`` (B, T, num_blocks, U) on valid frames (U = 3: gated conv units).

    ``input_lengths`` are the feature frames each utterance fed to the
    subsampling (in streaming, the frames of every call, since a few overlap).
    """
    d, d_ff = encoder.output_size(), encoder.linear_units
    validf = valid.to(torch.float64)
    allowed = allowed.to(torch.float64)
    gates = gates.detach().to(torch.float64) * validf[:, :, None, None]
    dense_visible = _visible_keys(validf, allowed)
    dense_att = float((4 * d * d * validf + 2 * d * validf * dense_visible).sum())
    dense_ffn = float(2 * d * d_ff * validf.sum())
    attention, ffn, att_rate, ffn_rate = [], [], [], []
    conv_units, conv_rate = [], []
    gated_conv = gated_conv_macs_per_frame(encoder)
    frames = max(float(validf.sum()), 1.0)
    for layer in range(encoder.num_blocks):
        execute = gates[:, :, layer, ATT]
        provides_key = validf if encoder.kv_from_skipped else execute
        visible = _visible_keys(provides_key, allowed)
        att = 2 * d * d * (execute.sum() + provides_key.sum()) + 2 * d * (execute * visible).sum()
        attention.append(float(att))
        ffn.append(float(2 * d * d_ff * gates[:, :, layer, FFN].sum()))
        att_rate.append(float(execute.sum()) / frames)
        ffn_rate.append(float(gates[:, :, layer, FFN].sum()) / frames)
        if gated_conv:
            conv_units.append(float(gated_conv * gates[:, :, layer, CONV].sum()))
            conv_rate.append(float(gates[:, :, layer, CONV].sum()) / frames)
    rates = {"attention": att_rate, "ffn": ffn_rate, **({"conv": conv_rate} if gated_conv else {})}
    return MacReport(
        subsampling=float(sum(encoder.embed.macs(int(n)) for n in input_lengths)),
        arbitrator=float(arbitrator_macs_per_frame(encoder) * validf.sum()),
        attention=attention,
        ffn=ffn,
        dense_attention=[dense_att] * encoder.num_blocks,
        dense_ffn=[dense_ffn] * encoder.num_blocks,
        frames=int(validf.sum()),
        conv=float(always_run_conv_macs_per_frame(encoder) * validf.sum()) + sum(conv_units),
        unit_rates=rates,
        dense_conv=float(conv_macs_per_frame(encoder) * validf.sum()),
        conv_units=conv_units,
        dense_conv_units=[float(gated_conv * validf.sum())] * encoder.num_blocks if gated_conv else [],
    )


def count_streaming_macs(encoder, state: Dict) -> MacReport:
    """MACs of what ``encoder.forward_chunk`` (or ``forward_streams``) ran so far for the utterance(s) of ``state``."""
    from espnet_amortized.encoder.masks import chunk_attention_mask

    gates = torch.cat(state["gates"], dim=1).cpu()  # counting happens on the CPU, wherever the model runs
    valid = torch.ones(gates.size(0), gates.size(1), dtype=torch.bool)
    allowed = chunk_attention_mask(gates.size(1), encoder.chunk_size, encoder.left_chunks)
    return count_macs(encoder, gates, valid, allowed, state["input_frames"])


@dataclass
class ExpectedCompute:
    """Per-utterance expected compute ratios (B,), differentiable in the gate probabilities.

    ``layers``: (arbitrator + gated layers) / dense layers, as ``MacReport.layer_ratio``;
    ``encoder``: the whole encoder (subsampling included), as ``MacReport.encoder_ratio``.
    """

    layers: torch.Tensor
    encoder: torch.Tensor

    def measure(self, name: str) -> torch.Tensor:
        if name not in COMPUTE_MEASURES:
            raise ValueError(f"compute_measure must be one of {', '.join(map(repr, COMPUTE_MEASURES))}; got {name!r}")
        return self.layers if name == "layers" else self.encoder


COMPUTE_MEASURES = ("layers", "encoder")


def expected_compute(
    encoder, probs: torch.Tensor, valid: torch.Tensor, allowed: torch.Tensor, input_lengths: List[int]
) -> ExpectedCompute:
    """E[executed MACs] / dense MACs per utterance, for gate probabilities ``probs`` (B, T, num_blocks, U).

    ``probs`` are the probabilities sigmoid(logit) that a unit runs, which for
    Gumbel-sigmoid gates is exactly P(gate = 1); for hard 0/1 gates the result
    is exactly ``count_macs``'s ratios of each utterance alone. The score term
    for a pair of frames that both must run uses p_i * p_j (independent
    decisions; exact for per-frame decisions, approximate for per-chunk ones),
    and p_i for a frame's own key. ``input_lengths``: feature frames per
    utterance (the subsampling's MACs, always executed).
    """
    d, d_ff = encoder.output_size(), encoder.linear_units
    validf = valid.to(probs.dtype)
    allowed_f = allowed.to(probs.dtype)
    probs = probs * validf[:, :, None, None]
    frames = validf.sum(dim=1)
    dense_visible = _visible_keys(validf, allowed_f)
    dense_per_layer = (4 * d * d * validf + 2 * d * validf * dense_visible).sum(dim=1) + 2 * d * d_ff * frames
    p_att, p_ffn = probs[..., ATT], probs[..., FFN]  # (B, T, L)
    q_and_out = 2 * d * d * p_att.sum(dim=(1, 2))
    if encoder.kv_from_skipped:
        key_value = 2 * d * d * frames * encoder.num_blocks
        scores = 2 * d * (p_att * dense_visible.unsqueeze(-1)).sum(dim=(1, 2))
    else:
        key_value = 2 * d * d * p_att.sum(dim=(1, 2))
        # sum_i p_i * (p_i + sum_{j != i, allowed} p_j)
        others = torch.einsum("ij,bjl->bil", allowed_f, p_att) - p_att * torch.diagonal(allowed_f).unsqueeze(-1)
        scores = 2 * d * (p_att * (1.0 + others)).sum(dim=(1, 2))
    conv = always_run_conv_macs_per_frame(encoder) * frames
    if gated_conv_macs_per_frame(encoder):
        conv = conv + gated_conv_macs_per_frame(encoder) * probs[..., CONV].sum(dim=(1, 2))
    arbitrator = arbitrator_macs_per_frame(encoder) * frames
    layers = q_and_out + key_value + scores + 2 * d * d_ff * p_ffn.sum(dim=(1, 2)) + conv
    dense_layers = dense_per_layer * encoder.num_blocks + conv_macs_per_frame(encoder) * frames
    subsampling = torch.tensor([float(encoder.embed.macs(int(n))) for n in input_lengths],
                               dtype=probs.dtype, device=probs.device)
    return ExpectedCompute(
        layers=(layers + arbitrator) / dense_layers.clamp(min=1.0),
        encoder=(subsampling + arbitrator + layers) / (subsampling + dense_layers).clamp(min=1.0),
    )


class SearchMacCounter:
    """Counts the MACs of every call into a transducer's prediction and joint networks (forward hooks).

    ``macs["prediction"]``/``macs["joint"]`` accumulate from ``attach()``
    (or ``with``, or ``reset()``) on; each linear layer costs ``rows x weight.numel()`` and each RNN layer
    ``rows x (its weight matrices)``, rows being every input vector but the
    last dimension (N hypotheses x L steps). Whatever search calls them (ours
    or ESPnet's) is counted the same way. Embedding lookups, activations and
    the log-softmax are not MACs.
    """

    def __init__(self, decoder, joint_network):
        self.networks = {"prediction": decoder, "joint": joint_network}
        self.macs = {name: 0.0 for name in self.networks}
        self._handles = []

    @staticmethod
    def _row_macs(module: torch.nn.Module) -> Optional[int]:
        if isinstance(module, torch.nn.Linear):
            return module.weight.numel()
        if isinstance(module, torch.nn.RNNBase):
            return sum(p.numel() for name, p in module.named_parameters() if name.startswith("weight_"))
        return None

    def _hook(self, name: str, macs_per_row: int):
        def count(module, inputs, output):
            rows = inputs[0].numel() // inputs[0].size(-1)
            self.macs[name] += float(rows * macs_per_row)

        return count

    def reset(self) -> None:
        self.macs = {name: 0.0 for name in self.networks}

    def as_dict(self) -> Dict:
        return {f"macs_{name}": macs for name, macs in self.macs.items()}

    def attach(self) -> "SearchMacCounter":
        """Start counting (from zero)."""
        self.reset()
        if not self._handles:
            for name, network in self.networks.items():
                for module in network.modules():
                    macs = self._row_macs(module)
                    if macs is not None:
                        self._handles.append(module.register_forward_hook(self._hook(name, macs)))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self):
        return self.attach()

    def __exit__(self, *exc):
        self.detach()


def summarize_records(records: List[Dict], audio_seconds: float) -> Dict:
    """Totals over per-utterance ``MacReport.as_dict()`` records (plus ``macs_*`` of other encoders).

    Records without the layer breakdown (encoders other than ours, counted
    by torch's flop counter) give ratio 1.0 for the layers.
    """
    import numpy as np

    macs = sum(r["macs_encoder"] for r in records)
    summary = {
        "gflops_per_second": 2.0 * macs / 1e9 / max(audio_seconds, 1e-9),
        "compute_ratio_encoder": macs / max(sum(r["macs_dense_encoder"] for r in records), 1e-9),
        "compute_ratio_layers": 1.0,
    }
    for network in ("prediction", "joint"):
        if records and all(f"macs_{network}" in r for r in records):
            total = sum(r[f"macs_{network}"] for r in records)
            summary[f"gflops_per_second_{network}"] = 2.0 * total / 1e9 / max(audio_seconds, 1e-9)
    if records and all("macs_layers" in r for r in records):
        layers = sum(r["macs_layers"] + r["macs_arbitrator"] for r in records)
        summary["compute_ratio_layers"] = layers / max(sum(r["macs_dense_layers"] for r in records), 1e-9)
        frames = np.array([r["frames"] for r in records], dtype=float)
        for unit in ("attention", "ffn", "conv"):
            if unit not in records[0]["unit_rates"]:
                continue
            rates = np.array([r["unit_rates"][unit] for r in records])
            summary[f"{unit}_rates"] = ((rates * frames[:, None]).sum(0) / max(frames.sum(), 1.0)).tolist()
        if all("macs_units" in r for r in records):
            summary.update(saving_split(records, summary))
    return summary


# A unit that runs on fewer than 5% or more than 95% of the frames is (nearly) static: its saving is
# what removing it, or keeping it, would give a dense model of the same compute.
STATIC_BELOW, STATIC_ABOVE = 0.05, 0.95


def saving_split(records: List[Dict], summary: Dict) -> Dict:
    """The gated units' MAC saving (dense - executed), split into the static units' and the dynamic ones'.

    Returns ``saving_macs`` and ``dynamic_saving_share`` (the share of the saving from units running on
    5-95% of frames; None without a saving) and ``static_units``: per unit kind, per layer, "never",
    "always" or None (dynamic), from the frame-weighted rates.
    """
    savings, static = {}, {}
    for unit in records[0]["macs_units"]:
        dense = np.sum([r["macs_dense_units"][unit] for r in records], axis=0)
        executed = np.sum([r["macs_units"][unit] for r in records], axis=0)
        savings[unit] = dense - executed
        static[unit] = ["never" if rate < STATIC_BELOW else "always" if rate > STATIC_ABOVE else None
                        for rate in summary[f"{unit}_rates"]]
    total = float(sum(saving.sum() for saving in savings.values()))
    dynamic = float(sum(saving[layer] for unit, saving in savings.items()
                        for layer in range(len(saving)) if static[unit][layer] is None))
    return {"saving_macs": total, "dynamic_saving_share": dynamic / total if total > 0 else None,
            "static_units": static}
