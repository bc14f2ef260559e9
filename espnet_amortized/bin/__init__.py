"""Entry modules: ESPnet's own programs with the plugin registered first."""

import contextlib


@contextlib.contextmanager
def releasing_process_group():
    """Runs a training program, then tears down the ``torch.distributed`` process group it started.

    ESPnet's trainer leaves the group to the interpreter's shutdown, where gloo's worker threads may still
    hold tensors: a rank can then die with "terminate called without an active exception" (SIGABRT, exit
    134) after its training finished, as rank 1 of the srun test did once in CI. Destroying the group while
    the interpreter is alive joins those threads. A no-op for one-process training.
    """
    try:
        yield
    finally:
        import torch.distributed

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
