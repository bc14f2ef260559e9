"""Shared fixtures: tiny real ESPnet models and a tiny espeak-ng corpus."""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# The recipe's helpers in local/ are scripts (they do not import ESPnet); tests import them by name.
sys.path.insert(0, str(REPO / "local"))
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
def synthetic_librispeech(tmp_path_factory):
    """The recipe's synthetic corpus at its tiny size (72 utterances), under a path with a space."""
    from make_synthetic_librispeech import generate

    return generate(tmp_path_factory.mktemp("synthetic corpus"), size="tiny", seed=0, nj=2)


@pytest.fixture(scope="session")
def tiny_corpus(synthetic_librispeech, tmp_path_factory):
    """dev-clean of the tiny corpus as a Kaldi data dir (wav.scp of FLAC files, text) plus a char token list."""
    from data_prep import prepare

    out = tmp_path_factory.mktemp("tiny data")
    prepare(synthetic_librispeech, "dev-clean", out)
    characters = sorted({c for line in (out / "text").read_text().splitlines() for c in line.split(maxsplit=1)[1]} - {" "})
    (out / "tokens.txt").write_text("\n".join(["<blank>", "<unk>", "<space>", *characters, "<sos/eos>"]) + "\n")
    return out


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory):
    """A small untrained amortized T-T saved the way ESPnet saves trained ones (config.yaml + .pth)."""
    import yaml
    from espnet2.tasks.asr import ASRTask

    out = tmp_path_factory.mktemp("model")
    args = ASRTask.get_parser().parse_args(
        ["--output_dir", str(out), "--input_size", "80", "--encoder", "amortized_transformer",
         "--decoder", "transducer", "--model", "amortized_espnet", "--token_type", "char"]
    )
    args.token_list = list(TOKENS)
    args.normalize = None
    args.encoder_conf = dict(output_size=32, attention_heads=4, linear_units=64, num_blocks=2, chunk_size=4, left_chunks=2)
    args.decoder_conf = {"rnn_type": "lstm", "num_layers": 1, "hidden_size": 32}
    args.joint_net_conf = {"joint_space_size": 32}
    torch.manual_seed(0)
    model = ASRTask.build_model(args)
    randomize_arbitration(model.encoder)
    with torch.no_grad():  # make blank less likely so that the random model emits tokens
        model.joint_network.lin_out.bias[model.blank_id] = -2.0
    (out / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), out / "model.pth")
    return out / "config.yaml", out / "model.pth"


# One short epoch; the configs' learning-rate schedule is shortened with it (the recipe refuses a
# schedule that does not end on the last update).
TINY_TRAINING = ("--max_epoch 1 --num_iters_per_epoch 4 --batch_bins 200000 --num_workers 0 "
                 "--scheduler_conf warmup_steps_list=[0,2,4] --scheduler_conf warmup_lr_list=[0.0,0.005,0.00005]")


def run_tiny_recipe(work, *args, env=None):
    command = ["bash", str(REPO / "run.sh"), "--synthetic_size", "tiny", "--nj", "2", "--nbpe", "48",
               "--train_args", TINY_TRAINING, *args]
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        pytest.fail(f"run.sh {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result.stderr


@pytest.fixture(scope="session")
def recipe(tmp_path_factory):
    work = tmp_path_factory.mktemp("recipe run")  # a space in every path
    log = run_tiny_recipe(work)
    return work, log


@pytest.fixture(scope="session")
def slurm_cluster():
    """A single-node Slurm cluster on this machine (tests/slurm_cluster.py), stopped after the session.

    Skipped, with the reason, only where Slurm cannot start; under CI (CI=true) that is a failure instead.
    """
    from tests.slurm_cluster import SlurmCluster, SlurmUnavailable

    root = pathlib.Path(tempfile.mkdtemp(prefix="slurm_"))  # slurm.conf takes no spaces
    try:
        cluster = SlurmCluster(root).start()
    except SlurmUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Slurm could not start under CI: {error}")
        pytest.skip(f"Slurm cannot start on this machine: {error}")
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- a small amortized model on fbank features (tests/recipe/test_espnet_jobs.py, tests/local/test_slurm.py) --
@pytest.fixture(scope="session")
def fbank_data(synthetic_librispeech, tmp_path_factory):
    """train-clean-100 (48 utterances) + one utterance whose features are NaN; dev-clean for validation."""
    import kaldiio
    import numpy as np
    import yaml

    from espnet_amortized.recipe import espnet_jobs

    from data_prep import prepare
    from features import extract

    work = tmp_path_factory.mktemp("robust training")
    dirs = {}
    for subset, name in (("train-clean-100", "train"), ("dev-clean", "valid")):
        prepare(synthetic_librispeech, subset, work / "data" / name)
        extract(work / "data" / name, work / "dump" / name, nj=1)
        dirs[name] = work / "dump" / name
    train = dirs["train"]
    with kaldiio.WriteHelper(f"ark,scp:{train / 'nan.ark'},{train / 'nan.scp'}") as writer:
        writer("zz-nan-0000", np.full((150, 80), np.nan, dtype=np.float32))
    for name, line in (("feats.scp", (train / "nan.scp").read_text()), ("text", "zz-nan-0000 A B\n")):
        with open(train / name, "a") as handle:
            handle.write(line)
    characters = sorted({c for d in dirs.values() for line in (d / "text").read_text().splitlines()
                         for c in line.split(maxsplit=1)[1]} - {" "})
    tokens = work / "tokens.txt"
    tokens.write_text("\n".join(["<blank>", "<unk>", "<space>", *characters, "<sos/eos>"]) + "\n")
    config = yaml.safe_load((REPO / "conf" / "train_amortized.yaml").read_text())
    config["encoder_conf"].update(output_size=32, linear_units=64, num_blocks=2, chunk_size=4)
    config["decoder_conf"].update(hidden_size=32)
    config["joint_net_conf"] = {"joint_space_size": 32}
    # the budget controller, so that resumption is checked for its multiplier too
    config["model_conf"].update(compute_warmup_steps=0, compute_regularizer="budget", compute_target=0.5)
    config.update(input_size=80, normalize=None, frontend=None)
    (work / "train.yaml").write_text(yaml.safe_dump(config))
    stats = espnet_jobs.collect_stats(work / "train.yaml", train, dirs["valid"], tokens, work / "stats",
                                      extra=["--num_workers", "0", "--input_size", "80"])
    return work, train, dirs["valid"], tokens, stats


# -- data-parallel training on the CPU: two processes (gloo) against one, the same global batches -----------
DATA_PARALLEL_TRAINING = ["--max_epoch", "1", "--num_iters_per_epoch", "6", "--num_workers", "0",
                          "--use_tensorboard", "false", "--batch_type", "unsorted", "--batch_size", "4", "--seed", "3"]


@pytest.fixture(scope="session")
def data_parallel_runs(fbank_data):
    """The small budget-conditioned model trained by allocation at budget 0.5 (deterministic: no gate noise, no
    dropout; compute_penalty 0 so the loss is linear in each rank's share), once in 1 process and once in 2.

    Returns {1: exp dir, 2: exp dir, "train": the arguments of espnet_jobs.train without exp dir and procs}.
    """
    import shutil

    import yaml

    from espnet_amortized.recipe import espnet_jobs

    work, _, valid, tokens, stats = fbank_data
    config = yaml.safe_load((REPO / "conf" / "tuning" / "train_amortized_budget.yaml").read_text())
    config["encoder_conf"].update(output_size=32, linear_units=64, num_blocks=2, chunk_size=4, subsampling_channels=8,
                                  conv_kernel_size=3, budget_min=0.5, budget_full_fraction=0.0,
                                  budget_min_fraction=1.0, budget_noise=0.0)
    config["decoder_conf"].update(hidden_size=32, dropout=0.0, dropout_embed=0.0)
    config["joint_net_conf"] = {"joint_space_size": 32}
    config["model_conf"].update(compute_penalty=0.0, compute_multiplier_rate=0.5)
    config["scheduler_conf"] = {"warmup_steps_list": [0, 2, 6], "warmup_lr_list": [0.0, 0.005, 0.00005]}
    config.update(input_size=80, normalize=None, frontend=None)
    (work / "data_parallel.yaml").write_text(yaml.safe_dump(config))
    # dev-clean for training and validation (its shapes for both): fbank_data's training set holds a NaN
    # utterance on purpose
    shapes = work / "stats_data_parallel"
    for split in ("train", "valid"):
        shutil.copytree(stats / "valid", shapes / split, dirs_exist_ok=True)
    runs = {"train": dict(config=work / "data_parallel.yaml", train_dir=valid, valid_dir=valid, token_list=tokens,
                          stats_dir=shapes, token_type="char", extra=["--input_size", "80", *DATA_PARALLEL_TRAINING])}
    for procs in (1, 2):
        runs[procs] = work / f"exp_data_parallel_{procs}"
        espnet_jobs.train(exp_dir=runs[procs], threads=1, num_procs=procs, **runs["train"])
    return runs
