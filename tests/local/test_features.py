import os
import pathlib
import signal
import subprocess
import sys
import time

import kaldiio
import numpy as np
import pytest

from data_prep import prepare
from features import extract, fbank, global_cmvn, read_audio

LOCAL = pathlib.Path(__file__).resolve().parents[2] / "local"


@pytest.fixture(scope="module")
def data_dir(synthetic_librispeech, tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    prepare(synthetic_librispeech, "test-clean", out)
    return out


def test_round_trip_kaldiio_equals_computed_fbank(data_dir, tmp_path):
    scp = extract(data_dir, tmp_path / "dump", nj=2)
    stored = dict(kaldiio.load_scp_sequential(str(scp)))
    wavs = dict(line.split(maxsplit=1) for line in (data_dir / "wav.scp").read_text().splitlines())
    assert sorted(stored) == sorted(wavs)
    for key, path in wavs.items():
        expected = fbank(read_audio(path))
        assert stored[key].shape == expected.shape and expected.shape[1] == 80
        np.testing.assert_array_equal(stored[key], expected)
    shapes = dict(line.split() for line in (tmp_path / "dump" / "feats_shape").read_text().splitlines())
    assert all(shapes[k] == f"{v.shape[0]},80" for k, v in stored.items())
    assert (tmp_path / "dump" / "text").read_text() == (data_dir / "text").read_text()
    stats = np.load(global_cmvn(scp, tmp_path / "cmvn.npz"))
    frames = np.concatenate(list(stored.values()))
    assert stats["count"] == frames.shape[0]
    np.testing.assert_allclose(stats["sum"], frames.astype(np.float64).sum(0), rtol=1e-9)


def test_rerun_skips_finished_jobs(data_dir, tmp_path):
    extract(data_dir, tmp_path, nj=2)
    arks = sorted(tmp_path.glob("feats.*.ark"))
    stamps = [a.stat().st_mtime_ns for a in arks]
    extract(data_dir, tmp_path, nj=2)
    assert [a.stat().st_mtime_ns for a in sorted(tmp_path.glob("feats.*.ark"))] == stamps


def test_kill_midway_then_rerun_gives_complete_readable_features(data_dir, tmp_path):
    # Many utterances (the same audio under new keys) so that the job is still running when killed.
    big = tmp_path / "big"
    big.mkdir()
    lines = (data_dir / "wav.scp").read_text().splitlines()
    (big / "wav.scp").write_text("".join(f"r{r:03d}-{line}\n" for r in range(150) for line in lines))
    out = tmp_path / "dump"
    command = [sys.executable, str(LOCAL / "features.py"), "--data", str(big), "--out", str(out), "--nj", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "feats.1.ark.tmp").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "feats.1.done").exists() and not (out / "feats.scp").exists()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    entries = list(kaldiio.load_scp_sequential(str(out / "feats.scp")))
    assert len(entries) == 150 * len(lines)
    assert all(features.shape[1] == 80 and np.isfinite(features).all() for _, features in entries)
    assert not list(out.glob("*.tmp"))
