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


def _features(*args):
    return subprocess.run([sys.executable, str(LOCAL / "features.py"), *map(str, args)], capture_output=True, text=True)


def test_jobs_run_one_by_one_then_merged_equal_the_all_in_one_run(data_dir, tmp_path):
    """The recipe's path: each job as its own process (an array task), then --merge, as extract() in one call."""
    whole = extract(data_dir, tmp_path / "whole", nj=3)
    out = tmp_path / "jobs"
    for job in (3, 1, 2):  # array tasks finish in any order
        assert _features("--data", data_dir, "--out", out, "--nj", 3, "--job", job).returncode == 0
    merged = _features("--data", data_dir, "--out", out, "--nj", 3, "--merge", "--cmvn_out", out / "cmvn.npz")
    assert merged.returncode == 0, merged.stderr
    assert [key for key, _ in kaldiio.load_scp_sequential(str(out / "feats.scp"))] == \
        [key for key, _ in kaldiio.load_scp_sequential(str(whole))]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(kaldiio.load_scp_sequential(str(out / "feats.scp")),
                                                               kaldiio.load_scp_sequential(str(whole))))
    assert (out / "feats_shape").read_text() == (whole.parent / "feats_shape").read_text()
    assert (out / "cmvn.npz").is_file()


def test_a_merge_before_every_job_finished_names_the_missing_jobs(data_dir, tmp_path):
    out = tmp_path / "dump"
    assert _features("--data", data_dir, "--out", out, "--nj", 3, "--job", 2).returncode == 0
    merged = _features("--data", data_dir, "--out", out, "--nj", 3, "--merge")
    assert merged.returncode != 0
    assert "2 of 3 fbank job(s) did not finish" in merged.stderr and "feats.1.done" in merged.stderr
    assert "feats.3.done" in merged.stderr and not (out / "feats.scp").exists()
    refused = _features("--data", data_dir, "--out", out, "--nj", 3, "--job", 4)
    assert refused.returncode != 0 and "--job must be in 1..3" in refused.stderr
    mixed = _features("--data", data_dir, "--out", out, "--nj", 3, "--job", 1, "--cmvn_out", out / "c.npz")
    assert mixed.returncode != 0 and "--cmvn_out needs every job" in mixed.stderr


def test_more_jobs_than_utterances_leave_the_extra_jobs_empty(data_dir, tmp_path):
    utterances = len((data_dir / "wav.scp").read_text().splitlines())
    scp = extract(data_dir, tmp_path, nj=utterances + 2)
    assert len(list(kaldiio.load_scp_sequential(str(scp)))) == utterances
    assert (tmp_path / f"feats.{utterances + 2}.done").exists()


def test_a_rerun_with_another_nj_redoes_the_jobs_instead_of_mixing_the_splits(data_dir, tmp_path):
    extract(data_dir, tmp_path, nj=2)
    scp = extract(data_dir, tmp_path, nj=3)  # job 1 and 2 of 3 hold other utterances than job 1 and 2 of 2
    keys = [key for key, _ in kaldiio.load_scp_sequential(str(scp))]
    assert keys == [line.split()[0] for line in (data_dir / "wav.scp").read_text().splitlines()]
    assert (tmp_path / "feats.1.done").read_text() == "nj=3\n"
