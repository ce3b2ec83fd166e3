"""Child processes that end with their parent: a kill of a stage leaves nothing running.

distilabel runs every step of a local pipeline in a pool of worker processes (plus a ``multiprocessing`` manager
process); when the stage's main process is killed with SIGKILL they would live on, holding a model in memory.
:func:`bind_children_to_parent` makes every process forked from now on ask the kernel (Linux
``prctl(PR_SET_PDEATHSIG, SIGKILL)``) to be killed as soon as its parent dies; the hook is inherited, so a worker's
own children are bound to the worker in turn. Elsewhere than Linux it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
_installed = False


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux); False when unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    return ok


def _after_fork_in_child(parent_pid: int) -> None:
    set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died between fork and prctl: nobody will signal us
        os._exit(1)


def bind_children_to_parent() -> None:
    """From now on, every child forked by this process (and, recursively, by those children) is killed when its
    parent dies. Idempotent; call it before the pipeline starts its workers."""
    global _installed
    if _installed or not sys.platform.startswith("linux"):
        return

    def hook() -> None:
        _after_fork_in_child(_parent[0])

    _parent = [os.getpid()]

    def before() -> None:
        _parent[0] = os.getpid()

    os.register_at_fork(before=before, after_in_child=hook)
    _installed = True
