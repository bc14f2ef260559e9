import collections
import random
import re
import subprocess

import numpy as np
import pytest
import soundfile

import make_synthetic_librispeech as corpus
from make_synthetic_librispeech import (
    CONDITIONS,
    RARE_WORDS,
    SIZES,
    SUBSETS,
    TEMPLATES,
    make_sentence,
    make_speakers,
    read_conditions,
    vocabulary,
)


def _speaker_table(root):
    rows = [line.split("|") for line in (root / "SPEAKERS.TXT").read_text().splitlines() if not line.startswith(";")]
    return {int(row[0]): (row[2].strip(), row[4].strip()) for row in rows}


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
    assert len(read_conditions(root)) == total
    assert (root / "VERSION").read_text().strip() == corpus.version_stamp("tiny", 0)


def test_no_digital_silence_in_any_file(synthetic_librispeech):
    for subset in SUBSETS:
        for flac in (synthetic_librispeech / subset).glob("*/*/*.flac"):
            samples, _ = soundfile.read(str(flac), dtype="int16")
            assert np.mean(samples == 0) < 0.01, f"{flac.name}: {np.mean(samples == 0):.2%} exact-zero samples"
            # No run of 10 ms of identical samples (what espeak-ng writes between words).
            runs = np.diff(np.flatnonzero(np.diff(samples) != 0))
            assert runs.size and runs.max() < 160, flac.name


@pytest.mark.parametrize("size", ["tiny", "default", "bench"])
def test_speakers_are_disjoint_between_subsets(size):
    speakers = make_speakers(size, seed=0)
    identities = {subset: {s.identity() for s in group} for subset, group in speakers.items()}
    for a in SUBSETS:
        assert len(identities[a]) == len(speakers[a]) == SIZES[size][a][0]
        for b in SUBSETS:
            if a < b:
                assert not identities[a] & identities[b], (a, b)
    ids = [s.speaker_id for group in speakers.values() for s in group]
    assert len(ids) == len(set(ids))


def test_speakers_on_disk_match_the_table(synthetic_librispeech):
    table = _speaker_table(synthetic_librispeech)
    for subset in SUBSETS:
        on_disk = {int(p.name) for p in (synthetic_librispeech / subset).iterdir()}
        assert on_disk == {speaker for speaker, (s, _) in table.items() if s == subset}


def test_flite_and_festival_voices_are_used(synthetic_librispeech):
    names = [name for subset, name in _speaker_table(synthetic_librispeech).values() if subset == "train-clean-100"]
    engines = collections.Counter(name.split()[0] for name in names)
    assert engines["flite"] >= 1 and engines["festival"] >= 1 and engines["espeak-ng"] >= 1
    for size in ("default", "bench"):
        for subset, group in make_speakers(size, 0).items():
            assert {s.engine for s in group} == {"espeak-ng", "flite", "festival"}, (size, subset)


@pytest.mark.parametrize("engine,package", [("flite", "flite"), ("festival", "festival"), ("espeak-ng", "espeak-ng"), ("sox", "sox")])
def test_a_missing_synthesiser_is_an_error_naming_its_package(monkeypatch, engine, package):
    program = "text2wave" if engine == "festival" else engine
    real_which = corpus.shutil.which
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None if name == program else real_which(name))
    with pytest.raises(RuntimeError, match=rf"{program} not found.*Debian package {package}\b"):
        corpus.check_synthesisers({"espeak-ng", "flite", "festival"})


def test_a_failing_festival_voice_names_its_package(monkeypatch):
    def failing(command, **kwargs):
        raise subprocess.CalledProcessError(1, command, stderr=b"SIOD ERROR: unbound variable voice_cmu_us_slt_arctic_hts")

    monkeypatch.setattr(corpus.subprocess, "run", failing)
    speaker = next(s for g in make_speakers("bench", 0).values() for s in g if s.voice == "cmu_us_slt_arctic_hts")
    condition = corpus.make_condition(speaker, "test-clean", 0, random.Random(0))
    with pytest.raises(RuntimeError, match="festvox-us-slt-hts"):
        corpus.synthesize(speaker, "the red cat", condition, 0)


def test_a_festival_that_writes_nothing_is_an_error_not_a_missing_file(monkeypatch):
    """festival exits 0 without audio when its data directory is missing (a relocated install)."""
    monkeypatch.setattr(corpus.subprocess, "run", lambda command, **kwargs: subprocess.CompletedProcess(command, 0, b"", b""))
    speaker = next(s for g in make_speakers("bench", 0).values() for s in g if s.voice == "kal_diphone")
    condition = corpus.make_condition(speaker, "test-clean", 0, random.Random(0))
    with pytest.raises(RuntimeError, match=r"text2wave kal_diphone exited 0 but wrote no audio .*festvox-kallpc16k"):
        corpus.synthesize(speaker, "the red cat", condition, 0)


@pytest.mark.parametrize("size", ["default", "bench"])
def test_training_covers_every_condition_of_test_other(size):
    speakers, plan = corpus.plan_corpus(size, 0)
    train = [(s, c) for subset, s, _, _, _, c, _ in plan if subset == "train-clean-100"]
    other = [(s, c) for subset, s, _, _, _, c, _ in plan if subset == "test-other"]
    train_snrs = [c.snr_db for _, c in train if c.snr_db is not None]
    assert all(c.snr_db is not None and min(train_snrs) <= c.snr_db <= max(train_snrs) for _, c in other)
    assert {c.noise for _, c in other} <= {c.noise for _, c in train}
    train_rt60 = [c.rt60_s for _, c in train if c.rt60_s]
    assert any(c.rt60_s for _, c in other) and all(min(train_rt60) <= c.rt60_s <= max(train_rt60) for _, c in other if c.rt60_s)
    # Speakers' rates (utterances jitter around them): test-other's from the fast range that a
    # good share of the training speakers is drawn from too.
    low, high = corpus.TRAIN_RATES["fast"]
    assert all(low <= s.rate <= high for s in speakers["test-other"])
    assert np.mean([low <= s.rate <= high for s in speakers["train-clean-100"]]) >= 0.2
    rough_kinds = lambda group: {s.voice.split("+")[1] for s, _ in group if s.rough}  # noqa: E731
    assert rough_kinds(other) and sum(s.rough for s in speakers["train-clean-100"]) >= 0.1 * len(speakers["train-clean-100"])
    assert rough_kinds(train)  # rough voices of other speakers (the speakers themselves are disjoint)
    # test-clean: clean, ordinary-rate speech (its noise floor only).
    clean = [c for subset, _, _, _, _, c, _ in plan if subset == "test-clean"]
    assert all(c.snr_db is None and c.rt60_s is None for c in clean)
    assert max(s.rate for s in speakers["test-clean"]) < min(s.rate for s in speakers["test-other"])


def test_the_tiny_corpus_trains_on_every_condition_test_other_has(synthetic_librispeech):
    rows = read_conditions(synthetic_librispeech)
    train = [r for r in rows if r["subset"] == "train-clean-100"]
    other = [r for r in rows if r["subset"] == "test-other"]
    assert all(r["noise"] != "none" for r in other)
    assert any(r["noise"] != "none" for r in train) and any(r["rt60_s"] != "-" for r in train)
    assert any(r["rough"] == "True" for r in train) and any(r["rough"] == "True" for r in other)
    assert max(float(r["rate"]) for r in train) >= min(float(r["rate"]) for r in other)


def test_grammar_size_and_new_test_sentences(synthetic_librispeech):
    assert len(vocabulary()) >= 500 and len(TEMPLATES) >= 40

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


def test_rare_words_are_rare_in_training_only():
    rng = random.Random(0)
    train = collections.Counter(w for _ in range(20000) for w in make_sentence(rng, corpus.RARE_WEIGHT).split())
    test = collections.Counter(w for _ in range(20000) for w in make_sentence(rng).split())
    for word in RARE_WORDS:
        assert 0 < train[word] < 0.3 * test[word], (word, train[word], test[word])
    common = [w for w in corpus.WORDS["noun"] if w not in RARE_WORDS]
    assert np.mean([train[w] for w in common]) > 0.7 * np.mean([test[w] for w in common])
    # Zipf-like frequencies within a category, as in natural text: the first noun ~50x the 50th.
    assert test[common[0]] > 20 * test[common[49]] > 0


def test_generation_is_deterministic(synthetic_librispeech):
    assert make_speakers("tiny", 0) == make_speakers("tiny", 0) != make_speakers("tiny", 1)
    assert corpus.plan_corpus("tiny", 0)[1] == corpus.plan_corpus("tiny", 0)[1]
    assert [make_sentence(random.Random(5)) for _ in range(3)] == [make_sentence(random.Random(5)) for _ in range(3)]
    for speaker in make_speakers("tiny", 0)["train-clean-100"][:3]:  # flite, festival, espeak-ng voices
        condition = corpus.make_condition(speaker, "train-clean-100", 2, random.Random(3))
        first = corpus.synthesize(speaker, "the red cat", condition, 7)
        second = corpus.synthesize(speaker, "the red cat", condition, 7)
        assert (first == second).all() and first.size > 1000


def test_another_corpus_in_the_folder_is_an_error(tmp_path):
    root = tmp_path / "LibriSpeech"
    root.mkdir()
    (root / "VERSION").write_text('{"corpus_version": 1}\n')
    with pytest.raises(RuntimeError, match="holds another corpus"):
        corpus.generate(tmp_path, size="tiny")
    (root / "VERSION").unlink()
    (root / "train-clean-100").mkdir()  # a corpus from before VERSION existed
    with pytest.raises(RuntimeError, match="holds another corpus"):
        corpus.generate(tmp_path, size="tiny")
