"""espnet_amortized.bin: a training entry point ends a data-parallel rank without interpreter teardown."""

import subprocess
import sys
import textwrap

import pytest
import torch.distributed

from espnet_amortized.bin import run_training


def test_without_a_process_group_the_program_returns_or_raises_as_usual():
    ran = []
    assert run_training(lambda: ran.append(1)) is None
    assert ran == [1]
    with pytest.raises(RuntimeError, match="training failed"):
        run_training(lambda: (_ for _ in ()).throw(RuntimeError("training failed")))
    with pytest.raises(SystemExit) as stop:
        run_training(lambda: sys.exit(3))
    assert stop.value.code == 3
    assert not torch.distributed.is_initialized()


RANK = """
import atexit, sys
import torch.distributed
from espnet_amortized.bin import run_training

def report():
    print("atexit: group initialized", torch.distributed.is_initialized())

atexit.register(report)

def main():
    torch.distributed.init_process_group("gloo", init_method="file://{init}", rank=0, world_size=1)
    torch.distributed.all_reduce(torch.ones(3))
    sys.stdout.write("trained, unflushed")
    {ending}

run_training(main)
print("not reached")
"""


@pytest.mark.parametrize("ending, code, stderr", [
    ("pass", 0, ""),
    ("raise RuntimeError('training failed')", 1, "RuntimeError: training failed"),
    ("sys.exit(3)", 3, ""),
    ("sys.exit('stopped: bad config')", 1, "stopped: bad config"),
])
def test_a_rank_leaves_with_pythons_status_after_destroying_the_group_and_running_atexit(tmp_path, ending, code,
                                                                                          stderr):
    script = textwrap.dedent(RANK).format(init=tmp_path / "init", ending=ending)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr
    assert "trained, unflushed" in done.stdout  # flushed before os._exit
    assert "atexit: group initialized False" in done.stdout  # destroyed first, handlers run
    assert "not reached" not in done.stdout
    assert stderr in done.stderr
    if code == 1 and "RuntimeError" in stderr:
        assert "Traceback" in done.stderr
