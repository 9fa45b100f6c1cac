"""Atomic file writes (a reader never sees a half-written file), writable folders, file hashes, folder locks."""
from __future__ import annotations

import fcntl
import hashlib
import math
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from benchmarks.errors import UserError


def json_ready(x):
    """``x`` made standard JSON: NaN and infinities -> None (null), mapping keys -> str, tuples -> lists, everywhere."""
    if isinstance(x, dict):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 16 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def writable_dir(path: str | os.PathLike, what: str, hint: str) -> Path:
    """Check that a file can be written in the folder ``path`` (made for the check if missing,
    and removed again, so that a command stopped later leaves nothing behind).

    Checked before any work starts, so a read-only folder, a file in its place or
    a missing parent under a file ends in one line (``what`` names the folder,
    ``hint`` how to pick another: its environment variable or flag), not in a
    traceback after an epoch of training.
    """
    path = Path(path)
    missing = []
    p = path.absolute()
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except FileExistsError:
        raise UserError(f"cannot write to the {what} {path}: a file is in its place; {hint}") from None
    except OSError as e:
        raise UserError(f"cannot write to the {what} {path}: {e.strerror or e}; {hint}") from None
    finally:
        for d in missing:  # innermost first
            try:
                d.rmdir()
            except OSError:
                break
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then ``os.replace``.

    A failure to write (a folder turned read-only, a full disk) is a UserError
    naming the file; whatever the path held before is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def exclusive_lock(path: str | os.PathLike, wait_s: float, busy: str):
    """Hold an exclusive ``flock`` on ``path`` (made if missing), waiting at most ``wait_s`` seconds for
    another holder; after that a UserError ``busy``. Yields the open file descriptor (closing it, at the
    end, releases the lock; a child process given the descriptor holds the lock with it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(busy) from None
                time.sleep(0.2)
        yield fd
    finally:
        os.close(fd)


class DamagedFile(ValueError):
    """A file of the suite that cannot be read as what it should be (one line: the file and the cause)."""


def move_aside(path: str | os.PathLike, suffix: str = ".bad") -> Path:
    """Move a damaged file out of the way, beside itself, never over an earlier one: ``<name>.bad``,
    else ``<name>.bad.1``, ``<name>.bad.2``, ...; returns where it went.

    ``os.link`` refuses an existing target, so two processes moving damaged files at once
    still keep both (a rename would silently replace the other's).
    """
    path = Path(path)
    for i in range(10_000):
        target = path.with_name(path.name + suffix + (f".{i}" if i else ""))
        try:
            os.link(path, target)
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links: the rename, after the same check
            if target.exists():
                continue
            path.replace(target)
            return target
        path.unlink()
        return target
    raise UserError(f"cannot move {path} aside: 10000 damaged copies of it are already kept beside it")


def load_torch_file(path: str | os.PathLike, map_location="cpu"):
    """``torch.load(path, weights_only=True)``: tensors and plain values only, so nothing in the
    file can run code. A file that cannot be read raises :class:`DamagedFile` whose message is
    one line naming the file and the cause; PyTorch's own text (which advises turning
    ``weights_only`` off, the one thing never to do with a file of unknown origin) is not shown."""
    import pickle  # noqa: PLC0415
    import warnings  # noqa: PLC0415

    import torch  # noqa: PLC0415  (deferred: this module is imported by every command's --help)

    try:
        with warnings.catch_warnings():  # its note on pickle protocols says nothing about the file
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise DamagedFile(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DamagedFile(f"{path}: a folder, not a file") from None
    except PermissionError as e:
        raise DamagedFile(f"{path}: cannot be read ({e.strerror})") from None
    except pickle.UnpicklingError as e:
        # PyTorch's text: advice (dropped), then "WeightsUnpickler error: <cause>", then a link.
        text = " ".join(str(e).split())
        cause = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0].strip() if "WeightsUnpickler error:" in text else ""
        raise DamagedFile(f"{path}: garbled, or holds something other than tensors and plain values (refused unread"
                          + (f": {cause})" if cause else ")")) from None
    except (RuntimeError, EOFError) as e:  # a truncated or corrupted zip archive, an empty file
        first = str(e).split(". ")[0].strip()
        raise DamagedFile(f"{path}: truncated or corrupted, not a whole PyTorch file" + (f" ({first})" if first and "weights_only" not in first else "")) from None
    except Exception as e:  # noqa: BLE001  anything else the unpickler meets in a foreign file
        first = (str(e).strip().splitlines() or [""])[0][:120]
        raise DamagedFile(f"{path}: garbled, not a PyTorch weights file ({type(e).__name__}"
                          + (f": {first})" if first and "weights_only" not in first else ")")) from None
