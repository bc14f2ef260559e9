import shutil

import numpy as np
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


def test_unmatched_and_broken_items_are_reported(synthetic_librispeech, tmp_path):
    corpus = tmp_path / "LibriSpeech"
    shutil.copytree(synthetic_librispeech / "dev-clean", corpus / "dev-clean")
    chapter = next((corpus / "dev-clean").glob("*/*"))
    speaker, chapter_id = chapter.parent.name, chapter.name
    trans = chapter / f"{speaker}-{chapter_id}.trans.txt"
    lines = trans.read_text().splitlines()
    first, second, third = (line.split()[0] for line in lines[:3])
    (chapter / f"{first}.flac").unlink()  # transcript line without audio
    lines[1] = second  # empty transcript
    trans.write_text("\n".join(lines) + "\n")
    (chapter / f"{third}.flac").write_bytes(b"not a flac file")  # corrupt audio
    soundfile.write(chapter / f"{speaker}-{chapter_id}-0099.flac", np.zeros(1600, dtype=np.float32), 16000)  # no line
    report = prepare(corpus, "dev-clean", tmp_path / "data")
    reasons = {key: reason for key, reason, _ in report.rejected}
    assert reasons[first] == "no audio file"
    assert reasons[second] == "empty transcript"
    assert reasons[third].startswith("unreadable audio")
    assert reasons[f"{speaker}-{chapter_id}-0099"] == "no transcript line"
    assert report.kept == 8 - 3
    rejected = (tmp_path / "data" / "rejected.txt").read_text().splitlines()
    assert len(rejected) == 4 and all(len(line.split("\t")) == 3 for line in rejected)
    assert "rejected 4" in report.summary()
