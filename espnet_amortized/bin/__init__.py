"""Entry modules: ESPnet's own programs with the plugin registered first."""

import atexit
import os
import sys
import traceback
from typing import Callable

import torch.distributed


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _exit_code(stop: SystemExit) -> int:
    """The status ``sys.exit(stop.code)`` ends a process with (a message is printed, as Python does)."""
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code
    print(stop.code, file=sys.stderr)
    return 1


def run_training(main: Callable[[], None]) -> None:
    """Runs a training program as this process's main program; a data-parallel rank ends without teardown.

    In a process that started a ``torch.distributed`` process group (a rank of ``torch.distributed.run``, srun
    or ESPnet's launcher), gloo's worker threads outlive ``destroy_process_group`` (torch keeps the group
    referenced) and drop their last collective's tensors on their own schedule. When that happens during the
    interpreter's shutdown, the thread cannot take the GIL and the rank dies with "terminate called without an
    active exception" (SIGABRT) after its training finished: one 2-process run in eight on the 2-core VM, and
    twice in CI (a core dump shows ``ProcessGroupGloo::AsyncWork::~AsyncWork`` in ``take_gil`` under
    ``Py_FinalizeEx``). So such a rank destroys the group, runs the ``atexit`` handlers (logging's flush among
    them), flushes its output and leaves with ``os._exit``, with the status Python would have given: 0, the
    ``SystemExit`` code, or 1 after the traceback of an error. Without a process group, a normal return or raise.
    """
    try:
        main()
    except SystemExit as stop:
        if not _distributed():
            raise
        code = _exit_code(stop)
    except BaseException:
        if not _distributed():
            raise
        traceback.print_exc()
        code = 1
    else:
        if not _distributed():
            return
        code = 0
    torch.distributed.destroy_process_group()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
