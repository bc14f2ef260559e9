#!/usr/bin/env python3
"""Print the ESPnet task of each training config, one per line: asr or asr_transducer.

    python local/config_task.py conf/train_dense.yaml conf/tuning/train_espnet_transducer_conformer.yaml
    python local/config_task.py --budget_conditioned conf/train_amortized.yaml   # true or false

The rule is espnet_amortized/recipe/tasks.py's, loaded from its file so that
neither the package nor ESPnet is imported (10 s each time the recipe asks).
"""

import argparse
import importlib.util
import pathlib

TASKS_MODULE = pathlib.Path(__file__).resolve().parents[1] / "espnet_amortized" / "recipe" / "tasks.py"


def load_tasks_module():
    spec = importlib.util.spec_from_file_location("espnet_amortized_recipe_tasks", TASKS_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=pathlib.Path)
    parser.add_argument("--budget_conditioned", action="store_true",
                        help="print whether each config's encoder takes a compute budget instead (true/false)")
    args = parser.parse_args(argv)
    tasks = load_tasks_module()
    for config in args.configs:
        if args.budget_conditioned:
            print("true" if tasks.budget_conditioned(config) else "false")
        else:
            print(tasks.task_of(config))


if __name__ == "__main__":
    main()
