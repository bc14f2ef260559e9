"""Benchmarks: scripts that print a table and write JSON (``python -m ... --help``)."""

import json
import pathlib
import platform
from typing import Dict


def machine_info(threads: int) -> Dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
            "threads": threads}


def report(result: Dict, table: str, output: pathlib.Path) -> Dict:
    """Print the table and write the JSON next to it (the one output path of every benchmark)."""
    print(table)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {output}")
    return result


def config_of(args) -> Dict:
    return {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()}
