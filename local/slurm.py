#!/usr/bin/env python3
"""Run a command on a Slurm cluster, like Kaldi's slurm.pl: ``slurm.py [options] [JOB=1:N] LOG CMD...``.

Writes an sbatch script next to LOG (an array job for ``JOB=1:N``) and
submits it with ``sbatch --wait``, so the recipe waits as with run.py. Each
log starts with the command line and ends with its exit code, as run.py's do;
when a job fails, slurm.py exits non-zero and names the failed tasks' logs.
``--print`` shows the script without submitting.
"""

import argparse
import pathlib
import re
import shlex
import subprocess
import sys

ENDED = "# ended at"


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
    log = shlex.quote(log_pattern.replace("%", "%%"))  # Slurm expands %-patterns in --output
    if jobs:
        log = log.replace("JOB", "%a")
        lines.append(f"#SBATCH --array={jobs[0]}-{jobs[1]}")
    lines.append(f"#SBATCH --output={log}")
    lines += ["set -uo pipefail", f"export OMP_NUM_THREADS={args.num_threads} MKL_NUM_THREADS={args.num_threads}"]
    task = '"${SLURM_ARRAY_TASK_ID}"'

    def quote(argument: str) -> str:  # JOB becomes the array index, outside any quotes
        if not jobs:
            return shlex.quote(argument)
        return task.join(shlex.quote(piece) if piece else "" for piece in argument.split("JOB")) or "''"

    quoted = " ".join(quote(part) for part in command)
    lines.append(f"cd {shlex.quote(str(pathlib.Path.cwd()))} || exit 1")
    lines.append(f"echo '#' {quoted}")
    lines.append('echo "# started at $(date) on $(hostname)"')
    lines.append(quoted)
    lines.append("code=$?")
    lines.append(f'echo "{ENDED} $(date) with exit code ${{code}}"')
    lines.append('exit "${code}"')
    return "\n".join(lines) + "\n"


def task_logs(log_pattern: str, jobs) -> list:
    return [log_pattern.replace("JOB", str(j)) for j in range(jobs[0], jobs[1] + 1)] if jobs else [log_pattern]


def failed_logs(log_pattern: str, jobs) -> list:
    """The logs of the tasks that did not end with exit code 0 (or never ended: killed, never started)."""
    logs = task_logs(log_pattern, jobs)
    failed = []
    for log in logs:
        try:
            last = [line for line in pathlib.Path(log).read_text(errors="replace").splitlines() if line.startswith(ENDED)]
        except OSError:
            last = []
        if not last or not last[-1].endswith(" with exit code 0"):
            failed.append(log)
    return failed


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
    for log in task_logs(rest[0], jobs):  # a task that never starts must not leave an earlier run's log behind
        pathlib.Path(log).unlink(missing_ok=True)
    try:
        code = subprocess.run(["sbatch", "--wait", str(path)]).returncode
    except FileNotFoundError:
        print("slurm.py: sbatch is not on PATH (is this a Slurm submit host?)", file=sys.stderr)
        return 1
    if code != 0:
        failed = failed_logs(rest[0], jobs)
        total = jobs[1] - jobs[0] + 1 if jobs else 1
        named = ", ".join(failed) if failed else f"every task reported exit code 0; see {path} and the Slurm job's state"
        print(f"slurm.py: {len(failed)} of {total} job(s) failed (sbatch exit code {code}); see {named}", file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
