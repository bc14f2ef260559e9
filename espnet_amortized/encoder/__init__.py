"""The amortized streaming Transformer encoder and its parts."""

from espnet_amortized.encoder.amortized_transformer import AmortizedTransformerEncoder, GateInfo

__all__ = ["AmortizedTransformerEncoder", "GateInfo"]
