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
    index, entries, out, position = job
    out = pathlib.Path(out)
    ark, scp, shape, done = (out / f"feats.{index}.{ext}" for ext in ("ark", "scp", "shape", "done"))
    if done.exists():
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
    done.touch()
    return index


def extract(data: pathlib.Path, out: pathlib.Path, nj: int = 1) -> pathlib.Path:
    entries = read_scp(data / "wav.scp")
    if not entries:
        raise ValueError(f"{data / 'wav.scp'} is empty")
    out.mkdir(parents=True, exist_ok=True)
    nj = max(1, min(nj, len(entries)))
    splits = [entries[i::nj] for i in range(nj)]
    jobs = [(i + 1, split, str(out.resolve()), i) for i, split in enumerate(splits)]
    if nj == 1:
        for job in jobs:
            _run_job(job)
    else:
        with multiprocessing.get_context("fork").Pool(nj) as pool:
            pool.map(_run_job, jobs)
    order = {key: n for n, (key, _) in enumerate(entries)}
    for name, pattern in (("feats.scp", "feats.*.scp"), ("feats_shape", "feats.*.shape")):
        lines = [line for f in sorted(out.glob(pattern)) for line in f.read_text().splitlines() if line]
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
    parser.add_argument("--nj", type=int, default=1)
    parser.add_argument("--cmvn_out", type=pathlib.Path, help="also write global CMVN stats here (.npz)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (features) %(message)s")
    scp = extract(args.data, args.out, args.nj)
    if args.cmvn_out:
        global_cmvn(scp, args.cmvn_out)


if __name__ == "__main__":
    main()
