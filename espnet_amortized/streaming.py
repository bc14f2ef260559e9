"""Chunk-by-chunk speech recognition with the amortized encoder (in the spirit of ESPnet's
``Speech2TextStreaming``, which supports neither transducers nor this encoder).

    s2t = Speech2TextStreaming("exp/asr_amortized/config.yaml", "exp/asr_amortized/valid.loss.ave.pth")
    for piece in pieces_of_16khz_audio:
        partial = s2t(piece)            # hypothesis so far
    final = s2t(np.zeros(0), is_final=True)
    s2t.reset()                         # next utterance

Audio goes through a streaming Kaldi fbank (identical to the whole-signal
fbank), the model's normalisation, ``encoder.forward_chunk`` (its cache and
sparse execution) and a frame-synchronous transducer search (greedy for
``beam_size: 1``, else beam search; search.py; ``length_bonus`` rewards each
emitted label in both). The model must take fbank
features (the recipe's models: ``input_size`` set, no frontend).
"""

import time
from typing import List, Optional

import numpy as np
import torch

from espnet_amortized import register
from espnet_amortized._espnet import text_converters
from espnet_amortized.checks import load_asr_model, set_compute_knobs
from espnet_amortized.compute import SearchMacCounter
from espnet_amortized.search import BeamTransducerSearch, GreedyTransducerSearch

register()

SAMPLE_RATE = 16000
WINDOW, SHIFT = 400, 160  # 25 ms / 10 ms at 16 kHz


def kaldi_fbank(samples: torch.Tensor, num_mel_bins: int = 80) -> torch.Tensor:
    """The recipe's features (local/features.py): Kaldi fbank of float samples in [-1, 1]."""
    import torchaudio

    return torchaudio.compliance.kaldi.fbank(
        samples.unsqueeze(0) * 32768.0, num_mel_bins=num_mel_bins, sample_frequency=SAMPLE_RATE,
        dither=0.0, energy_floor=0.0,
    )


def load_audio(path: str, changes: Optional[list] = None) -> np.ndarray:
    """16 kHz mono float samples of a file, as the recipe's feature stage reads it.

    Several channels are averaged and another sample rate is resampled to
    16 kHz (data prep lists such files in ``notes.txt``); each change is
    appended to ``changes`` (``"resampled"``, ``"downmixed"``) so that decoders
    can count them. An unreadable file raises an error naming it.
    """
    import soundfile

    try:
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile has its own error types for corrupt files
        raise ValueError(f"{path}: unreadable audio ({type(error).__name__}: {error})") from error
    if audio.shape[1] > 1 and changes is not None:
        changes.append("downmixed")
    samples = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        import torchaudio

        if changes is not None:
            changes.append("resampled")
        samples = torchaudio.functional.resample(torch.from_numpy(samples), rate, SAMPLE_RATE).numpy()
    return samples


class StreamingFbank:
    """Fbank frames as audio arrives; every frame is computed once, from its own 25 ms window."""

    def __init__(self, num_mel_bins: int = 80):
        self.num_mel_bins = num_mel_bins
        self.buffer = torch.zeros(0)

    def take(self, samples: torch.Tensor, min_frames: int = 1) -> Optional[torch.Tensor]:
        """Buffer samples; returns the samples of every frame now complete (taken from the buffer), or None
        while fewer than ``min_frames`` frames are complete."""
        self.buffer = torch.cat([self.buffer, samples.float()]) if samples.numel() else self.buffer
        if self.buffer.numel() < WINDOW:
            return None
        frames = 1 + (self.buffer.numel() - WINDOW) // SHIFT
        if frames < min_frames:
            return None
        segment = self.buffer[: (frames - 1) * SHIFT + WINDOW]
        self.buffer = self.buffer[frames * SHIFT :]
        return segment

    def accept(self, samples: torch.Tensor, min_frames: int = 1) -> torch.Tensor:
        """The fbank frames of every frame now complete ((0, bins) while fewer than ``min_frames``)."""
        return fbank_streams([self], [samples], [min_frames])[0]


def fbank_streams(
    fbanks: List[StreamingFbank], pieces: List[torch.Tensor], min_frames: Optional[List[int]] = None
) -> List[torch.Tensor]:
    """Each stream's new fbank frames (T_n, num_mel_bins) for its new samples, from one Kaldi fbank call;
    none for a stream while fewer than its ``min_frames`` are complete (its samples stay buffered).

    The streams' complete windows are laid end to end, each stream's from a multiple of the frame shift,
    so that every frame of a stream is a frame of the joint signal (a Kaldi fbank frame depends on its own
    25 ms only); the frames that straddle two streams are dropped.
    """
    min_frames = [1] * len(fbanks) if min_frames is None else min_frames
    segments = [fbank.take(samples, least) for fbank, samples, least in zip(fbanks, pieces, min_frames)]
    bins = fbanks[0].num_mel_bins if fbanks else 80
    parts, starts, offset = [], [], 0
    for segment in segments:
        starts.append(offset // SHIFT)
        if segment is None:
            continue
        padded = -(-segment.numel() // SHIFT) * SHIFT
        parts += [segment, segment.new_zeros(padded - segment.numel())]
        offset += padded
    features = kaldi_fbank(torch.cat(parts), bins) if parts else None
    return [
        torch.zeros(0, bins) if segment is None else features[start : start + 1 + (segment.numel() - WINDOW) // SHIFT]
        for segment, start in zip(segments, starts)
    ]


class Speech2TextStreaming:
    def __init__(
        self,
        asr_train_config,
        asr_model_file,
        gate_threshold: Optional[float] = None,
        chunk_size: Optional[int] = None,
        compute_budget: Optional[float] = None,
        frozen_units: Optional[dict] = None,
        beam_size: int = 1,
        max_symbols_per_frame: int = 4,
        score_norm: bool = False,
        length_bonus: float = 0.0,
        device: str = "cpu",
    ):
        model, args = load_asr_model(asr_train_config, asr_model_file, device)
        if model.frontend is not None:
            raise ValueError(
                f"{asr_train_config}: streaming needs a model trained on fbank features (input_size set, "
                "no frontend), as the recipe trains them"
            )
        if model.normalize is not None and type(model.normalize).__name__ != "GlobalMVN":
            raise ValueError(
                f"{asr_train_config}: normalize {type(model.normalize).__name__} needs the whole utterance; "
                "streaming needs global_mvn (the recipe's) or none"
            )
        if not hasattr(model.encoder, "forward_chunk"):
            raise ValueError(f"{asr_train_config}: encoder {type(model.encoder).__name__} cannot stream")
        if getattr(model, "joint_network", None) is None:
            raise ValueError(f"{asr_train_config}: not a transducer model")
        set_compute_knobs(model.encoder, gate_threshold, compute_budget, frozen_units)
        if chunk_size is not None:  # meaningful for models trained with dynamic_chunk_training
            if chunk_size <= 0:
                raise ValueError(f"chunk_size must be > 0 (encoder frames), got {chunk_size}")
            model.encoder.chunk_size = chunk_size
        model.decoder.set_device(torch.device(device))
        self.model = model
        self.tokenizer, self.converter = text_converters(args.token_type, args.bpemodel, args.token_list)
        if beam_size == 1:
            self.search = GreedyTransducerSearch(
                model.decoder, model.joint_network, model.blank_id, max_symbols_per_frame, length_bonus=length_bonus
            )
        else:
            self.search = BeamTransducerSearch(
                model.decoder, model.joint_network, model.blank_id, beam_size, max_symbols_per_frame, score_norm,
                length_bonus=length_bonus,
            )
        self.search_macs = SearchMacCounter(model.decoder, model.joint_network).attach()
        self.reset()

    def reset(self) -> None:
        self.search_macs.reset()  # prediction + joint network MACs of this utterance (its initial step included)
        self.fbank = StreamingFbank()
        self.encoder_seconds = 0.0  # time in encoder.forward_chunk for this utterance
        self.encoder_state = self.model.encoder.init_state()
        self.search_state = self.search.init_state()

    def frames_wanted(self, encoder_state, is_final: bool) -> int:
        """The fbank frames to hold back for: those the encoder's next chunk needs (all at the end). Kaldi
        fbank's per-call cost is mostly fixed, so a 640 ms chunk's features in one call instead of one per
        160 ms piece; the encoder runs nothing before its chunk is complete, so results and latency are
        unchanged."""
        return 1 if is_final else max(1, self.model.encoder.feature_frames_wanted(encoder_state))

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        features = features.unsqueeze(0)
        if self.model.normalize is not None and features.size(1) > 0:
            features, _ = self.model.normalize(features, torch.tensor([features.size(1)]))
        return features

    def compute_report(self):
        """MACs of what the encoder ran for the current utterance (see compute.count_macs)."""
        from espnet_amortized.compute import count_streaming_macs

        if not self.encoder_state["gates"]:
            return None
        return count_streaming_macs(self.model.encoder, self.encoder_state)

    def to_text(self, token_ids) -> str:
        return self.tokenizer.tokens2text(self.converter.ids2tokens(token_ids))

    def text(self) -> str:
        return self.to_text(self.search.best_tokens(self.search_state))

    @torch.no_grad()
    def __call__(self, samples, is_final: bool = False) -> str:
        """Feed 16 kHz samples (float in [-1, 1]); returns the hypothesis so far."""
        samples = torch.as_tensor(np.asarray(samples, dtype=np.float32))
        features = self.normalize(self.fbank.accept(samples, self.frames_wanted(self.encoder_state, is_final)))
        start = time.perf_counter()
        encoded, self.encoder_state = self.model.encoder.forward_chunk(features, self.encoder_state, is_final=is_final)
        self.encoder_seconds += time.perf_counter() - start
        self.search.step(self.search_state, encoded[0])
        return self.text()

    @torch.no_grad()
    def decode_offline(self, samples) -> str:
        """The same model and search on the whole utterance at once (full forward with the chunk mask)."""
        features = self.normalize(kaldi_fbank(torch.as_tensor(np.asarray(samples, dtype=np.float32))))
        encoded, _, _ = self.model.encoder(features, torch.tensor([features.size(1)]))
        return self.to_text(self.search.best_tokens(self.search.step(self.search.init_state(), encoded[0])))
