"""Many concurrent streams through one model, advanced together a step at a time.

    engine = StreamingEngine("exp/asr_amortized/config.yaml", "exp/asr_amortized/valid.loss.ave.pth",
                             compute_budget=0.35, beam_size=4)
    engine.open("call-17")
    engine.accept("call-17", samples)                 # 16 kHz float samples, any piece size
    engine.accept("call-17", last, is_final=True)     # the last piece (may be empty)
    partials = engine.step()                          # every stream with new audio, in one batch
    text = engine.close("call-17")                    # once engine.finished("call-17")

Streams open and close at any time. ``step`` takes the audio each stream has
received since the last step and runs the streaming fbank (one Kaldi fbank
call for all streams, once a stream's audio completes the encoder's next chunk), the
encoder's ``forward_streams`` (one chunk of every ready stream per batch: the
executing frames of all streams are gathered per unit, so the frames that the
arbitrator skips shrink the batched products) and the search's
``step_streams`` (one joint and one prediction-network call per symbol for all
hypotheses of all streams). Each stream keeps its own fbank buffer, encoder
state (caches, position) and hypotheses, so its result is that of decoding it
alone with ``Speech2TextStreaming`` (the same texts in tests/test_engine.py; a
batched matrix product may differ from one stream's in a float's last bits). Bad input to one stream
is a ``StreamError`` naming it, raised by ``accept`` before anything changes:
the other streams go on.
"""

import time
from dataclasses import dataclass, field
from typing import Any, Dict, Hashable, List

import numpy as np
import torch

from espnet_amortized.streaming import SAMPLE_RATE, Speech2TextStreaming, StreamingFbank, fbank_streams


class StreamError(ValueError):
    """Bad input to one stream (the message names it); the engine and its other streams are unaffected."""

    def __init__(self, stream_id: Hashable, message: str):
        super().__init__(f"stream {stream_id!r}: {message}")
        self.stream_id = stream_id


@dataclass
class _Stream:
    fbank: StreamingFbank
    encoder_state: Dict
    search_state: Any
    pending: List[torch.Tensor] = field(default_factory=list)  # samples accepted since the last step
    final: bool = False  # the last piece was accepted
    finished: bool = False  # ... and went through the model


class StreamingEngine:
    """Concurrent streaming recognition with one model; the options are ``Speech2TextStreaming``'s."""

    def __init__(self, asr_train_config, asr_model_file, **options):
        self.recognizer = Speech2TextStreaming(asr_train_config, asr_model_file, **options)
        # Search MACs are per utterance in Speech2TextStreaming; batched over streams they are not separable.
        self.recognizer.search_macs.detach()
        self.model = self.recognizer.model
        self.search = self.recognizer.search
        self.streams: Dict[Hashable, _Stream] = {}
        # Wall-clock seconds per part of ``step``, summed over the engine's life.
        self.seconds = {"features": 0.0, "encoder": 0.0, "search": 0.0}

    def open(self, stream_id: Hashable) -> None:
        if stream_id in self.streams:
            raise StreamError(stream_id, "already open (close it first)")
        self.streams[stream_id] = _Stream(StreamingFbank(), self.model.encoder.init_state(), self.search.init_state())

    def _stream(self, stream_id: Hashable) -> _Stream:
        if stream_id not in self.streams:
            raise StreamError(stream_id, "unknown stream (open it first)")
        return self.streams[stream_id]

    def accept(self, stream_id: Hashable, samples, is_final: bool = False, sample_rate: int = SAMPLE_RATE) -> None:
        """Queue a piece of 16 kHz mono float samples in [-1, 1] for the next ``step``; ``is_final`` with the
        last one (which may be empty). A bad piece is refused whole, with nothing queued."""
        stream = self._stream(stream_id)
        if stream.final:
            raise StreamError(stream_id, "audio after the final piece")
        if sample_rate != SAMPLE_RATE:
            raise StreamError(stream_id, f"sample rate {sample_rate} Hz; the model takes {SAMPLE_RATE} Hz (resample first)")
        try:
            audio = np.asarray(samples)
        except (TypeError, ValueError) as error:
            raise StreamError(stream_id, f"samples are not an array of numbers ({error})") from error
        if audio.dtype.kind not in "fiu":
            raise StreamError(stream_id, f"samples must be float in [-1, 1], got dtype {audio.dtype}")
        if audio.dtype.kind in "iu":
            raise StreamError(stream_id, f"integer samples ({audio.dtype}): scale them to float in [-1, 1] first")
        audio = audio.astype(np.float32, copy=False)
        if audio.ndim != 1:
            raise StreamError(stream_id, f"audio must be 1-D mono samples, got shape {audio.shape}")
        if audio.size == 0 and not is_final:
            raise StreamError(stream_id, "empty piece (only the final piece may be empty)")
        bad = int(np.count_nonzero(~np.isfinite(audio)))
        if bad:
            raise StreamError(stream_id, f"{bad} of {audio.size} samples are NaN or infinite; piece refused")
        stream.pending.append(torch.from_numpy(audio.copy()))
        stream.final = bool(is_final)

    @torch.no_grad()
    def step(self) -> Dict[Hashable, str]:
        """Advance every stream with queued audio (or a final piece to flush) by what it received, all in one
        batch; returns their hypotheses so far."""
        ids = [sid for sid, stream in self.streams.items() if stream.pending or (stream.final and not stream.finished)]
        if not ids:
            return {}
        streams = [self.streams[sid] for sid in ids]
        start = time.perf_counter()
        pieces = []
        for stream in streams:
            pieces.append(torch.cat(stream.pending) if stream.pending else torch.zeros(0))
            stream.pending = []
        wanted = [self.recognizer.frames_wanted(stream.encoder_state, stream.final) for stream in streams]
        features = fbank_streams([s.fbank for s in streams], pieces, wanted)
        # Streams whose next chunk is not complete yet keep their samples for a later step: nothing to run.
        running = [(stream, self.recognizer.normalize(f)) for stream, f in zip(streams, features) if f.size(0) or stream.final]
        encoded_at = time.perf_counter()
        encoded = self.model.encoder.forward_streams(
            [f for _, f in running], [stream.encoder_state for stream, _ in running], [stream.final for stream, _ in running]
        )
        search_at = time.perf_counter()
        self.search.step_streams([stream.search_state for stream, _ in running], [out[0] for out in encoded])
        done = time.perf_counter()
        self.seconds["features"] += encoded_at - start
        self.seconds["encoder"] += search_at - encoded_at
        self.seconds["search"] += done - search_at
        for stream in streams:
            stream.finished = stream.final
        return {sid: self.text(sid) for sid in ids}

    def text(self, stream_id: Hashable) -> str:
        """The stream's best hypothesis so far."""
        return self.recognizer.to_text(self.search.best_tokens(self._stream(stream_id).search_state))

    def finished(self, stream_id: Hashable) -> bool:
        """Whether the stream's final piece went through the model (its text is final)."""
        return self._stream(stream_id).finished

    def compute_report(self, stream_id: Hashable):
        """MACs of what the encoder ran for the stream so far (compute.count_streaming_macs), or None before
        its first chunk."""
        from espnet_amortized.compute import count_streaming_macs

        state = self._stream(stream_id).encoder_state
        return count_streaming_macs(self.model.encoder, state) if state["gates"] else None

    def close(self, stream_id: Hashable) -> str:
        """Forget the stream (finished or not: a client that hangs up); returns its last hypothesis."""
        text = self.text(stream_id)
        del self.streams[stream_id]
        return text
