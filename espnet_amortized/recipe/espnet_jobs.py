"""Run ESPnet's collect_stats, training and decoding through our entry modules.

The recipe stages and the tests call these; each builds an argument list
(never a shell string), runs ``python -m espnet_amortized.bin.*`` and writes
the full log next to the outputs. A failing job raises ``RuntimeError``
naming the log and quoting its tail.
"""

import logging
import os
import pathlib
import subprocess
import sys
import time
from typing import Iterable, Optional, Sequence, Tuple

from espnet_amortized.recipe.tasks import task_of

log = logging.getLogger(__name__)

SPEECH_TYPES = {"wav.scp": "sound", "feats.scp": "kaldi_ark"}
# Each ESPnet task's training entry module (ours: ESPnet's main after register()).
TRAIN_MODULES = {"asr": "espnet_amortized.bin.asr_train", "asr_transducer": "espnet_amortized.bin.asr_transducer_train"}
FBANK_DIM = 80  # local/features.py's Kaldi fbank


def recipe_inputs(task: str, fbank_dirs: Sequence[pathlib.Path], audio_dirs: Sequence[Optional[pathlib.Path]],
                  fbank_cmvn: Optional[pathlib.Path], stats_dir: pathlib.Path, collect: bool):
    """(data dirs, ESPnet feature options) for the recipe's data and one task.

    The asr task reads the recipe's fbank dump (``--input_size 80``, global
    CMVN from ``fbank_cmvn``). ESPnet's asr_transducer task streams from audio
    through its own front-end (its streaming decoder cuts samples, not
    frames), so it reads the audio data dirs and normalises with the
    statistics its own collect_stats pass wrote to ``stats_dir``.
    """
    if task == "asr":
        options = []
        if fbank_cmvn is not None:
            options = ["--input_size", FBANK_DIM, "--normalize", "global_mvn", "--normalize_conf", f"stats_file={fbank_cmvn}"]
        return list(fbank_dirs), options
    if any(directory is None for directory in audio_dirs):
        raise ValueError(f"{task} trains on audio: give --train_audio_dir and --valid_audio_dir (data dirs with wav.scp)")
    for directory in audio_dirs:
        if not (directory / "wav.scp").is_file():
            raise ValueError(f"{directory}: no wav.scp ({task} trains on audio)")
    if collect:  # the statistics are what this pass computes
        return list(audio_dirs), []
    stats = stats_dir / "train" / "feats_stats.npz"
    return list(audio_dirs), ["--normalize", "global_mvn", "--normalize_conf", f"stats_file={stats}"]


def _key_file(data_dir: pathlib.Path) -> pathlib.Path:
    """The data dir's speech list: features (feats.scp) if present, else audio (wav.scp)."""
    for name in SPEECH_TYPES:
        if (data_dir / name).is_file():
            return data_dir / name
    raise FileNotFoundError(f"{data_dir}: neither feats.scp nor wav.scp")


def speech_entry(data_dir: pathlib.Path) -> str:
    """``path,speech,type`` for ESPnet's data options."""
    path = _key_file(data_dir)
    return f"{path},speech,{SPEECH_TYPES[path.name]}"


def run_logged(module: str, args: Sequence, log_path: pathlib.Path, threads: Optional[int] = None) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", module, *map(str, args)]
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log.info("%s (log: %s)", " ".join(command[2:4]), log_path)
    # Appended, so that the log of an interrupted run survives its resumption.
    with open(log_path, "a") as handle:
        handle.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} " + " ".join(command) + "\n")
        handle.flush()
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(True)[-25:])
        raise RuntimeError(f"{module} failed with exit code {code}; see {log_path}:\n{tail}")


def _data_args(train_dir: pathlib.Path, valid_dir: pathlib.Path) -> list:
    args = []
    for split, data_dir in (("train", train_dir), ("valid", valid_dir)):
        args += [f"--{split}_data_path_and_name_and_type", speech_entry(data_dir)]
        args += [f"--{split}_data_path_and_name_and_type", f"{data_dir / 'text'},text,text"]
    return args


def _token_args(token_list: pathlib.Path, token_type: str, bpemodel: Optional[pathlib.Path]) -> list:
    args = ["--token_list", token_list, "--token_type", token_type, "--use_preprocessor", "true"]
    if bpemodel is not None:
        args += ["--bpemodel", bpemodel]
    return args


def collect_stats(
    config: pathlib.Path,
    train_dir: pathlib.Path,
    valid_dir: pathlib.Path,
    token_list: pathlib.Path,
    output_dir: pathlib.Path,
    token_type: str = "char",
    bpemodel: Optional[pathlib.Path] = None,
    extra: Iterable[str] = (),
) -> pathlib.Path:
    """ESPnet's ``--collect_stats true`` pass: shape files (and feature stats)."""
    args = ["--collect_stats", "true", "--config", config, "--output_dir", output_dir, "--ngpu", "0"]
    args += _token_args(token_list, token_type, bpemodel) + _data_args(train_dir, valid_dir)
    # The shape files of a collect_stats pass are just the key lists.
    args += ["--train_shape_file", _key_file(train_dir), "--valid_shape_file", _key_file(valid_dir)]
    run_logged(TRAIN_MODULES[task_of(config)], args + list(extra), output_dir / "collect_stats.log")
    vocabulary = sum(1 for line in open(token_list) if line.strip())
    for split in ("train", "valid"):
        # As asr.sh does: text shapes get the vocabulary size as a second dimension.
        source = output_dir / split / "text_shape"
        lines = [f"{line.rstrip()},{vocabulary}" for line in source.read_text().splitlines() if line.strip()]
        (output_dir / split / f"text_shape.{token_type}").write_text("\n".join(lines) + "\n")
    return output_dir


def check_config(config: pathlib.Path, espnet_args: Sequence[str] = ()) -> None:
    """Parse a training config with its task's ESPnet parser and build its model (a dummy token list, no data).

    The asr task's configs are built for the recipe's fbank input (``--input_size 80``
    unless ``espnet_args`` say otherwise); asr_transducer configs with their own front-end.

    Bad options (an unknown encoder option, ``chunk_size <= 0``, ``compute_target``
    outside (0, 1], ...) fail here, in seconds, before a recipe spends time on
    corpus, features or statistics. Raises ValueError naming the config.
    """
    import yaml

    from espnet_amortized import register
    from espnet_amortized._espnet import asr_task_class, asr_transducer_task_class

    register()
    if not config.is_file():
        raise ValueError(f"{config}: no such training config")
    try:
        yaml.safe_load(config.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{config}: not valid YAML ({error})") from error
    espnet_args = [str(arg) for arg in espnet_args]
    if task_of(config) == "asr_transducer":
        task = asr_transducer_task_class()  # its own front-end on audio
    else:
        task = asr_task_class()
        if "--input_size" not in espnet_args:  # the recipe's fbank features
            espnet_args = ["--input_size", str(FBANK_DIM), *espnet_args]
    try:
        args = task.get_parser().parse_args(["--config", str(config), "--output_dir", "unused", *espnet_args])
    except SystemExit as error:  # argparse has printed what is wrong
        raise ValueError(f"{config}: ESPnet rejected an option (see the message above)") from error
    check_schedule(args)
    args.token_list = ["<blank>", "<unk>", "a", "<sos/eos>"]
    args.normalize = None  # the statistics do not exist yet
    if getattr(args, "input_size", None) is None and getattr(args, "frontend", None) is None:
        args.input_size = 80
    try:
        task.build_model(args)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{config}: {error}") from error


def check_schedule(args) -> None:
    """A piecewise-linear learning-rate schedule must end where training ends.

    With ``num_iters_per_epoch`` set, training makes ``max_epoch *
    num_iters_per_epoch / accum_grad`` optimizer updates; a schedule whose last
    point lies elsewhere (e.g. after ``--max_epoch`` was overridden) would stop
    before annealing, or anneal and then sit at its floor, so it is refused.
    """
    if getattr(args, "scheduler", None) != "piecewiselinearwarmuplr" or not getattr(args, "num_iters_per_epoch", None):
        return
    steps = list((args.scheduler_conf or {}).get("warmup_steps_list") or [])
    if not steps:
        return
    updates = args.max_epoch * args.num_iters_per_epoch // max(1, args.accum_grad)
    if int(steps[-1]) != updates:
        raise ValueError(
            f"scheduler_conf.warmup_steps_list ends at update {steps[-1]}, but max_epoch {args.max_epoch} x "
            f"num_iters_per_epoch {args.num_iters_per_epoch} / accum_grad {args.accum_grad} = {updates} updates: "
            "change both together (the learning rate would not anneal by the last epoch)"
        )


def _check_checkpoint(exp_dir: pathlib.Path) -> None:
    """A checkpoint cut short (the job killed while saving it) would stop ESPnet's resume: set it aside."""
    import torch

    checkpoint = exp_dir / "checkpoint.pth"
    if not checkpoint.is_file():
        return
    try:
        torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated file raises one of several error types
        aside = checkpoint.with_name(f"checkpoint.pth.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
        checkpoint.replace(aside)
        log.warning("%s is unreadable (%s); moved to %s, training starts again", checkpoint, error, aside.name)


def training_command(
    config: pathlib.Path,
    train_dir: pathlib.Path,
    valid_dir: pathlib.Path,
    token_list: pathlib.Path,
    stats_dir: pathlib.Path,
    exp_dir: pathlib.Path,
    token_type: str = "char",
    bpemodel: Optional[pathlib.Path] = None,
    ngpu: int = 0,
    extra: Iterable[str] = (),
) -> Tuple[str, list]:
    """The config's task's training module and its arguments: what :func:`train` runs, and what a launcher of
    one's own (srun, ESPnet's ``espnet2.bin.launch``) starts once per rank."""
    args = ["--config", config, "--output_dir", exp_dir, "--ngpu", ngpu, "--resume", "true"]
    args += _token_args(token_list, token_type, bpemodel) + _data_args(train_dir, valid_dir)
    for split in ("train", "valid"):
        args += [f"--{split}_shape_file", stats_dir / split / "speech_shape"]
        args += [f"--{split}_shape_file", stats_dir / split / f"text_shape.{token_type}"]
    return TRAIN_MODULES[task_of(config)], [str(arg) for arg in args + list(extra)]


def train(*command, threads: Optional[int] = None, num_procs: int = 1, **options) -> pathlib.Path:
    """ESPnet training (resumes from ``exp_dir/checkpoint.pth`` when it exists), by the config's task.

    ``num_procs`` > 1: data-parallel training on the CPU, ``num_procs`` processes on this machine started by
    torch's own launcher (``torch.distributed.run``), each running ESPnet's trainer with
    ``--multiprocessing_distributed false --dist_backend gloo``: ESPnet gives each rank its share of every
    batch and DistributedDataParallel averages the gradients. (With GPUs, ``--ngpu N`` is ESPnet's own
    one-process-per-GPU mode.) ``command`` and ``options``: those of :func:`training_command`.
    """
    ngpu = options.get("ngpu", 0)
    if num_procs < 1:
        raise ValueError(f"num_procs must be >= 1, got {num_procs}")
    if num_procs > 1 and ngpu > 0:
        raise ValueError(f"num_procs {num_procs} is data parallelism on the CPU; with GPUs pass --ngpu {ngpu} alone "
                         "(ESPnet starts one process per GPU)")
    module, args = training_command(*command, **options)
    exp_dir = pathlib.Path(args[args.index("--output_dir") + 1])
    _check_checkpoint(exp_dir)
    if num_procs > 1:
        args = ["--standalone", "--nproc_per_node", num_procs, "--module", module, *args,
                "--multiprocessing_distributed", "false", "--dist_backend", "gloo"]
        module = "torch.distributed.run"
    run_logged(module, args, exp_dir / "train.log", threads)
    return exp_dir


def decode(
    exp_dir: pathlib.Path,
    data_dir: pathlib.Path,
    output_dir: pathlib.Path,
    decode_config: Optional[pathlib.Path] = None,
    model_file: str = "valid.loss.ave.pth",
    extra: Iterable[str] = (),
) -> pathlib.Path:
    """ESPnet's offline decoding; hypotheses in ``output_dir/1best_recog/text``."""
    args = [
        "--asr_train_config", exp_dir / "config.yaml",
        "--asr_model_file", exp_dir / model_file,
        "--data_path_and_name_and_type", speech_entry(data_dir),
        "--key_file", _key_file(data_dir),
        "--output_dir", output_dir,
        "--ngpu", "0",
    ]
    if decode_config is not None:
        args += ["--config", decode_config]
    run_logged("espnet_amortized.bin.asr_inference", args + list(extra), output_dir / "decode.log", threads=1)
    return output_dir / "1best_recog" / "text"


def get_parser():
    import argparse

    parser = argparse.ArgumentParser(
        description="Run ESPnet's collect_stats or training for the recipe (arguments after -- go to ESPnet).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check_config", help="build each config's model once, before any recipe work")
    check.add_argument("--config", type=pathlib.Path, nargs="+", required=True)
    check.add_argument("espnet_args", nargs="*", help="extra ESPnet options (after --), e.g. --input_size 80")
    for name, help_text in (("collect_stats", "shape files and feature statistics (once per data and token set)"),
                            ("train", "training (resumes from the experiment's checkpoint)")):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--config", type=pathlib.Path, required=True)
        command.add_argument("--train_dir", type=pathlib.Path, required=True)
        command.add_argument("--valid_dir", type=pathlib.Path, required=True)
        command.add_argument("--token_list", type=pathlib.Path, required=True)
        command.add_argument("--token_type", default="bpe")
        command.add_argument("--bpemodel", type=pathlib.Path)
        command.add_argument("--stats_dir", type=pathlib.Path, required=True)
        command.add_argument("--train_audio_dir", type=pathlib.Path,
                             help="data dir with wav.scp for configs of ESPnet's asr_transducer task (its own front-end)")
        command.add_argument("--valid_audio_dir", type=pathlib.Path)
        command.add_argument("--fbank_cmvn", type=pathlib.Path,
                             help="the fbank dump's cmvn.npz: the asr task then reads 80-dim features, globally normalised")
        command.add_argument("espnet_args", nargs="*", help="extra ESPnet options (after --)")
        if name == "train":
            command.add_argument("--exp_dir", type=pathlib.Path, required=True)
            command.add_argument("--ngpu", type=int, default=0)
            command.add_argument("--threads", type=int)
            command.add_argument("--num_procs", type=int, default=1,
                                 help="data-parallel processes on the CPU (gloo), started by torch.distributed.run")
    return parser


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (espnet_jobs) %(message)s")
    args = get_parser().parse_args(argv)
    if args.command == "check_config":
        try:
            for config in args.config:
                check_config(config, args.espnet_args)
        except ValueError as error:
            raise SystemExit(f"bad training config: {error}")
        return
    common = dict(token_type=args.token_type, bpemodel=args.bpemodel)
    try:
        (train_dir, valid_dir), options = recipe_inputs(
            task_of(args.config), (args.train_dir, args.valid_dir), (args.train_audio_dir, args.valid_audio_dir),
            args.fbank_cmvn, args.stats_dir, collect=args.command == "collect_stats",
        )
    except ValueError as error:
        raise SystemExit(f"{args.config}: {error}")
    extra = [*options, *args.espnet_args]
    if args.command == "collect_stats":
        collect_stats(
            args.config, train_dir, valid_dir, args.token_list, args.stats_dir,
            extra=extra + ["--num_workers", "0"], **common,
        )
    else:
        train(
            args.config, train_dir, valid_dir, args.token_list, args.stats_dir, args.exp_dir,
            ngpu=args.ngpu, extra=extra, threads=args.threads, num_procs=args.num_procs, **common,
        )


if __name__ == "__main__":
    main()
