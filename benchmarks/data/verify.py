"""Content checks of the download: each file against the checksum the bucket lists for its object.

The bucket listing (``s5cmd ls --etag``) gives each object's size and S3 ETag, which the download
keeps in its manifest (``objects``: name -> [bytes, ETag]). For an object uploaded in one part the
ETag is the MD5 of its bytes (32 hex digits), and a file is the object when its size and its MD5
match. An object uploaded in N parts has the ETag ``<MD5 of the N parts' MD5 digests>-N``, which
depends on the part size its uploader chose: the file is checked with each part size of
:data:`PART_SIZES` that cuts it into N parts (8 MiB, the AWS CLI's and boto3's default, first); when
one reproduces the ETag the file is verified, when none does it is checked by size only and called
``unverified`` (never fetched again for it: another fetch would give the same bytes). IDC's CT
slices (about 0.5 MB each) lie far below every multipart threshold, so each of them is checked by MD5.

A series folder matches its listing when every object is there with its size and checksum and no
other file is (s5cmd's partly written files and hidden files aside). The checks read every byte;
:func:`check_all` hashes several series at once (docs/data.md gives a measured rate).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1 << 20
# Part sizes tried for a multipart ETag, in this order: the AWS CLI/boto3 default, S3's minimum,
# other common choices of upload tools (s5cmd's own default is 50 MiB).
PART_SIZES = tuple(m * MiB for m in (8, 5, 16, 15, 32, 50, 64, 100, 128))
BLOCK = MiB
# s5cmd downloads into "<name><random digits>" beside the file, renamed when complete.
PARTIAL = re.compile(r"\.dcm\d+$")
ASIDE = "cliplung-aside"  # stray files are moved here: <root>/cliplung-aside/<time>/<series folder>/<name>
_MULTIPART = re.compile(r"^([0-9a-f]{32})-(\d+)$")


def file_md5(path: Path, part_size: int | None = None) -> str:
    """The MD5 of a file (hex), or with ``part_size`` its multipart ETag ``<md5 of part digests>-<parts>``."""
    whole = hashlib.md5(usedforsecurity=False)
    parts: list[bytes] = []
    part = hashlib.md5(usedforsecurity=False)
    in_part = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(BLOCK if part_size is None else min(BLOCK, part_size - in_part))
            if not block:
                break
            if part_size is None:
                whole.update(block)
                continue
            part.update(block)
            in_part += len(block)
            if in_part == part_size:
                parts.append(part.digest())
                part, in_part = hashlib.md5(usedforsecurity=False), 0
    if part_size is None:
        return whole.hexdigest()
    if in_part:
        parts.append(part.digest())
    return f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"


def match(path: Path, size: int, etag: str) -> tuple[str, str]:
    """Whether the file at ``path`` is the object (``size`` bytes, ``etag``): ("ok", ""),
    ("unverified", why) for a multipart ETag no part size of PART_SIZES explains, or ("differs", why)."""
    try:
        have = path.stat().st_size
    except OSError:
        return "differs", "missing"
    if have != size:
        return "differs", f"{have} of {size} bytes"
    etag = etag.strip('"').lower()
    m = _MULTIPART.match(etag)
    if m is None:
        return ("ok", "") if file_md5(path) == etag else ("differs", "content differs from the bucket's MD5")
    n = int(m.group(2))
    for p in PART_SIZES:
        if -(-size // p) == n and file_md5(path, p) == etag:
            return "ok", ""
    return "unverified", f"multipart ETag ({n} parts) of an unknown part size: checked by size only"


@dataclass
class SeriesCheck:
    """What a series folder holds against its listing."""

    differs: dict[str, str] = field(default_factory=dict)  # name -> why (size or content)
    missing: list[str] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)  # files that are no object of the series
    unverified: list[str] = field(default_factory=list)  # multipart ETags checked by size only
    files: int = 0  # objects present and matching
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not (self.differs or self.missing or self.stray)

    def problems(self) -> list[tuple[str, str]]:
        """(name, why) of every file that keeps the series from matching, sorted by name."""
        out = [(n, w) for n, w in self.differs.items()] + [(n, "missing") for n in self.missing]
        out += [(n, "stray: not an object of the series") for n in self.stray]
        return sorted(out)


def _entries(folder: Path) -> dict[str, os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return {e.name: e for e in it if not e.name.startswith(".") and not PARTIAL.search(e.name) and e.is_file()}
    except OSError:  # not there (yet)
        return {}


def check_series(folder: Path, objects: dict) -> SeriesCheck:
    """Check every file of ``folder`` against ``objects`` ({name: [bytes, ETag]}); reads every byte."""
    c = SeriesCheck()
    have = _entries(folder)
    for name, (size, etag) in objects.items():
        if name not in have:
            c.missing.append(name)
            continue
        state, why = match(folder / name, int(size), etag)
        if state == "differs":
            c.differs[name] = why
            continue
        if state == "unverified":
            c.unverified.append(name)
        c.files += 1
        c.bytes += int(size)
    c.stray = sorted(set(have) - set(objects))
    c.missing.sort()
    return c


def check_all(root: Path, series: dict[str, tuple[str, dict]], progress: bool = False, workers: int | None = None) -> dict[str, SeriesCheck]:
    """Check many series ({key: (folder relative to root, objects)}) at once, with a bar in GB.

    Threads suffice: hashlib releases the GIL while it hashes a block.
    """
    from tqdm import tqdm  # noqa: PLC0415

    total = sum(sum(int(s) for s, _ in objs.values()) for _, objs in series.values())
    workers = workers or min(4, os.cpu_count() or 1)
    out: dict[str, SeriesCheck] = {}
    done = 0  # bytes of the series checked so far: the bar shows it rounded (rounding each series' share overshoots)
    with tqdm(total=round(total / 1e9, 3), unit="GB", desc="checking", disable=not progress or not series,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total:.2f} GB [{elapsed}<{remaining}]") as bar, \
            ThreadPoolExecutor(workers) as ex:
        futs = {ex.submit(check_series, root / folder, objs): (key, objs) for key, (folder, objs) in series.items()}
        for f in as_completed(futs):
            key, objs = futs[f]
            out[key] = f.result()
            done += sum(int(s) for s, _ in objs.values())
            bar.n = round(done / 1e9, 3)
            bar.refresh()
    return out


def move_aside(root: Path, folder: str, names, stamp: str | None = None) -> list[tuple[str, Path]]:
    """Move stray files of a series folder to ``<root>/cliplung-aside/<time>/<folder>/``; returns (name, where it went)."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    dest = root / ASIDE / stamp / folder
    out = []
    for n in names:
        dest.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # gone meanwhile: nothing to move
            os.replace(root / folder / n, dest / n)
            out.append((n, dest / n))
    return out


def parse_listing(lines) -> dict[str, dict[str, list]]:
    """s5cmd's JSON listing lines -> {series url ``s3://bucket/<uuid>/*``: {name: [bytes, ETag]}}."""
    import json  # noqa: PLC0415

    out: dict[str, dict[str, list]] = {}
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        o = json.loads(line)
        if o.get("type") != "file" or "key" not in o:
            continue
        url, name = o["key"].rsplit("/", 1)
        out.setdefault(f"{url}/*", {})[name] = [int(o["size"]), str(o.get("etag", "")).strip('"').lower()]
    return out
