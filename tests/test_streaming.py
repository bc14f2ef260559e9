import random

import numpy as np
import pytest
import torch
import yaml

from espnet_amortized.streaming import Speech2TextStreaming, StreamingFbank, kaldi_fbank


def test_streaming_fbank_equals_whole_signal_fbank():
    audio = torch.randn(16000 * 2) * 0.1
    whole = kaldi_fbank(audio)
    fbank, pieces, start = StreamingFbank(), [], 0
    for size in (100, 399, 1, 2500, 7000, 20000, 2000):
        pieces.append(fbank.accept(audio[start : start + size]))
        start += size
    streamed = torch.cat(pieces)
    assert streamed.shape == whole.shape
    torch.testing.assert_close(streamed, whole)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_partial_hypotheses_grow_as_pieces_arrive_and_final_equals_offline(saved_model, beam_size):
    s2t = Speech2TextStreaming(*saved_model, beam_size=beam_size, score_norm=True)
    rng = random.Random(0)
    for utterance in range(3):
        audio = np.random.default_rng(utterance).standard_normal(16000 * 3).astype(np.float32) * 0.1
        s2t.reset()
        partials, start = [], 0
        while start < audio.size:
            size = rng.randint(1600, 6400)  # 100-400 ms
            partials.append(s2t(audio[start : start + size]))
            start += size
        final = s2t(np.zeros(0, dtype=np.float32), is_final=True)
        if beam_size == 1:  # greedy never takes a token back; a beam may revise its best hypothesis
            assert all(final.startswith(p) for p in partials)
        assert any(p for p in partials[:-1]), "no partial hypothesis before the end"
        assert final == s2t.decode_offline(audio)


def test_bad_threshold_is_rejected(saved_model):
    with pytest.raises(ValueError, match="gate_threshold"):
        Speech2TextStreaming(*saved_model, gate_threshold=1.5)


def test_utterance_normalisation_is_rejected(saved_model, tmp_path):
    config = yaml.safe_load(saved_model[0].read_text())
    config["normalize"] = "utterance_mvn"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="UtteranceMVN needs the whole utterance"):
        Speech2TextStreaming(tmp_path / "config.yaml", saved_model[1])


def test_audio_at_another_rate_is_an_error_naming_the_file(tmp_path):
    import soundfile

    from espnet_amortized.streaming import load_audio

    path = tmp_path / "eight_khz.wav"
    soundfile.write(path, np.zeros(8000, dtype=np.float32), 8000)
    with pytest.raises(ValueError, match="eight_khz.wav: sample rate 8000 Hz"):
        load_audio(str(path))


def test_decode_time_chunk_size_streams_like_the_offline_forward_with_that_chunk(saved_model):
    s2t = Speech2TextStreaming(*saved_model, chunk_size=2)
    assert s2t.model.encoder.chunk_size == 2
    audio = np.random.default_rng(5).standard_normal(16000 * 2).astype(np.float32) * 0.1
    for start in range(0, audio.size, 3200):
        s2t(audio[start : start + 3200])
    assert s2t(np.zeros(0, dtype=np.float32), is_final=True) == s2t.decode_offline(audio)
    with pytest.raises(ValueError, match="chunk_size"):
        Speech2TextStreaming(*saved_model, chunk_size=0)
