from slurm import main


def test_print_builds_an_array_script_with_quoted_arguments(tmp_path, capsys):
    log = tmp_path / "my logs" / "decode.JOB.log"
    assert main(["--print", "--partition", "cpu", "--gpu", "1", "JOB=1:4", str(log), "python", "-m", "x", "--key", "a b.JOB"]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --array=1-4" in script and "#SBATCH --partition=cpu" in script and "#SBATCH --gres=gpu:1" in script
    assert "decode.%a.log" in script
    assert script.splitlines()[-1].endswith("python -m x --key 'a b.'\"${SLURM_ARRAY_TASK_ID}\"")


def test_array_index_expands_in_bash(tmp_path, capsys):
    import subprocess

    main(["--print", "JOB=1:2", str(tmp_path / "l.JOB"), "echo", "x y.JOB", "JOB"])
    command = capsys.readouterr().out.splitlines()[-1]
    out = subprocess.run(["bash", "-c", f"SLURM_ARRAY_TASK_ID=7; {command}"], capture_output=True, text=True).stdout
    assert out == "x y.7 7\n"
