import numpy as np
import pytest
import soundfile

import speed_perturb
from speed_perturb import main, parse_factors, perturb

UTTERANCES = {  # id -> (speaker, text, sample rate, channels)
    "1-10-0000": ("1", "A B", 16000, 1),
    "1-10-0001": ("1", "C D", 16000, 1),
    "2-20-0000": ("2", "E F", 8000, 2),  # another rate and two channels: the copies are 16 kHz mono
}


def lines(path):
    return dict(line.split(maxsplit=1) for line in path.read_text(encoding="utf-8").splitlines())


@pytest.fixture
def data(tmp_path):
    """A data dir of three 1 s 440 Hz sines, audio under a path with a space."""
    audio_dir = tmp_path / "corpus copy"
    audio_dir.mkdir()
    out = tmp_path / "train"
    out.mkdir()
    wav, text, utt2spk, utt2dur = [], [], [], []
    for key, (speaker, words, rate, channels) in UTTERANCES.items():
        sine = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate).astype(np.float32)
        path = audio_dir / f"{key}.flac"
        soundfile.write(path, np.stack([sine] * channels, axis=1), rate)
        wav.append(f"{key} {path}")
        text.append(f"{key} {words}")
        utt2spk.append(f"{key} {speaker}")
        utt2dur.append(f"{key} 1.000")
    for name, rows in (("wav.scp", wav), ("text", text), ("utt2spk", utt2spk), ("utt2dur", utt2dur)):
        (out / name).write_text("\n".join(rows) + "\n")
    return out


def test_ids_speakers_and_durations_of_the_perturbed_dir(data, tmp_path):
    out = tmp_path / "train_sp"
    report = perturb(data, out, ["0.9", "1.0", "1.1"], nj=2)
    keys = [f"sp{f}-{k}" for f in ("0.9", "1.0", "1.1") for k in sorted(UTTERANCES)]
    for name in ("wav.scp", "text", "utt2spk", "utt2dur"):
        assert [line.split()[0] for line in (out / name).read_text().splitlines()] == keys
    utt2spk, text, utt2dur, wav = (lines(out / name) for name in ("utt2spk", "text", "utt2dur", "wav.scp"))
    original_wav = lines(data / "wav.scp")
    for key in keys:
        factor, utterance = key[2:].split("-", 1)
        speaker, words, _, _ = UTTERANCES[utterance]
        assert utt2spk[key] == f"sp{factor}-{speaker}" and text[key] == words
        assert float(utt2dur[key]) == pytest.approx(1.0 / float(factor), abs=1e-3)
        if factor == "1.0":
            assert wav[key] == original_wav[utterance]  # the original audio, no copy
        else:
            info = soundfile.info(wav[key])
            assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
            assert info.frames == pytest.approx(16000 / float(factor), abs=2)  # duration scales by 1/F
            assert str(out / "audio" / f"sp{factor}") in wav[key]
    spk2utt = {line.split()[0]: line.split()[1:] for line in (out / "spk2utt").read_text().splitlines()}
    assert spk2utt["sp1.1-1"] == ["sp1.1-1-10-0000", "sp1.1-1-10-0001"] and len(spk2utt) == 6
    assert not report.failed and report.written == {"0.9": 3, "1.1": 3} and report.original == {"1.0": 3}
    assert (out / "factors").read_text() == "0.9 1.0 1.1\n"
    assert (out / "rejected.txt").read_text() == ""


def test_speed_changes_pitch_like_resampling(data, tmp_path):
    out = tmp_path / "sp"
    perturb(data, out, ["0.9", "1.1"])
    for factor in (0.9, 1.1):
        audio, rate = soundfile.read(lines(out / "wav.scp")[f"sp{factor}-1-10-0000"])
        peak = np.argmax(np.abs(np.fft.rfft(audio))) * rate / audio.size
        assert peak == pytest.approx(440 * factor, abs=2)  # sox "speed": tempo and pitch, not tempo alone


def test_a_rerun_rewrites_nothing_and_says_so(data, tmp_path, caplog):
    out = tmp_path / "train_sp"
    perturb(data, out, ["0.9", "1.0", "1.1"])
    copies = sorted((out / "audio").rglob("*.flac"))
    assert len(copies) == 6 and not list((out / "audio").rglob("*.tmp"))
    before = {p: p.stat().st_mtime_ns for p in copies}
    with caplog.at_level("INFO", logger="speed_perturb"):
        report = perturb(data, out, ["0.9", "1.0", "1.1"])
    assert {p: p.stat().st_mtime_ns for p in copies} == before
    assert report.written == {} and report.present == {"0.9": 3, "1.1": 3}
    assert "sp0.9 0 written, 3 already present" in caplog.text and "sp1.0 3 original audio" in caplog.text
    table = (out / "perturb.txt").read_text().splitlines()
    assert table[0].split("\t") == ["factor", "written", "already_present", "original_audio", "failed", "hours"]
    assert table[1].split("\t")[:5] == ["0.9", "0", "3", "0", "0"]
    assert float(table[1].split("\t")[5]) == pytest.approx(3 / 0.9 / 3600, abs=1e-3)
    assert table[-1].startswith("total\t0\t6\t3\t0\t")
    # A missing copy (e.g. deleted, or a run killed before its rename) is the only one written again.
    copies[0].unlink()
    report = perturb(data, out, ["0.9", "1.0", "1.1"])
    assert sum(report.written.values()) == 1 and copies[0].is_file()
    assert all(p.stat().st_mtime_ns == before[p] for p in copies[1:])


@pytest.mark.parametrize("factors,message", [
    (["0.9", "0"], "must be a finite number > 0"),
    (["-0.9"], "must be a finite number > 0"),
    (["nan"], "must be a finite number > 0"),
    (["fast"], "is not a number"),
    (["0.9", "0.90"], "repeats"),
    ([], "no speed factors"),
])
def test_bad_factor_lists_are_clear_errors(factors, message, capsys):
    with pytest.raises(ValueError, match=message):
        parse_factors(factors)
    if factors:  # the command line says the same and exits 2
        with pytest.raises(SystemExit) as exit_info:
            main(["--check", "--factors", *factors])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert parse_factors(["0.9", "1.0", "1.1"]) == ["0.9", "1.0", "1.1"]


def test_another_factor_list_for_the_same_dir_is_refused(data, tmp_path):
    out = tmp_path / "train_sp"
    perturb(data, out, ["1.0", "1.1"])
    with pytest.raises(ValueError, match="made with speed factors '1.0 1.1'"):
        perturb(data, out, ["0.9", "1.0", "1.1"])


def test_unreadable_audio_is_reported_and_fails_the_run(data, tmp_path, capsys):
    broken = lines(data / "wav.scp")["1-10-0001"]
    with open(broken, "wb") as handle:
        handle.write(b"not a flac file")
    out = tmp_path / "train_sp"
    with pytest.raises(SystemExit, match="2 copies could not be made"):
        main(["--data", str(data), "--out", str(out), "--factors", "0.9", "1.0", "1.1", "--nj", "2"])
    rejected = (out / "rejected.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in rejected] == ["sp0.9-1-10-0001", "sp1.1-1-10-0001"]
    assert all("unreadable audio" in line for line in rejected)
    assert "sp0.9-1-10-0001" not in lines(out / "wav.scp") and "sp0.9-1-10-0000" in lines(out / "wav.scp")
    assert (out / "perturb.txt").read_text().splitlines()[1].split("\t")[:5] == ["0.9", "2", "0", "0", "1"]


def test_missing_sox_names_the_package(data, tmp_path, monkeypatch):
    monkeypatch.setattr(speed_perturb.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="apt package sox"):
        perturb(data, tmp_path / "sp", ["0.9", "1.0"])
    with pytest.raises(SystemExit, match="apt package sox"):
        main(["--check", "--factors", "0.9"])
    perturb(data, tmp_path / "sp", ["1.0"])  # nothing to change: no sox needed


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--factors" in capsys.readouterr().out
