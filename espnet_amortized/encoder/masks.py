"""Chunk-wise streaming attention masks."""

import torch


def chunk_visibility(chunk_size: int, left_chunks: int):
    """``visible(query_position, key_position) -> bool``, broadcasting over tensors of positions.

    A frame sees its own chunk and ``left_chunks`` chunks before it
    (``left_chunks < 0``: the whole past). The sparse path evaluates this on
    the positions of the frames it runs, never building a (T, T) mask.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")

    def visible(query_position: torch.Tensor, key_position: torch.Tensor) -> torch.Tensor:
        query_chunk = query_position // chunk_size
        key_chunk = key_position // chunk_size
        allowed = key_chunk <= query_chunk
        if left_chunks >= 0:
            allowed &= key_chunk >= query_chunk - left_chunks
        return allowed

    return visible


def chunk_attention_mask(
    length: int, chunk_size: int, left_chunks: int, device=None, offset: int = 0
) -> torch.Tensor:
    """Boolean (length, length) mask: query i may attend key j (see ``chunk_visibility``).

    Positions start at ``offset``, so that a streaming chunk can build the rows it needs.
    """
    position = torch.arange(length, device=device) + offset
    return chunk_visibility(chunk_size, left_chunks)(position.unsqueeze(1), position.unsqueeze(0))


def lengths_to_mask(lengths: torch.Tensor, max_length: int = None) -> torch.Tensor:
    """(B,) lengths -> (B, T) boolean mask of valid frames."""
    if max_length is None:
        max_length = int(lengths.max()) if lengths.numel() else 0
    return torch.arange(max_length, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)
