import pytest
import torch

from espnet_amortized.encoder.subsampling import (
    Conv2dSubsampling4,
    StackedFramesSubsampling,
    build_subsampling,
)


@pytest.mark.parametrize("length", [7, 8, 10, 11, 57])
def test_conv2d_output_frames_match_espnet_forward(length):
    layer = Conv2dSubsampling4(80, 16, 0.0)
    out, _ = layer(torch.randn(1, length, 80), torch.ones(1, 1, length, dtype=torch.bool))
    assert out.size(1) == layer.num_output_frames(length)
    assert layer.num_output_frames(layer.receptive_field) == 1


def test_stacked_frames_shapes_and_mask():
    layer = StackedFramesSubsampling(80, 16, stack_frames=4)
    mask = torch.tensor([[True] * 9 + [False] * 3]).unsqueeze(1)
    out, out_mask = layer(torch.randn(1, 12, 80), mask)
    assert out.shape == (1, 3, 16)
    assert out_mask.tolist() == [[[True, True, False]]]
    assert layer.macs(12) == 3 * 80 * 4 * 16


def test_unknown_input_layer_is_rejected():
    with pytest.raises(ValueError, match="input_layer"):
        build_subsampling("vgg", 80, 16, 0.0, 4)
