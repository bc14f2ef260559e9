"""Frame-synchronous transducer searches that run the same offline and chunk by chunk.

Greedy and beam search. ESPnet's greedy transducer search emits at most one
token per encoder frame; these emit up to ``max_symbols_per_frame``, as the
RNN-T loss allows. Both keep their whole state between calls, so feeding
encoder frames in any pieces gives the same hypothesis as feeding them all at
once, and the best hypothesis so far is the partial result.
"""

import math
from dataclasses import dataclass, field
from typing import List, Tuple

import torch


def _check_at_least_one(**options: int) -> None:
    for name, value in options.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


@dataclass
class GreedyState:
    tokens: List[int] = field(default_factory=list)
    decoder_out: torch.Tensor = None  # (D_dec,) for the last emitted label
    decoder_state: Tuple = None
    frames: int = 0


class GreedyTransducerSearch:
    def __init__(self, decoder, joint_network, blank_id: int = 0, max_symbols_per_frame: int = 4):
        _check_at_least_one(max_symbols_per_frame=max_symbols_per_frame)
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

    def best_tokens(self, state: GreedyState) -> List[int]:
        return list(state.tokens)


@dataclass
class BeamHypothesis:
    tokens: Tuple[int, ...]
    score: float  # log P(tokens, frames so far), summed over the merged alignments
    decoder_out: torch.Tensor  # (D_dec,)
    decoder_state: Tuple


@dataclass
class BeamState:
    hyps: List[BeamHypothesis]
    frames: int = 0

    def best(self, score_norm: bool = False) -> BeamHypothesis:
        """Highest score (per token + 1, as ESPnet's ``score_norm``, if asked)."""
        if score_norm:
            return max(self.hyps, key=lambda h: h.score / (len(h.tokens) + 1))
        return max(self.hyps, key=lambda h: h.score)


class BeamTransducerSearch:
    """Frame-synchronous transducer beam search (time-synchronous decoding, Saon et al. 2020).

    On every encoder frame, each hypothesis either ends the frame with blank
    or emits a label and stays on the frame, up to ``max_symbols_per_frame``
    labels; hypotheses that reach the same labels by different alignments are
    merged (their probabilities added). After each frame the ``beam_size`` best
    remain, so the search runs chunk by chunk exactly as on the whole
    utterance, and the best hypothesis so far is the partial result.
    """

    def __init__(
        self,
        decoder,
        joint_network,
        blank_id: int = 0,
        beam_size: int = 4,
        max_symbols_per_frame: int = 4,
        score_norm: bool = False,
    ):
        _check_at_least_one(beam_size=beam_size, max_symbols_per_frame=max_symbols_per_frame)
        self.decoder = decoder
        self.joint_network = joint_network
        self.blank_id = blank_id
        self.beam_size = beam_size
        self.max_symbols_per_frame = max_symbols_per_frame
        self.score_norm = score_norm

    def _advance(self, labels: List[int], states: Tuple) -> Tuple[torch.Tensor, Tuple]:
        """Decoder step for N hypotheses at once: labels (N,), states batched on dim 1."""
        embedded = self.decoder.embed(torch.tensor(labels, device=self.decoder.device).unsqueeze(1))
        out, new_states = self.decoder.rnn_forward(embedded, states)
        return out[:, 0], new_states

    @staticmethod
    def _stack_states(states: List[Tuple]) -> Tuple:
        return tuple(None if parts[0] is None else torch.cat(parts, dim=1) for parts in zip(*states))

    @staticmethod
    def _select_state(states: Tuple, index: int) -> Tuple:
        return tuple(None if part is None else part[:, index : index + 1] for part in states)

    @torch.no_grad()
    def init_state(self) -> BeamState:
        out, state = self._advance([self.blank_id], self.decoder.init_state(1))
        return BeamState(hyps=[BeamHypothesis((), 0.0, out[0], state)])

    @torch.no_grad()
    def step(self, state: BeamState, encoder_frames: torch.Tensor) -> BeamState:
        """Consume encoder frames (T, D_enc); ``state.hyps`` holds the beam afterwards."""
        for frame in encoder_frames:
            active = state.hyps  # hypotheses still on this frame
            ended = {}  # tokens -> hypothesis that ended this frame with blank
            for _ in range(self.max_symbols_per_frame):
                decoder_out = torch.stack([h.decoder_out for h in active])
                log_probs = torch.log_softmax(self.joint_network(frame.unsqueeze(0), decoder_out), dim=-1)
                blank = log_probs[:, self.blank_id].tolist()
                for hyp, blank_log_prob in zip(active, blank):
                    score = hyp.score + blank_log_prob
                    old = ended.get(hyp.tokens)
                    if old is None:
                        ended[hyp.tokens] = BeamHypothesis(hyp.tokens, score, hyp.decoder_out, hyp.decoder_state)
                    else:  # the same labels by another alignment: add the probabilities
                        high, low = max(old.score, score), min(old.score, score)
                        old.score = high + math.log1p(math.exp(low - high))
                # Label expansions that can still beat the beam_size-th ended hypothesis.
                log_probs[:, self.blank_id] = float("-inf")
                scores = torch.tensor([h.score for h in active]).unsqueeze(1) + log_probs
                top = torch.topk(scores.view(-1), min(self.beam_size, scores.numel()))
                floor = sorted((h.score for h in ended.values()), reverse=True)
                floor = floor[self.beam_size - 1] if len(floor) >= self.beam_size else float("-inf")
                chosen = [(s, i) for s, i in zip(top.values.tolist(), top.indices.tolist()) if s > floor]
                if not chosen:
                    break
                vocab = log_probs.size(1)
                parents = [active[i // vocab] for _, i in chosen]
                labels = [i % vocab for _, i in chosen]
                outs, states = self._advance(labels, self._stack_states([p.decoder_state for p in parents]))
                active = [
                    BeamHypothesis(parent.tokens + (label,), score, outs[n], self._select_state(states, n))
                    for n, ((score, _), parent, label) in enumerate(zip(chosen, parents, labels))
                ]
            state.hyps = sorted(ended.values(), key=lambda h: h.score, reverse=True)[: self.beam_size]
            state.frames += 1
        return state

    def best_tokens(self, state: BeamState) -> List[int]:
        return list(state.best(self.score_norm).tokens)
