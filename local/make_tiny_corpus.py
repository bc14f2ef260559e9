#!/usr/bin/env python3
"""Write a tiny espeak-ng corpus as a Kaldi-style data dir (wav.scp, text) plus a char token list.

Used by the demo run and the tests; the recipe's LibriSpeech-layout corpus
generator supersedes it for real runs.

    python local/make_tiny_corpus.py OUT_DIR [--repeat N]
"""

import argparse
import io
import pathlib
import shutil
import subprocess

SENTENCES = [
    "the cat sat on the mat", "a dog ran in the park", "she reads a red book",
    "we go home at night", "the sun is very hot", "he plays the old piano",
    "birds sing in the tree", "open the blue door",
]
VOICES = ["en", "en+f3", "en-us", "en+m3", "en+f2", "en-us+m2"]
TOKENS = ["<blank>", "<unk>", "<space>"] + list("ABCDEFGHIKLMNOPRSTUVWY") + ["<sos/eos>"]


def make_tiny_corpus(out_dir: pathlib.Path, repeat: int = 1, rate: int = 16000) -> pathlib.Path:
    import soundfile
    import torch
    import torchaudio

    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng not found: run local/setup.sh")
    out_dir.mkdir(parents=True, exist_ok=True)
    wav_scp, text = [], []
    for copy in range(repeat):
        for index, sentence in enumerate(SENTENCES):
            number = copy * len(SENTENCES) + index
            voice = VOICES[number % len(VOICES)]
            speed = str(150 + 15 * (copy % 3))
            raw = subprocess.run(
                ["espeak-ng", "-v", voice, "-s", speed, "--stdout", sentence], capture_output=True, check=True
            ).stdout
            audio, source_rate = soundfile.read(io.BytesIO(raw), dtype="float32")
            audio = torchaudio.functional.resample(torch.from_numpy(audio), source_rate, rate).numpy()
            key = f"utt{number:02d}"
            path = out_dir / f"{key}.wav"
            soundfile.write(path, audio, rate)
            wav_scp.append(f"{key} {path.resolve()}")
            text.append(f"{key} {sentence.upper()}")
    (out_dir / "wav.scp").write_text("\n".join(wav_scp) + "\n")
    (out_dir / "text").write_text("\n".join(text) + "\n")
    (out_dir / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--repeat", type=int, default=1, help="copies of the 8 sentences (new voices and rates)")
    args = parser.parse_args()
    make_tiny_corpus(args.out_dir, args.repeat)


if __name__ == "__main__":
    main()
