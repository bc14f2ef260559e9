#!/usr/bin/env python3
"""80-dim Kaldi-compatible fbank (torchaudio) -> kaldiio ark/scp, split over --nj jobs.

    python local/features.py --data data/train_clean_100 --out dump/fbank/train_clean_100 --nj 2

Writes ``feats.scp`` (one ark per job), ``feats_shape`` (``utt T,80``) and
copies of ``text``, ``utt2spk``, ``spk2utt``, ``utt2dur``. Each job writes
its ark and scp under temporary names and renames them when complete, with a
``.done`` marker: a killed run leaves no half-written file in place, and a
rerun only redoes unfinished jobs. Audio is downmixed and resampled to
16 kHz. With ``--cmvn_out`` the global mean/variance statistics are saved in
ESPnet's ``global_mvn`` format (npz: count, sum, sum_square).

The recipe runs the jobs through its job launcher (cmd.sh: run.py here, an
array job on Slurm), then merges them::

    run.py JOB=1:2 dump/fbank/x/log/fbank.JOB.log python local/features.py --data data/x --out dump/fbank/x --nj 2 --job JOB
    run.py dump/fbank/x/log/merge.log python local/features.py --data data/x --out dump/fbank/x --nj 2 --merge

Without ``--job`` or ``--merge`` it runs every job here (``--nj`` processes) and merges.
"""

import argparse
import logging
import multiprocessing
import pathlib
import shutil

import numpy as np

log = logging.getLogger("features")
SAMPLE_RATE = 16000
NUM_MEL_BINS = 80


def read_audio(path: str):
    import soundfile
    import torch
    import torchaudio

    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    waveform = torch.from_numpy(audio.mean(axis=1))
    if rate != SAMPLE_RATE:
        waveform = torchaudio.functional.resample(waveform, rate, SAMPLE_RATE)
    return waveform


def fbank(waveform) -> np.ndarray:
    """Kaldi ``compute-fbank-feats`` defaults (25 ms / 10 ms, povey window), 80 bins, no dither."""
    import torchaudio

    features = torchaudio.compliance.kaldi.fbank(
        waveform.unsqueeze(0) * 32768.0,  # Kaldi works on 16-bit sample values
        num_mel_bins=NUM_MEL_BINS,
        sample_frequency=SAMPLE_RATE,
        dither=0.0,
        energy_floor=0.0,
    )
    return features.numpy()


def read_scp(path: pathlib.Path):
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            key, value = line.split(maxsplit=1)
            entries.append((key, value))
    return entries


def _run_job(job):
    import kaldiio
    import torch
    from tqdm import tqdm

    torch.set_num_threads(1)
    index, entries, out, position, nj = job
    out = pathlib.Path(out)
    ark, scp, shape, done = (out / f"feats.{index}.{ext}" for ext in ("ark", "scp", "shape", "done"))
    if _finished(done, nj):
        return index
    temporary_ark, temporary_scp = ark.with_suffix(".ark.tmp"), scp.with_suffix(".scp.tmp")
    shapes = []
    # The scp written next to the temporary ark points at the temporary name;
    # it is rewritten to the final name after the rename.
    with kaldiio.WriteHelper(f"ark,scp:{temporary_ark},{temporary_scp}") as writer:
        for key, path in tqdm(entries, desc=f"fbank job {index}", position=position, unit="utt", leave=False, disable=None):
            features = fbank(read_audio(path))
            writer(key, features)
            shapes.append(f"{key} {features.shape[0]},{features.shape[1]}")
    temporary_ark.replace(ark)
    lines = temporary_scp.read_text().splitlines()
    scp.write_text("".join(line.replace(str(temporary_ark), str(ark), 1) + "\n" for line in lines))
    temporary_scp.unlink()
    shape.write_text("".join(line + "\n" for line in shapes))
    done.write_text(f"nj={nj}\n")
    return index


def _finished(done: pathlib.Path, nj: int) -> bool:
    """Whether the job's marker exists and records this split: job i of another --nj holds other utterances."""
    return done.exists() and done.read_text() == f"nj={nj}\n"


def _jobs(data: pathlib.Path, out: pathlib.Path, nj: int):
    """The entries of ``data`` and the nj jobs' (index, entries, out, position, nj); job i takes every nj-th from i."""
    if nj < 1:
        raise ValueError(f"--nj must be >= 1, got {nj}")
    entries = read_scp(data / "wav.scp")
    if not entries:
        raise ValueError(f"{data / 'wav.scp'} is empty")
    return entries, [(i + 1, entries[i::nj], str(out.resolve()), i, nj) for i in range(nj)]


def extract_job(data: pathlib.Path, out: pathlib.Path, nj: int, job: int) -> None:
    """Job ``job`` (1..nj) of ``nj``: its ark, scp and shapes (an empty share when nj exceeds the utterances)."""
    if not 1 <= job <= nj:
        raise ValueError(f"--job must be in 1..{nj} (--nj), got {job}")
    out.mkdir(parents=True, exist_ok=True)
    index, entries, folder, _, _ = _jobs(data, out, nj)[1][job - 1]
    _run_job((index, entries, folder, 0, nj))  # one job per process: its progress bar on the first line


def extract(data: pathlib.Path, out: pathlib.Path, nj: int = 1) -> pathlib.Path:
    """Every job here (nj processes), then :func:`merge`."""
    entries, jobs = _jobs(data, out, nj)
    out.mkdir(parents=True, exist_ok=True)
    if nj == 1:
        for job in jobs:
            _run_job(job)
    else:
        with multiprocessing.get_context("fork").Pool(min(nj, len(entries))) as pool:
            pool.map(_run_job, jobs)
    return merge(data, out, nj)


def merge(data: pathlib.Path, out: pathlib.Path, nj: int) -> pathlib.Path:
    """feats.scp and feats_shape in wav.scp's order from the nj jobs' files, and the data dir's other files."""
    entries, _ = _jobs(data, out, nj)
    unfinished = [str(out / f"feats.{i}.done") for i in range(1, nj + 1) if not _finished(out / f"feats.{i}.done", nj)]
    if unfinished:
        raise RuntimeError(f"{len(unfinished)} of {nj} fbank job(s) did not finish: no {', '.join(unfinished)}")
    order = {key: n for n, (key, _) in enumerate(entries)}
    for name, suffix in (("feats.scp", "scp"), ("feats_shape", "shape")):
        parts = [out / f"feats.{i}.{suffix}" for i in range(1, nj + 1)]
        lines = [line for f in parts for line in f.read_text().splitlines() if line]
        keys = [line.split(maxsplit=1)[0] for line in lines]
        if len(keys) != len(entries) or set(keys) != set(order):
            raise RuntimeError(f"{out}: the {nj} jobs' {suffix} files hold {len(keys)} lines for {len(set(keys))} "
                               f"utterances, {data / 'wav.scp'} {len(entries)}: delete {out} and rerun")
        lines.sort(key=lambda line: order[line.split(maxsplit=1)[0]])
        temporary = out / f".{name}.tmp"
        temporary.write_text("".join(line + "\n" for line in lines))
        temporary.replace(out / name)
    for name in ("text", "utt2spk", "spk2utt", "utt2dur"):
        if (data / name).is_file():
            shutil.copyfile(data / name, out / name)
    log.info("%s: %d utterances -> %s", data, len(entries), out / "feats.scp")
    return out / "feats.scp"


def global_cmvn(feats_scp: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """ESPnet global_mvn statistics over every frame of ``feats_scp``."""
    import kaldiio

    count, total, total_square = 0, np.zeros(NUM_MEL_BINS), np.zeros(NUM_MEL_BINS)
    for _, features in kaldiio.load_scp_sequential(str(feats_scp)):
        features = features.astype(np.float64)
        count += features.shape[0]
        total += features.sum(axis=0)
        total_square += (features**2).sum(axis=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.stem + ".tmp.npz")
    np.savez(temporary, count=count, sum=total, sum_square=total_square)
    temporary.replace(out)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=pathlib.Path, required=True, help="data dir with wav.scp")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="dump dir to write")
    parser.add_argument("--nj", type=int, default=1, help="jobs the utterances are split over")
    step = parser.add_mutually_exclusive_group()
    step.add_argument("--job", type=int, help="run only this job (1..nj), e.g. as an array task")
    step.add_argument("--merge", action="store_true", help="only merge the finished jobs' files")
    parser.add_argument("--cmvn_out", type=pathlib.Path, help="also write global CMVN stats here (.npz; with the merge)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (features) %(message)s")
    if args.job is not None:
        if args.cmvn_out:
            parser.error("--cmvn_out needs every job: pass it with --merge")
        extract_job(args.data, args.out, args.nj, args.job)
        return
    scp = merge(args.data, args.out, args.nj) if args.merge else extract(args.data, args.out, args.nj)
    if args.cmvn_out:
        global_cmvn(scp, args.cmvn_out)


if __name__ == "__main__":
    main()
