import random

import numpy as np
import pytest
import torch
import yaml

from espnet_amortized.streaming import Speech2TextStreaming, StreamingFbank, fbank_streams, kaldi_fbank


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


def test_fbank_of_many_streams_in_one_call_equals_each_stream_alone():
    """Streams at different positions, pieces shorter than a window (no frame yet) and empty ones included."""
    audios = [torch.randn(n) * 0.1 for n in (16000, 3000, 9999)]
    cuts = [[0, 100, 5000, 5001, 16000], [0, 399, 400, 3000, 3000], [0, 7000, 7000, 9000, 9999]]
    together, alone = [StreamingFbank() for _ in audios], [StreamingFbank() for _ in audios]
    outputs = [[] for _ in audios]
    for step in range(4):
        pieces = [audio[c[step] : c[step + 1]] for audio, c in zip(audios, cuts)]
        for n, frames in enumerate(fbank_streams(together, pieces)):
            torch.testing.assert_close(frames, alone[n].accept(pieces[n]))
            outputs[n].append(frames)
    for audio, frames in zip(audios, outputs):
        torch.testing.assert_close(torch.cat(frames), kaldi_fbank(audio))
    assert fbank_streams([], []) == []


def test_fbank_holds_its_samples_until_min_frames_are_complete():
    audio = torch.randn(16000) * 0.1
    fbank = StreamingFbank()
    assert fbank.accept(audio[:2000], min_frames=20).shape == (0, 80)  # 11 frames complete: held back
    assert fbank.accept(audio[2000:3000], min_frames=20).shape == (0, 80)  # 17
    held = fbank.accept(audio[3000:3440], min_frames=20)  # 20: all of them at once
    rest = fbank.accept(audio[3440:], min_frames=1)
    assert held.shape == (20, 80)
    torch.testing.assert_close(torch.cat([held, rest]), kaldi_fbank(audio))


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


@pytest.mark.parametrize("rate,channels", [(8000, 1), (44100, 1), (16000, 2), (44100, 2)])
def test_audio_is_read_as_the_feature_stage_reads_it(tmp_path, rate, channels):
    """Other rates are resampled and channels averaged (counted), like local/features.py."""
    import importlib.util
    import pathlib

    import soundfile

    from espnet_amortized.streaming import load_audio

    spec = importlib.util.spec_from_file_location("features", pathlib.Path(__file__).parents[1] / "local" / "features.py")
    features = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(features)
    path = tmp_path / "odd.flac"
    audio = np.random.default_rng(0).standard_normal((rate, channels)).astype(np.float32) * 0.1
    soundfile.write(path, audio, rate)
    changes = []
    samples = load_audio(str(path), changes)
    assert samples.shape == (16000,)
    np.testing.assert_allclose(samples, features.read_audio(str(path)).numpy(), atol=1e-6)
    assert changes == (["downmixed"] if channels > 1 else []) + (["resampled"] if rate != 16000 else [])


def test_unreadable_audio_is_an_error_naming_the_file(tmp_path):
    from espnet_amortized.streaming import load_audio

    path = tmp_path / "corrupt.flac"
    path.write_bytes(b"not a flac file")
    with pytest.raises(ValueError, match="corrupt.flac: unreadable audio"):
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
