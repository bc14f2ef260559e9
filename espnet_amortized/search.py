"""Frame-synchronous transducer search that runs the same offline and chunk by chunk.

ESPnet's greedy transducer search emits at most one token per encoder frame;
this one emits up to ``max_symbols_per_frame``, as the RNN-T loss allows. It
keeps its whole state between calls, so feeding encoder frames in any
pieces gives the same hypothesis as feeding them all at once.
"""

from dataclasses import dataclass, field
from typing import List, Tuple

import torch


@dataclass
class GreedyState:
    tokens: List[int] = field(default_factory=list)
    decoder_out: torch.Tensor = None  # (D_dec,) for the last emitted label
    decoder_state: Tuple = None
    frames: int = 0


class GreedyTransducerSearch:
    def __init__(self, decoder, joint_network, blank_id: int = 0, max_symbols_per_frame: int = 4):
        if max_symbols_per_frame < 1:
            raise ValueError(f"max_symbols_per_frame must be >= 1, got {max_symbols_per_frame}")
        self.decoder = decoder
        self.joint_network = joint_network
        self.blank_id = blank_id
        self.max_symbols_per_frame = max_symbols_per_frame

    def _advance(self, label: int, state) -> Tuple[torch.Tensor, Tuple]:
        embedded = self.decoder.embed(torch.tensor([[label]], device=self.decoder.device))
        out, new_state = self.decoder.rnn_forward(embedded, state)
        return out[0, 0], new_state

    @torch.no_grad()
    def init_state(self) -> GreedyState:
        decoder_out, decoder_state = self._advance(self.blank_id, self.decoder.init_state(1))
        return GreedyState(decoder_out=decoder_out, decoder_state=decoder_state)

    @torch.no_grad()
    def step(self, state: GreedyState, encoder_frames: torch.Tensor) -> GreedyState:
        """Consume encoder frames (T, D_enc); emitted tokens are appended to ``state.tokens``."""
        for frame in encoder_frames:
            for _ in range(self.max_symbols_per_frame):
                logits = self.joint_network(frame, state.decoder_out)
                label = int(logits.argmax())
                if label == self.blank_id:
                    break
                state.tokens.append(label)
                state.decoder_out, state.decoder_state = self._advance(label, state.decoder_state)
            state.frames += 1
        return state
