import torch

from espnet_amortized.encoder.layers import GatedTransformerLayer, compact_indices
from espnet_amortized.encoder.masks import chunk_attention_mask, chunk_visibility


def test_compact_indices_left_aligns_selected_frames():
    select = torch.tensor([[False, True, False, True], [True, False, False, False]])
    index, valid = compact_indices(select)
    assert index.tolist() == [[1, 3], [0, 0]]
    assert valid.tolist() == [[True, True], [True, False]]


def test_sparse_units_equal_dense_units_with_hard_gates():
    torch.manual_seed(0)
    layer = GatedTransformerLayer(32, 4, 64, 0.0, 0.0).eval()
    x = torch.randn(2, 12, 32)
    valid = torch.ones(2, 12, dtype=torch.bool)
    valid[1, 9:] = False
    allowed = chunk_attention_mask(12, 3, 1)
    execute = (torch.rand(2, 12) > 0.4) & valid
    position = torch.arange(12)
    for kv_from_skipped in (False, True):
        provides_key = valid if kv_from_skipped else None
        dense = layer.attention_dense(x, allowed, valid, execute.float(), None if kv_from_skipped else execute)
        sparse, _ = layer.attention_sparse(x, execute, provides_key, chunk_visibility(3, 1), position)
        assert torch.allclose(dense[valid], sparse[valid], atol=1e-5)
    assert torch.allclose(layer.ffn_dense(x, execute.float()), layer.ffn_sparse(x, execute), atol=1e-5)


def test_no_executing_frame_is_the_identity():
    layer = GatedTransformerLayer(32, 4, 64, 0.0, 0.0).eval()
    x = torch.randn(1, 5, 32)
    none = torch.zeros(1, 5, dtype=torch.bool)
    out, _ = layer.attention_sparse(x, none, none, chunk_visibility(5, 0), torch.arange(5))
    assert torch.equal(out, x)
    assert torch.equal(layer.ffn_sparse(x, none), x)


def test_convolution_unit_in_pieces_with_its_cache_equals_one_call():
    torch.manual_seed(0)
    layer = GatedTransformerLayer(32, 4, 64, 0.0, 0.0, conv_kernel_size=5).eval()
    x = torch.randn(2, 11, 32)
    valid = torch.ones(2, 11, dtype=torch.bool)
    whole, last = layer.conv_dense(x, valid)
    pieces, past = [], None
    for start, stop in ((0, 2), (2, 3), (3, 11)):  # a piece shorter than the kernel's past too
        out, past = layer.conv_dense(x[:, start:stop], valid[:, start:stop], past)
        pieces.append(out)
    assert torch.allclose(torch.cat(pieces, dim=1), whole, atol=1e-6)
    assert past.shape == (2, 4, 32) and torch.allclose(past, last)


def test_convolution_unit_with_batch_norm_normalises_over_the_batch_and_streams_in_eval():
    # The issue-12 ablation: ESPnet's conformer BatchNorm after the depthwise conv. In
    # training its statistics come from the whole (padded) batch, so a frame's output
    # depends on the other utterances; in eval the running statistics make it per frame.
    torch.manual_seed(0)
    layer = GatedTransformerLayer(32, 4, 64, 0.0, 0.0, conv_kernel_size=5, conv_norm_type="batch_norm")
    assert isinstance(layer.conv_norm, torch.nn.BatchNorm1d)
    x = torch.randn(2, 11, 32)
    valid = torch.ones(2, 11, dtype=torch.bool)
    layer.train()
    both, _ = layer.conv_dense(x, valid)
    first_alone, _ = layer.conv_dense(x[:1], valid[:1])
    assert not torch.allclose(both[:1], first_alone, atol=1e-4)
    assert int(layer.conv_norm.num_batches_tracked) == 2
    layer.eval()
    both, last = layer.conv_dense(x, valid)
    first_alone, _ = layer.conv_dense(x[:1], valid[:1])
    assert torch.allclose(both[:1], first_alone, atol=1e-6)
    pieces, past = [], None
    for start, stop in ((0, 3), (3, 11)):
        out, past = layer.conv_dense(x[:, start:stop], valid[:, start:stop], past)
        pieces.append(out)
    assert torch.allclose(torch.cat(pieces, dim=1), both, atol=1e-6) and torch.allclose(past, last)
