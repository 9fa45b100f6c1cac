"""Worker processes that end when the command that started them ends, however it ends.

A command killed with SIGKILL runs no clean-up: a crop worker would wait for work
forever with a scan's volume (~450 MB) in memory, and a download's s5cmd would go on
writing into the folder. On Linux the kernel sends the worker a chosen signal when its
parent dies (``prctl(PR_SET_PDEATHSIG)``; it fires when the thread that started the
worker ends). Where that is not available a daemon thread polls the parent instead.
A parent that died before the signal was armed (the worker already re-parented) is
caught by the ``getppid`` check. A program that is not Python (s5cmd) gets the signal
armed between fork and exec (:func:`die_with_parent_preexec`), which exec keeps.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _poll(parent_pid: int, on_death: Callable[[], None], every_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(every_s)
    on_death()


def end_with_parent(parent_pid: int, sig: signal.Signals, on_death: Callable[[], None], poll_s: float = 1.0) -> None:
    """Have this process receive ``sig`` when its parent ``parent_pid`` dies, or, where the kernel
    cannot, call ``on_death`` from a thread polling the parent every ``poll_s`` seconds; call
    ``on_death`` now if the parent is gone already. ``on_death`` should end the process."""
    armed = False
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            armed = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    if not armed:
        threading.Thread(target=_poll, args=(parent_pid, on_death, poll_s), daemon=True).start()
    if os.getppid() != parent_pid:
        on_death()


def die_with_parent_preexec(sig: signal.Signals = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when this process dies (Linux;
    elsewhere nothing), and exits at once if this process died before the signal was armed."""
    prctl = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    parent = os.getpid()

    def child() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return child
