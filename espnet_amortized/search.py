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

Both searches advance any number of streams at once (``step_streams``: each
stream its own state and frames; ``step`` is one stream): per frame and symbol,
one joint-network call and one prediction-network call for every hypothesis of
every stream, and the beam's candidates chosen by one top-k over all of them.
Batched products may differ from one stream's in a float's last bits, so a
stream's hypotheses equal its search alone up to exact near-ties (tested).

``length_bonus`` (an insertion reward) adds a constant per emitted label to the
scores that choose among hypotheses: ``log P + length_bonus * len(tokens)``.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import torch


def _check_at_least_one(**options: int) -> None:
    for name, value in options.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _check_length_bonus(length_bonus: float) -> None:
    if not math.isfinite(length_bonus):
        raise ValueError(f"length_bonus must be finite, got {length_bonus}")


def _project_frames(joint_network, frames: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """lin_enc of every stream's frames (T_n, D_enc), in one call."""
    if len(frames) <= 1:
        return [joint_network.lin_enc(f) for f in frames]
    projected = joint_network.lin_enc(torch.cat(list(frames)))
    return list(projected.split([f.size(0) for f in frames]))


def _stack_states(states: List[Tuple]) -> Tuple:
    """Prediction-network states of single hypotheses ((layers, 1, H) parts) batched on dim 1."""
    return tuple(None if parts[0] is None else torch.cat(parts, dim=1) for parts in zip(*states))


def _select_state(states: Tuple, index: int) -> Tuple:
    return tuple(None if part is None else part[:, index : index + 1] for part in states)


def _advance(decoder, joint_network, labels: List[int], states: Tuple) -> Tuple[torch.Tensor, Tuple]:
    """Prediction-network step for N hypotheses at once: labels (N,), states batched on dim 1; returns the
    projected outputs (N, D_joint) and the new states."""
    embedded = decoder.embed(torch.tensor(labels, device=decoder.device).unsqueeze(1))
    out, new_states = decoder.rnn_forward(embedded, states)
    return joint_network.lin_dec(out[:, 0]), new_states


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

    @torch.no_grad()
    def init_state(self) -> GreedyState:
        projection, state = _advance(self.decoder, self.joint_network, [self.blank_id], self.decoder.init_state(1))
        return GreedyState(decoder_projection=projection[0], decoder_state=state)

    def step(self, state: GreedyState, encoder_frames: torch.Tensor) -> GreedyState:
        """Consume encoder frames (T, D_enc); emitted tokens are appended to ``state.tokens``."""
        return self.step_streams([state], [encoder_frames])[0]

    @torch.no_grad()
    def step_streams(self, states: List[GreedyState], frames: List[torch.Tensor]) -> List[GreedyState]:
        """Consume each stream's encoder frames (T_n, D_enc), all streams at once.

        Blank skipping: every stream's remaining frames are scored against its last label's decoder output
        in one joint call (streams padded to the longest). The frames before a stream's first non-blank
        argmax end with blank, exactly as scored one by one (the same inputs), so the search moves past
        them at once and only a frame that emits a label costs another call: about one joint call per
        emitted label instead of one per frame and label.
        """
        projections = _project_frames(self.joint_network, frames)
        # Each stream still decoding: [its next frame, the labels it emitted on that frame so far].
        cursors = {n: [0, 0] for n, p in enumerate(projections) if p.size(0)}
        while cursors:
            order = list(cursors)
            starts = [cursors[n][0] for n in order]
            remaining = [projections[n][start:] for n, start in zip(order, starts)]
            logits = _joint_logits(
                self.joint_network, torch.nn.utils.rnn.pad_sequence(remaining, batch_first=True),
                torch.stack([states[n].decoder_projection for n in order]).unsqueeze(1),
            )  # (N, T_max, V)
            # log_softmax shifts all logits alike, so a bonus on the labels is a margin against blank.
            logits[..., self.blank_id] -= self.length_bonus
            labels = logits.argmax(dim=-1)
            lengths = torch.tensor([r.size(0) for r in remaining], device=labels.device)
            emits = (labels != self.blank_id) & (torch.arange(labels.size(1), device=labels.device) < lengths.unsqueeze(1))
            first = emits.int().argmax(dim=1)  # the first emitting frame (0 where none: see any)
            found = emits.any(dim=1).tolist()
            first_labels = labels.gather(1, first.unsqueeze(1))[:, 0].tolist()
            emitted = []
            for row, n in enumerate(order):
                if not found[row]:  # blank on every remaining frame
                    del cursors[n]
                    continue
                frame = starts[row] + int(first[row])
                emitted.append((n, first_labels[row], frame))
            if not emitted:
                break
            projection, new_states = _advance(
                self.decoder, self.joint_network, [label for _, label, _ in emitted],
                _stack_states([states[n].decoder_state for n, _, _ in emitted]),
            )
            for row, (n, label, frame) in enumerate(emitted):
                states[n].tokens.append(label)
                states[n].decoder_projection, states[n].decoder_state = projection[row], _select_state(new_states, row)
                on_frame = cursors[n][1] + 1 if frame == cursors[n][0] else 1
                cursors[n] = [frame, on_frame]
                if on_frame == self.max_symbols_per_frame:  # this frame takes no more labels
                    cursors[n] = [frame + 1, 0]
                    if frame + 1 == projections[n].size(0):
                        del cursors[n]
        for state, p in zip(states, projections):
            state.frames += p.size(0)
        return states

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

    def _decode(self, proposals: List[Tuple[BeamState, Tuple[int, ...], BeamHypothesis]]) -> None:
        """The prediction network for each proposed (stream's state, label sequence, parent) not in that state's
        ``decoded`` yet, all streams in one batch: the sequence's last label on its parent's state."""
        missing = {}
        for state, sequence, parent in proposals:
            if sequence not in state.decoded:
                missing.setdefault((id(state), sequence), (state, sequence, parent))
        if not missing:
            return
        projections, states = _advance(
            self.decoder, self.joint_network, [sequence[-1] for _, sequence, _ in missing.values()],
            _stack_states([parent.decoder_state for _, _, parent in missing.values()]),
        )
        for row, (state, sequence, _) in enumerate(missing.values()):
            state.decoded[sequence] = (projections[row], _select_state(states, row))

    @torch.no_grad()
    def init_state(self) -> BeamState:
        projection, state = _advance(self.decoder, self.joint_network, [self.blank_id], self.decoder.init_state(1))
        return BeamState(hyps=[BeamHypothesis((), 0.0, projection[0], state)])

    def step(self, state: BeamState, encoder_frames: torch.Tensor) -> BeamState:
        """Consume encoder frames (T, D_enc); ``state.hyps`` holds the beam afterwards."""
        return self.step_streams([state], [encoder_frames])[0]

    def _floor(self, ended: Dict) -> float:
        """The beam_size-th best ranking score among the hypotheses that ended the frame (-inf: fewer)."""
        scores = sorted((ranking_score(h, self.length_bonus) for h in ended.values()), reverse=True)
        return scores[self.beam_size - 1] if len(scores) >= self.beam_size else float("-inf")

    @torch.no_grad()
    def step_streams(self, states: List[BeamState], frames: List[torch.Tensor]) -> List[BeamState]:
        """Consume each stream's encoder frames (T_n, D_enc), all streams at once, frame by frame; each
        ``states[n].hyps`` holds its beam afterwards."""
        projections = _project_frames(self.joint_network, frames)
        for t in range(max((p.size(0) for p in projections), default=0)):
            streams = [n for n, p in enumerate(projections) if t < p.size(0)]
            active = {n: states[n].hyps for n in streams}  # hypotheses still on this frame
            ended = {n: {} for n in streams}  # tokens -> hypothesis that ended this frame with blank
            # One pass more than labels allowed: the hypotheses that emitted max_symbols_per_frame labels on
            # this frame can only take blank, and that blank needs the joint too.
            for emitted in range(self.max_symbols_per_frame + 1):
                order = [n for n in streams if active[n]]
                if not order:
                    break
                hyps = [hyp for n in order for hyp in active[n]]
                counts = [len(active[n]) for n in order]
                frame_projections = torch.cat([projections[n][t].expand(count, -1) for n, count in zip(order, counts)])
                log_probs = torch.log_softmax(
                    _joint_logits(self.joint_network, frame_projections,
                                  torch.stack([h.decoder_projection for h in hyps])), dim=-1
                ).double()
                owners = [n for n, count in zip(order, counts) for _ in range(count)]
                for n, hyp, blank_log_prob in zip(owners, hyps, log_probs[:, self.blank_id].tolist()):
                    self._end_frame(ended[n], hyp, hyp.score + blank_log_prob)
                if emitted == self.max_symbols_per_frame:
                    break
                chosen = self._expansions(order, counts, hyps, log_probs, [self._floor(ended[n]) for n in order])
                self._decode([(states[n], parent.tokens + (label,), parent) for n, parent, label, _ in chosen])
                for n in order:
                    active[n] = []
                for n, parent, label, score in chosen:
                    tokens = parent.tokens + (label,)
                    active[n].append(BeamHypothesis(tokens, score, *states[n].decoded[tokens]))
            for n in streams:
                state = states[n]
                state.hyps = sorted(ended[n].values(), key=lambda h: ranking_score(h, self.length_bonus), reverse=True)
                state.hyps = state.hyps[: self.beam_size]
                state.decoded = self._reachable(state.decoded, state.hyps)
                state.frames += 1
        return states

    def _expansions(self, order, counts, hyps, log_probs, floors):
        """Each stream's label expansions that can still beat its beam_size-th ended hypothesis (blank only
        lowers a score; with length_bonus > 0 further labels may raise it, so there it is a heuristic): the
        beam_size best of each stream's hypotheses x labels, by one top-k over all streams (padded).
        Returns (stream, parent, label, score) in each stream's rank order."""
        vocab = log_probs.size(1)
        log_probs[:, self.blank_id] = float("-inf")
        scores = torch.tensor([h.score for h in hyps], dtype=log_probs.dtype).unsqueeze(1) + log_probs
        new_lengths = torch.tensor([len(h.tokens) + 1 for h in hyps], dtype=log_probs.dtype).unsqueeze(1)
        ranked = scores + self.length_bonus * new_lengths  # (H, V)
        width = max(counts)
        streams = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        slots = torch.cat([torch.arange(count) for count in counts])
        padded = ranked.new_full((len(counts), width, vocab), float("-inf"))
        padded[streams, slots] = ranked
        top = torch.topk(padded.view(len(counts), -1), min(self.beam_size, width * vocab))
        firsts = [sum(counts[:row]) for row in range(len(counts))]
        chosen = []
        for row, (values, indices) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
            for value, index in zip(values, indices):
                if value > floors[row]:  # -inf padding never passes
                    hyp_row = firsts[row] + index // vocab
                    chosen.append((order[row], hyps[hyp_row], index % vocab, float(scores[hyp_row, index % vocab])))
        return chosen

    def best_tokens(self, state: BeamState) -> List[int]:
        return list(state.best(self.score_norm, self.length_bonus).tokens)

    def best_score(self, state: BeamState) -> float:
        """log P of the best hypothesis's labels (merged alignments; without the length bonus)."""
        return float(state.best(self.score_norm, self.length_bonus).score)
