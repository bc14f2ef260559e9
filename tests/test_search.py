import pytest
import torch

from espnet_amortized.search import BeamTransducerSearch, GreedyTransducerSearch
from tests.conftest import build_espnet_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = build_espnet_model(dict(output_size=32, attention_heads=4, linear_units=64, num_blocks=1), {}).eval()
    model.decoder.set_device(torch.device("cpu"))
    return model


def test_pieces_give_the_same_tokens_as_all_frames(model):
    search = GreedyTransducerSearch(model.decoder, model.joint_network, model.blank_id, max_symbols_per_frame=3)
    frames = torch.randn(40, 32) * 3
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


@torch.no_grad()
def _restricted_log_prob(model, frames, labels, max_symbols):
    """log P(labels | frames) summed over alignments with <= max_symbols labels per frame (brute force DP)."""
    import math

    search = BeamTransducerSearch(model.decoder, model.joint_network, model.blank_id)
    decoder_outs = [search.init_state().hyps[0].decoder_out]
    state = search.init_state().hyps[0].decoder_state
    for label in labels:
        out, state = search._advance([label], state)
        decoder_outs.append(out[0])
    log_probs = [[torch.log_softmax(model.joint_network(f, d), dim=-1) for d in decoder_outs] for f in frames]
    alpha = {0: 0.0}  # labels emitted -> log prob, at the start of a frame
    for t in range(len(frames)):
        nxt = {}
        for u, score in alpha.items():
            for emitted in range(max_symbols + 1):
                if u + emitted > len(labels):
                    break
                path = score + sum(float(log_probs[t][u + i][labels[u + i]]) for i in range(emitted))
                path += float(log_probs[t][u + emitted][model.blank_id])
                end = u + emitted
                nxt[end] = path if end not in nxt else max(nxt[end], path) + math.log1p(math.exp(-abs(nxt[end] - path)))
        alpha = nxt
    return alpha.get(len(labels), float("-inf"))


@pytest.mark.parametrize("num_frames,max_symbols", [(2, 1), (1, 2)])
def test_wide_beam_finds_the_most_probable_label_sequence(model, num_frames, max_symbols):
    import itertools

    torch.manual_seed(1)
    frames = torch.randn(num_frames, 32) * 3
    search = BeamTransducerSearch(model.decoder, model.joint_network, model.blank_id, beam_size=1000,
                                  max_symbols_per_frame=max_symbols)
    state = search.step(search.init_state(), frames)
    labels = [v for v in range(len(model.decoder.embed.weight)) if v != model.blank_id]
    exact = {}
    for length in range(num_frames * max_symbols + 1):
        for sequence in itertools.product(labels, repeat=length):
            exact[sequence] = _restricted_log_prob(model, frames, list(sequence), max_symbols)
    best = max(exact, key=exact.get)
    assert state.best().tokens == best
    # Every hypothesis carries the exact probability of its labels (all alignments merged).
    for hyp in state.hyps[:20]:
        assert hyp.score == pytest.approx(exact[hyp.tokens], abs=1e-4)


def test_beam_pieces_give_the_same_hypotheses_as_all_frames(model):
    search = BeamTransducerSearch(model.decoder, model.joint_network, model.blank_id, beam_size=4,
                                  max_symbols_per_frame=3)
    frames = torch.randn(30, 32) * 3
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
