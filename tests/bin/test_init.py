"""espnet_amortized.bin: the training entry points release torch.distributed's process group."""

import contextlib

import pytest
import torch.distributed

from espnet_amortized.bin import releasing_process_group


def test_without_a_process_group_nothing_happens():
    with releasing_process_group():
        assert not torch.distributed.is_initialized()
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("fails", [False, True])
def test_the_process_group_started_inside_is_destroyed_after_training_or_an_error(tmp_path, fails):
    with pytest.raises(RuntimeError, match="training failed") if fails else contextlib.nullcontext():
        with releasing_process_group():
            torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
            assert torch.distributed.is_initialized()
            if fails:
                raise RuntimeError("training failed")
    assert not torch.distributed.is_initialized()

