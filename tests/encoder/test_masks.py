import pytest
import torch

from espnet_amortized.encoder.masks import chunk_attention_mask, lengths_to_mask


def test_chunk_mask_sees_own_chunk_and_left_chunks_only():
    mask = chunk_attention_mask(6, chunk_size=2, left_chunks=1)
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 1],
            [0, 0, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def test_negative_left_chunks_means_whole_past():
    mask = chunk_attention_mask(5, chunk_size=1, left_chunks=-1)
    assert torch.equal(mask, torch.tril(torch.ones(5, 5, dtype=torch.bool)))


def test_nonpositive_chunk_size_is_rejected():
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_attention_mask(4, chunk_size=0, left_chunks=1)


def test_lengths_to_mask():
    assert lengths_to_mask(torch.tensor([3, 1]), 4).tolist() == [[True, True, True, False], [True, False, False, False]]


def test_visibility_on_positions_equals_the_mask():
    from espnet_amortized.encoder.masks import chunk_visibility

    visible = chunk_visibility(3, 1)
    query, key = torch.tensor([[7], [2]]), torch.tensor([[0, 3, 5, 8]])
    mask = chunk_attention_mask(9, 3, 1)
    assert torch.equal(visible(query, key), mask[[7, 2]][:, [0, 3, 5, 8]])
