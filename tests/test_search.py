import pytest
import torch

from espnet_amortized.search import GreedyTransducerSearch
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
