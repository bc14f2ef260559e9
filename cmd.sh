# shellcheck shell=bash
# How the recipe runs its jobs (sourced after path.sh, which puts local/ on PATH); both launchers take Kaldi's interface:
#   ${cmd} [--num_threads N] [--gpu N] [JOB=1:N] LOG COMMAND...
# On this machine (like Kaldi's run.pl):
export train_cmd="run.py"
export decode_cmd="run.py"
# On a Slurm cluster (like Kaldi's slurm.pl), e.g.:
# export train_cmd="slurm.py --partition gpu --time 24:00:00 --mem 32G"
# export decode_cmd="slurm.py --partition cpu --time 4:00:00"
