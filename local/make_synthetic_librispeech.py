#!/usr/bin/env python3
"""Generate an offline synthetic corpus (v2) in the exact LibriSpeech layout.

    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<NNNN>.flac
    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
    LibriSpeech/SPEAKERS.TXT, CHAPTERS.TXT, CONDITIONS.TXT (one line per utterance), VERSION

Subsets train-clean-100, dev-clean, test-clean and test-other. Voices come
from three of Debian's synthesisers: espeak-ng (accents x variants, the rough
variants croak/whisper/grandpa/... included), flite (kal, kal16, awb, rms, slt;
awb/rms/slt are built from CMU ARCTIC recordings) and festival (kal_diphone,
ked_diphone, cmu_us_slt_arctic_hts). A speaker is a voice plus a pitch offset,
a speaking rate, a level and a microphone colouring (high-pass, low-pass and
one peaking band); speakers are disjoint between subsets.

Every utterance has a noise floor (no exact digital silence anywhere),
per-utterance rate and pitch jitter, and a level jitter. Training covers
every condition of test-other: additive noise (white, pink, brown, hum,
speech-shaped) at 0-30 dB SNR on a third of it, room reverberation on a fifth,
slow and fast speakers, rough voices. test-clean is clean, normal-rate speech
of held-out speakers; test-other is held-out speakers (half of them rough
voices) under the hardest of the training conditions: fast speech, noise at
5-15 dB on every utterance and reverberation on half. CONDITIONS.TXT lists
each utterance's conditions.

Sentences come from a grammar of 726 words and 46 templates, with Zipf-like word
frequencies within each word class (as in natural text); no dev/test
sentence occurs in training, and a few words (RARE_WORDS) are rare in
training but as frequent as a median word of their class in the test sets. Output is a
deterministic function of --seed and --size (16 kHz, 16-bit FLAC); files are
written to a temporary name and renamed, so an interrupted run can be rerun.

    python local/make_synthetic_librispeech.py --out downloads --size default --nj 2
"""

import argparse
import hashlib
import json
import logging
import pathlib
import random
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

log = logging.getLogger("make_synthetic_librispeech")

# Bump when the generated audio or text changes: the recipe keeps corpora of different
# versions apart and refuses data dirs prepared from another one.
CORPUS_VERSION = 2
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

# ---------------------------------------------------------------------------------------------
# Voices
ESPEAK_ACCENTS = ["en", "en-us", "en-us-nyc", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029"]
ESPEAK_VARIANTS = [
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
    "adam", "alex", "andy", "annie", "aunty", "belinda", "benjamin", "caleb", "david", "ed", "edward",
    "john", "linda", "max", "michael", "paul", "robert", "steph", "quincy", "travis", "victor", "zac",
]
ROUGH_VARIANTS = ["croak", "whisper", "whisperf", "grandpa", "grandma", "klatt4", "klatt5"]
FEMALE_VARIANTS = {"f1", "f2", "f3", "f4", "f5", "annie", "aunty", "belinda", "linda", "steph", "whisperf", "grandma"}
FLITE_VOICES = ["kal", "kal16", "awb", "rms", "slt"]
FESTIVAL_VOICES = {  # voice -> the Debian package that ships it
    "kal_diphone": "festvox-kallpc16k",
    "ked_diphone": "festvox-kdlpc16k",
    "cmu_us_slt_arctic_hts": "festvox-us-slt-hts",
}
FEMALE_VOICES = {"slt", "cmu_us_slt_arctic_hts"}
ENGINE_PACKAGES = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival", "sox": "sox"}
# Share of each subset's speakers by voice family (the rest: espeak-ng's ordinary variants).
VOICE_MIX = {
    "train-clean-100": {"flite": 0.2, "festival": 0.08, "rough": 0.15},
    "dev-clean": {"flite": 0.2, "festival": 0.1, "rough": 0.0},
    "test-clean": {"flite": 0.2, "festival": 0.1, "rough": 0.0},
    "test-other": {"flite": 0.15, "festival": 0.1, "rough": 0.5},
}

# ---------------------------------------------------------------------------------------------
# Conditions. Rates are tempo factors (1.0: the synthesiser's own rate).
NOISE_TYPES = ("white", "pink", "brown", "hum", "speech")
RATE_JITTER = (0.95, 1.05)
PITCH_JITTER_CENTS = 40
LEVEL_JITTER_DB = 2.0
FLOOR_DBFS = (-60.0, -50.0)  # noise floor RMS: every sample of every file carries some signal
TRAIN_RATES = {"slow": (0.7, 0.85), "normal": (0.85, 1.15), "fast": (1.15, 1.35)}
DIRECT_TO_REVERBERANT_DB = (3.0, 15.0)  # energy of the direct path over the diffuse tail


@dataclass(frozen=True)
class SubsetConditions:
    rates: Tuple[Tuple[str, float], ...]  # (rate class, share of speakers)
    noise_every: int  # every n-th utterance is noisy (0: none)
    snr_db: Tuple[float, float]
    reverb_every: int
    rt60_s: Tuple[float, float]


CONDITIONS = {
    "train-clean-100": SubsetConditions((("slow", 0.2), ("fast", 0.25), ("normal", 0.55)), 3, (0.0, 30.0), 5, (0.2, 0.8)),
    "dev-clean": SubsetConditions((("normal", 1.0),), 0, (0.0, 0.0), 0, (0.0, 0.0)),
    "test-clean": SubsetConditions((("normal", 1.0),), 0, (0.0, 0.0), 0, (0.0, 0.0)),
    "test-other": SubsetConditions((("fast", 1.0),), 1, (5.0, 15.0), 2, (0.3, 0.8)),  # rates: TRAIN_RATES["fast"]
}

# ---------------------------------------------------------------------------------------------
# Grammar
_THIRD_PERSON = (
    "sees likes finds takes makes brings opens closes reads writes paints builds buys sells watches carries "
    "follows needs wants holds moves cleans fixes draws visits loves hates helps calls meets remembers forgets "
    "throws catches pushes pulls kicks drops lifts hides shows teaches feeds washes cooks eats drinks breaks "
    "picks touches counts chooses"
).split()
_INTRANSITIVE = (
    "sleeps runs waits sings walks smiles laughs works swims dances falls stops jumps cries shouts listens "
    "wakes rests plays travels climbs hurries whistles sits stands arrives leaves returns"
).split()
_NOUNS = (
    "cat dog bird horse cow sheep goat pig fish mouse rabbit fox wolf bear lion tiger duck owl frog snake "
    "house car tree book door window table chair garden river mountain city road boat train plane letter "
    "story song apple picture bottle box bag hat coat shoe shirt key lamp clock phone radio camera computer "
    "pencil basket blanket pillow teacher doctor farmer driver child friend king queen student baker sister "
    "brother mother father uncle aunt neighbour soldier sailor pilot nurse painter singer writer village "
    "forest market station kitchen bridge island beach lake hill valley field farm castle church school "
    "library hospital office museum shop street park tower wall roof floor candle mirror ladder bucket "
    "hammer rope wheel engine ticket map coin gift flower rose leaf stone shell cloud star moon storm "
    "lantern volcano violin parrot compass"
).split()
_MASS_NOUNS = "water coffee tea milk cheese bread soup music paper sugar rice".split()
_IRREGULAR_PLURALS = {"child": "children", "mouse": "mice", "sheep": "sheep", "fish": "fish", "wolf": "wolves", "leaf": "leaves"}


def plural(noun: str) -> str:
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def base_form(verb: str) -> str:
    """The infinitive of a third-person verb form (enough for this grammar's verbs)."""
    if verb.endswith("ies"):
        return verb[:-3] + "y"
    if verb.endswith(("ches", "shes", "sses", "xes", "zes")):
        return verb[:-2]
    return verb[:-1]


WORDS: Dict[str, List[str]] = {
    "det": "the a my your his her our their this that every some one no each another".split(),
    "pdet": "the my your our their some these those many few all".split(),
    "adj": (
        "red blue green yellow black white brown pink purple grey small big little large tiny huge old young "
        "new ancient modern happy sad angry calm quiet loud noisy fast slow warm cold hot cool wet dry bright "
        "dark soft hard smooth rough tall short long heavy light clean dirty busy lazy brave kind gentle "
        "strange simple rich poor proud shy clever silly wise funny serious friendly lonely hungry thirsty "
        "tired sleepy famous secret empty full sweet bitter fresh wooden golden silver broken open narrow "
        "wide deep distant lucky careful curious polite"
    ).split(),
    "noun": _NOUNS,
    "mass": _MASS_NOUNS,
    "plural": [plural(n) for n in _NOUNS],
    "verb": _THIRD_PERSON,
    "vbase": [base_form(v) for v in _THIRD_PERSON],
    "past": (
        "saw found took made brought opened closed painted built bought sold watched carried followed cleaned "
        "fixed visited helped called met remembered forgot threw caught pushed pulled dropped lifted hid "
        "showed fed washed cooked ate broke picked chose"
    ).split(),
    "iverb": _INTRANSITIVE,
    "ibase": [base_form(v) for v in _INTRANSITIVE],
    "adv": (
        "quickly slowly today again often always never early later quietly loudly happily sadly carefully "
        "suddenly gently soon tonight usually sometimes"
    ).split(),
    "prep": "on under near behind with in over beside across inside outside around through past towards above below into from".split(),
    "name": (
        "anna peter maria john lucy david emma thomas sara james olivia henry oliver sophia jack mia noah grace "
        "leo ella oscar ruby max lily sam chloe ben zoe alice george hannah daniel laura kevin nina paul rose "
        "victor wendy"
    ).split(),
    "num": "two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty fifty hundred".split(),
    "day": "monday tuesday wednesday thursday friday saturday sunday".split(),
    "daytime": "morning afternoon evening night".split(),
    "pron": "he she they we i you".split(),
}
TEMPLATES = [
    "det adj noun verb det noun",
    "name verb det adj noun prep det noun",
    "det noun iverb adv",
    "num adj plural ibase prep det noun",
    "name iverb prep det adj noun adv",
    "det adj noun prep det noun verb det noun",
    "name verb num plural",
    "det noun verb det adj noun adv",
    "num plural ibase adv",
    "name and name vbase det noun",
    "pron past det adj noun prep det noun",
    "yesterday name past num adj plural",
    "on day name past det noun",
    "in the daytime det noun iverb prep det noun",
    "name said that det noun iverb adv",
    "det noun is very adj",
    "the plural are adj and adj",
    "where is det adj noun",
    "does det noun vbase det noun",
    "did name vbase det adj noun",
    "pron will vbase det noun tomorrow",
    "name can vbase num plural",
    "please vbase det adj noun",
    "do not vbase det noun",
    "det noun prep det noun iverb",
    "name verb det noun because det noun iverb",
    "pron past det noun and det noun",
    "pdet adj plural vbase det noun adv",
    "num plural vbase det adj noun",
    "name has num adj plural",
    "there is det adj noun prep det noun",
    "there are num plural prep det noun",
    "name is adj today",
    "name gave det noun to name",
    "name wants to vbase some mass",
    "det noun and det noun ibase together",
    "pron past adv",
    "name told name about det adj noun",
    "when det noun iverb name iverb",
    "name verb det noun prep det adj noun",
    "det noun was adj in the daytime",
    "num adj plural were prep det noun",
    "who verb det adj noun",
    "how many plural did name vbase",
    "name never verb mass",
    "pdet plural always ibase prep det noun",
]
# Rare in training (sampled RARE_WEIGHT times as often as their neighbours), ordinary in test.
_RARE_NOUNS = ("lantern", "volcano", "violin", "parrot", "compass")
RARE_WORDS = _RARE_NOUNS + tuple(plural(n) for n in _RARE_NOUNS) + ("ancient", "curious", "polite")
RARE_WEIGHT = 0.1
ZIPF_EXPONENT = 1.0


def vocabulary() -> List[str]:
    literals = {word for template in TEMPLATES for word in template.split() if word not in WORDS}
    return sorted({word for words in WORDS.values() for word in words} | literals)


def word_weights(category: str, rare_weight: float = 1.0) -> List[float]:
    """Zipf-like frequencies within a category (the k-th word ~ 1 / k ** ZIPF_EXPONENT, as in natural
    text); RARE_WORDS get the category's median weight times ``rare_weight``."""
    choices = WORDS[category]
    zipf = [1.0 / (rank + 1) ** ZIPF_EXPONENT for rank in range(len(choices))]
    median = sorted(zipf)[len(zipf) // 2]
    return [median * rare_weight if word in RARE_WORDS else weight for word, weight in zip(choices, zipf)]


def make_sentence(rng: random.Random, rare_weight: float = 1.0) -> str:
    """One sentence; ``rare_weight`` < 1 makes RARE_WORDS rarer than in the tests."""
    template = rng.choice(TEMPLATES)
    words = []
    for slot in template.split():
        if slot not in WORDS:
            words.append(slot)
            continue
        words.append(rng.choices(WORDS[slot], word_weights(slot, rare_weight))[0])
    return " ".join(words)


# ---------------------------------------------------------------------------------------------
# Speakers


@dataclass(frozen=True)
class Speaker:
    speaker_id: int
    engine: str  # espeak-ng | flite | festival
    voice: str  # espeak-ng "accent+variant", or the flite/festival voice name
    pitch_cents: int  # offset of the voice's pitch
    rate: float  # tempo factor (1.0: the synthesiser's own rate)
    level_dbfs: float  # speech RMS
    highpass_hz: float  # microphone colouring
    lowpass_hz: float
    peak_hz: float
    peak_gain_db: float
    rough: bool
    sex: str

    def identity(self) -> Tuple:
        """What makes two speakers the same person: voice and pitch (espeak-ng: the voice alone)."""
        return (self.engine, self.voice) if self.engine == "espeak-ng" else (self.engine, self.voice, self.pitch_cents)

    def describe(self) -> str:
        return (
            f"{self.engine} {self.voice} pitch{self.pitch_cents:+d}c rate{self.rate:.2f} level{self.level_dbfs:.0f}dB "
            f"mic{self.highpass_hz:.0f}-{self.lowpass_hz:.0f}Hz"
        )


def _shares(count: int, shares: Dict[str, float], at_least_one: bool) -> Dict[str, int]:
    """Speakers per family; training gets at least one of each so that every condition is covered."""
    counts = {family: int(round(share * count)) for family, share in shares.items()}
    if at_least_one:
        counts = {family: max(1, n) if shares[family] > 0 else 0 for family, n in counts.items()}
    while sum(counts.values()) > count:  # tiny subsets: trim the largest family
        largest = max(counts, key=counts.get)
        counts[largest] -= 1
    return counts


def make_speakers(size: str, seed: int) -> Dict[str, List[Speaker]]:
    """Disjoint speakers per subset (espeak-ng voices disjoint; flite/festival voices at distinct pitches)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}; got {size!r}")
    rng = random.Random(seed)
    ordinary = [f"{accent}+{variant}" for accent in ESPEAK_ACCENTS for variant in ESPEAK_VARIANTS]
    rough = [f"{accent}+{variant}" for accent in ESPEAK_ACCENTS for variant in ROUGH_VARIANTS]
    rng.shuffle(ordinary)
    rng.shuffle(rough)
    natural = [("flite", v) for v in FLITE_VOICES] + [("festival", v) for v in FESTIVAL_VOICES]
    used_identities = set()
    speakers: Dict[str, List[Speaker]] = {}
    for subset in SUBSETS:
        count = SIZES[size][subset][0]
        train = subset == "train-clean-100"
        families = _shares(count, VOICE_MIX[subset], at_least_one=train)
        plan = ["flite"] * families["flite"] + ["festival"] * families["festival"] + ["rough"] * families["rough"]
        plan += ["espeak"] * (count - len(plan))
        conditions = CONDITIONS[subset]
        rate_plan = []
        for rate_class, share in conditions.rates:
            rate_plan += [rate_class] * max(1 if train else 0, int(round(share * count)))
        rate_plan = (rate_plan + [conditions.rates[-1][0]] * count)[:count]
        rng.shuffle(rate_plan)
        chosen = []
        for index, family in enumerate(plan):
            if family in ("espeak", "rough"):
                pool = ordinary if family == "espeak" else rough
                if not pool:
                    raise ValueError(f"not enough distinct espeak-ng voices for {count} speakers in {subset}")
                voice = pool.pop()
                engine = "espeak-ng"
                pitch = rng.randrange(-300, 301, 10)
                sex = "F" if voice.split("+")[1] in FEMALE_VARIANTS else "M"
            else:
                options = [v for e, v in natural if e == family]
                voice = options[(index + rng.randrange(len(options))) % len(options)]
                engine = family
                while True:  # a pitch offset no other speaker of this voice has
                    pitch = rng.randrange(-400, 401, 20)
                    if (engine, voice, pitch) not in used_identities:
                        break
                sex = "F" if voice in FEMALE_VOICES else "M"
            low, high = TRAIN_RATES[rate_plan[index]] if train else TRAIN_RATES[conditions.rates[0][0]]
            if subset in ("dev-clean", "test-clean"):
                low, high = 0.85, 1.05  # ordinary read speech
            speaker = Speaker(
                speaker_id=FIRST_SPEAKER_ID[subset] + index,
                engine=engine,
                voice=voice,
                pitch_cents=pitch,
                rate=round(rng.uniform(low, high), 3),
                level_dbfs=round(rng.uniform(-30.0, -18.0), 1),
                highpass_hz=round(rng.uniform(40.0, 250.0)),
                lowpass_hz=round(rng.uniform(4000.0, 7800.0)),
                peak_hz=round(rng.uniform(300.0, 3500.0)),
                peak_gain_db=round(rng.uniform(-6.0, 6.0), 1),
                rough=family == "rough",
                sex=sex,
            )
            used_identities.add(speaker.identity())
            chosen.append(speaker)
        speakers[subset] = chosen
    return speakers


# ---------------------------------------------------------------------------------------------
# Synthesis


@dataclass(frozen=True)
class Condition:
    """What one utterance went through (CONDITIONS.TXT)."""

    rate: float
    pitch_cents: int
    level_dbfs: float
    noise: str  # "none" or one of NOISE_TYPES
    snr_db: Optional[float]
    rt60_s: Optional[float]
    floor_dbfs: float


def make_condition(speaker: Speaker, subset: str, index: int, rng: random.Random) -> Condition:
    """Per-utterance jitter and, by the subset's pattern, noise and reverberation."""
    plan = CONDITIONS[subset]
    noisy = plan.noise_every > 0 and index % plan.noise_every == 0
    reverberant = plan.reverb_every > 0 and index % plan.reverb_every == plan.reverb_every - 1
    # Noise types rotate with the utterance index so that every type occurs in any subset of >= 5 noisy ones.
    noise = NOISE_TYPES[(index // max(1, plan.noise_every) + speaker.speaker_id) % len(NOISE_TYPES)] if noisy else "none"
    return Condition(
        rate=round(speaker.rate * rng.uniform(*RATE_JITTER), 3),
        pitch_cents=speaker.pitch_cents + rng.randint(-PITCH_JITTER_CENTS, PITCH_JITTER_CENTS),
        level_dbfs=round(speaker.level_dbfs + rng.uniform(-LEVEL_JITTER_DB, LEVEL_JITTER_DB), 1),
        noise=noise,
        snr_db=round(rng.uniform(*plan.snr_db), 1) if noisy else None,
        rt60_s=round(rng.uniform(*plan.rt60_s), 2) if reverberant else None,
        floor_dbfs=round(rng.uniform(*FLOOR_DBFS), 1),
    )


def check_synthesisers(engines) -> None:
    """A missing synthesiser or voice is a clear error naming the Debian package."""
    for engine in sorted(set(engines) | {"sox"}):
        program = "text2wave" if engine == "festival" else engine
        if shutil.which(program) is None:
            raise RuntimeError(
                f"{program} not found on PATH: install the Debian package {ENGINE_PACKAGES[engine]} "
                f"(local/setup.sh does)"
            )


def _run(command: List[str], package: str, stdin: bytes = None) -> bytes:
    try:
        return subprocess.run(command, input=stdin, capture_output=True, check=True).stdout
    except subprocess.CalledProcessError as error:
        raise RuntimeError(
            f"{' '.join(command[:4])} ... failed ({error.returncode}): {error.stderr.decode(errors='replace').strip()[:300]} "
            f"(is the Debian package {package} installed? local/setup.sh installs it)"
        ) from None


def _raw_speech(speaker: Speaker, text: str, condition: Condition) -> bytes:
    """The synthesiser's WAV bytes (espeak-ng applies rate and pitch itself)."""
    if speaker.engine == "espeak-ng":
        pitch = min(99, max(0, 50 + condition.pitch_cents // 12))  # -p: 0-99, 50 is the voice's own
        rate = int(round(175 * condition.rate))  # -s: words per minute, 175 is espeak-ng's default
        return _run(["espeak-ng", "-v", speaker.voice, "-p", str(pitch), "-s", str(rate), "--stdout", text], "espeak-ng")
    if speaker.engine == "flite":
        command, package = ["flite", "-voice", speaker.voice, "-t", text, "-o"], "flite"
    elif speaker.engine == "festival":
        command, package = ["text2wave", "-eval", f"(voice_{speaker.voice})", "-o"], FESTIVAL_VOICES[speaker.voice]
    else:
        raise ValueError(f"unknown synthesiser {speaker.engine!r}")
    # Both write a proper WAV header only to a file (text2wave's stdout header says 0 samples).
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "speech.wav"
        _run(command + [str(path)], package, stdin=text.encode())
        if not path.exists():  # festival exits 0 when its data directory is missing
            raise RuntimeError(
                f"{command[0]} {speaker.voice} exited 0 but wrote no audio for {text[:40]!r} "
                f"(is the Debian package {package} installed? local/setup.sh installs it)"
            )
        return path.read_bytes()


def _to_16k(raw: bytes, speaker: Speaker, condition: Condition) -> np.ndarray:
    """sox: tempo and pitch for flite/festival (espeak-ng did its own), then 16 kHz float samples."""
    effects = []
    if speaker.engine != "espeak-ng":
        effects = ["tempo", "-s", f"{condition.rate:.3f}", "pitch", str(condition.pitch_cents)]
    command = ["sox", "-t", "wav", "-", "-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-"]
    command += effects + ["rate", "-h", str(SAMPLE_RATE)]
    out = _run(command, "sox", stdin=raw)
    return np.frombuffer(out, dtype=np.float32).copy()


def _coloured_noise(kind: str, size: int, rng: np.random.Generator, speech: np.ndarray = None) -> np.ndarray:
    white = rng.standard_normal(size)
    if kind == "white":
        return white
    if kind == "hum":  # mains hum and its harmonics over a little hiss
        t = np.arange(size) / SAMPLE_RATE
        base = rng.choice([50.0, 60.0])
        hum = sum(rng.uniform(0.2, 1.0) / h * np.sin(2 * np.pi * base * h * t + rng.uniform(0, 2 * np.pi)) for h in (1, 2, 3, 5))
        return hum / (np.std(hum) + 1e-12) + 0.1 * white
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(size, 1 / SAMPLE_RATE)
    if kind == "pink":
        spectrum /= np.sqrt(np.maximum(freqs, 20.0))
    elif kind == "brown":
        spectrum /= np.maximum(freqs, 20.0)
    elif kind == "speech":  # the long-term spectrum of the utterance itself, with random phase
        magnitude = np.abs(np.fft.rfft(speech, n=size))
        kernel = np.ones(64) / 64
        spectrum = np.convolve(magnitude, kernel, mode="same") * np.exp(2j * np.pi * rng.random(freqs.size))
    else:
        raise ValueError(f"unknown noise type {kind!r}")
    return np.fft.irfft(spectrum, n=size)


def _room_response(rt60: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response: the direct path plus an exponentially decaying diffuse tail."""
    length = int(rt60 * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    tail = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    tail[: int(0.002 * SAMPLE_RATE)] = 0.0  # first reflections arrive after ~2 ms
    direct_to_reverberant_db = rng.uniform(*DIRECT_TO_REVERBERANT_DB)
    tail *= 10 ** (-direct_to_reverberant_db / 20) / (np.sqrt(np.sum(tail**2)) + 1e-12)
    tail[0] = 1.0
    return tail


def _convolve(signal: np.ndarray, response: np.ndarray) -> np.ndarray:
    size = signal.size + response.size - 1
    n = 1 << (size - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(signal, n) * np.fft.rfft(response, n), n)[: signal.size + response.size // 4]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) + 1e-12


def synthesize(speaker: Speaker, text: str, condition: Condition, noise_seed: int) -> np.ndarray:
    """Synthesiser -> 16 kHz -> microphone -> room -> level -> noise -> noise floor (float32 mono)."""
    import torch
    import torchaudio

    torch.set_num_threads(1)  # one process per core already
    rng = np.random.default_rng(noise_seed)
    speech = _to_16k(_raw_speech(speaker, text, condition), speaker, condition).astype(np.float64)
    if speech.size == 0 or not np.any(speech):
        raise RuntimeError(f"{speaker.engine} {speaker.voice} produced no audio for {text!r}")
    speech /= np.abs(speech).max()
    pad = [int(rng.uniform(0.15, 0.5) * SAMPLE_RATE) for _ in range(2)]
    speech = np.concatenate([np.zeros(pad[0]), speech, np.zeros(pad[1])])
    waveform = torch.from_numpy(speech).unsqueeze(0)
    waveform = torchaudio.functional.highpass_biquad(waveform, SAMPLE_RATE, speaker.highpass_hz)
    waveform = torchaudio.functional.lowpass_biquad(waveform, SAMPLE_RATE, speaker.lowpass_hz)
    waveform = torchaudio.functional.equalizer_biquad(waveform, SAMPLE_RATE, speaker.peak_hz, speaker.peak_gain_db, Q=1.0)
    speech = waveform[0].numpy()
    active_rms = _rms(speech[pad[0] : speech.size - pad[1]])
    if condition.rt60_s:
        speech = _convolve(speech, _room_response(condition.rt60_s, rng))
    speech *= 10 ** (condition.level_dbfs / 20) / active_rms
    if condition.snr_db is not None:
        noise = _coloured_noise(condition.noise, speech.size, rng, speech)
        speech_rms = 10 ** (condition.level_dbfs / 20)
        speech += noise * speech_rms / (10 ** (condition.snr_db / 20) * _rms(noise))
    floor = _coloured_noise("pink", speech.size, rng)
    speech += floor * 10 ** (condition.floor_dbfs / 20) / _rms(floor)
    peak = np.abs(speech).max()
    if peak > 0.99:  # keep the mix unclipped (loud speakers in loud noise)
        speech *= 0.99 / peak
    return speech.astype(np.float32)


def _write_utterance(job) -> float:
    import soundfile

    path, speaker, text, condition, noise_seed = job
    path = pathlib.Path(path)
    if path.exists():
        return soundfile.info(str(path)).duration
    audio = synthesize(speaker, text.lower(), condition, noise_seed)
    temporary = path.with_name(path.name + ".tmp")
    soundfile.write(str(temporary), audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    temporary.replace(path)
    return audio.size / SAMPLE_RATE


def _stable_seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:4], "little")


def version_stamp(size: str, seed: int) -> str:
    """What VERSION holds: the recipe compares it before reusing a corpus."""
    return json.dumps({"corpus_version": CORPUS_VERSION, "size": size, "seed": seed}, sort_keys=True)


def plan_corpus(size: str, seed: int):
    """Every utterance of the corpus: (subset, speaker, chapter, utterance id, text, condition, noise seed)."""
    speakers = make_speakers(size, seed)
    sentence_rng = {subset: random.Random(_stable_seed(seed, subset, "text")) for subset in SUBSETS}
    train_sentences = set()
    plan, chapter_id = [], 10
    for subset in SUBSETS:
        _, num_chapters, per_chapter = SIZES[size][subset]
        train = subset == "train-clean-100"
        index = 0
        for speaker in speakers[subset]:
            condition_rng = random.Random(_stable_seed(seed, speaker.speaker_id, "conditions"))
            for _ in range(num_chapters):
                chapter_id += 1
                for number in range(per_chapter):
                    while True:
                        sentence = make_sentence(sentence_rng[subset], RARE_WEIGHT if train else 1.0)
                        if train:
                            train_sentences.add(sentence)
                            break
                        if sentence not in train_sentences:
                            break
                    utterance = f"{speaker.speaker_id}-{chapter_id}-{number:04d}"
                    condition = make_condition(speaker, subset, index, condition_rng)
                    plan.append((subset, speaker, chapter_id, utterance, sentence, condition, _stable_seed(seed, utterance)))
                    index += 1
    return speakers, plan


def generate(out: pathlib.Path, size: str = "default", seed: int = 0, nj: int = 1) -> pathlib.Path:
    if size not in SIZES:
        raise ValueError(f"--size must be one of {', '.join(SIZES)}; got {size!r}")
    from tqdm import tqdm

    root = out / "LibriSpeech"
    speakers, plan = plan_corpus(size, seed)
    check_synthesisers({s.engine for group in speakers.values() for s in group})
    stamp = root / "VERSION"
    found = stamp.read_text().strip() if stamp.exists() else None
    if found is None and root.is_dir() and any(p.name != "VERSION" for p in root.iterdir()):
        found = "an older version without VERSION"
    # Never mix files of two corpora (existing files are reused by a rerun).
    if found is not None and found != version_stamp(size, seed):
        raise RuntimeError(
            f"{root} holds another corpus ({found}); this generator makes "
            f"{version_stamp(size, seed)}: use another --out, or remove {root}"
        )
    root.mkdir(parents=True, exist_ok=True)
    stamp.write_text(version_stamp(size, seed) + "\n")
    jobs, transcripts, chapters = [], {}, {}
    for subset, speaker, chapter, utterance, sentence, condition, noise_seed in plan:
        directory = root / subset / str(speaker.speaker_id) / str(chapter)
        directory.mkdir(parents=True, exist_ok=True)
        transcripts.setdefault(directory / f"{speaker.speaker_id}-{chapter}.trans.txt", []).append(
            f"{utterance} {sentence.upper()}"
        )
        chapters.setdefault(chapter, (speaker, subset))
        jobs.append((directory / f"{utterance}.flac", speaker, sentence.upper(), condition, noise_seed))
    started = time.time()
    durations = {}
    with ProcessPoolExecutor(max_workers=max(1, nj)) as pool:
        results = pool.map(_write_utterance, jobs, chunksize=8)
        for job, duration in tqdm(zip(jobs, results), total=len(jobs), desc="synthesising", unit="utt", disable=None):
            durations[job[0]] = duration
    elapsed = time.time() - started
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
                f"| {speaker.describe()}"
            )
    (root / "SPEAKERS.TXT").write_text("\n".join(speaker_lines) + "\n")
    chapter_lines = [";ID    |READER|MINUTES| SUBSET           | PROJ.|BOOK ID| CH. TITLE | PROJECT TITLE"]
    for chapter, (speaker, subset) in chapters.items():
        chapter_lines.append(
            f"{chapter:<7}| {speaker.speaker_id:<5}| {minutes_by_chapter.get(chapter, 0):5.2f} | {subset:<17}| "
            f"{0:<5}| {0:<6}| synthetic chapter {chapter} | espnet-amortized synthetic corpus v{CORPUS_VERSION}"
        )
    (root / "CHAPTERS.TXT").write_text("\n".join(chapter_lines) + "\n")
    fields = list(asdict(plan[0][5]))
    condition_lines = [";UTTERANCE | SUBSET | ENGINE | VOICE | ROUGH | " + " | ".join(f.upper() for f in fields)]
    for subset, speaker, _, utterance, _, condition, _ in plan:
        values = [str(v) if v is not None else "-" for v in asdict(condition).values()]
        condition_lines.append(" | ".join([utterance, subset, speaker.engine, speaker.voice, str(speaker.rough)] + values))
    (root / "CONDITIONS.TXT").write_text("\n".join(condition_lines) + "\n")
    hours = sum(durations.values()) / 3600
    log.info(
        "wrote %d utterances (%.2f h) under %s in %.0f s: %.1f utterances/s with %d processes",
        len(jobs), hours, root, elapsed, len(jobs) / max(elapsed, 1e-9), nj,
    )
    return root


def read_conditions(root: pathlib.Path) -> List[Dict[str, str]]:
    """CONDITIONS.TXT as one dict per utterance (for tests and analyses)."""
    lines = (root / "CONDITIONS.TXT").read_text().splitlines()
    header = [name.strip().lower() for name in lines[0].lstrip(";").split("|")]
    return [dict(zip(header, (v.strip() for v in line.split("|")))) for line in lines[1:]]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, required=True, help="folder that will hold LibriSpeech/")
    parser.add_argument("--size", default="default", choices=sorted(SIZES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nj", type=int, default=1, help="parallel synthesis processes")
    parser.add_argument("--print_version", action="store_true", help="print what VERSION would hold and exit")
    args = parser.parse_args(argv)
    if args.print_version:
        print(version_stamp(args.size, args.seed))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(name)s) %(message)s")
    generate(args.out, args.size, args.seed, args.nj)


if __name__ == "__main__":
    main()
