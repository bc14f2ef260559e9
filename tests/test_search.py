import itertools
import math

import pytest
import torch

from espnet_amortized.search import BeamTransducerSearch, GreedyTransducerSearch, ranking_score
from tests.conftest import build_espnet_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = build_espnet_model(dict(output_size=32, attention_heads=4, linear_units=64, num_blocks=1), {}).eval()
    model.decoder.set_device(torch.device("cpu"))
    return model


TOY_VOCAB, TOY_BLANK, TOY_ENCODER_SIZE = 4, 0, 5


def toy_transducer(seed: int = 3, scale: float = 5.0, num_frames: int = 3):
    """ESPnet's transducer decoder and joint network, tiny (3 labels + blank) and sharpened so that
    their distributions depend strongly on the labels so far."""
    from espnet2.asr.decoder.transducer_decoder import TransducerDecoder
    from espnet2.asr_transducer.joint_network import JointNetwork

    torch.manual_seed(seed)
    decoder = TransducerDecoder(TOY_VOCAB, hidden_size=6, embed_pad=TOY_BLANK).eval()
    joint_network = JointNetwork(TOY_VOCAB, TOY_ENCODER_SIZE, 6, joint_space_size=7).eval()
    with torch.no_grad():
        joint_network.lin_out.weight *= scale
        joint_network.lin_dec.weight *= scale
    return decoder, joint_network, torch.randn(num_frames, TOY_ENCODER_SIZE) * 2


@torch.no_grad()
def exhaustive_label_sequence_log_probs(decoder, joint_network, frames, max_symbols):
    """log P(labels) for every label sequence: every alignment enumerated (on each frame 0..max_symbols
    labels, then blank), its probability from the unprojected joint, summed per label sequence."""
    decoded = {}  # labels so far -> (decoder output, decoder state)

    def decoder_out(prefix):
        if prefix not in decoded:
            if prefix:
                state = decoder_out(prefix[:-1])[1]
            else:
                state = decoder.init_state(1)
            label = prefix[-1] if prefix else TOY_BLANK
            out, state = decoder.rnn_forward(decoder.embed(torch.tensor([[label]])), state)
            decoded[prefix] = (out[0, 0], state)
        return decoded[prefix]

    log_probs = {}

    def log_prob(t, prefix, label):
        if (t, prefix) not in log_probs:
            log_probs[t, prefix] = torch.log_softmax(joint_network(frames[t], decoder_out(prefix)[0]), dim=-1).tolist()
        return log_probs[t, prefix][label]

    labels = [v for v in range(TOY_VOCAB) if v != TOY_BLANK]
    per_frame = [emitted for n in range(max_symbols + 1) for emitted in itertools.product(labels, repeat=n)]
    totals = {}
    for alignment in itertools.product(per_frame, repeat=len(frames)):
        tokens, score = (), 0.0
        for t, emitted in enumerate(alignment):
            for label in emitted:
                score += log_prob(t, tokens, label)
                tokens += (label,)
            score += log_prob(t, tokens, TOY_BLANK)
        old = totals.get(tokens)
        totals[tokens] = score if old is None else max(old, score) + math.log1p(math.exp(-abs(old - score)))
    return totals


@pytest.mark.parametrize("num_frames,max_symbols,seed", [(3, 2, 3), (3, 1, 3), (2, 3, 11)])
def test_exhaustive_beam_equals_the_exhaustive_search(num_frames, max_symbols, seed):
    decoder, joint_network, frames = toy_transducer(seed=seed, num_frames=num_frames)
    exact = exhaustive_label_sequence_log_probs(decoder, joint_network, frames, max_symbols)
    best = max(exact, key=exact.get)
    # The case the search once got wrong: it dropped the hypotheses that emitted max_symbols labels on a
    # frame, so it found the best under max_symbols - 1 (for 1, nothing but the empty hypothesis).
    fewer = exhaustive_label_sequence_log_probs(decoder, joint_network, frames, max_symbols - 1)
    assert max(fewer, key=fewer.get) != best
    search = BeamTransducerSearch(decoder, joint_network, TOY_BLANK, beam_size=len(exact) + 1,
                                  max_symbols_per_frame=max_symbols)
    state = search.step(search.init_state(), frames)
    assert state.best().tokens == best
    assert state.best().score == pytest.approx(exact[best], abs=1e-5)
    # A beam this wide keeps every label sequence, each with its exact probability (all alignments merged).
    assert sorted(h.tokens for h in state.hyps) == sorted(exact)
    for hyp in state.hyps:
        assert hyp.score == pytest.approx(exact[hyp.tokens], abs=1e-5)


def test_length_bonus_prefers_longer_hypotheses():
    decoder, joint_network, frames = toy_transducer(seed=4)
    exact = exhaustive_label_sequence_log_probs(decoder, joint_network, frames, 2)
    plain_best = max(exact, key=exact.get)
    bonus = 1.5
    rewarded_best = max(exact, key=lambda tokens: exact[tokens] + bonus * len(tokens))
    assert len(rewarded_best) > len(plain_best)  # the constructed case: the bonus changes the choice

    def search(**options):
        search = BeamTransducerSearch(decoder, joint_network, TOY_BLANK, beam_size=len(exact) + 1,
                                      max_symbols_per_frame=2, **options)
        return search, search.step(search.init_state(), frames)

    plain_search, plain = search()
    zero_search, zero = search(length_bonus=0.0)
    assert [(h.tokens, h.score) for h in zero.hyps] == [(h.tokens, h.score) for h in plain.hyps]
    assert tuple(zero_search.best_tokens(zero)) == plain_best
    rewarded_search, rewarded = search(length_bonus=bonus)
    assert tuple(rewarded_search.best_tokens(rewarded)) == rewarded_best
    # Scores stay log-probabilities; the bonus only ranks.
    assert {h.tokens: h.score for h in rewarded.hyps} == pytest.approx({h.tokens: h.score for h in plain.hyps})
    # With score_norm, the rewarded score is divided by len + 1.
    normed = BeamTransducerSearch(decoder, joint_network, TOY_BLANK, beam_size=len(exact) + 1,
                                  max_symbols_per_frame=2, score_norm=True, length_bonus=bonus)
    expected = max(exact, key=lambda tokens: (exact[tokens] + bonus * len(tokens)) / (len(tokens) + 1))
    assert tuple(normed.best_tokens(normed.step(normed.init_state(), frames))) == expected


def test_narrow_beam_prunes_by_the_length_bonus():
    decoder, joint_network, frames = toy_transducer(seed=4, num_frames=6)
    lengths = {}
    for bonus in (0.0, 3.0):
        search = BeamTransducerSearch(decoder, joint_network, TOY_BLANK, beam_size=2, max_symbols_per_frame=2,
                                      length_bonus=bonus)
        state = search.step(search.init_state(), frames)
        assert len(state.hyps) == 2
        ranks = [ranking_score(h, bonus) for h in state.hyps]
        assert ranks == sorted(ranks, reverse=True)
        lengths[bonus] = len(search.best_tokens(state))
    assert lengths[3.0] > lengths[0.0]


@torch.no_grad()
def _reference_greedy(decoder, joint_network, frames, max_symbols, length_bonus=0.0):
    """Greedy search with the unprojected joint network, one call per candidate."""
    out, state = decoder.rnn_forward(decoder.embed(torch.tensor([[TOY_BLANK]])), decoder.init_state(1))
    tokens = []
    for frame in frames:
        for _ in range(max_symbols):
            log_probs = torch.log_softmax(joint_network(frame, out[0, 0]), dim=-1)
            log_probs[1:] += length_bonus  # TOY_BLANK is 0
            label = int(log_probs.argmax())
            if label == TOY_BLANK:
                break
            tokens.append(label)
            out, state = decoder.rnn_forward(decoder.embed(torch.tensor([[label]])), state)
    return tokens


@pytest.mark.parametrize("length_bonus", [0.0, 2.0])
def test_greedy_with_projections_computed_once_equals_the_unprojected_joint(length_bonus):
    decoder, joint_network, frames = toy_transducer(seed=4, num_frames=8)
    search = GreedyTransducerSearch(decoder, joint_network, TOY_BLANK, max_symbols_per_frame=3,
                                    length_bonus=length_bonus)
    tokens = search.step(search.init_state(), frames).tokens
    assert tokens == _reference_greedy(decoder, joint_network, frames, 3, length_bonus)
    if length_bonus:
        assert len(tokens) > len(_reference_greedy(decoder, joint_network, frames, 3))


@pytest.mark.parametrize("max_symbols", [1, 2, 3])
def test_greedy_skips_blank_frames_one_joint_call_per_label_and_equals_frame_by_frame(model, monkeypatch, max_symbols):
    from espnet_amortized import search as search_module

    calls = []
    joint_logits = search_module._joint_logits
    monkeypatch.setattr(search_module, "_joint_logits", lambda *args: calls.append(args[1].shape) or joint_logits(*args))
    frames = torch.randn(60, 32, generator=torch.Generator().manual_seed(1)) * 3
    search = GreedyTransducerSearch(model.decoder, model.joint_network, model.blank_id, max_symbols_per_frame=max_symbols)
    tokens = search.step(search.init_state(), frames).tokens
    assert model.blank_id == TOY_BLANK and tokens
    assert tokens == _reference_greedy(model.decoder, model.joint_network, frames, max_symbols)
    # One call per label, one more to find that the rest is blank (none when the last frame is full).
    assert len(calls) in (len(tokens), len(tokens) + 1) and calls[0][:2] == (1, 60)


def test_projected_joint_equals_the_joint_network(model):
    from espnet_amortized.search import _advance, _joint_logits, _project_frames

    frame = torch.randn(32) * 3
    decoder_out, _ = model.decoder.rnn_forward(model.decoder.embed(torch.tensor([[4], [7]])), model.decoder.init_state(2))
    projections, _ = _advance(model.decoder, model.joint_network, [4, 7], model.decoder.init_state(2))
    projected = _joint_logits(model.joint_network, _project_frames(model.joint_network, [frame.unsqueeze(0)])[0], projections)
    torch.testing.assert_close(projected, model.joint_network(frame.unsqueeze(0), decoder_out[:, 0]))


@pytest.mark.parametrize("length_bonus", [0.0, 1.0])
def test_pieces_give_the_same_tokens_as_all_frames(model, length_bonus):
    search = GreedyTransducerSearch(model.decoder, model.joint_network, model.blank_id, max_symbols_per_frame=3,
                                    length_bonus=length_bonus)
    frames = torch.randn(40, 32, generator=torch.Generator().manual_seed(0)) * 3
    whole = search.step(search.init_state(), frames).tokens
    state = search.init_state()
    for start, end in [(0, 1), (1, 17), (17, 18), (18, 40)]:
        search.step(state, frames[start:end])
    assert state.tokens == whole and state.frames == 40
    assert len(whole) > 0 and model.blank_id not in whole


def test_symbols_per_frame_are_bounded(model):
    search = GreedyTransducerSearch(model.decoder, model.joint_network, model.blank_id, max_symbols_per_frame=1)
    tokens = search.step(search.init_state(), torch.randn(10, 32) * 3).tokens
    assert len(tokens) <= 10
    with pytest.raises(ValueError, match="max_symbols_per_frame"):
        GreedyTransducerSearch(model.decoder, model.joint_network, 0, max_symbols_per_frame=0)


@pytest.mark.parametrize("length_bonus", [0.0, 1.0])
def test_beam_pieces_give_the_same_hypotheses_as_all_frames(model, length_bonus):
    search = BeamTransducerSearch(model.decoder, model.joint_network, model.blank_id, beam_size=4,
                                  max_symbols_per_frame=3, length_bonus=length_bonus)
    frames = torch.randn(30, 32, generator=torch.Generator().manual_seed(0)) * 3
    whole = search.step(search.init_state(), frames)
    state = search.init_state()
    for start, end in [(0, 1), (1, 13), (13, 14), (14, 30)]:
        search.step(state, frames[start:end])
    assert [h.tokens for h in state.hyps] == [h.tokens for h in whole.hyps]
    assert [h.score for h in state.hyps] == pytest.approx([h.score for h in whole.hyps])
    assert len(whole.hyps) == 4 and len(search.best_tokens(whole)) > 0


def test_beam_options_are_checked(model):
    for option in ("beam_size", "max_symbols_per_frame"):
        with pytest.raises(ValueError, match=option):
            BeamTransducerSearch(model.decoder, model.joint_network, 0, **{option: 0})
    for search in (BeamTransducerSearch, GreedyTransducerSearch):
        with pytest.raises(ValueError, match="length_bonus"):
            search(model.decoder, model.joint_network, 0, length_bonus=float("nan"))


def test_beam_runs_the_prediction_network_once_per_label_sequence(model, monkeypatch):
    """Later frames propose the expansions earlier ones did; the cache in the state computes each only once
    (a row is the decoder's input label and state: the same row twice is the same label sequence again)."""
    search = BeamTransducerSearch(model.decoder, model.joint_network, model.blank_id, beam_size=4,
                                  max_symbols_per_frame=3)
    rows = []
    rnn_forward = model.decoder.rnn_forward

    def counted(embedded, states):
        for n in range(embedded.size(0)):
            rows.append((embedded[n].numpy().tobytes(), states[0][:, n].numpy().tobytes()))
        return rnn_forward(embedded, states)

    monkeypatch.setattr(model.decoder, "rnn_forward", counted)
    frames = torch.randn(30, 32, generator=torch.Generator().manual_seed(0)) * 3
    state = search.init_state()
    for frame in frames:
        search.step(state, frame.unsqueeze(0))
        beam = {h.tokens for h in state.hyps}
        assert state.decoded and all(any(tokens[:n] in beam for n in range(len(tokens)))  # extensions of the beam
                                     for tokens in state.decoded)
    assert len(rows) == len(set(rows))
    cached = len(rows)
    rows.clear()
    uncached = search.init_state()
    for frame in frames:  # the same search with the cache emptied before every frame recomputes rows
        uncached.decoded = {}
        search.step(uncached, frame.unsqueeze(0))
    assert len(rows) > len(set(rows)) and len(rows) > cached
    assert [h.tokens for h in uncached.hyps] == [h.tokens for h in state.hyps]


@pytest.mark.parametrize("beam_size", [1, 4])
def test_streams_searched_together_equal_each_stream_alone(model, beam_size):
    """Streams of different lengths, fed in different pieces and joining late (an empty piece too), searched
    together with ``step_streams``: each ends with the hypotheses of its search alone."""
    if beam_size == 1:
        search = GreedyTransducerSearch(model.decoder, model.joint_network, model.blank_id, max_symbols_per_frame=3)
    else:
        search = BeamTransducerSearch(model.decoder, model.joint_network, model.blank_id, beam_size=beam_size,
                                      max_symbols_per_frame=3, length_bonus=0.5)
    generator = torch.Generator().manual_seed(1)
    utterances = [torch.randn(n, 32, generator=generator) * 3 for n in (30, 7, 19, 0)]
    alone = [search.step(search.init_state(), frames) for frames in utterances]
    states = [search.init_state() for _ in utterances]
    cuts = [[0, 4, 5, 17, 30], [0, 0, 7], [0, 11, 19], [0, 0]]
    for step in range(5):
        streams = [n for n, c in enumerate(cuts) if step + 1 < len(c)]
        search.step_streams([states[n] for n in streams],
                            [utterances[n][cuts[n][step] : cuts[n][step + 1]] for n in streams])
    for together, reference in zip(states, alone):
        assert search.best_tokens(together) == search.best_tokens(reference)
        if beam_size > 1:
            assert [h.tokens for h in together.hyps] == [h.tokens for h in reference.hyps]
            assert [h.score for h in together.hyps] == pytest.approx([h.score for h in reference.hyps])
    assert sum(len(search.best_tokens(state)) for state in states) > 0
