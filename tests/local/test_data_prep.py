import pathlib
import shutil

import numpy as np
import pytest
import soundfile

from data_prep import prepare


def test_tiny_corpus_to_kaldi_data_dir(synthetic_librispeech, tmp_path):
    report = prepare(synthetic_librispeech, "train-clean-100", tmp_path)
    assert report.kept == 48 and not report.rejected
    keys = [line.split()[0] for line in (tmp_path / "wav.scp").read_text().splitlines()]
    assert keys == sorted(keys) and len(keys) == 48
    for name in ("text", "utt2spk", "utt2dur"):
        assert [line.split()[0] for line in (tmp_path / name).read_text().splitlines()] == keys
    spk2utt = {line.split()[0]: line.split()[1:] for line in (tmp_path / "spk2utt").read_text().splitlines()}
    assert sorted(u for utts in spk2utt.values() for u in utts) == keys
    utt2spk = dict(line.split() for line in (tmp_path / "utt2spk").read_text().splitlines())
    assert all(utt2spk[u] == s for s, utts in spk2utt.items() for u in utts)
    first_path = (tmp_path / "wav.scp").read_text().splitlines()[0].split(maxsplit=1)[1]
    assert " " in first_path  # the fixture's folder has a space; the path stays whole
    duration = float((tmp_path / "utt2dur").read_text().split()[1])
    assert abs(duration - soundfile.info(first_path).duration) < 1e-3


# One messy corpus in the LibriSpeech layout, under a path with spaces: each case and its outcome.
# (kind: "rejected" -> reason in rejected.txt; "note" -> kept, note category in notes.txt)
CASES = {
    "corrupt_flac": ("rejected", "unreadable audio"),
    "zero_length": ("rejected", "zero-length audio"),
    "zero_samples": ("rejected", "zero-length audio"),
    "no_transcript_line": ("rejected", "no transcript line"),
    "no_audio": ("rejected", "no audio file"),
    "empty_transcript": ("rejected", "empty transcript"),
    "rate_8k": ("note", "resampled"),
    "rate_44k": ("note", "resampled"),
    "stereo": ("note", "downmixed"),
    "non_ascii": ("note", "non-ASCII"),
    "sixty_seconds": ("note", "long"),
}


@pytest.fixture(scope="module")
def messy(synthetic_librispeech, tmp_path_factory):
    root = tmp_path_factory.mktemp("messy corpus") / "Libri Speech copy"
    shutil.copytree(synthetic_librispeech / "dev-clean", root / "dev-clean")
    chapter = sorted((root / "dev-clean").glob("*/*"))[0]
    speaker, chapter_id = chapter.parent.name, chapter.name
    trans = chapter / f"{speaker}-{chapter_id}.trans.txt"
    lines = dict(line.split(maxsplit=1) for line in trans.read_text().splitlines())
    ids = {}
    rng = np.random.default_rng(0)

    def new_utterance(case, text="A NEW SENTENCE"):
        key = f"{speaker}-{chapter_id}-{9000 + len(ids):04d}"
        ids[case] = key
        lines[key] = text
        return chapter / f"{key}.flac"

    new_utterance("corrupt_flac").write_bytes(b"not a flac file")
    new_utterance("zero_length").write_bytes(b"")
    soundfile.write(new_utterance("zero_samples").with_suffix(".wav"), np.zeros(0, dtype=np.float32), 16000)
    soundfile.write(new_utterance("no_transcript_line"), np.zeros(1600, dtype=np.float32), 16000)
    del lines[ids["no_transcript_line"]]
    new_utterance("no_audio")  # a line, no file
    soundfile.write(new_utterance("empty_transcript", ""), rng.standard_normal(16000).astype(np.float32) * 0.1, 16000)
    soundfile.write(new_utterance("rate_8k"), rng.standard_normal(8000).astype(np.float32) * 0.1, 8000)
    soundfile.write(new_utterance("rate_44k"), rng.standard_normal(44100).astype(np.float32) * 0.1, 44100)
    soundfile.write(new_utterance("stereo"), rng.standard_normal((16000, 2)).astype(np.float32) * 0.1, 16000)
    soundfile.write(new_utterance("non_ascii", "THE CAFÉ NAÏVE"), rng.standard_normal(16000).astype(np.float32) * 0.1, 16000)
    soundfile.write(new_utterance("sixty_seconds"), rng.standard_normal(60 * 16000).astype(np.float32) * 0.1, 16000)
    trans.write_text("".join(f"{key} {text}".rstrip() + "\n" for key, text in sorted(lines.items())), encoding="utf-8")
    out = root.parent / "data dir"
    report = prepare(root, "dev-clean", out)
    return report, out, ids, root


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_bad_input_has_its_defined_outcome(messy, case):
    report, out, ids, _ = messy
    kind, outcome = CASES[case]
    key = ids[case]
    rejected = {k: reason for k, reason, _ in report.rejected}
    notes = {k: note for k, note, _ in report.notes}
    kept = {line.split(maxsplit=1)[0] for line in (out / "wav.scp").read_text(encoding="utf-8").splitlines()}
    if kind == "rejected":
        assert rejected[key].startswith(outcome) and key not in kept
        assert any(line.startswith(f"{key}\t{outcome}") for line in (out / "rejected.txt").read_text(encoding="utf-8").splitlines())
    else:
        assert key in kept and key not in rejected and notes[key].startswith(outcome + ":")
        assert any(line.startswith(f"{key}\t{outcome}:") for line in (out / "notes.txt").read_text(encoding="utf-8").splitlines())


def test_nothing_is_dropped_without_a_report(messy, synthetic_librispeech):
    report, out, ids, root = messy
    audio = {p.stem for p in (root / "dev-clean").rglob("*") if p.suffix in (".flac", ".wav")}
    lines = {line.split()[0] for t in (root / "dev-clean").rglob("*.trans.txt") for line in t.read_text(encoding="utf-8").splitlines()}
    kept = {line.split(maxsplit=1)[0] for line in (out / "wav.scp").read_text().splitlines()}
    rejected = {key for key, _, _ in report.rejected}
    assert audio | lines == kept | rejected and not kept & rejected
    assert report.kept == len(kept) == 8 + 5
    assert report.summary() == (
        "kept 13 utterances (notes: 1 downmixed, 1 long, 1 non-ASCII, 2 resampled); rejected 6 "
        "(1 empty transcript, 1 no audio file, 1 no transcript line, 1 unreadable audio (LibsndfileError), "
        "1 zero-length audio (empty file), 1 zero-length audio (no samples))"
    )


def test_transcripts_keep_non_ascii_text_and_paths_keep_their_spaces(messy):
    report, out, ids, root = messy
    text = dict(line.split(maxsplit=1) for line in (out / "text").read_text(encoding="utf-8").splitlines())
    assert text[ids["non_ascii"]] == "THE CAFÉ NAÏVE"
    wav = dict(line.split(maxsplit=1) for line in (out / "wav.scp").read_text(encoding="utf-8").splitlines())
    assert "Libri Speech copy" in wav[ids["stereo"]] and pathlib.Path(wav[ids["stereo"]]).is_file()


def test_features_of_resampled_downmixed_and_long_audio(messy, tmp_path):
    import kaldiio

    from features import extract, fbank, read_audio

    _, out, ids, _ = messy
    scp = extract(out, tmp_path / "dump dir", nj=2)
    features = dict(kaldiio.load_scp_sequential(str(scp)))
    for case, seconds in (("rate_8k", 1.0), ("rate_44k", 1.0), ("stereo", 1.0), ("sixty_seconds", 60.0)):
        frames, bins = features[ids[case]].shape
        assert bins == 80 and frames == 1 + (int(seconds * 16000) - 400) // 160  # 25 ms windows every 10 ms at 16 kHz
        assert np.isfinite(features[ids[case]]).all()
    wav = dict(line.split(maxsplit=1) for line in (out / "wav.scp").read_text(encoding="utf-8").splitlines())
    mono = soundfile.read(wav[ids["stereo"]], dtype="float32")[0].mean(axis=1)
    np.testing.assert_allclose(features[ids["stereo"]], fbank(read_audio(wav[ids["stereo"]])), atol=1e-5)
    assert read_audio(wav[ids["stereo"]]).numpy() == pytest.approx(mono, abs=1e-7)
