import re

import soundfile

from make_synthetic_librispeech import SIZES, SUBSETS, make_sentence, make_speakers, vocabulary


def _speaker_table(root):
    rows = [line.split("|") for line in (root / "SPEAKERS.TXT").read_text().splitlines() if not line.startswith(";")]
    return {int(row[0]): row[2].strip() for row in rows}


def test_layout_matches_librispeech(synthetic_librispeech):
    root = synthetic_librispeech
    assert root.name == "LibriSpeech"
    total = 0
    for subset in SUBSETS:
        speakers, chapters, per_chapter = SIZES["tiny"][subset]
        flacs = sorted((root / subset).glob("*/*/*.flac"))
        assert len(flacs) == speakers * chapters * per_chapter
        total += len(flacs)
        for flac in flacs:
            speaker, chapter = flac.parent.parent.name, flac.parent.name
            assert re.fullmatch(rf"{speaker}-{chapter}-\d{{4}}\.flac", flac.name)
            info = soundfile.info(str(flac))
            assert info.samplerate == 16000 and info.channels == 1 and info.format == "FLAC"
        for trans in (root / subset).glob("*/*/*.trans.txt"):
            keys = [line.split()[0] for line in trans.read_text().splitlines()]
            assert keys == sorted(f.stem for f in trans.parent.glob("*.flac"))
            assert all(line.split(maxsplit=1)[1].isupper() for line in trans.read_text().splitlines())
    assert total == 72
    chapters_txt = (root / "CHAPTERS.TXT").read_text().splitlines()
    assert chapters_txt[0].startswith(";ID") and len(chapters_txt) == 1 + sum(s * c for s, c, _ in SIZES["tiny"].values())


def test_speakers_are_disjoint_between_subsets(synthetic_librispeech):
    table = _speaker_table(synthetic_librispeech)
    for subset in SUBSETS:
        on_disk = {int(p.name) for p in (synthetic_librispeech / subset).iterdir()}
        assert on_disk == {speaker for speaker, s in table.items() if s == subset}
    voices = make_speakers("default", seed=0)
    by_subset = {subset: {s.voice for s in speakers} for subset, speakers in voices.items()}
    for a in SUBSETS:
        for b in SUBSETS:
            if a < b:
                assert not by_subset[a] & by_subset[b]
    assert all(s.noise_snr_db for s in voices["test-other"]) and not any(s.noise_snr_db for s in voices["test-clean"])
    assert min(s.rate for s in voices["test-other"]) > max(s.rate for s in voices["test-clean"])


def test_test_sentences_are_new_but_their_words_are_not(synthetic_librispeech):
    def sentences(subset):
        return {
            line.split(maxsplit=1)[1]
            for trans in (synthetic_librispeech / subset).glob("*/*/*.trans.txt")
            for line in trans.read_text().splitlines()
        }

    train = sentences("train-clean-100")
    words = set(vocabulary())
    for subset in ("dev-clean", "test-clean", "test-other"):
        assert not sentences(subset) & train
        assert {w.lower() for s in sentences(subset) for w in s.split()} <= words


def test_generation_is_deterministic(synthetic_librispeech, tmp_path):
    import random

    from make_synthetic_librispeech import synthesize

    assert make_speakers("tiny", 0) == make_speakers("tiny", 0) != make_speakers("tiny", 1)
    assert [make_sentence(random.Random(5)) for _ in range(3)] == [make_sentence(random.Random(5)) for _ in range(3)]
    speaker = make_speakers("tiny", 0)["test-other"][0]
    first, second = synthesize(speaker, "the red cat", 7), synthesize(speaker, "the red cat", 7)
    assert (first == second).all() and first.size > 1000
