"""Input layers: ESPnet's conv2d (4x) and a cheap stacked-frames projection.

Both expose what streaming and compute accounting need: ``stride`` (input
frames per output frame), ``receptive_field`` (input frames one output frame
needs) and ``macs(num_input_frames)``.
"""

import torch

from espnet_amortized._espnet import Conv2dSubsampling


class Conv2dSubsampling4(Conv2dSubsampling):
    """ESPnet's Conv2dSubsampling without its positional encoding.

    The encoder adds a streaming positional encoding itself (it needs a start
    offset for chunk-by-chunk inference).
    """

    stride = 4
    receptive_field = 7

    def __init__(self, input_size: int, output_size: int, dropout_rate: float):
        super().__init__(input_size, output_size, dropout_rate, pos_enc=torch.nn.Identity())
        self.input_size = input_size
        self.output_size = output_size

    def num_output_frames(self, num_input_frames: int) -> int:
        return max(0, ((num_input_frames - 1) // 2 - 1) // 2)

    def macs(self, num_input_frames: int) -> int:
        channels = self.output_size
        rows1 = max(0, (num_input_frames - 1) // 2)
        cols1 = (self.input_size - 1) // 2
        rows2 = max(0, (rows1 - 1) // 2)
        cols2 = (cols1 - 1) // 2
        conv1 = rows1 * cols1 * channels * 9
        conv2 = rows2 * cols2 * channels * channels * 9
        linear = rows2 * channels * cols2 * channels
        return conv1 + conv2 + linear


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


def build_subsampling(input_layer: str, input_size: int, output_size: int, dropout_rate: float, stack_frames: int):
    if input_layer == "conv2d":
        return Conv2dSubsampling4(input_size, output_size, dropout_rate)
    if input_layer == "stack":
        return StackedFramesSubsampling(input_size, output_size, stack_frames)
    raise ValueError(f"input_layer must be one of 'conv2d', 'stack'; got {input_layer!r}")
