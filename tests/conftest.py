"""Shared fixtures: tiny real ESPnet models and a tiny espeak-ng corpus."""

import io
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# ESPnet's import asks nltk for data it does not need; local/setup.sh makes empty stand-ins.
os.environ.setdefault("NLTK_DATA", str(REPO / ".venv" / "nltk_data"))

import espnet_amortized  # noqa: E402  (registers with ESPnet)
import torch  # noqa: E402

TOKENS = ["<blank>", "<unk>", "<space>"] + list("ABCDEFGHIKLMNOPRSTUVWY") + ["<sos/eos>"]


def small_encoder(**overrides):
    from espnet_amortized.encoder import AmortizedTransformerEncoder

    conf = dict(
        output_size=32,
        attention_heads=4,
        linear_units=64,
        num_blocks=3,
        chunk_size=4,
        left_chunks=2,
        dropout_rate=0.0,
        positional_dropout_rate=0.0,
    )
    conf.update(overrides)
    return AmortizedTransformerEncoder(80, **conf)


def randomize_arbitration(encoder, std: float = 1.0):
    """Spread the gate logits so that about half of the units run (for equivalence tests)."""
    with torch.no_grad():
        if encoder.arbitrator is not None:
            torch.nn.init.normal_(encoder.arbitrator.out.weight, std=std)
            encoder.arbitrator.out.bias.zero_()
        for layer in encoder.encoders:
            if layer.local_gate is not None:
                torch.nn.init.normal_(layer.local_gate.weight, std=std / 3)
                layer.local_gate.bias.zero_()
    return encoder


def build_espnet_model(encoder_conf: dict, model_conf: dict, encoder: str = "amortized_transformer"):
    """A real ESPnet transducer model, built by ESPnet's ASRTask from parsed arguments."""
    from espnet2.tasks.asr import ASRTask

    parser = ASRTask.get_parser()
    args = parser.parse_args(
        ["--output_dir", "unused", "--input_size", "80", "--encoder", encoder,
         "--decoder", "transducer", "--model", "amortized_espnet"]
    )
    args.token_list = list(TOKENS)
    args.frontend = None
    args.normalize = None
    args.specaug = None
    args.encoder_conf = dict(encoder_conf)
    args.decoder_conf = {"rnn_type": "lstm", "num_layers": 1, "hidden_size": 32}
    args.joint_net_conf = {"joint_space_size": 32}
    args.model_conf = dict(model_conf)
    return ASRTask.build_model(args)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """Eight espeak-ng utterances at 16 kHz as a Kaldi-style dir (wav.scp, text)."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: run local/setup.sh")
    import soundfile
    import torchaudio

    root = tmp_path_factory.mktemp("tiny corpus")  # a space on purpose
    sentences = [
        "the cat sat on the mat", "a dog ran in the park", "she reads a red book",
        "we go home at night", "the sun is very hot", "he plays the old piano",
        "birds sing in the tree", "open the blue door",
    ]
    voices = ["en", "en+f3", "en-us", "en+m3"]
    wav_scp, text = [], []
    for index, sentence in enumerate(sentences):
        raw = subprocess.run(
            ["espeak-ng", "-v", voices[index % len(voices)], "--stdout", sentence],
            capture_output=True, check=True,
        ).stdout
        audio, rate = soundfile.read(io.BytesIO(raw), dtype="float32")
        audio = torchaudio.functional.resample(torch.from_numpy(audio), rate, 16000).numpy()
        path = root / f"utt{index:02d}.wav"
        soundfile.write(path, audio, 16000)
        wav_scp.append(f"utt{index:02d} {path}")
        text.append(f"utt{index:02d} {sentence.upper()}")
    (root / "wav.scp").write_text("\n".join(wav_scp) + "\n")
    (root / "text").write_text("\n".join(text) + "\n")
    (root / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    return root


def run_module(module: str, args, cwd, log_name: str):
    """Run ``python -m module args`` (no shell); fail with the log tail on error."""
    log = pathlib.Path(cwd) / log_name
    with open(log, "w") as handle:
        code = subprocess.run(
            [sys.executable, "-m", module, *map(str, args)], cwd=cwd, stdout=handle, stderr=subprocess.STDOUT
        ).returncode
    if code != 0:
        tail = "".join(log.read_text().splitlines(True)[-30:])
        pytest.fail(f"{module} exited {code}; log {log}:\n{tail}")
    return log
