import sys

from run import main


def test_job_array_substitutes_job_and_waits(tmp_path):
    code = main(["JOB=1:3", str(tmp_path / "log.JOB.txt"), sys.executable, "-c",
                 f"open(r'{tmp_path}/out.JOB', 'w').write('JOB')"])
    assert code == 0
    assert sorted((tmp_path / f"out.{i}").read_text() for i in (1, 2, 3)) == ["1", "2", "3"]
    assert (tmp_path / "log.2.txt").read_text().startswith("# ")


def test_failure_is_reported_with_its_log(tmp_path, capsys):
    code = main(["JOB=1:2", str(tmp_path / "log.JOB"), sys.executable, "-c", "import sys; sys.exit(int('JOB') - 1)"])
    assert code == 1
    assert "1 of 2 job(s) failed" in capsys.readouterr().err and str(tmp_path / "log.2") in (tmp_path / "log.2").as_posix()


def test_threads_are_set_for_the_job(tmp_path):
    assert main(["--num_threads", "3", str(tmp_path / "log"), sys.executable, "-c",
                 "import os; assert os.environ['OMP_NUM_THREADS'] == '3'"]) == 0
