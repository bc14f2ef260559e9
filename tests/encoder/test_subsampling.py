import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from espnet_amortized.encoder.subsampling import (
    Conv2dSubsampling4,
    Conv2dSubsampling6,
    DepthwiseStridingSubsampling,
    StackedFramesSubsampling,
    build_subsampling,
)

# (input_layer, options): every front-end, dw_striding in several shapes.
FRONT_ENDS = [
    ("conv2d", {}),
    ("conv2d6", {}),
    ("stack", {"stack_frames": 4}),
    ("stack", {"stack_frames": 6}),
    ("dw_striding", {}),
    ("dw_striding", {"subsampling_factor": 2, "subsampling_channels": 16}),
    ("dw_striding", {"subsampling_factor": 8, "subsampling_channels": 16, "subsampling_kernel_size": 5}),
    ("dw_striding", {"subsampling_factor": 4, "subsampling_channels": 8, "subsampling_kernel_size": 4}),
]
IDS = [name + "".join(f"-{v}" for v in options.values()) for name, options in FRONT_ENDS]
# The mask of ESPnet's layers marks frames whose window reaches into the padding (ESPnet's own
# behaviour, kept); ours mark exactly the num_output_frames(length) complete frames.
EXACT_MASK = {"stack", "dw_striding"}


def _build(input_layer, options, input_size=80, output_size=24):
    return build_subsampling(input_layer, input_size, output_size, 0.0, **options).eval()


def _ones(length, batch=1):
    return torch.ones(batch, 1, length, dtype=torch.bool)


@pytest.mark.parametrize("input_layer,options", FRONT_ENDS, ids=IDS)
def test_macs_equal_torch_flop_counter(input_layer, options):
    layer = _build(input_layer, options)
    field = layer.receptive_field
    for length in (field, field + 1, field + layer.stride - 1, 2 * field + 3, 100):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            layer(torch.randn(2, length, 80), _ones(length, 2))
        assert layer.macs(length) * 2 == counter.get_total_flops() / 2, length  # batch of 2
    assert layer.macs(field - 1) == 0


@pytest.mark.parametrize("input_layer,options", FRONT_ENDS, ids=IDS)
def test_output_frames_stride_and_receptive_field_match_the_forward(input_layer, options):
    layer = _build(input_layer, options)
    stride, field = layer.stride, layer.receptive_field
    assert layer.num_output_frames(field - 1) == 0
    for length in range(field, field + 3 * stride + 2):
        out, mask = layer(torch.randn(1, length, 80), _ones(length))
        frames = layer.num_output_frames(length)
        assert out.shape == (1, frames, 24)
        assert mask.shape == (1, 1, frames) and bool(mask.all())
        # What forward_chunk relies on: output frame t reads input frames [t*stride, t*stride + field).
        assert frames == (length - field) // stride + 1
    # ... and only those: changing any other frame leaves output frame 1 unchanged.
    length = field + 2 * stride
    x = torch.randn(1, length, 80)
    with torch.no_grad():
        reference = layer(x, _ones(length))[0][:, 1]
        for outside in (stride - 1, stride + field):
            changed = x.clone()
            changed[:, outside] += 1.0
            assert torch.equal(layer(changed, _ones(length))[0][:, 1], reference)
        inside = x.clone()
        inside[:, stride + field - 1] += 1.0
        assert not torch.equal(layer(inside, _ones(length))[0][:, 1], reference)


@pytest.mark.parametrize("input_layer,options", FRONT_ENDS, ids=IDS)
def test_padded_mask_keeps_the_complete_frames(input_layer, options):
    layer = _build(input_layer, options)
    total = 60
    lengths = torch.tensor([60, 41, layer.receptive_field])
    mask = (torch.arange(total) < lengths[:, None]).unsqueeze(1)
    out, out_mask = layer(torch.randn(3, total, 80), mask)
    assert out_mask.shape == (3, 1, out.size(1))
    counts = out_mask.sum(-1).squeeze(1).tolist()
    expected = [layer.num_output_frames(int(n)) for n in lengths]
    if input_layer in EXACT_MASK:
        assert counts == expected
    else:
        assert all(c >= e for c, e in zip(counts, expected))


def test_conv2d_layers_are_espnet_layers_without_positional_encoding():
    assert (Conv2dSubsampling4.stride, Conv2dSubsampling4.receptive_field) == (4, 7)
    assert (Conv2dSubsampling6.stride, Conv2dSubsampling6.receptive_field) == (6, 11)
    for layer in (Conv2dSubsampling4(80, 16, 0.0), Conv2dSubsampling6(80, 16, 0.0)):
        assert isinstance(layer.out[-1], torch.nn.Identity)


def test_dw_striding_is_depthwise_separable_and_cheap():
    layer = DepthwiseStridingSubsampling(80, 144, subsampling_factor=8, subsampling_channels=32)
    convs = [m for m in layer.conv if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.groups, c.stride) for c in convs] == [
        (1, 32, 1, (2, 2)), (32, 32, 32, (2, 2)), (32, 32, 1, (1, 1)), (32, 32, 32, (2, 2)), (32, 32, 1, (1, 1)),
    ]
    assert all(c.padding[0] == 0 for c in convs)  # no time padding: streaming is exact
    assert layer.out.in_features == 32 * 10  # 80 -> 40 -> 20 -> 10 (frequency padded)
    assert (layer.stride, layer.receptive_field) == (8, 15)
    dense = Conv2dSubsampling4(80, 144, 0.0)
    assert build_subsampling("dw_striding", 80, 144, 0.0).macs(1000) < dense.macs(1000) / 10


def test_stacked_frames_shapes_and_mask():
    layer = StackedFramesSubsampling(80, 16, stack_frames=4)
    mask = torch.tensor([[True] * 9 + [False] * 3]).unsqueeze(1)
    out, out_mask = layer(torch.randn(1, 12, 80), mask)
    assert out.shape == (1, 3, 16)
    assert out_mask.tolist() == [[[True, True, False]]]
    assert layer.macs(12) == 3 * 80 * 4 * 16


@pytest.mark.parametrize(
    "input_layer,options,message",
    [
        ("vgg", {}, "input_layer must be one of 'conv2d', 'conv2d6', 'dw_striding', 'stack'"),
        ("dw_striding", {"subsampling_factor": 6}, "subsampling_factor .* one of 2, 4, 8"),
        ("dw_striding", {"subsampling_channels": 0}, "subsampling_channels"),
        ("dw_striding", {"subsampling_kernel_size": 0}, "subsampling_kernel_size"),
        ("conv2d", {"subsampling_factor": 8}, "subsampling_factor 8 .* 'conv2d' .* factor is 4"),
        ("stack", {"stack_frames": 6, "subsampling_factor": 4}, "factor is 6"),
    ],
)
def test_bad_options_are_rejected_naming_the_choices(input_layer, options, message):
    with pytest.raises(ValueError, match=message):
        build_subsampling(input_layer, 80, 16, 0.0, **options)


@pytest.mark.parametrize("input_layer,factor", [("conv2d", 4), ("conv2d6", 6), ("dw_striding", 8)])
def test_a_matching_subsampling_factor_is_accepted(input_layer, factor):
    assert build_subsampling(input_layer, 80, 16, 0.0, subsampling_factor=factor).stride == factor
