"""Where a trained model's gradient goes: per-module gradient norms on training batches, against the clip.

    python -m espnet_amortized.bin.gradient_norms --exp exp/asr_amortized_bench_u7500_budget060_b6id \\
        --data dump/fbank/train_clean_100_sp --out exp/asr_.../gradient_norms.json

ESPnet's trainer clips the total gradient norm to ``grad_clip`` (5 on the bench) before each step and
logs only that total (``grad_norm``). When one module's gradient dwarfs the rest, the clip scales every
other module's step down with it. This runs the model in training mode (its straight-through gates, its
update counters as saved) on ``--num_batches`` batches of ``--batch_size`` utterances from ``--data``
(feats.scp + text, read and tokenised by ESPnet's own iterator and preprocessor), backpropagates the loss
each time, and prints per module group the gradient norm (root mean square over the batches), its share
of the squared total, and the factor ``min(1, grad_clip / total)`` the clip would apply. Writes the JSON.
"""

import argparse
import collections
import json
import logging
import pathlib
from typing import Dict, List

import torch

from espnet_amortized._espnet import asr_task_class
from espnet_amortized.checks import load_asr_model

log = logging.getLogger("gradient_norms")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", type=pathlib.Path, required=True, help="a training's output dir (config.yaml)")
    parser.add_argument("--model_file", default="latest.pth",
                        help="in --exp; latest.pth: the weights training last stepped with (not an average)")
    parser.add_argument("--data", type=pathlib.Path, required=True, help="a data dir with feats.scp and text")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_batches", type=int, default=4)
    parser.add_argument("--depth", type=int, default=4,
                        help="dotted name parts that make a group (encoder.encoders.0.feed_forward at 4)")
    parser.add_argument("--top", type=int, default=12, help="groups printed (all are written)")
    parser.add_argument("--seed", type=int, default=0, help="the gates' training noise")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="JSON (default: print only)")
    return parser


def group_of(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth])


def gradient_norms(model, batches, depth: int) -> Dict:
    """Per-group gradient norms (root mean square over ``batches``) of ``model``'s training loss."""
    squares: Dict[str, float] = collections.defaultdict(float)
    totals: List[float] = []
    losses: List[float] = []
    model.train()
    for batch in batches:
        model.zero_grad(set_to_none=True)
        loss, _, _ = model(**batch)
        if not torch.isfinite(loss):
            raise ValueError(f"the loss is {loss.item()} on a batch; no gradient to measure")
        loss.backward()
        total = 0.0
        for name, parameter in model.named_parameters():
            if parameter.grad is not None:
                square = parameter.grad.detach().double().pow(2).sum().item()
                squares[group_of(name, depth)] += square
                total += square
        totals.append(total ** 0.5)
        losses.append(loss.item())
    if not totals:
        raise ValueError("no batch to measure (is --data empty?)")
    count = len(totals)
    total_square = sum(squares.values())
    groups = sorted(({"group": g, "norm": (s / count) ** 0.5, "share": s / total_square if total_square else 0.0}
                     for g, s in squares.items()), key=lambda row: -row["norm"])
    return {"batches": count, "loss": sum(losses) / count, "total_norm": (total_square / count) ** 0.5,
            "total_norm_per_batch": totals, "groups": groups}


def training_batches(args, data: pathlib.Path, batch_size: int, num_batches: int):
    """The first ``num_batches`` batches of ``data``, read and tokenised the way ESPnet's training reads them."""
    for name in ("feats.scp", "text"):
        if not (data / name).is_file():
            raise FileNotFoundError(f"{data / name}: missing (--data must be a recipe data dir)")
    task = asr_task_class()
    iterator = task.build_streaming_iterator(
        data_path_and_name_and_type=[(str(data / "feats.scp"), "speech", "kaldi_ark"), (str(data / "text"), "text", "text")],
        preprocess_fn=task.build_preprocess_fn(args, False), collate_fn=task.build_collate_fn(args, False),
        batch_size=batch_size, dtype="float32", num_workers=0, inference=False,
    )
    for index, (_, batch) in enumerate(iterator):
        if index == num_batches:
            break
        yield batch


def format_table(result: Dict, top: int) -> str:
    lines = [f"total gradient norm {result['total_norm']:.4g} (loss {result['loss']:.2f}, {result['batches']} batches); "
             f"grad_clip {result['grad_clip']} scales every step by {result['clip_factor']:.3g}",
             "| group | gradient norm | share of the squared total |", "|---|---|---|"]
    lines += [f"| {row['group']} | {row['norm']:.4g} | {row['share']:.3f} |" for row in result["groups"][:top]]
    return "\n".join(lines)


def main(argv=None) -> Dict:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s) %(message)s")
    if args.out is not None and args.out.exists():
        raise FileExistsError(f"{args.out}: exists; remove it or pass another --out")
    model, train_args = load_asr_model(args.exp / "config.yaml", args.exp / args.model_file)
    torch.manual_seed(args.seed)  # after building the model, whose initialisation draws from the generator
    result = gradient_norms(model, training_batches(train_args, args.data, args.batch_size, args.num_batches), args.depth)
    grad_clip = getattr(train_args, "grad_clip", None)
    result.update(exp=str(args.exp), model_file=args.model_file, data=str(args.data), grad_clip=grad_clip,
                  clip_factor=min(1.0, grad_clip / result["total_norm"]) if grad_clip and grad_clip > 0 else 1.0)
    print(format_table(result, args.top))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        log.info("wrote %s", args.out)
    return result


if __name__ == "__main__":
    main()
