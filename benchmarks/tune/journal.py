"""The study journal file: its records checked, a torn or garbled last one set aside, and a reader that never writes.

Optuna's journal (``JournalFileBackend``) is one JSON record per line, appended under a lock
file. A kill or a full disk in the middle of an append leaves the last line torn; Optuna then
fails on it for good (a ``JSONDecodeError`` on every later read, and its next append glues
a record onto the torn one). So before a command writes to a journal, :func:`repair` reads it
under Optuna's own lock: a torn or garbled *last* record is cut off, the damaged file is kept
beside it (``journal.log.bad``, ``.bad.1``, ...; nothing is overwritten), one warning names
both, and every record before it is kept: every trial finished before it stays finished, a
trial whose end was in the torn record shows as running and is reaped like a dead worker's.
A damaged record followed by good ones (not a tear: the file was edited or is not a journal)
is refused in one line, the file left as it is. :class:`ReadOnlyJournal` reads a journal
the same way and writes nothing, ever (``tune status``; a read-only folder).

Optuna is imported at the top: only ``benchmarks.tune.study.open_storage`` imports this module,
inside the function (the commands' ``--help`` does not pay for Optuna).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from optuna.storages.journal import BaseJournalBackend, JournalFileOpenLock

from benchmarks.errors import UserError
from benchmarks.io import atomic_write_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Damage:
    """The first record of a journal that does not read: its line (from 1), where it starts, and whether it is the last."""

    line: int
    start: int
    last: bool
    kept: int  # the records before it

    def describe(self, path: Path, size: int) -> str:
        return f"line {self.line}, {size - self.start} bytes at byte {self.start}"


def _is_record(line: bytes) -> bool:
    if not line.endswith(b"\n"):
        return False  # torn: its end never reached the disk
    try:
        rec = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(rec, dict) and "op_code" in rec


def _lines(data: bytes):
    """(start, end) of each line of ``data`` (the last one may lack its newline)."""
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        yield pos, end
        pos = end


def check(data: bytes) -> Damage | None:
    """The first record of ``data`` (a journal's bytes) that does not read, or None when every one does."""
    for i, (start, end) in enumerate(_lines(data)):
        if not _is_record(data[start:end]):
            return Damage(line=i + 1, start=start, last=end >= len(data), kept=i)
    return None


def _refusal(path: Path, d: Damage, size: int) -> UserError:
    what = "is not an Optuna journal" if d.kept == 0 else f"is damaged in the middle ({d.describe(path, size)}; good records follow it)"
    return UserError(f"the study journal {path} {what}; it is left as it is: restore it from a copy, or give --storage another file")


def repair(path: Path) -> None:
    """Before writing to journal ``path``: cut off a torn or garbled last record (the damaged file kept beside
    it, one warning); a record that does not read followed by others is a UserError. Under Optuna's lock."""
    if not path.exists() or path.stat().st_size == 0:
        return
    lock = JournalFileOpenLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        d = check(data)
        if d is None:
            return
        if not d.last:
            raise _refusal(path, d, len(data))
        kept = keep_aside(path)
        atomic_write_bytes(path, data[: d.start])
        log.warning("the study journal %s ended in a torn or garbled record (%s): set aside, the %d records before it kept "
                    "(the damaged file is kept as %s); trials it left running are tried again", path, d.describe(path, len(data)),
                    d.kept, kept)
    finally:
        lock.release()


def keep_aside(path: Path, suffix: str = ".bad") -> Path:
    """A copy of ``path`` beside it (``<name>.bad``, else ``.bad.1``, ...: never over an earlier one), the file left in place."""
    for i in range(10_000):
        target = path.with_name(path.name + suffix + (f".{i}" if i else ""))
        try:
            os.link(path, target)  # refuses an existing target: two commands at once keep both
            return target
        except FileExistsError:
            continue
        except OSError:  # no hard links here: a copy, after the same check
            if target.exists():
                continue
            shutil.copy2(path, target)
            return target
    raise UserError(f"cannot keep a copy of {path}: 10000 damaged copies of it are already kept beside it")


class ReadOnlyJournal(BaseJournalBackend):
    """An Optuna journal backend that reads ``path`` and never writes (no lock file either): ``tune status``.

    A torn or garbled last record is left out with one warning (a command that writes to the journal
    sets it aside for good); damage in the middle is a UserError."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.warned = False

    def read_logs(self, log_number_from: int):
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read the study journal {self.path}: {e.strerror or e}") from None
        d = check(data)
        end = len(data)
        if d is not None:
            if not d.last:
                raise _refusal(self.path, d, len(data))
            if not self.warned:
                self.warned = True
                log.warning("the study journal %s ends in a torn or garbled record (%s): read without it (the next `tune run` "
                            "sets it aside and tries again any trial it left running)", self.path, d.describe(self.path, len(data)))
            end = d.start
        for i, (start, stop) in enumerate(_lines(data[:end])):
            if i >= log_number_from:
                yield json.loads(data[start:stop])

    def append_logs(self, logs) -> None:
        raise UserError(f"reading the study journal {self.path} only: nothing may be written to it here")
