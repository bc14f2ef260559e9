"""local/slurm.py: the sbatch script it writes, and jobs on a real single-node Slurm cluster (tests/slurm_cluster.py)."""

import os
import pathlib
import re
import subprocess

import kaldiio
import numpy as np
import torch

from slurm import main
from tests.conftest import REPO, run_tiny_recipe


def _on_cluster(cluster):
    """The environment of a shell on the cluster's submit host: the recipe's PATH, the cluster's SLURM_CONF."""
    return dict(cluster.env, PATH=f"{REPO / '.venv' / 'bin'}:{REPO / 'local'}:{os.environ['PATH']}")


def test_print_builds_an_array_script_with_quoted_arguments(tmp_path, capsys):
    log = tmp_path / "my logs" / "decode.JOB.log"
    assert main(["--print", "--partition", "cpu", "--gpu", "1", "JOB=1:4", str(log), "python", "-m", "x", "--key", "a b.JOB"]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --array=1-4" in script and "#SBATCH --partition=cpu" in script and "#SBATCH --gres=gpu:1" in script
    assert "decode.%a.log" in script
    assert "python -m x --key 'a b.'\"${SLURM_ARRAY_TASK_ID}\"" in script.splitlines()


def test_array_index_expands_in_bash(tmp_path, capsys):
    main(["--print", "JOB=1:2", str(tmp_path / "l.JOB"), "echo", "x y.JOB", "JOB"])
    command = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("echo 'x"))
    out = subprocess.run(["bash", "-c", f"SLURM_ARRAY_TASK_ID=7; {command}"], capture_output=True, text=True).stdout
    assert out == "x y.7 7\n"


def test_a_failed_array_task_fails_the_job_and_its_log_is_named(slurm_cluster, tmp_path):
    log = tmp_path / "logs" / "task.JOB.log"
    result = subprocess.run(["slurm.py", "JOB=1:3", str(log), "bash", "-c", "echo task JOB; [ JOB != 2 ]"],
                            cwd=tmp_path, env=_on_cluster(slurm_cluster), capture_output=True, text=True)
    assert result.returncode != 0
    assert "1 of 3 job(s) failed" in result.stderr and str(tmp_path / "logs" / "task.2.log") in result.stderr
    assert "task.1.log" not in result.stderr and "task.3.log" not in result.stderr
    for task, code in ((1, 0), (2, 1), (3, 0)):  # each task's log: its command, its output, its exit code
        text = (tmp_path / "logs" / f"task.{task}.log").read_text()
        assert f"echo task {task}" in text and f"\ntask {task}\n" in text and text.rstrip().endswith(f"exit code {code}")


def test_the_recipe_on_slurm_equals_the_local_run(recipe, slurm_cluster):
    """Stages 2, 4 and 5 of the tiny recipe through cmd.sh's slurm backend: an array job for the fbank's --nj,
    the trainings and the decodings as Slurm jobs; the features, the models and the words equal the local run's."""
    work, _ = recipe
    env = dict(_on_cluster(slurm_cluster), cmd_backend="slurm")
    run_tiny_recipe(work, "--stage", "2", "--stop_stage", "5", "--dumpdir", "dump slurm", "--expdir", "exp slurm", env=env)
    for feats in sorted((work / "dump" / "fbank").glob("*/feats.scp")):
        on_slurm = work / "dump slurm" / "fbank" / feats.parent.name / "feats.scp"
        local, remote = dict(kaldiio.load_scp(str(feats))), dict(kaldiio.load_scp(str(on_slurm)))
        assert local.keys() == remote.keys() and local
        assert all(np.array_equal(local[key], remote[key]) for key in local)
        script = (on_slurm.parent / "log" / "fbank.array.log.sbatch").read_text()
        assert "#SBATCH --array=1-2" in script  # --nj 2: one array job
        assert all((on_slurm.parent / "log" / f"fbank.{job}.log").read_text().rstrip().endswith("exit code 0") for job in (1, 2))
    for model in ("asr_amortized", "asr_dense"):  # the default --train_config
        local, remote = (torch.load(root / model / "valid.loss.ave.pth", map_location="cpu") for root in (work / "exp", work / "exp slurm"))
        assert local.keys() == remote.keys() and all(torch.equal(local[name], remote[name]) for name in local)
        assert (work / "exp slurm" / model / "launch.log.sbatch").is_file()
        for test_set in ("test_clean", "test_other"):
            hyps = [(root / model / f"decode_{test_set}" / "1best_recog" / "text").read_text() for root in (work / "exp", work / "exp slurm")]
            assert hyps[0] == hyps[1] and hyps[0]
            assert (work / "exp slurm" / model / f"decode_{test_set}" / "decode.log.sbatch").is_file()


def test_a_failed_fbank_task_fails_stage_2_on_slurm_and_names_its_log(recipe, slurm_cluster, tmp_path):
    work, _ = recipe
    broken = tmp_path / "data" / "test_other"
    broken.parent.mkdir()
    subprocess.run(["cp", "-r", str(work / "data" / "test_other"), str(broken)], check=True)
    entries = (broken / "wav.scp").read_text().splitlines()
    entries[1] = entries[1].split()[0] + " " + str(tmp_path / "missing.flac")  # the second job's first utterance
    (broken / "wav.scp").write_text("\n".join(entries) + "\n")
    command = ["bash", str(REPO / "run.sh"), "--synthetic_size", "tiny", "--nj", "2", "--stage", "2", "--stop_stage", "2",
               "--datadir", str(tmp_path / "data"), "--dumpdir", str(tmp_path / "dump"), "--expdir", str(tmp_path / "exp"),
               "--speed_perturb_factors", "",
               "--train_set", "test_other", "--valid_set", "test_other", "--test_sets", "test_other"]
    result = subprocess.run(command, cwd=work, env=dict(_on_cluster(slurm_cluster), cmd_backend="slurm"),
                            capture_output=True, text=True)
    assert result.returncode != 0
    failed = tmp_path / "dump" / "fbank" / "test_other" / "log" / "fbank.2.log"
    assert "1 of 2 job(s) failed" in result.stderr and str(failed) in result.stderr
    assert "stage 2: fbank test_other failed" in result.stderr
    assert "missing.flac" in failed.read_text() and not (tmp_path / "dump" / "fbank" / "test_other" / "feats.scp").exists()


def test_espnet_distributed_training_launched_by_srun_on_the_cluster_equals_one_process(data_parallel_runs, slurm_cluster):
    """One job of 2 tasks, srun starting ESPnet's trainer once per task with its rank and the world size from
    Slurm (gloo, no GPU); the model equals the 1-process training. ESPnet's own ``--dist_launcher slurm`` reads
    them itself but refuses more than one task per node ("Run with --ntasks_per_node=1"), and this cluster has
    one node: the ranks are passed as ESPnet's launcher passes them to its ssh hosts."""
    import shlex

    from espnet_amortized.recipe import espnet_jobs

    exp = data_parallel_runs[1].parent / "exp_data_parallel_srun"
    module, args = espnet_jobs.training_command(exp_dir=exp, **data_parallel_runs["train"])
    command = ["python", "-m", module, *args, "--multiprocessing_distributed", "false", "--dist_backend", "gloo",
               "--dist_init_method", f"file://{exp / 'init'}"]
    exp.mkdir()
    rank = 'exec "$@" --dist_rank "${SLURM_PROCID}" --dist_world_size "${SLURM_NTASKS}"'
    result = subprocess.run(["sbatch", "--wait", "--ntasks", "2", "--cpus-per-task", "1", "--output", str(exp / "train.log"),
                             "--wrap", f"export OMP_NUM_THREADS=1; srun --export=ALL bash -c {shlex.quote(rank)} rank "
                             + shlex.join(command)],
                            env=_on_cluster(slurm_cluster), capture_output=True, text=True)
    log = (exp / "train.log").read_text()
    assert result.returncode == 0, log[-3000:]
    assert re.search(r"^\[\S+:0/2\] .*1epoch results", log, re.M)  # ESPnet: rank 0 of a world of 2
    one, srun = (torch.load(run / "1epoch.pth", map_location="cpu") for run in (data_parallel_runs[1], exp))
    for name in ("num_updates", "encoder.num_updates"):
        assert float(srun[name]) == float(one[name]) == 6
    torch.testing.assert_close(srun["compute_multiplier"], one["compute_multiplier"], rtol=1e-4, atol=1e-7)
    for name in (name for name in one if one[name].is_floating_point() and "num_updates" not in name):
        torch.testing.assert_close(srun[name], one[name], rtol=1e-3, atol=3e-4, msg=lambda m: f"{name}: {m}")
