"""Input layers: ESPnet's conv2d (4x) and conv2d6 (6x), a depthwise-separable
striding stem (NeMo FastConformer's ``dw_striding``) and stacked frames + linear.

Each exposes what streaming and compute accounting need: ``stride`` (input
frames per output frame), ``receptive_field`` (input frames one output frame
needs), ``num_output_frames(n)`` and ``macs(num_input_frames)`` (the
convolutions and linear layers that execute). No layer pads along time, so an
output frame depends only on its own ``receptive_field`` input frames and
chunk-by-chunk subsampling equals the full forward.
"""

from typing import Optional

import torch

from espnet_amortized import _espnet

INPUT_LAYERS = ("conv2d", "conv2d6", "dw_striding", "stack")
DW_STRIDING_FACTORS = (2, 4, 8)


def _conv_length(length: int, kernel: int, stride: int, padding: int = 0) -> int:
    """Output length of a convolution (0 when the input is shorter than the kernel)."""
    return max(0, (length + 2 * padding - kernel) // stride + 1)


class _NoPositionalEncoding:
    """Shapes and MACs of ESPnet's two-conv subsampling layers, built without positional encoding.

    The encoder adds a streaming positional encoding itself (it needs a start
    offset for chunk-by-chunk inference). ``kernels`` and ``strides`` of the
    two convolutions (both C channels, the first from one) are ESPnet's.
    """

    kernels = strides = (0, 0)

    def __init__(self, input_size: int, output_size: int, dropout_rate: float):
        super().__init__(input_size, output_size, dropout_rate, pos_enc=torch.nn.Identity())
        self.input_size = input_size
        self.output_size = output_size

    def _sizes(self, length: int):
        sizes = [length]
        for kernel, stride in zip(self.kernels, self.strides):
            sizes.append(_conv_length(sizes[-1], kernel, stride))
        return sizes

    def num_output_frames(self, num_input_frames: int) -> int:
        return self._sizes(num_input_frames)[-1]

    def macs(self, num_input_frames: int) -> int:
        if self.num_output_frames(num_input_frames) == 0:
            return 0  # shorter than the receptive field: nothing runs (a conv would reject it)
        channels = self.output_size
        (_, rows1, rows2), (_, cols1, cols2) = self._sizes(num_input_frames), self._sizes(self.input_size)
        conv1 = rows1 * cols1 * channels * self.kernels[0] ** 2
        conv2 = rows2 * cols2 * channels * channels * self.kernels[1] ** 2
        linear = rows2 * channels * cols2 * channels
        return conv1 + conv2 + linear


class Conv2dSubsampling4(_NoPositionalEncoding, _espnet.Conv2dSubsampling):
    """ESPnet's Conv2dSubsampling (two 3x3 stride-2 convs) without its positional encoding."""

    kernels, strides = (3, 3), (2, 2)
    stride = 4
    receptive_field = 7  # 3 + (3 - 1) * 2


class Conv2dSubsampling6(_NoPositionalEncoding, _espnet.Conv2dSubsampling6):
    """ESPnet's Conv2dSubsampling6 (3x3 stride 2, then 5x5 stride 3) without its positional encoding."""

    kernels, strides = (3, 5), (2, 3)
    stride = 6
    receptive_field = 11  # 3 + (5 - 1) * 2


class DepthwiseStridingSubsampling(torch.nn.Module):
    """A cheap convolutional stem like NeMo FastConformer's ``dw_striding``.

    Conv2d(1 -> C, k, stride 2), ReLU, then log2(factor) - 1 blocks of
    depthwise Conv2d(C, C, k, stride 2, groups=C) + pointwise Conv2d(C, C, 1),
    ReLU, then Linear(C * freq_out -> output_size). The depthwise-separable
    blocks avoid the C x C x k x k conv that dominates ESPnet's conv2d.
    Unlike NeMo, nothing is padded along time (valid convolutions, as ESPnet's
    conv2d), so streaming needs no look-ahead beyond ``receptive_field``;
    frequency is padded by (k - 1) // 2 per side.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        subsampling_factor: int = 4,
        subsampling_channels: int = 48,
        subsampling_kernel_size: int = 3,
    ):
        super().__init__()
        if subsampling_factor not in DW_STRIDING_FACTORS:
            raise ValueError(
                f"subsampling_factor for input_layer 'dw_striding' must be one of "
                f"{', '.join(map(str, DW_STRIDING_FACTORS))}; got {subsampling_factor}"
            )
        if subsampling_channels < 1:
            raise ValueError(f"subsampling_channels must be >= 1, got {subsampling_channels}")
        if subsampling_kernel_size < 1:
            raise ValueError(f"subsampling_kernel_size must be >= 1, got {subsampling_kernel_size}")
        self.input_size = input_size
        self.output_size = output_size
        self.channels = channels = subsampling_channels
        self.kernel_size = kernel = subsampling_kernel_size
        self.freq_padding = (kernel - 1) // 2
        self.num_stages = subsampling_factor.bit_length() - 1  # log2(factor) stride-2 stages
        self.stride = subsampling_factor
        # Each stride-2 stage s (0-based) widens the field by (k - 1) * 2^s input frames.
        self.receptive_field = 1 + (kernel - 1) * (subsampling_factor - 1)
        padding = (0, self.freq_padding)
        layers = [torch.nn.Conv2d(1, channels, kernel, 2, padding), torch.nn.ReLU()]
        for _ in range(self.num_stages - 1):
            layers += [
                torch.nn.Conv2d(channels, channels, kernel, 2, padding, groups=channels),
                torch.nn.Conv2d(channels, channels, 1),
                torch.nn.ReLU(),
            ]
        self.conv = torch.nn.Sequential(*layers)
        self.out = torch.nn.Linear(channels * self._freq_sizes()[-1], output_size)

    def _freq_sizes(self):
        sizes = [self.input_size]
        for _ in range(self.num_stages):
            sizes.append(_conv_length(sizes[-1], self.kernel_size, 2, self.freq_padding))
        return sizes

    def _time_sizes(self, num_input_frames: int):
        sizes = [num_input_frames]
        for _ in range(self.num_stages):
            sizes.append(_conv_length(sizes[-1], self.kernel_size, 2))
        return sizes

    def num_output_frames(self, num_input_frames: int) -> int:
        return self._time_sizes(num_input_frames)[-1]

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        """x (B, T, F), mask (B, 1, T) -> (B, T', D), (B, 1, T') with T' = num_output_frames(T)."""
        x = self.conv(x.unsqueeze(1))
        batch, channels, frames, freq = x.shape
        x = self.out(x.transpose(1, 2).reshape(batch, frames, channels * freq))
        # An output frame is valid iff the last input frame of its window is
        # (so a padded utterance keeps exactly num_output_frames(length) frames).
        for _ in range(self.num_stages):
            mask = mask[:, :, self.kernel_size - 1 :: 2]
        return x, mask[:, :, :frames]

    def macs(self, num_input_frames: int) -> int:
        if self.num_output_frames(num_input_frames) == 0:
            return 0  # shorter than the receptive field: nothing runs (a conv would reject it)
        rows, cols = self._time_sizes(num_input_frames), self._freq_sizes()
        channels, kernel = self.channels, self.kernel_size * self.kernel_size
        total = rows[1] * cols[1] * channels * kernel  # first conv, one input channel
        for stage in range(2, self.num_stages + 1):
            positions = rows[stage] * cols[stage]
            total += positions * channels * kernel  # depthwise
            total += positions * channels * channels  # pointwise
        return total + rows[-1] * channels * cols[-1] * self.output_size


class StackedFramesSubsampling(torch.nn.Module):
    """Stack ``stack_frames`` consecutive frames and project them (low frame rate).

    About 30x cheaper per output frame than conv2d at d=256 with 80-dim input.
    """

    def __init__(self, input_size: int, output_size: int, stack_frames: int = 4):
        super().__init__()
        if stack_frames < 1:
            raise ValueError(f"stack_frames must be >= 1, got {stack_frames}")
        self.input_size = input_size
        self.output_size = output_size
        self.stride = stack_frames
        self.receptive_field = stack_frames
        self.linear = torch.nn.Linear(input_size * stack_frames, output_size)

    def num_output_frames(self, num_input_frames: int) -> int:
        return num_input_frames // self.stride

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        """x (B, T, F), mask (B, 1, T) -> (B, T // k, D), (B, 1, T // k)."""
        batch, length, _ = x.shape
        frames = length // self.stride
        stacked = x[:, : frames * self.stride].reshape(batch, frames, self.stride * self.input_size)
        # Output frame t is complete iff its last input frame is valid.
        return self.linear(stacked), mask[:, :, self.stride - 1 :: self.stride][:, :, :frames]

    def macs(self, num_input_frames: int) -> int:
        return self.num_output_frames(num_input_frames) * self.input_size * self.stride * self.output_size


def build_subsampling(
    input_layer: str,
    input_size: int,
    output_size: int,
    dropout_rate: float,
    stack_frames: int = 4,
    subsampling_factor: Optional[int] = None,
    subsampling_channels: int = 48,
    subsampling_kernel_size: int = 3,
):
    """The input layer named ``input_layer`` (one of INPUT_LAYERS).

    ``subsampling_factor`` chooses dw_striding's factor (None: 4); for the
    other layers, whose factor is fixed (conv2d 4, conv2d6 6, stack
    ``stack_frames``), a given value must match it. ``subsampling_channels``
    and ``subsampling_kernel_size`` shape dw_striding only.
    """
    if input_layer == "dw_striding":
        return DepthwiseStridingSubsampling(
            input_size,
            output_size,
            4 if subsampling_factor is None else subsampling_factor,
            subsampling_channels,
            subsampling_kernel_size,
        )
    if input_layer == "conv2d":
        layer = Conv2dSubsampling4(input_size, output_size, dropout_rate)
    elif input_layer == "conv2d6":
        layer = Conv2dSubsampling6(input_size, output_size, dropout_rate)
    elif input_layer == "stack":
        layer = StackedFramesSubsampling(input_size, output_size, stack_frames)
    else:
        raise ValueError(f"input_layer must be one of {', '.join(map(repr, INPUT_LAYERS))}; got {input_layer!r}")
    # A factor the layer cannot give is a configuration error, not a silent no-op.
    if subsampling_factor is not None and subsampling_factor != layer.stride:
        raise ValueError(
            f"subsampling_factor {subsampling_factor} does not fit input_layer {input_layer!r} "
            f"(its factor is {layer.stride}; 'dw_striding' takes {', '.join(map(str, DW_STRIDING_FACTORS))})"
        )
    return layer
