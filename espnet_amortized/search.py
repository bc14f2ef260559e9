"""Frame-synchronous transducer searches that run the same offline and chunk by chunk.

Greedy and beam search. ESPnet's greedy transducer search emits at most one
token per encoder frame; these emit up to ``max_symbols_per_frame``, as the
RNN-T loss allows. Both keep their whole state between calls, so feeding
encoder frames in any pieces gives the same hypothesis as feeding them all at
once, and the best hypothesis so far is the partial result.

The joint network is ESPnet's (``espnet2.asr_transducer.joint_network``, the
one the ``asr`` task builds): ``lin_out(act(lin_enc(enc) + lin_dec(dec)))``.
Its two input projections are computed once, each encoder frame once per frame
and each decoder output once per hypothesis, and the joint is then called with
``no_projection=True``, instead of projecting both again for every candidate.
The beam search runs the prediction network once per label sequence: its
projected output and state for each expansion of the beam are cached in the
search state (``BeamState.decoded``) and reused when a later frame proposes
the same expansion again.

``length_bonus`` (an insertion reward) adds a constant per emitted label to the
scores that choose among hypotheses: ``log P + length_bonus * len(tokens)``.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch


def _check_at_least_one(**options: int) -> None:
    for name, value in options.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _check_length_bonus(length_bonus: float) -> None:
    if not math.isfinite(length_bonus):
        raise ValueError(f"length_bonus must be finite, got {length_bonus}")


def _project_frame(joint_network, frame: torch.Tensor) -> torch.Tensor:
    # One frame at a time, so that any chunking of the frames gives bitwise the same projections.
    return joint_network.lin_enc(frame)


def _joint_logits(joint_network, frame_projection: torch.Tensor, decoder_projection: torch.Tensor) -> torch.Tensor:
    return joint_network(frame_projection, decoder_projection, no_projection=True)


@dataclass
class GreedyState:
    tokens: List[int] = field(default_factory=list)
    decoder_projection: torch.Tensor = None  # (D_joint,): lin_dec of the decoder output for the last emitted label
    decoder_state: Tuple = None
    frames: int = 0


class GreedyTransducerSearch:
    """Up to ``max_symbols_per_frame`` labels per frame, each the argmax of ``log P + length_bonus * [not blank]``."""

    def __init__(
        self,
        decoder,
        joint_network,
        blank_id: int = 0,
        max_symbols_per_frame: int = 4,
        length_bonus: float = 0.0,
    ):
        _check_at_least_one(max_symbols_per_frame=max_symbols_per_frame)
        _check_length_bonus(length_bonus)
        self.decoder = decoder
        self.joint_network = joint_network
        self.blank_id = blank_id
        self.max_symbols_per_frame = max_symbols_per_frame
        self.length_bonus = length_bonus

    def _advance(self, label: int, state) -> Tuple[torch.Tensor, Tuple]:
        embedded = self.decoder.embed(torch.tensor([[label]], device=self.decoder.device))
        out, new_state = self.decoder.rnn_forward(embedded, state)
        return self.joint_network.lin_dec(out[0, 0]), new_state

    @torch.no_grad()
    def init_state(self) -> GreedyState:
        decoder_projection, decoder_state = self._advance(self.blank_id, self.decoder.init_state(1))
        return GreedyState(decoder_projection=decoder_projection, decoder_state=decoder_state)

    @torch.no_grad()
    def step(self, state: GreedyState, encoder_frames: torch.Tensor) -> GreedyState:
        """Consume encoder frames (T, D_enc); emitted tokens are appended to ``state.tokens``."""
        for frame in encoder_frames:
            frame_projection = _project_frame(self.joint_network, frame)
            for _ in range(self.max_symbols_per_frame):
                logits = _joint_logits(self.joint_network, frame_projection, state.decoder_projection)
                # log_softmax shifts all logits alike, so a bonus on the labels is a margin against blank.
                logits[self.blank_id] -= self.length_bonus
                label = int(logits.argmax())
                if label == self.blank_id:
                    break
                state.tokens.append(label)
                state.decoder_projection, state.decoder_state = self._advance(label, state.decoder_state)
            state.frames += 1
        return state

    def best_tokens(self, state: GreedyState) -> List[int]:
        return list(state.tokens)

    def best_score(self, state: GreedyState) -> float:
        return 0.0  # greedy search does not keep a score


@dataclass
class BeamHypothesis:
    tokens: Tuple[int, ...]
    score: float  # log P(tokens, frames so far), summed over the merged alignments; no length bonus
    decoder_projection: torch.Tensor  # (D_joint,): lin_dec of the decoder output after the last label
    decoder_state: Tuple


def ranking_score(hyp: BeamHypothesis, length_bonus: float = 0.0) -> float:
    """What the beam search prunes and chooses by: ``score + length_bonus * len(tokens)``."""
    return hyp.score + length_bonus * len(hyp.tokens)


@dataclass
class BeamState:
    hyps: List[BeamHypothesis]
    frames: int = 0
    # The prediction network per label sequence, (lin_dec output, decoder state): the expansions of the beam's
    # hypotheses computed so far. A frame mostly proposes the expansions the previous one did; they are not
    # computed again. Pruned after each frame to the extensions of the hypotheses left in the beam.
    decoded: Dict[Tuple[int, ...], Tuple[torch.Tensor, Tuple]] = field(default_factory=dict)

    def best(self, score_norm: bool = False, length_bonus: float = 0.0) -> BeamHypothesis:
        """Highest ranking score (per token + 1, as ESPnet's ``score_norm``, if asked)."""
        if score_norm:
            return max(self.hyps, key=lambda h: ranking_score(h, length_bonus) / (len(h.tokens) + 1))
        return max(self.hyps, key=lambda h: ranking_score(h, length_bonus))


class BeamTransducerSearch:
    """Frame-synchronous transducer beam search (time-synchronous decoding, Saon et al. 2020).

    On every encoder frame, each hypothesis either ends the frame with blank
    or emits a label and stays on the frame, up to ``max_symbols_per_frame``
    labels, after which it must end the frame with blank; hypotheses that
    reach the same labels by different alignments are merged (their
    probabilities added). After each frame the ``beam_size`` best (by
    ``ranking_score``) remain, so the search runs chunk by chunk exactly as on
    the whole utterance, and the best hypothesis so far is the partial result.
    """

    def __init__(
        self,
        decoder,
        joint_network,
        blank_id: int = 0,
        beam_size: int = 4,
        max_symbols_per_frame: int = 4,
        score_norm: bool = False,
        length_bonus: float = 0.0,
    ):
        _check_at_least_one(beam_size=beam_size, max_symbols_per_frame=max_symbols_per_frame)
        _check_length_bonus(length_bonus)
        self.decoder = decoder
        self.joint_network = joint_network
        self.blank_id = blank_id
        self.beam_size = beam_size
        self.max_symbols_per_frame = max_symbols_per_frame
        self.score_norm = score_norm
        self.length_bonus = length_bonus

    def _advance(self, labels: List[int], states: Tuple) -> Tuple[torch.Tensor, Tuple]:
        """Decoder step for N hypotheses at once: labels (N,), states batched on dim 1; projected outputs (N, D_joint)."""
        embedded = self.decoder.embed(torch.tensor(labels, device=self.decoder.device).unsqueeze(1))
        out, new_states = self.decoder.rnn_forward(embedded, states)
        return self.joint_network.lin_dec(out[:, 0]), new_states

    @staticmethod
    def _stack_states(states: List[Tuple]) -> Tuple:
        return tuple(None if parts[0] is None else torch.cat(parts, dim=1) for parts in zip(*states))

    @staticmethod
    def _select_state(states: Tuple, index: int) -> Tuple:
        return tuple(None if part is None else part[:, index : index + 1] for part in states)

    @staticmethod
    def _end_frame(ended: dict, hyp: BeamHypothesis, score: float) -> None:
        old = ended.get(hyp.tokens)
        if old is None:
            ended[hyp.tokens] = BeamHypothesis(hyp.tokens, score, hyp.decoder_projection, hyp.decoder_state)
        else:  # the same labels by another alignment: add the probabilities
            high, low = max(old.score, score), min(old.score, score)
            old.score = high + math.log1p(math.exp(low - high))

    @staticmethod
    def _reachable(decoded: Dict, hyps: List[BeamHypothesis]) -> Dict:
        """The cached sequences that a later frame can still propose: those that extend a hypothesis in the beam
        (every later hypothesis extends one of them, and a proposal adds a label to a hypothesis)."""
        beam = {h.tokens for h in hyps}
        lengths = {len(tokens) for tokens in beam}
        return {tokens: out for tokens, out in decoded.items()
                if any(len(tokens) > length and tokens[:length] in beam for length in lengths)}

    def _decode(self, sequences: List[Tuple[int, ...]], parents: List[BeamHypothesis], decoded: Dict) -> None:
        """The prediction network for each label sequence not in ``decoded`` yet, batched: its last label on its
        parent's state."""
        missing = {}
        for sequence, parent in zip(sequences, parents):
            if sequence not in decoded:
                missing.setdefault(sequence, parent)
        if not missing:
            return
        projections, states = self._advance([sequence[-1] for sequence in missing],
                                            self._stack_states([parent.decoder_state for parent in missing.values()]))
        for n, sequence in enumerate(missing):
            decoded[sequence] = (projections[n], self._select_state(states, n))

    @torch.no_grad()
    def init_state(self) -> BeamState:
        projection, state = self._advance([self.blank_id], self.decoder.init_state(1))
        return BeamState(hyps=[BeamHypothesis((), 0.0, projection[0], state)])

    @torch.no_grad()
    def step(self, state: BeamState, encoder_frames: torch.Tensor) -> BeamState:
        """Consume encoder frames (T, D_enc); ``state.hyps`` holds the beam afterwards."""
        for frame in encoder_frames:
            frame_projection = _project_frame(self.joint_network, frame).unsqueeze(0)
            active = state.hyps  # hypotheses still on this frame
            ended = {}  # tokens -> hypothesis that ended this frame with blank
            # One pass more than labels allowed: the hypotheses that emitted max_symbols_per_frame labels on
            # this frame can only take blank, and that blank needs the joint too.
            for emitted in range(self.max_symbols_per_frame + 1):
                decoder_projections = torch.stack([h.decoder_projection for h in active])
                log_probs = torch.log_softmax(
                    _joint_logits(self.joint_network, frame_projection, decoder_projections), dim=-1
                ).double()
                for hyp, blank_log_prob in zip(active, log_probs[:, self.blank_id].tolist()):
                    self._end_frame(ended, hyp, hyp.score + blank_log_prob)
                if emitted == self.max_symbols_per_frame:
                    break
                # Label expansions that can still beat the beam_size-th ended hypothesis (blank only lowers
                # a score; with length_bonus > 0 further labels may raise it, so there it is a heuristic).
                log_probs[:, self.blank_id] = float("-inf")
                scores = torch.tensor([h.score for h in active], dtype=log_probs.dtype).unsqueeze(1) + log_probs
                new_lengths = torch.tensor([len(h.tokens) + 1 for h in active], dtype=log_probs.dtype).unsqueeze(1)
                ranked = (scores + self.length_bonus * new_lengths).view(-1)
                top = torch.topk(ranked, min(self.beam_size, ranked.numel()))
                floor = sorted((ranking_score(h, self.length_bonus) for h in ended.values()), reverse=True)
                floor = floor[self.beam_size - 1] if len(floor) >= self.beam_size else float("-inf")
                chosen = [i for r, i in zip(top.values.tolist(), top.indices.tolist()) if r > floor]
                if not chosen:
                    break
                vocab = log_probs.size(1)
                parents = [active[i // vocab] for i in chosen]
                labels = [i % vocab for i in chosen]
                chosen_scores = scores.view(-1)[chosen].tolist()
                self._decode([parent.tokens + (label,) for parent, label in zip(parents, labels)], parents,
                             state.decoded)
                active = [
                    BeamHypothesis(parent.tokens + (label,), score, *state.decoded[parent.tokens + (label,)])
                    for score, parent, label in zip(chosen_scores, parents, labels)
                ]
            state.hyps = sorted(ended.values(), key=lambda h: ranking_score(h, self.length_bonus), reverse=True)
            state.hyps = state.hyps[: self.beam_size]
            state.decoded = self._reachable(state.decoded, state.hyps)
            state.frames += 1
        return state

    def best_tokens(self, state: BeamState) -> List[int]:
        return list(state.best(self.score_norm, self.length_bonus).tokens)

    def best_score(self, state: BeamState) -> float:
        """log P of the best hypothesis's labels (merged alignments; without the length bonus)."""
        return float(state.best(self.score_norm, self.length_bonus).score)
