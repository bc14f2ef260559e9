"""LibriSpeech layout -> Kaldi-style data dirs, with a report of what was rejected and why.

    python local/data_prep.py --librispeech_root downloads/LibriSpeech \
        --subset train-clean-100 --out data/train_clean_100

Writes ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``, ``utt2dur`` (sorted by
utterance id), ``rejected.txt`` (one line per rejected item: id, reason,
path) and ``notes.txt`` (kept, but changed or unusual: id, note, path).
Nothing is dropped without a line there and a count in the log's one-line
summary. The outcomes (README, "Troubleshooting"):

- rejected: unreadable (corrupt) audio, zero-length audio, audio without a
  transcript line (or file), a transcript line without audio, an empty
  transcript, a duplicate transcript line, a transcript file not in UTF-8;
- kept with a note: another sample rate (resampled to 16 kHz by the feature
  stage and the decoders), several channels (downmixed by averaging),
  non-ASCII characters in a transcript (kept, NFC-normalised and upper-cased),
  utterances longer than ``--long_seconds`` (kept; ESPnet batches them by length).
"""

import argparse
import collections
import logging
import pathlib
import unicodedata
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".flac", ".wav")
LONG_SECONDS = 35.0  # LibriSpeech's longest utterances are ~35 s


@dataclass
class PrepReport:
    kept: int = 0
    rejected: List[Tuple[str, str, str]] = field(default_factory=list)  # (id, reason, path)
    notes: List[Tuple[str, str, str]] = field(default_factory=list)  # kept, but changed later (resampled, ...)

    def counts(self) -> Dict[str, int]:
        return dict(collections.Counter(reason for _, reason, _ in self.rejected))

    def note_counts(self) -> Dict[str, int]:
        return dict(collections.Counter(note.split(":")[0] for _, note, _ in self.notes))

    def summary(self) -> str:
        rejected = ", ".join(f"{count} {reason}" for reason, count in sorted(self.counts().items())) or "none"
        notes = ", ".join(f"{count} {note}" for note, count in sorted(self.note_counts().items())) or "none"
        return f"kept {self.kept} utterances (notes: {notes}); rejected {len(self.rejected)} ({rejected})"


def read_transcripts(path: pathlib.Path, report: PrepReport) -> Dict[str, str]:
    """``<utt> WORDS...`` lines of a ``*.trans.txt`` (UTF-8); bad lines are reported."""
    transcripts = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        report.rejected.append((path.name, f"transcript file not UTF-8 ({error.reason})", str(path)))
        return transcripts
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        utterance = parts[0]
        if len(parts) == 1 or not parts[1].strip():
            report.rejected.append((utterance, "empty transcript", f"{path}:{number}"))
            continue
        if utterance in transcripts:
            report.rejected.append((utterance, "duplicate transcript line", f"{path}:{number}"))
            continue
        transcripts[utterance] = " ".join(unicodedata.normalize("NFC", parts[1]).split()).upper()
    return transcripts


def audio_info(path: pathlib.Path):
    import soundfile

    return soundfile.info(str(path))


def prepare(
    librispeech_root: pathlib.Path, subsets, out: pathlib.Path, long_seconds: float = LONG_SECONDS
) -> PrepReport:
    """One data dir from one or more subsets (e.g. the three training subsets of LibriSpeech 960 h)."""
    subsets = [subsets] if isinstance(subsets, str) else list(subsets)
    chapter_dirs = []
    for subset in subsets:
        subset_dir = librispeech_root / subset
        if not subset_dir.is_dir():
            raise FileNotFoundError(
                f"{subset_dir}: no such subset folder (expected LibriSpeech/<subset>/<speaker>/<chapter>/)"
            )
        chapter_dirs += sorted(p for p in subset_dir.glob("*/*") if p.is_dir())
    report = PrepReport()
    entries = {}
    for chapter_dir in chapter_dirs:
        speaker, chapter = chapter_dir.parent.name, chapter_dir.name
        trans = chapter_dir / f"{speaker}-{chapter}.trans.txt"
        transcripts = read_transcripts(trans, report) if trans.is_file() else {}
        if not trans.is_file():
            report.rejected.append((f"{speaker}-{chapter}", "no transcript file", str(trans)))
        audio = {p.stem: p for p in chapter_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES}
        already_reported = {key for key, _, _ in report.rejected}  # e.g. an empty transcript line
        for utterance in sorted(set(audio) - set(transcripts) - already_reported):
            if trans.is_file():
                report.rejected.append((utterance, "no transcript line", str(audio[utterance])))
            else:
                report.rejected.append((utterance, "no transcript file", str(audio[utterance])))
        for utterance in sorted(set(transcripts) - set(audio)):
            report.rejected.append((utterance, "no audio file", str(chapter_dir / f"{utterance}.flac")))
        for utterance in sorted(set(transcripts) & set(audio)):
            path = audio[utterance]
            if path.stat().st_size == 0:  # e.g. a truncated copy
                report.rejected.append((utterance, "zero-length audio (empty file)", str(path)))
                continue
            try:
                info = audio_info(path)
            except Exception as error:  # soundfile raises its own error types for corrupt files
                report.rejected.append((utterance, f"unreadable audio ({type(error).__name__})", str(path)))
                continue
            if info.frames == 0:
                report.rejected.append((utterance, "zero-length audio (no samples)", str(path)))
                continue
            if info.samplerate != 16000:
                report.notes.append((utterance, f"resampled: {info.samplerate} Hz to 16000 Hz", str(path)))
            if info.channels != 1:
                report.notes.append((utterance, f"downmixed: {info.channels} channels to 1", str(path)))
            text = transcripts[utterance]
            foreign = sorted({c for c in text if ord(c) > 127})
            if foreign:
                report.notes.append((utterance, f"non-ASCII: kept {''.join(foreign)}", str(path)))
            seconds = info.frames / info.samplerate
            if seconds > long_seconds:
                report.notes.append((utterance, f"long: {seconds:.1f} s, kept", str(path)))
            entries[utterance] = (path, text, speaker, seconds)
    report.kept = len(entries)
    write_data_dir(out, entries, report)
    log.info("%s: %s", " + ".join(subsets), report.summary())
    return report


def write_data_dir(out: pathlib.Path, entries: Dict, report: PrepReport) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted(entries)
    files = {
        "wav.scp": [f"{k} {entries[k][0].resolve()}" for k in keys],
        "text": [f"{k} {entries[k][1]}" for k in keys],
        "utt2spk": [f"{k} {entries[k][2]}" for k in keys],
        "utt2dur": [f"{k} {entries[k][3]:.3f}" for k in keys],
    }
    speakers = collections.defaultdict(list)
    for key in keys:
        speakers[entries[key][2]].append(key)
    files["spk2utt"] = [f"{speaker} {' '.join(utts)}" for speaker, utts in sorted(speakers.items())]
    files["rejected.txt"] = [f"{i}\t{reason}\t{path}" for i, reason, path in report.rejected]
    files["notes.txt"] = [f"{i}\t{note}\t{path}" for i, note, path in report.notes]
    for name, lines in files.items():
        temporary = out / f".{name}.tmp"
        temporary.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        temporary.replace(out / name)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--librispeech_root", type=pathlib.Path, required=True, help="the LibriSpeech/ folder")
    parser.add_argument("--subset", nargs="+", required=True, help="e.g. train-clean-100 (several: one data dir)")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="data dir to write")
    parser.add_argument("--long_seconds", type=float, default=LONG_SECONDS, help="note utterances longer than this")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (data_prep) %(message)s")
    report = prepare(args.librispeech_root, args.subset, args.out, args.long_seconds)
    if report.kept == 0:
        raise SystemExit(f"{' '.join(args.subset)}: no usable utterance under {args.librispeech_root}; see {args.out}/rejected.txt")


if __name__ == "__main__":
    main()
