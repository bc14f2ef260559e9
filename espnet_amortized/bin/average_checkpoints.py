"""Average chosen epochs' checkpoints of a training, the way ESPnet averages its n best.

    python -m espnet_amortized.bin.average_checkpoints --exp exp/asr_amortized_budget_bench --epochs 12 15
    ../../run.sh ... --stage 5 --stop_stage 6 --inference_model ave_12_15epoch.pth

ESPnet averages the ``keep_nbest_models`` best epochs by the validation criterion at the end of training
(``valid.loss.ave.pth``); a model trained with ``keep_nbest_models: 1`` keeps only its best epoch and the
last (``latest.pth``). This averages any epochs whose ``<N>epoch.pth`` is still there, with ESPnet's rule
(``espnet2.main_funcs.average_nbest_models``: floating-point tensors averaged, integer ones summed), so that
models kept differently can be compared at the same average (e.g. the best and the last epoch of each).
Writes ``<exp>/ave_<N>_<M>epoch.pth`` (or --out); an existing file is not overwritten.
"""

import argparse
import logging
import pathlib
from typing import Dict, List, Optional

import torch

log = logging.getLogger("average_checkpoints")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", type=pathlib.Path, required=True, help="a training's output dir (<N>epoch.pth)")
    parser.add_argument("--epochs", type=int, nargs="+", required=True, help="two or more epochs to average")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="default: <exp>/ave_<epochs joined by _>epoch.pth")
    return parser


def average_state_dicts(states: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """ESPnet's average_nbest_models rule: floating-point tensors averaged, integer tensors summed."""
    keys = list(states[0])
    for n, state in enumerate(states[1:], start=1):
        if list(state) != keys:
            raise ValueError(f"checkpoint {n} has other parameters than checkpoint 0: "
                             f"{sorted(set(state) ^ set(keys))[:5]}")
    average = {}
    for key in keys:
        total = sum(state[key] for state in states)
        average[key] = total / len(states) if torch.is_floating_point(total) else total
    return average


def average_checkpoints(exp: pathlib.Path, epochs: List[int], out: Optional[pathlib.Path] = None) -> pathlib.Path:
    if len(set(epochs)) < 2:
        raise ValueError(f"--epochs: two or more different epochs to average, got {epochs}")
    out = out or exp / f"ave_{'_'.join(str(e) for e in epochs)}epoch.pth"
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or name another --out")
    files = [exp / f"{epoch}epoch.pth" for epoch in epochs]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        kept = sorted(p.name for p in exp.glob("*epoch.pth"))
        raise FileNotFoundError(f"--epochs: no {', '.join(missing)} (kept in {exp}: {', '.join(kept) or 'none'})")
    states = [torch.load(f, map_location="cpu", weights_only=False) for f in files]
    torch.save(average_state_dicts(states), out)
    log.info("averaged %s -> %s", ", ".join(f.name for f in files), out)
    return out


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(name)s) %(message)s")
    args = get_parser().parse_args(argv)
    print(average_checkpoints(args.exp, args.epochs, args.out))


if __name__ == "__main__":
    main()
