#!/usr/bin/env python3
"""Generate an offline synthetic corpus in the exact LibriSpeech layout with espeak-ng.

    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<NNNN>.flac
    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
    LibriSpeech/SPEAKERS.TXT, LibriSpeech/CHAPTERS.TXT

Subsets train-clean-100, dev-clean, test-clean and test-other. A "speaker" is
an espeak-ng accent + voice variant + pitch + rate; speakers are disjoint
between subsets. test-other is harder: faster speech, rougher voices and
additive noise at 10-20 dB SNR. Sentences come from a small grammar over a
~250-word vocabulary (every test word occurs in training, no test sentence
does), so that a small model learns within minutes on a CPU. Output is a
deterministic function of --seed and --size (16 kHz, 16-bit FLAC); files are
written to a temporary name and renamed, so an interrupted run can be rerun.

    python local/make_synthetic_librispeech.py --out downloads --size default --nj 2
"""

import argparse
import hashlib
import io
import logging
import pathlib
import random
import shutil
import subprocess
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

log = logging.getLogger("make_synthetic_librispeech")

SAMPLE_RATE = 16000
SUBSETS = ("train-clean-100", "dev-clean", "test-clean", "test-other")
# (speakers, chapters per speaker, utterances per chapter) for each subset.
SIZES: Dict[str, Dict[str, Tuple[int, int, int]]] = {
    "tiny": {"train-clean-100": (6, 2, 4), "dev-clean": (2, 1, 4), "test-clean": (2, 1, 4), "test-other": (2, 1, 4)},
    "small": {"train-clean-100": (20, 2, 15), "dev-clean": (4, 1, 15), "test-clean": (4, 1, 15), "test-other": (4, 1, 15)},
    "default": {"train-clean-100": (100, 2, 16), "dev-clean": (6, 1, 25), "test-clean": (8, 1, 25), "test-other": (8, 1, 25)},
    "bench": {"train-clean-100": (50, 2, 60), "dev-clean": (10, 1, 50), "test-clean": (20, 1, 30), "test-other": (20, 1, 30)},
}
FIRST_SPEAKER_ID = {"train-clean-100": 100, "dev-clean": 2000, "test-clean": 3000, "test-other": 4000}

ACCENTS = ["en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029"]
VARIANTS = [
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
    "adam", "alex", "andy", "annie", "aunty", "belinda", "benjamin", "caleb", "david", "ed", "edward",
    "john", "linda", "max", "michael", "paul", "robert", "steph", "quincy", "travis", "victor", "zac",
]
HARD_VARIANTS = ["croak", "whisper", "whisperf", "grandpa", "grandma", "klatt4", "klatt5"]
FEMALE_VARIANTS = {"f1", "f2", "f3", "f4", "f5", "annie", "aunty", "belinda", "linda", "steph", "whisperf", "grandma"}

WORDS = {
    "det": "the a my your this that every some one no".split(),
    "adj": (
        "red blue green yellow black white small big old young happy sad quiet loud fast slow warm cold "
        "bright dark soft hard new tall short heavy light clean dirty busy lazy brave kind strange simple"
    ).split(),
    "noun": (
        "cat dog bird horse cow fish house car tree book door window table chair garden river mountain city "
        "road boat train plane letter story song apple bread water coffee music picture paper bottle box "
        "teacher doctor farmer driver child friend king queen student baker sister brother mother father "
        "village forest market station kitchen bridge island"
    ).split(),
    "verb": (
        "sees likes finds takes makes brings opens closes reads writes paints builds buys sells watches "
        "carries follows needs wants holds moves cleans fixes draws visits"
    ).split(),
    "iverb": "sleeps runs waits sings walks smiles laughs works swims dances falls stops".split(),
    "prep": "on under near behind with in over beside across inside".split(),
    "adv": "quickly slowly today again often always never early later quietly".split(),
    "name": "anna peter maria john lucy david emma thomas sara james olivia henry".split(),
    "num": "two three four five six seven eight nine ten twelve twenty".split(),
    "plural": (
        "cats dogs birds horses houses cars trees books doors windows apples letters songs boats "
        "children friends students teachers"
    ).split(),
}
TEMPLATES = [
    "det adj noun verb det noun",
    "name verb det adj noun prep det noun",
    "det noun iverb adv",
    "num adj plural iverb prep det noun",
    "name iverb prep det adj noun adv",
    "det adj noun prep det noun verb det noun",
    "name verb num plural",
    "det noun verb det adj noun adv",
    "num plural iverb adv",
    "name and name verb det noun",
]


@dataclass(frozen=True)
class Speaker:
    speaker_id: int
    voice: str  # espeak-ng -v
    pitch: int  # espeak-ng -p (0-99)
    rate: int  # espeak-ng -s (words per minute)
    sex: str
    noise_snr_db: Tuple[float, float]  # () for clean speech


def vocabulary() -> List[str]:
    return sorted({word for words in WORDS.values() for word in words} | {"and"})


def make_sentence(rng: random.Random) -> str:
    template = rng.choice(TEMPLATES)
    return " ".join(word if word == "and" else rng.choice(WORDS[word]) for word in template.split())


def make_speakers(size: str, seed: int) -> Dict[str, List[Speaker]]:
    """Disjoint (accent, variant) voices per subset; test-other gets the rough voices too."""
    rng = random.Random(seed)
    voices = [(accent, variant) for accent in ACCENTS for variant in VARIANTS]
    hard = [(accent, variant) for accent in ACCENTS for variant in HARD_VARIANTS]
    rng.shuffle(voices)
    rng.shuffle(hard)
    speakers: Dict[str, List[Speaker]] = {}
    for subset in SUBSETS:
        count = SIZES[size][subset][0]
        pool = voices
        if subset == "test-other":
            pool = [v for pair in zip(hard, voices) for v in pair]  # half of them rough voices
        if len(pool) < count:
            raise ValueError(f"not enough distinct voices for {count} speakers in {subset}")
        chosen, remaining = pool[:count], pool[count:]
        voices = [v for v in voices if v not in chosen]
        hard = [v for v in hard if v not in chosen]
        del remaining
        faster = subset == "test-other"
        speakers[subset] = [
            Speaker(
                speaker_id=FIRST_SPEAKER_ID[subset] + index,
                voice=f"{accent}+{variant}",
                pitch=rng.randint(25, 75),
                rate=rng.randint(190, 230) if faster else rng.randint(140, 185),
                sex="F" if variant in FEMALE_VARIANTS else "M",
                noise_snr_db=(10.0, 20.0) if faster else (),
            )
            for index, (accent, variant) in enumerate(chosen)
        ]
    return speakers


def synthesize(speaker: Speaker, text: str, noise_seed: int) -> np.ndarray:
    """espeak-ng -> float32 mono at 16 kHz (plus noise for noisy speakers)."""
    import soundfile
    import torch
    import torchaudio

    command = ["espeak-ng", "-v", speaker.voice, "-p", str(speaker.pitch), "-s", str(speaker.rate), "--stdout", text]
    raw = subprocess.run(command, capture_output=True, check=True).stdout
    audio, rate = soundfile.read(io.BytesIO(raw), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    torch.set_num_threads(1)  # one process per core already
    audio = torchaudio.functional.resample(torch.from_numpy(audio), rate, SAMPLE_RATE).numpy()
    peak = float(np.abs(audio).max()) or 1.0
    audio = 0.5 * audio / peak
    if speaker.noise_snr_db:
        rng = np.random.default_rng(noise_seed)
        snr = rng.uniform(*speaker.noise_snr_db)
        noise = rng.standard_normal(audio.size).astype(np.float32)
        if rng.random() < 0.5:  # brown-ish noise half of the time
            noise = np.cumsum(noise)
            noise -= np.convolve(noise, np.ones(64) / 64, mode="same")
        signal_power = float(np.mean(audio**2)) or 1e-8
        noise *= np.sqrt(signal_power / (10 ** (snr / 10)) / max(float(np.mean(noise**2)), 1e-12))
        audio = np.clip(audio + noise, -1.0, 1.0)
    return audio.astype(np.float32)


def _write_utterance(job) -> float:
    import soundfile

    path, speaker, text, noise_seed = job
    path = pathlib.Path(path)
    if path.exists():
        return soundfile.info(str(path)).duration
    audio = synthesize(speaker, text.lower(), noise_seed)
    temporary = path.with_name(path.name + ".tmp")
    soundfile.write(str(temporary), audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    temporary.replace(path)
    return audio.size / SAMPLE_RATE


def _stable_seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:4], "little")


def generate(out: pathlib.Path, size: str = "default", seed: int = 0, nj: int = 1) -> pathlib.Path:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng not found on PATH: run local/setup.sh (apt package espeak-ng)")
    if size not in SIZES:
        raise ValueError(f"--size must be one of {', '.join(SIZES)}; got {size!r}")
    from tqdm import tqdm

    root = out / "LibriSpeech"
    speakers = make_speakers(size, seed)
    sentence_rng = {subset: random.Random(_stable_seed(seed, subset, "text")) for subset in SUBSETS}
    train_sentences = set()
    jobs, chapters, transcripts = [], [], {}
    chapter_id = 10
    for subset in SUBSETS:
        _, num_chapters, per_chapter = SIZES[size][subset]
        for speaker in speakers[subset]:
            for _ in range(num_chapters):
                chapter_id += 1
                directory = root / subset / str(speaker.speaker_id) / str(chapter_id)
                directory.mkdir(parents=True, exist_ok=True)
                lines = []
                for index in range(per_chapter):
                    while True:
                        sentence = make_sentence(sentence_rng[subset])
                        if subset == "train-clean-100":
                            train_sentences.add(sentence)
                            break
                        if sentence not in train_sentences:
                            break
                    utterance = f"{speaker.speaker_id}-{chapter_id}-{index:04d}"
                    lines.append(f"{utterance} {sentence.upper()}")
                    jobs.append((directory / f"{utterance}.flac", speaker, sentence.upper(), _stable_seed(seed, utterance)))
                transcripts[directory / f"{speaker.speaker_id}-{chapter_id}.trans.txt"] = lines
                chapters.append((chapter_id, speaker, subset, len(lines)))
    durations = {}
    with ProcessPoolExecutor(max_workers=max(1, nj)) as pool:
        results = pool.map(_write_utterance, jobs, chunksize=16)
        for job, duration in tqdm(zip(jobs, results), total=len(jobs), desc="synthesising", unit="utt", disable=None):
            durations[job[0]] = duration
    for path, lines in transcripts.items():
        path.write_text("\n".join(lines) + "\n")
    minutes_by_speaker: Dict[int, float] = {}
    minutes_by_chapter: Dict[int, float] = {}
    for path, duration in durations.items():
        speaker_id, chapter = (int(part) for part in path.name.split("-")[:2])
        minutes_by_speaker[speaker_id] = minutes_by_speaker.get(speaker_id, 0.0) + duration / 60
        minutes_by_chapter[chapter] = minutes_by_chapter.get(chapter, 0.0) + duration / 60
    speaker_lines = [";ID  |SEX| SUBSET           |MINUTES| NAME"]
    for subset in SUBSETS:
        for speaker in speakers[subset]:
            speaker_lines.append(
                f"{speaker.speaker_id:<5}| {speaker.sex} | {subset:<17}| {minutes_by_speaker.get(speaker.speaker_id, 0):5.2f} "
                f"| espeak-ng {speaker.voice} p{speaker.pitch} s{speaker.rate}"
            )
    (root / "SPEAKERS.TXT").write_text("\n".join(speaker_lines) + "\n")
    chapter_lines = [";ID    |READER|MINUTES| SUBSET           | PROJ.|BOOK ID| CH. TITLE | PROJECT TITLE"]
    for chapter, speaker, subset, _ in chapters:
        chapter_lines.append(
            f"{chapter:<7}| {speaker.speaker_id:<5}| {minutes_by_chapter.get(chapter, 0):5.2f} | {subset:<17}| "
            f"{0:<5}| {0:<6}| synthetic chapter {chapter} | espnet-amortized synthetic corpus"
        )
    (root / "CHAPTERS.TXT").write_text("\n".join(chapter_lines) + "\n")
    hours = sum(durations.values()) / 3600
    log.info("wrote %d utterances (%.2f h) under %s", len(jobs), hours, root)
    return root


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, required=True, help="folder that will hold LibriSpeech/")
    parser.add_argument("--size", default="default", choices=sorted(SIZES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nj", type=int, default=1, help="parallel synthesis processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(name)s) %(message)s")
    generate(args.out, args.size, args.seed, args.nj)


if __name__ == "__main__":
    main()
