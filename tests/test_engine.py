import gc

import numpy as np
import pytest

from espnet_amortized.encoder.layers import KeyValueCache
from espnet_amortized.engine import StreamError, StreamingEngine
from espnet_amortized.streaming import Speech2TextStreaming


def _audio(seed: int, seconds: float) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1


def _alone(s2t: Speech2TextStreaming, audio: np.ndarray, piece: int) -> str:
    s2t.reset()
    for start in range(0, audio.size, piece):
        s2t(audio[start : start + piece])
    return s2t(np.zeros(0, dtype=np.float32), is_final=True)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_streams_that_join_and_leave_mid_batch_decode_as_each_stream_alone(saved_model, beam_size):
    """Six streams of different lengths and piece sizes, opened at different steps, advanced together: every
    final text equals that stream decoded alone; a stream closed early leaves the others unchanged."""
    engine = StreamingEngine(*saved_model, beam_size=beam_size)
    alone = Speech2TextStreaming(*saved_model, beam_size=beam_size)
    lengths, pieces, joins = [2.1, 0.7, 1.5, 3.0, 0.3, 1.0], [1600, 4000, 2500, 3200, 800, 16000], [0, 0, 1, 3, 4, 6]
    audios = [_audio(seed, seconds) for seed, seconds in enumerate(lengths)]
    fed, finals, step, most = [0] * 6, {}, 0, 0
    hung_up = "dropped"
    engine.open(hung_up)  # a client that hangs up mid-utterance
    while len(finals) < 6:
        for n, audio in enumerate(audios):
            if joins[n] == step:
                engine.open(n)
            if joins[n] <= step and n in engine.streams and fed[n] < audio.size:
                piece = audio[fed[n] : fed[n] + pieces[n]]
                fed[n] += piece.size
                engine.accept(n, piece, is_final=fed[n] >= audio.size)
        if step < 4:
            engine.accept(hung_up, _audio(99, 0.2))
        elif step == 4:
            assert isinstance(engine.close(hung_up), str) and hung_up not in engine.streams
        most = max(most, len(engine.step()))
        for n in list(engine.streams):
            if n != hung_up and engine.finished(n):
                assert engine.compute_report(n).encoder_ratio > 0
                finals[n] = engine.close(n)
        step += 1
    assert most >= 4 and not engine.streams
    for n, audio in enumerate(audios):
        assert finals[n] == _alone(alone, audio, pieces[n]), f"stream {n}"
    assert any(finals.values())
    assert all(seconds > 0 for seconds in engine.seconds.values())


def test_the_fbank_runs_once_per_encoder_chunk_not_once_per_piece(saved_model, monkeypatch):
    from espnet_amortized import streaming

    calls = []
    fbank = streaming.kaldi_fbank
    monkeypatch.setattr(streaming, "kaldi_fbank", lambda samples, bins: calls.append(samples.numel()) or fbank(samples, bins))
    engine = StreamingEngine(*saved_model)
    alone = Speech2TextStreaming(*saved_model)
    audio, piece = _audio(7, 3.0), 1600  # 100 ms pieces
    engine.open("a")
    steps = 0
    for start in range(0, audio.size, piece):
        engine.accept("a", audio[start : start + piece], is_final=start + piece >= audio.size)
        engine.step()
        steps += 1
    chunk_ms = 10 * engine.model.encoder.chunk_size * engine.model.encoder.embed.stride
    assert len(calls) <= audio.size / 16 / chunk_ms + 2 < steps  # about one call per chunk of audio
    assert engine.close("a") == _alone(alone, audio, piece)


def test_bad_input_to_one_stream_is_refused_with_its_name_and_the_others_go_on(saved_model):
    engine = StreamingEngine(*saved_model)
    audio = _audio(0, 1.2)
    engine.open("good")
    engine.open("bad")
    with pytest.raises(StreamError, match="'bad': already open"):
        engine.open("bad")
    bad_pieces = [
        (dict(samples=audio[:800], sample_rate=8000), "'bad': sample rate 8000 Hz; the model takes 16000 Hz"),
        (dict(samples=np.array([0.1, np.nan, np.inf, 0.0], dtype=np.float32)), "'bad': 2 of 4 samples are NaN or infinite"),
        (dict(samples=np.zeros(0, dtype=np.float32)), r"'bad': empty piece \(only the final piece may be empty\)"),
        (dict(samples=np.zeros((2, 800), dtype=np.float32)), r"'bad': audio must be 1-D mono samples, got shape \(2, 800\)"),
    ]
    for start in range(0, audio.size, 3200):
        engine.accept("good", audio[start : start + 3200], is_final=start + 3200 >= audio.size)
        if bad_pieces:
            kwargs, message = bad_pieces.pop()
            with pytest.raises(StreamError, match=message) as error:
                engine.accept("bad", **kwargs)
            assert error.value.stream_id == "bad"
        engine.step()
    assert engine.finished("good") and not engine.finished("bad")
    assert engine.close("good") == _alone(Speech2TextStreaming(*saved_model), audio, 3200)
    engine.accept("bad", audio[:1600], is_final=True)
    with pytest.raises(StreamError, match="'bad': audio after the final piece"):
        engine.accept("bad", audio[:1600])
    engine.step()
    assert engine.finished("bad")
    for call in (lambda: engine.accept("nobody", audio), lambda: engine.text("nobody"), lambda: engine.close("nobody")):
        with pytest.raises(StreamError, match="'nobody': unknown stream"):
            call()
    assert isinstance(StreamError("x", "y"), ValueError)


def test_a_soak_of_200_streams_joining_and_leaving_leaks_no_state(saved_model):
    """200 short streams, up to 32 at a time, opened, fed and closed over many steps: every one finishes, the
    engine ends empty, no stream's key/value cache outlives it, and each cache holds only its visible chunks."""
    engine = StreamingEngine(*saved_model)
    left_chunks = engine.model.encoder.left_chunks
    caches_before = _live_caches()
    rng = np.random.default_rng(0)
    waiting = [(n, _audio(n, rng.uniform(0.1, 0.6))) for n in range(200)]
    fed, audios, finished = {}, {}, 0
    while waiting or engine.streams:
        while waiting and len(engine.streams) < 32:
            n, audio = waiting.pop()
            engine.open(n)
            fed[n], audios[n] = 0, audio
        for n in list(engine.streams):
            piece = audios[n][fed[n] : fed[n] + int(rng.integers(800, 4800))]
            fed[n] += piece.size
            engine.accept(n, piece, is_final=fed[n] >= audios[n].size)
        engine.step()
        for n in list(engine.streams):
            assert all(len(cache.sizes) <= left_chunks + 1 for cache in engine.streams[n].encoder_state["kv"])
            if engine.finished(n):
                engine.close(n)
                finished += 1
    assert finished == 200 and not engine.streams
    assert _live_caches() == caches_before  # the recognizer's own state's: one per layer


def _live_caches() -> int:
    gc.collect()
    return sum(type(o) is KeyValueCache for o in gc.get_objects())


def test_samples_that_are_not_float_audio_are_refused(saved_model):
    engine = StreamingEngine(*saved_model)
    engine.open(7)
    for samples, message in ((np.zeros(800, dtype=np.int16), r"7: integer samples \(int16\)"),
                             (["a", "b"], "7: samples must be float"), ([[0.1], [0.2, 0.3]], "7: samples are not an array")):
        with pytest.raises(StreamError, match=message):
            engine.accept(7, samples)
    assert not engine.streams[7].pending  # nothing queued
