"""The state of each run of a setting: done, queued, running, failed (with its error line) or missing.

``done``: the run's record exists and reads as a complete record, whoever made it (a
sweep or ``benchmarks.run``). Otherwise what the newest sweep that holds the run says:
its task's result file first (read with an unpickler that runs no code), then the
scheduler (Slurm), the task's process (local) or the sweep's own process (debug, and
local runs not started yet). A run in no sweep is ``missing``.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import socket
from pathlib import Path

from benchmarks.paths import runs_dir, sweeps_dir
from benchmarks.records import LEGACY_BACKBONE, RunSpec, read_record
from benchmarks.sweep.matrix import describe
from benchmarks.sweep.slurm import SLURM_STATES, last_line, slurm_states

log = logging.getLogger(__name__)

STATES = ("done", "queued", "running", "failed", "missing")


class _PlainUnpickler(pickle.Unpickler):
    """Loads plain values only (tuples, strings, numbers): no class or function is ever looked up,
    so a result pickle cannot run code while we read it."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name} is not a plain value")


def error_line(trace: str) -> str:
    """The last line of a traceback, its exception's module path dropped:
    'UserError: --device cuda: CUDA is not available on this machine; use --device cpu'."""
    line = last_line(trace) or "error"
    return re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*(?::|$))", "", line)


def task_result(logs: Path, job_id: str) -> tuple[str | None, str | None]:
    """('success' | 'error' | None, last error line) from submitit's result pickle of a task.

    submitit names it ``<job id>_<task>_result.pkl`` (task 0: one task per job). We read
    only files under the sweep's own logs folder, which the user's own jobs wrote, and
    with an unpickler that refuses every class: submitit stores ``("success", <our
    return value, a str>)`` or ``("error", <the traceback, a str>)``.
    """
    p = logs / f"{job_id}_0_result.pkl"
    try:
        with open(p, "rb") as f:
            outcome, value = _PlainUnpickler(f).load()
    except FileNotFoundError:
        return None, None
    except Exception as e:  # noqa: BLE001  unreadable: say so rather than guess
        return "error", f"unreadable result file {p.name} ({type(e).__name__})"
    if outcome == "success":
        return "success", None
    return "error", error_line(str(value))


def _log_tail(log_path: Path) -> str:
    """The last line of a task's log that says 'error' (Slurm's "*** JOB 5 CANCELLED AT ... ***" is
    one), else its last line; only the end of the file is read (training logs grow)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            lines = [x.strip() for x in f.read().decode(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    errs = [x for x in lines if "error" in x.lower()]
    return (errs or lines or [""])[-1]


def _pid_alive(pid: int, marker: str | None) -> bool:
    """Is process ``pid`` alive (and, where /proc tells, running a command that contains ``marker``)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: the pid alone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return bool(cmdline) and (marker is None or marker.encode() in cmdline)  # a zombie has an empty cmdline


def _is_manifest(m) -> bool:
    return (isinstance(m, dict) and all(isinstance(m.get(k), str) for k in ("id", "executor", "runs_dir", "logs"))
            and isinstance(m.get("jobs"), list)
            and all(isinstance(j, dict) and isinstance(j.get("key"), str) and isinstance(j.get("job_id"), (str, type(None)))
                    for j in m["jobs"]))


def manifests(runs_root: Path | None = None) -> list[dict]:
    """The sweeps (of the runs folder ``runs_root``, when given), oldest first."""
    out = []
    want = str(runs_root.resolve()) if runs_root is not None else None
    for p in sweeps_dir().glob("*/sweep.json"):
        try:
            m = json.loads(p.read_text())
        except (OSError, ValueError):
            m = None
        if not _is_manifest(m):
            log.warning("skipping %s: not a readable sweep manifest", p)
        elif want is None or m["runs_dir"] == want:
            out.append(m)
    return sorted(out, key=lambda m: (m.get("submitted_at", 0), m.get("id", "")))


def run_states(specs: list[RunSpec], runs_root: Path) -> list[dict]:
    """One state per spec: done / queued / running / failed / missing, with the sweep, job,
    log and last error line where there is one.

    done: the record exists and reads as complete (whoever made it). Otherwise the newest
    sweep of this runs folder that holds the run decides: its task's result file first
    (no Slurm call needed), then the scheduler. A run in no sweep is missing.
    """
    newest: dict[str, tuple[dict, dict]] = {}
    for m in manifests(runs_root):  # oldest first: a later sweep's entry replaces an earlier one
        for j in m.get("jobs", []):
            newest[j["key"]] = (m, j)
    out, ask_slurm = [], []
    for s in specs:
        st = {**describe(s), "state": "missing", "sweep": None, "job_id": None, "log": None, "error": None}
        out.append(st)
        path = s.path(".json", runs_root)
        damaged = None
        if path.exists():
            try:
                read_record(path)
                st["state"] = "done"
                continue
            except (OSError, ValueError) as e:  # a damaged record is redone: not done
                damaged = f"its record {path.name} is damaged ({e})"
        if s.key not in newest:
            st["error"] = damaged
            continue
        m, j = newest[s.key]
        if j["job_id"] is None:  # a local sweep's run not started yet: queued while that sweep's process lives
            here = m.get("host") in (None, socket.gethostname())
            if not here or (m.get("pid") and _pid_alive(int(m["pid"]), None)):
                st.update(state="queued", sweep=m["id"])
            else:
                st["error"] = damaged or f"sweep {m['id']} ended before this run started"
            continue
        logs = Path(m["logs"])
        st.update(sweep=m["id"], job_id=j["job_id"], log=str(logs / f"{j['job_id']}_0_log.err"))
        outcome, err = task_result(logs, j["job_id"])
        if outcome == "error":
            st.update(state="failed", error=err)
        elif outcome == "success":  # the task ended well, yet no usable record: moved, deleted or damaged since
            st.update(state="failed", error=damaged or f"the task finished but its record {path.name} is gone")
        elif m["executor"] == "slurm":
            ask_slurm.append((st, logs, j, damaged))
        elif m.get("host") not in (None, socket.gethostname()):
            st["state"] = "running"  # a local task of another machine: we cannot look at its process from here
        elif m["executor"] == "local":
            # submitit's local job id is the pid of its job controller (python -m submitit.local._local).
            if j["job_id"].isdigit() and _pid_alive(int(j["job_id"]), "submitit"):
                st["state"] = "running"
            else:
                st.update(state="failed", error="the task ended without a result (killed?); see its log")
        else:  # debug: the tasks run inside the `sweep run` process, which writes their errors into the manifest
            err = m.get("errors", {}).get(s.key)
            if err:
                st.update(state="failed", error=err)
            elif m.get("pid") and _pid_alive(int(m["pid"]), None):
                st["state"] = "running"
            else:
                st.update(state="failed", error="the debug sweep ended without a record")
    if ask_slurm:
        slurm = slurm_states([j["job_id"] for _, _, j, _ in ask_slurm])
        for st, logs, j, damaged in ask_slurm:
            raw = slurm.get(j["job_id"])
            mapped = SLURM_STATES.get(raw) if raw else None
            if mapped:
                st["state"] = mapped
                continue
            outcome, err = task_result(logs, j["job_id"])  # it may have ended between our two looks
            st["state"] = "failed"
            if outcome == "error":
                st["error"] = err
            elif outcome == "success":
                st["error"] = damaged or "the task finished but its record is gone"
            elif raw is None:
                st["error"] = f"Slurm no longer knows job {j['job_id']} and it left no result"
            else:
                tail = _log_tail(Path(st["log"]))
                st["error"] = f"Slurm state {raw}" + (f"; log: {tail}" if tail else "")
    return out


def status(specs: list[RunSpec], tables, runs_root: Path | None = None) -> dict:
    """Per table cell: how many runs of the matrix ``specs`` are done / queued / running / failed /
    missing, every run's state, and the failed runs with their error line."""
    runs_root = runs_root or runs_dir()
    runs = run_states(specs, runs_root)
    cellmap = {}  # in the matrix's order: the tables' cells, added methods, then backbones
    for s, st in zip(specs, runs):
        name = f"{s.method}/{s.dataset}" + ("" if s.backbone == LEGACY_BACKBONE else f"@{s.backbone}")
        cellmap.setdefault(name, dict.fromkeys(STATES, 0))[st["state"]] += 1
    totals = {k: sum(v[k] for v in cellmap.values()) for k in STATES}
    return {"cells": cellmap, "totals": totals, "runs": runs, "failed": [r for r in runs if r["state"] == "failed"],
            "sweeps": len(manifests(runs_root)), "runs_dir": str(runs_root)}


