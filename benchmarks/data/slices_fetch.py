"""Fetching one archive over HTTP(S), resumable: how ``prepare slices`` gets the slices release.

The archive (``benchmarks.data.slices`` gives the address: GitHub's zip of the pinned
mirror commit, or ``$CLIPLUNG_SLICES_URL``, e.g. a local copy or a test server) is
written to ``<target>.zip.part`` as it arrives; a command stopped in any way (kill
-9 included) leaves that file, and the next run asks the server for the rest
(an HTTP ``Range`` request) and appends it, or starts again when the server
does not serve ranges. Only a whole archive is renamed to ``<target>.zip``; it is
then unpacked and every file checked against the manifest
(:mod:`benchmarks.data.slices`), so a wrong or damaged archive never passes.
A server that does not answer within ``$CLIPLUNG_HTTP_TIMEOUT`` seconds (default
60) and a machine without network end in one line with the command to retry.
"""
from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from benchmarks.errors import UserError

TIMEOUT_ENV = "CLIPLUNG_HTTP_TIMEOUT"
CHUNK = 1 << 20


def timeout_s() -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV) or 60)
    except ValueError:
        raise UserError(f"${TIMEOUT_ENV} must be a number of seconds, got {os.environ[TIMEOUT_ENV]!r}") from None


def _open(address: str, start: int):
    """The server's answer to a GET of ``address`` from byte ``start`` on."""
    req = urllib.request.Request(address, headers={"User-Agent": "clip-lung-bench", **({"Range": f"bytes={start}-"} if start else {})})
    return urllib.request.urlopen(req, timeout=timeout_s())  # noqa: S310  (https, or the URL the user set)


def _offline(address: str, e: BaseException, retry: str) -> UserError:
    host = urlparse(address).netloc or address
    if isinstance(e, (TimeoutError, socket.timeout)) or "timed out" in str(e):
        why = f"no answer from {host} within {timeout_s():g} s"
    else:
        reason = getattr(e, "reason", e)
        why = f"could not reach {host} ({reason}): no network, or the server is unreachable"
    return UserError(f"{why}; what arrived is kept, and the same command continues from there: {retry} "
                     f"(or fetch {address} yourself and give it with --from FILE)")


def download(address: str, dest: Path, retry: str, what: str = "archive", progress: bool = True) -> Path:
    """Fetch ``address`` into ``dest`` (via ``dest.part``), continuing a partial download; returns ``dest``.
    ``retry``: the command that continues it, for the messages; ``what``: the progress bar's name."""
    from tqdm import tqdm  # noqa: PLC0415

    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(address, start)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # the part holds everything already (a run killed between the last byte and the rename)
            part.replace(dest)
            return dest
        raise UserError(f"{address} answered HTTP {e.code} ({e.reason}); retry later: {retry}") from None
    except (urllib.error.URLError, OSError) as e:
        raise _offline(address, e, retry) from None
    with resp:
        if start and resp.status != 206:  # the server ignored the range: start again
            start = 0
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        mode = "ab" if start else "wb"
        try:
            with open(part, mode) as f, tqdm(total=total, initial=start, desc=f"downloading the {what}", unit="B",
                                             unit_scale=True, disable=not progress) as bar:
                while True:
                    block = resp.read1(CHUNK)  # what has arrived (up to CHUNK): written at once, so a kill loses little
                    if not block:
                        break
                    f.write(block)
                    f.flush()
                    bar.update(len(block))
        except (TimeoutError, socket.timeout, urllib.error.URLError, ConnectionError) as e:
            raise _offline(address, e, retry) from None
        except OSError as e:
            raise UserError(f"cannot write {part}: {e.strerror or e}") from None
    got = part.stat().st_size
    if total is not None and got < total:
        raise UserError(f"the download stopped at {got:,} of {total:,} bytes; the same command continues from there: {retry}")
    part.replace(dest)
    return dest
