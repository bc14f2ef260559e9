#!/usr/bin/env python3
"""Run a command locally, like Kaldi's run.pl: ``run.py [options] [JOB=1:N] LOG CMD...``.

With ``JOB=1:N`` the command runs N times in parallel (at most
``--max_jobs_run`` at once), "JOB" in LOG and CMD replaced by the job number.
Output goes to LOG (the command line first). Exits non-zero, naming the
logs, if any job fails. The command is an argument list, never a shell string.
``--gpu N`` sets CUDA_VISIBLE_DEVICES only when N is 0 (to hide GPUs);
``--num_threads N`` sets OMP/MKL threads for the job.
"""

import argparse
import os
import pathlib
import re
import subprocess
import sys
import time


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_threads", type=int, default=None)
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--max_jobs_run", type=int, default=os.cpu_count() or 1)
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="[JOB=1:N] LOG CMD...")
    args = parser.parse_args(argv)
    rest = list(args.rest)
    jobs = [None]
    if rest and re.fullmatch(r"JOB=\d+:\d+", rest[0]):
        first, last = map(int, rest.pop(0)[4:].split(":"))
        jobs = list(range(first, last + 1))
    if len(rest) < 2:
        parser.error("need LOG and CMD")
    return args, jobs, rest[0], rest[1:]


def substitute(text: str, job) -> str:
    return text if job is None else text.replace("JOB", str(job))


def main(argv=None) -> int:
    args, jobs, log_pattern, command = parse(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    if args.num_threads:
        env.update(OMP_NUM_THREADS=str(args.num_threads), MKL_NUM_THREADS=str(args.num_threads))
    if args.gpu == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
    running, failed = [], []
    pending = list(jobs)
    while pending or running:
        while pending and len(running) < args.max_jobs_run:
            job = pending.pop(0)
            log = pathlib.Path(substitute(log_pattern, job))
            log.parent.mkdir(parents=True, exist_ok=True)
            handle = open(log, "w")
            argv_job = [substitute(part, job) for part in command]
            handle.write("# " + " ".join(argv_job) + f"\n# started at {time.ctime()}\n")
            handle.flush()
            running.append((subprocess.Popen(argv_job, stdout=handle, stderr=subprocess.STDOUT, env=env), handle, log))
        for entry in list(running):
            process, handle, log = entry
            if process.poll() is not None:
                handle.write(f"# ended at {time.ctime()} with exit code {process.returncode}\n")
                handle.close()
                running.remove(entry)
                if process.returncode != 0:
                    failed.append(str(log))
        time.sleep(0.2)
    if failed:
        print(f"run.py: {len(failed)} of {len(jobs)} job(s) failed; see {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
