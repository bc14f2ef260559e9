import pytest
import torch

from espnet_amortized.encoder.layers import GatedTransformerLayer, KeyValueCache
from espnet_amortized.encoder.masks import chunk_attention_mask


def test_chunk_groups_left_align_each_chunks_selected_frames():
    from espnet_amortized.encoder.layers import chunk_groups

    rows, slots, valid = chunk_groups(torch.tensor([[False, True, True], [False, False, False], [True, False, True]]))
    assert rows.tolist() == [1, 2, 6, 8]  # the selected frames of the flattened chunks, in order
    assert slots.tolist() == [[0, 1], [0, 0], [2, 3]] and valid.tolist() == [[True, True], [False, False], [True, True]]


def _reference_attention(layer, x, valid, allowed, provides_key):
    """MHSA over the whole utterance with the (T, T) chunk mask: keys of ``provides_key`` frames and each frame's own."""
    normed = layer.norm_att(x)
    attn = layer.self_attn
    query, key, value = (layer._split_heads(f(normed)) for f in (attn.linear_q, attn.linear_k, attn.linear_v))
    eye = torch.eye(x.size(1), dtype=torch.bool)
    mask = (allowed.unsqueeze(0) & (provides_key & valid).unsqueeze(1)) | eye
    scores = (query @ key.transpose(-2, -1) / layer.d_k**0.5).masked_fill(~mask.unsqueeze(1), float("-inf"))
    context = torch.softmax(scores, dim=-1) @ value
    return x + attn.linear_out(context.transpose(1, 2).reshape(x.shape))


def _stream_chunks(layer, x, execute, provides_key, chunk_size, left_chunks):
    """The streaming path chunk by chunk, the utterances of the batch as streams, each with its KeyValueCache."""
    caches, outputs = [KeyValueCache() for _ in range(x.size(0))], []
    for start in range(0, x.size(1), chunk_size):
        piece = slice(start, start + chunk_size)
        keys_from = None if provides_key is None else provides_key[:, piece]
        outputs.append(layer.attention_streams(x[:, piece], execute[:, piece], keys_from, caches, left_chunks))
    return torch.cat(outputs, dim=1)


@pytest.mark.parametrize("chunk_size,left_chunks", [(3, 1), (4, 0), (5, -1), (16, 2)])
def test_windowed_dense_and_sparse_attention_equal_the_whole_utterance_with_the_chunk_mask(chunk_size, left_chunks):
    """Chunk windows (length not a multiple of the chunk, padding in the batch) against the (T, T)-masked reference;
    the streaming path chunk by chunk with its key/value caches too (two streams, one padded at its end)."""
    torch.manual_seed(0)
    layer = GatedTransformerLayer(32, 4, 64, 0.0, 0.0).eval()
    x = torch.randn(2, 13, 32)
    valid = torch.ones(2, 13, dtype=torch.bool)
    valid[1, 9:] = False
    allowed = chunk_attention_mask(13, chunk_size, left_chunks)
    execute = (torch.rand(2, 13) > 0.4) & valid
    for kv_from_skipped in (False, True):
        provides_key = valid if kv_from_skipped else None
        reference = _reference_attention(layer, x, valid, allowed, valid if kv_from_skipped else execute)
        key_gate = None if kv_from_skipped else execute.float()
        dense = layer.attention_dense(x, valid, chunk_size, left_chunks, execute.float(), key_gate)
        gated_reference = x + (reference - x) * execute.unsqueeze(-1)
        assert torch.allclose(dense[valid], gated_reference[valid], atol=1e-5)
        windows = layer.attention_windows(x, execute, provides_key, chunk_size, left_chunks)
        streaming = _stream_chunks(layer, x, execute, provides_key, chunk_size, left_chunks)
        for sparse in (windows, streaming):
            assert torch.allclose(sparse[valid], gated_reference[valid], atol=1e-5)
        single = layer.attention_windows(x[1:, :9], execute[1:, :9], None if provides_key is None else valid[1:, :9],
                                         chunk_size, left_chunks)
        assert torch.allclose(single[0], gated_reference[1, :9], atol=1e-5)
    ungated = layer.attention_dense(x, valid, chunk_size, left_chunks)
    assert torch.allclose(ungated[valid], _reference_attention(layer, x, valid, allowed, valid)[valid], atol=1e-5)
    rows = execute.reshape(-1).nonzero().squeeze(1)
    assert torch.allclose(layer.ffn_dense(x, execute.float()), layer.ffn_sparse(x, rows), atol=1e-5)


def test_windowed_attention_scores_only_the_chunk_windows():
    """The work grows with the window, not with the utterance: at 8 chunks of 4 frames, left 1, the score
    products are 8 x 4 x 8 per head dimension, not 32 x 32."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    layer = GatedTransformerLayer(32, 4, 64, 0.0, 0.0).eval()
    x, valid = torch.randn(1, 32, 32), torch.ones(1, 32, dtype=torch.bool)
    for run in (lambda: layer.attention_dense(x, valid, 4, 1),
                lambda: layer.attention_windows(x, valid, None, 4, 1)):
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            run()
        projections = 4 * 32 * 32 * 32
        assert counter.get_total_flops() / 2 == projections + 2 * 32 * (8 * 4 * 8)


def _straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    return hard + (soft - soft.detach())


def test_a_skipped_frames_key_gets_the_asr_gradient_through_the_attention_weights():
    """Removing frame 2's key changes frame 5's output: the straight-through key gate carries that to frame 2's
    gate; detached (the old hard mask) nothing does, and the forward value is the same either way."""
    torch.manual_seed(0)
    layer = GatedTransformerLayer(32, 4, 64, 0.0, 0.0).train()
    x = torch.randn(1, 8, 32)
    valid = torch.ones(1, 8, dtype=torch.bool)  # chunks of 4, left 1: frame 5 sees frames 0-7
    hard = torch.ones(1, 8)
    hard[0, 2] = 0.0
    outputs, grads = [], []
    for detach in (False, True):
        soft = torch.full((1, 8), 0.7, requires_grad=True)
        gate = _straight_through(hard, soft)
        out = layer.attention_dense(x, valid, 4, 1, gate, gate.detach() if detach else gate)
        out[0, 5].sum().backward()
        outputs.append(out.detach())
        grads.append(soft.grad[0, 2])
    assert torch.equal(outputs[0], outputs[1])
    assert grads[0].abs() > 1e-4 and grads[1] == 0.0
    with torch.no_grad():
        masked = layer.attention_dense(x, valid, 4, 1, hard, hard)
        sparse = layer.attention_windows(x, hard.bool(), None, 4, 1)
    assert torch.allclose(outputs[0], masked) and torch.allclose(masked[0, 5], sparse[0, 5], atol=1e-5)


def test_no_executing_frame_is_the_identity():
    layer = GatedTransformerLayer(32, 4, 64, 0.0, 0.0).eval()
    x = torch.randn(1, 5, 32)
    none = torch.zeros(1, 5, dtype=torch.bool)
    cache = KeyValueCache()
    assert torch.equal(layer.attention_streams(x, none, none, [cache], 0), x)
    assert cache.key is None and cache.sizes == [0] and cache.visible(0) is None
    assert torch.equal(layer.attention_windows(x, none, none, 5, 0), x)
    assert torch.equal(layer.ffn_sparse(x, none.reshape(-1).nonzero().squeeze(1)), x)


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


def test_a_removed_key_that_holds_all_the_attention_gives_finite_gradients():
    """Frame 0's own key scores far below frame 1's, whose key is removed: the kept share of the softmax is
    ~e^-80, and 1 / that share overflowed the backward (inf grad norm, every update skipped). The keep
    gradient is bounded, the forward is exactly the softmax over the kept keys."""
    from espnet_amortized.encoder.layers import _kept_softmax

    scores = torch.tensor([[0.0, 80.0, 1.0]], requires_grad=True)
    seen = torch.ones(1, 3, dtype=torch.bool)
    soft = torch.tensor([[1.0, 0.2, 1.0]], requires_grad=True)
    keep = (soft > 0.5).float() + (soft - soft.detach())  # straight-through: forward 1, 0, 1
    weights = _kept_softmax(scores, seen, keep)
    assert torch.allclose(weights.detach(), torch.tensor([[1 / (1 + torch.e), 0.0, torch.e / (1 + torch.e)]]))
    (weights * torch.tensor([[1.0, 2.0, 3.0]])).sum().backward()
    assert torch.isfinite(scores.grad).all() and torch.isfinite(soft.grad).all() and soft.grad[0, 1] != 0
    # a kept share above the bound: the exact gradient of the renormalised weights
    scores2 = torch.tensor([[0.0, 1.0, 2.0]], requires_grad=True)
    soft2 = soft.detach().clone().requires_grad_()
    keep2 = (soft2 > 0.5).float() + (soft2 - soft2.detach())
    _kept_softmax(scores2, seen, keep2)[0, 0].backward()
    p = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
    kept_mass = p[0] + p[2]
    assert soft2.grad[0, 1] == pytest.approx(float(-p[0] * p[1] / kept_mass**2), rel=1e-4)


def test_streams_at_different_positions_attend_to_their_own_windows():
    """Three streams with caches of different lengths (one empty), one with no executing frame, in one call:
    each equals its stream alone, and each cache gets exactly its stream's new keys."""
    torch.manual_seed(0)
    layer = GatedTransformerLayer(32, 4, 64, 0.0, 0.0).eval()
    histories = [torch.randn(1, n, 32) for n in (8, 0, 4)]
    x = torch.randn(3, 4, 32)
    execute = torch.tensor([[True, False, True, True], [False, False, False, False], [True, True, True, True]])
    together, alone = [KeyValueCache() for _ in range(3)], [KeyValueCache() for _ in range(3)]
    with torch.no_grad():
        for n, history in enumerate(histories):
            for start in range(0, history.size(1), 4):  # fill the caches chunk by chunk
                chunk = history[:, start : start + 4]
                every = torch.ones(1, chunk.size(1), dtype=torch.bool)
                layer.attention_streams(chunk, every, None, [together[n]], 1)
                layer.attention_streams(chunk, every, None, [alone[n]], 1)
        out = layer.attention_streams(x, execute, None, together, 1)
        for n in range(3):
            expected = layer.attention_streams(x[n : n + 1], execute[n : n + 1], None, [alone[n]], 1)
            assert torch.allclose(out[n], expected[0], atol=1e-6)
            assert together[n].sizes == alone[n].sizes and together[n].sizes[-1] == int(execute[n].sum())
            if alone[n].key is not None:
                assert torch.allclose(together[n].key, alone[n].key, atol=1e-6)
    assert torch.equal(out[1], x[1])  # no executing frame: unchanged
