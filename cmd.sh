# shellcheck shell=bash
# How the recipe runs its jobs (sourced after path.sh, which puts local/ on PATH); both launchers take Kaldi's interface:
#   ${cmd} [--num_threads N] [--gpu N] [JOB=1:N] LOG COMMAND...
# The backend, as ESPnet's cmd.sh chooses it: edit the default here, or set it for one run
# (cmd_backend=slurm ./run.sh ...).
cmd_backend=${cmd_backend:-local}
case "${cmd_backend}" in
  local)  # on this machine (like Kaldi's run.pl): JOB=1:N runs N processes side by side
    export train_cmd="run.py"
    export decode_cmd="run.py" ;;
  slurm)  # sbatch --wait (like Kaldi's slurm.pl): JOB=1:N is an array job; add your cluster's options, e.g.
    # train_cmd="slurm.py --partition gpu --time 24:00:00 --mem 32G", decode_cmd="slurm.py --partition cpu"
    export train_cmd="slurm.py"
    export decode_cmd="slurm.py" ;;
  *) echo "cmd.sh: unknown cmd_backend '${cmd_backend}' (local or slurm)" >&2; return 1 ;;
esac
