"""Chunk-wise streaming attention masks."""

import torch


def chunk_attention_mask(
    length: int, chunk_size: int, left_chunks: int, device=None, offset: int = 0
) -> torch.Tensor:
    """Boolean (length, length) mask: query i may attend key j.

    A frame sees its own chunk and ``left_chunks`` chunks before it
    (``left_chunks < 0``: the whole past). Chunks are counted from frame
    ``-offset`` so that a streaming chunk can build the rows it needs.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    chunk_index = (torch.arange(length, device=device) + offset) // chunk_size
    query = chunk_index.unsqueeze(1)
    key = chunk_index.unsqueeze(0)
    allowed = key <= query
    if left_chunks >= 0:
        allowed &= key >= query - left_chunks
    return allowed


def lengths_to_mask(lengths: torch.Tensor, max_length: int = None) -> torch.Tensor:
    """(B,) lengths -> (B, T) boolean mask of valid frames."""
    if max_length is None:
        max_length = int(lengths.max()) if lengths.numel() else 0
    return torch.arange(max_length, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)
