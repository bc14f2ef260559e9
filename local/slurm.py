#!/usr/bin/env python3
"""Run a command on a Slurm cluster, like Kaldi's slurm.pl: ``slurm.py [options] [JOB=1:N] LOG CMD...``.

Writes an sbatch script next to LOG (an array job for ``JOB=1:N``) and
submits it with ``sbatch --wait``, so the recipe waits as with run.py.
``--print`` shows the script without submitting.
"""

import argparse
import pathlib
import re
import shlex
import subprocess
import sys


def build_script(args, jobs, log_pattern, command) -> str:
    lines = ["#!/usr/bin/env bash", f"#SBATCH --job-name={args.name}", f"#SBATCH --cpus-per-task={args.num_threads}"]
    if args.partition:
        lines.append(f"#SBATCH --partition={args.partition}")
    if args.gpu:
        lines.append(f"#SBATCH --gres=gpu:{args.gpu}")
    if args.mem:
        lines.append(f"#SBATCH --mem={args.mem}")
    if args.time:
        lines.append(f"#SBATCH --time={args.time}")
    log = shlex.quote(log_pattern).replace("JOB", "%a") if jobs else shlex.quote(log_pattern)
    if jobs:
        lines.append(f"#SBATCH --array={jobs[0]}-{jobs[1]}")
    lines.append(f"#SBATCH --output={log}")
    lines += ["set -euo pipefail", f"export OMP_NUM_THREADS={args.num_threads} MKL_NUM_THREADS={args.num_threads}"]
    task = '"${SLURM_ARRAY_TASK_ID}"'

    def quote(argument: str) -> str:  # JOB becomes the array index, outside any quotes
        if not jobs:
            return shlex.quote(argument)
        return task.join(shlex.quote(piece) if piece else "" for piece in argument.split("JOB")) or "''"

    quoted = " ".join(quote(part) for part in command)
    lines.append(f"cd {shlex.quote(str(pathlib.Path.cwd()))}")
    lines.append(quoted)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partition", default=None)
    parser.add_argument("--num_threads", type=int, default=1)
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--mem", default=None, help="e.g. 16G")
    parser.add_argument("--time", default=None, help="e.g. 24:00:00")
    parser.add_argument("--name", default="espnet_amortized")
    parser.add_argument("--max_jobs_run", type=int, default=None, help="accepted for run.py compatibility")
    parser.add_argument("--print", action="store_true", help="print the sbatch script, do not submit")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="[JOB=1:N] LOG CMD...")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    rest, jobs = list(args.rest), None
    if rest and re.fullmatch(r"JOB=\d+:\d+", rest[0]):
        jobs = tuple(map(int, rest.pop(0)[4:].split(":")))
    if len(rest) < 2:
        parser.error("need LOG and CMD")
    script = build_script(args, jobs, rest[0], rest[1:])
    if args.print:
        print(script, end="")
        return 0
    path = pathlib.Path(rest[0].replace("JOB", "array") + ".sbatch")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    return subprocess.run(["sbatch", "--wait", str(path)]).returncode


if __name__ == "__main__":
    sys.exit(main())
