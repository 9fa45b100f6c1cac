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


def die_with(parent_pid: int) -> None:
    """A pool's ``initializer`` (``initargs=(os.getpid(),)``): the worker is killed (SIGKILL) when the
    process that made the pool ends, however it ends."""
    end_with_parent(parent_pid, signal.SIGKILL, lambda: os._exit(1))


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


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), None when there is no such process."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    except (OSError, IndexError):
        return None


def pid_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, from ``/proc``), None when there is
    none: with the pid it names one process for good (a pid alone may be reused by another)."""
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def identity(pid: int | None = None) -> dict:
    """{"pid", "start"} of process ``pid`` (this one by default): what :func:`end_with_process` watches."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "start": pid_start(pid)}


def alive(ident: dict | None) -> bool:
    """Whether the process ``ident`` (:func:`identity`) is still running (True when /proc cannot tell). A
    zombie is not: a command killed with ``kill -9`` stays one until its own parent reaps it."""
    if not ident or ident.get("start") is None:
        return True
    fields = _stat(int(ident["pid"]))
    return bool(fields) and len(fields) > 19 and fields[19] == ident["start"] and fields[0] not in ("Z", "X")


def end_with_process(ident: dict | None, poll_s: float = 0.5) -> None:
    """End this process (SIGKILL to itself, so its own children armed with :func:`end_with_parent`
    go too) when the process ``ident`` ends, however it ends: a watcher thread looks every ``poll_s``
    seconds, and this process's parent, when it dies, sends SIGKILL at once (``prctl``, Linux).

    For workers that are not children of the command that started them (submitit's local
    executor puts a controller process between the two): killed with ``kill -9``, the command
    runs no clean-up, and without this its workers would go on claiming work for minutes."""
    if not ident:
        return

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if not alive(ident):
        die()
    end_with_parent(os.getppid(), signal.SIGKILL, die)

    def watch() -> None:
        while alive(ident):
            time.sleep(poll_s)
        die()

    threading.Thread(target=watch, name="end-with-command", daemon=True).start()
