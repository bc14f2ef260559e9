#!/usr/bin/env python3
"""Speed perturbation of a Kaldi data dir, as ESPnet's ``perturb_data_dir_speed.sh``.

    python local/speed_perturb.py --data data/train_clean_100 --out data/train_clean_100_sp \
        --factors 0.9 1.0 1.1 --nj 2

One copy of every utterance per factor F, with the utterance and speaker ids
prefixed ``sp<F>-`` (``sp1.0-`` too, as ESPnet does) and ``utt2dur`` the
duration of the perturbed audio (the original divided by F). The audio is
changed with sox's ``speed F`` effect (tempo and pitch together, by
resampling; ``sox -R in -r 16000 -c 1 ... speed F``: repeatable, no dither),
read back as float samples and written once by soundfile as 16 kHz mono FLAC
(16 bit) to ``<out>/audio/sp<F>/<speaker>/<utt>.flac``: under a temporary
name, renamed when complete. A rerun leaves complete files as they are and
writes only the missing ones. Factor 1.0 keeps the original audio path (no
copy). ``--nj`` sox processes run at once.

Writes ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``, ``utt2dur`` (sorted
by id), ``factors`` (the factor list, to refuse a rerun with another one),
``perturb.txt`` (per factor: copies written, already present, original audio
used, failed, hours) and ``rejected.txt`` (one line per utterance that could
not be perturbed: id, reason, path). The log has a one-line summary. Any
failure (e.g. unreadable audio) makes the exit status 1 after everything else
is done; a rerun retries only what is missing. Needs the ``sox`` program (apt
package ``sox``; local/setup.sh installs it).
"""

import argparse
import collections
import concurrent.futures
import logging
import math
import os
import pathlib
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

log = logging.getLogger("speed_perturb")
SAMPLE_RATE = 16000
DEFAULT_FACTORS = ("0.9", "1.0", "1.1")


def parse_factors(factors) -> List[str]:
    """The factors as given (they name the ``sp<F>-`` prefixes), each checked to be a number > 0, no repeats."""
    factors = list(factors)
    if not factors:
        raise ValueError("no speed factors given (an empty --speed_perturb_factors in run.sh skips speed perturbation)")
    seen = {}
    for text in factors:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"speed factor {text!r} is not a number (expected e.g. 0.9 1.0 1.1)") from None
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"speed factor {text!r} must be a finite number > 0 (e.g. 0.9 1.0 1.1)")
        if "/" in text or any(c.isspace() for c in text):
            raise ValueError(f"speed factor {text!r} cannot name an utterance prefix")
        if value in seen:
            raise ValueError(f"speed factor {text!r} repeats {seen[value]!r}")
        seen[value] = text
    return factors


@dataclass
class PerturbReport:
    factors: List[str]
    written: collections.Counter = field(default_factory=collections.Counter)
    present: collections.Counter = field(default_factory=collections.Counter)
    original: collections.Counter = field(default_factory=collections.Counter)  # factor 1.0: the audio as it is
    seconds: collections.Counter = field(default_factory=collections.Counter)
    failed: List[Tuple[str, str, str]] = field(default_factory=list)  # (id, reason, path)
    failed_by_factor: collections.Counter = field(default_factory=collections.Counter)

    def table(self) -> str:
        failed = self.failed_by_factor
        lines = ["factor\twritten\talready_present\toriginal_audio\tfailed\thours"]
        for factor in self.factors:
            lines.append(
                f"{factor}\t{self.written[factor]}\t{self.present[factor]}\t{self.original[factor]}\t"
                f"{failed[factor]}\t{self.seconds[factor] / 3600:.3f}"
            )
        total = sum(self.seconds.values())
        lines.append(f"total\t{sum(self.written.values())}\t{sum(self.present.values())}\t"
                     f"{sum(self.original.values())}\t{len(self.failed)}\t{total / 3600:.3f}")
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        failed = self.failed_by_factor
        parts = []
        for factor in self.factors:
            if self.original[factor]:
                counts = f"{self.original[factor]} original audio"
            else:
                counts = f"{self.written[factor]} written, {self.present[factor]} already present"
            if failed[factor]:
                counts += f", {failed[factor]} failed"
            parts.append(f"sp{factor} {counts}, {self.seconds[factor] / 3600:.2f} h")
        return f"speed perturbation: {'; '.join(parts)}; failed {len(self.failed)}"


def read_table(path: pathlib.Path) -> Dict[str, str]:
    """``key value`` lines (the value may contain spaces, e.g. a path)."""
    entries = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            parts = line.split(maxsplit=1)
            entries[parts[0]] = parts[1] if len(parts) == 2 else ""
    return entries


def find_sox() -> str:
    sox = shutil.which("sox")
    if sox is None:
        raise FileNotFoundError("speed perturbation needs the sox program: install the apt package sox (local/setup.sh does)")
    return sox


def perturb_audio(sox: str, path: str, factor: str):
    """The audio at ``path`` at ``factor`` x speed, 16 kHz mono float32 (sox ``speed``: tempo and pitch)."""
    import numpy as np

    command = [sox, "-R", "-V1", path, "-r", str(SAMPLE_RATE), "-c", "1",
               "-t", "raw", "-e", "floating-point", "-b", "32", "-L", "-", "speed", factor]
    result = subprocess.run(command, capture_output=True)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(message[-1] if message else f"sox exited {result.returncode}")
    audio = np.frombuffer(result.stdout, dtype="<f4")
    if audio.size == 0:
        raise RuntimeError("sox wrote no samples")
    return audio


def audio_seconds(path) -> float:
    import soundfile

    info = soundfile.info(str(path))
    return info.frames / info.samplerate


def _make_copy(sox: str, source: str, target: pathlib.Path, factor: str) -> Tuple[str, float]:
    """("present" | "written", seconds) for one perturbed copy; complete files are left as they are."""
    import numpy as np
    import soundfile

    if target.is_file():
        try:
            return "present", audio_seconds(target)
        except Exception:  # not one of ours (we rename only complete files): write it again
            pass
    audio = perturb_audio(sox, source, factor)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    # 16-bit FLAC: keep the (rare) resampling overshoot inside the range instead of wrapping around.
    soundfile.write(str(temporary), np.clip(audio, -1.0, 32767 / 32768), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    temporary.replace(target)
    return "written", audio.size / SAMPLE_RATE


def perturb(data: pathlib.Path, out: pathlib.Path, factors=DEFAULT_FACTORS, nj: int = 1) -> PerturbReport:
    """``out``: ``data`` once per factor, ids and speakers prefixed ``sp<F>-``; audio under ``out/audio/``."""
    from data_prep import PrepReport, write_data_dir

    factors = parse_factors(factors)
    if data.resolve() == out.resolve():
        raise ValueError(f"{out}: the perturbed data dir must not be the input dir")
    recorded = out / "factors"
    if recorded.is_file() and recorded.read_text().split() != factors:
        raise ValueError(
            f"{out} was made with speed factors {recorded.read_text().strip()!r}, not {' '.join(factors)!r}: "
            f"delete it (and its features) to change them"
        )
    wav = read_table(data / "wav.scp")
    text, utt2spk = read_table(data / "text"), read_table(data / "utt2spk")
    for key, path in wav.items():
        if path.rstrip().endswith("|"):
            raise ValueError(f"{data}/wav.scp: {key}: a command ({path!r}); expected an audio file path")
    missing = sorted(set(wav) - set(text)) + sorted(set(wav) - set(utt2spk))
    if missing:
        raise ValueError(f"{data}: {missing[0]} has no line in text or utt2spk ({len(missing)} such ids)")
    utt2dur = read_table(data / "utt2dur") if (data / "utt2dur").is_file() else {}
    sox = find_sox() if any(float(f) != 1.0 for f in factors) else None

    report = PerturbReport(factors)
    entries = {}  # id -> (path, text, speaker, seconds), what data_prep.write_data_dir takes
    jobs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, nj)) as pool:  # the work is in sox and libsndfile
        for factor in factors:
            prefix = f"sp{factor}-"
            for key in sorted(wav):
                speaker = utt2spk[key]
                new_key, new_speaker = prefix + key, prefix + speaker
                if float(factor) == 1.0:
                    seconds = float(utt2dur[key]) if key in utt2dur else audio_seconds(wav[key])
                    entries[new_key] = (pathlib.Path(wav[key]), text[key], new_speaker, seconds)
                    report.original[factor] += 1
                    report.seconds[factor] += seconds
                    continue
                target = out / "audio" / f"sp{factor}" / speaker / f"{key}.flac"
                jobs[pool.submit(_make_copy, sox, wav[key], target, factor)] = (factor, key, new_key, new_speaker, target)
        for future in concurrent.futures.as_completed(jobs):
            factor, key, new_key, new_speaker, target = jobs[future]
            try:
                outcome, seconds = future.result()
            except Exception as error:
                report.failed.append((new_key, f"unreadable audio ({type(error).__name__}: {error})", wav[key]))
                report.failed_by_factor[factor] += 1
                continue
            (report.written if outcome == "written" else report.present)[factor] += 1
            report.seconds[factor] += seconds
            entries[new_key] = (target, text[key], new_speaker, seconds)
    report.failed.sort()
    write_data_dir(out, entries, PrepReport(kept=len(entries), rejected=report.failed))
    (out / "notes.txt").unlink()  # data_prep's (empty here); the input dir keeps its notes
    for name, content in (("factors", " ".join(factors) + "\n"), ("perturb.txt", report.table())):
        temporary = out / f".{name}.tmp"
        temporary.write_text(content, encoding="utf-8")
        temporary.replace(out / name)
    log.info("%s -> %s: %s", data, out, report.summary())
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=pathlib.Path, help="input data dir (wav.scp text utt2spk [utt2dur])")
    parser.add_argument("--out", type=pathlib.Path, help="perturbed data dir to write (e.g. <data>_sp)")
    parser.add_argument("--factors", nargs="+", default=list(DEFAULT_FACTORS), help="speed factors, each > 0")
    parser.add_argument("--nj", type=int, default=os.cpu_count() or 1, help="sox processes at once")
    parser.add_argument("--check", action="store_true", help="only check the factors (and that sox is there)")
    args = parser.parse_args(argv)
    try:
        factors = parse_factors(args.factors)
    except ValueError as error:
        parser.error(f"--factors: {error}")
    if args.check:
        try:
            if any(float(f) != 1.0 for f in factors):
                find_sox()
        except FileNotFoundError as error:
            raise SystemExit(f"speed_perturb.py: {error}")
        return
    if args.data is None or args.out is None:
        parser.error("--data and --out are required (unless --check)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (speed_perturb) %(message)s")
    try:
        report = perturb(args.data, args.out, factors, args.nj)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"speed_perturb.py: {error}")
    if report.failed:
        raise SystemExit(
            f"speed_perturb.py: {len(report.failed)} copies could not be made (see {args.out}/rejected.txt); "
            f"a rerun retries only those"
        )


if __name__ == "__main__":
    main()
