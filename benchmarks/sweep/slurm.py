"""Slurm, asked with bounded waits: is it there, which partitions, what state each job is in.

Slurm commands (``sinfo``, ``squeue``, ``sacct``) are given ``$CLIPLUNG_SLURM_TIMEOUT``
seconds (default 20); a controller (or accounting daemon) that does not answer in
that time ends in one line naming ``$SLURM_CONF``.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

from benchmarks.errors import UserError

SLURM_TIMEOUT_ENV = "CLIPLUNG_SLURM_TIMEOUT"
SLURM_TIMEOUT_S = 20.0


def last_line(text: str) -> str:
    lines = [x.strip() for x in (text or "").splitlines() if x.strip()]
    return lines[-1] if lines else ""


def slurm_timeout() -> float:
    raw = os.environ.get(SLURM_TIMEOUT_ENV, "")
    if not raw.strip():
        return SLURM_TIMEOUT_S
    try:
        t = float(raw)
    except ValueError:
        t = -1.0
    if not t > 0:
        raise UserError(f"${SLURM_TIMEOUT_ENV}={raw!r}: expected a number of seconds above 0")
    return t


def slurm_cmd(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run a Slurm client command with a bounded wait (``$CLIPLUNG_SLURM_TIMEOUT``).

    A controller that is down or overloaded makes ``sinfo``/``squeue`` retry for
    their MessageTimeout and ``sacct`` wait ~45 s for slurmdbd; we stop earlier and
    say which daemon of which configuration did not answer.
    """
    t = slurm_timeout()
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=t)
    except FileNotFoundError:
        raise UserError(f"{cmd[0]} is not on PATH: this machine has no Slurm client; run where sbatch works") from None
    except subprocess.TimeoutExpired:  # subprocess.run has killed it
        daemon = "accounting daemon (slurmdbd)" if cmd[0] == "sacct" else "controller (slurmctld)"
        conf = os.environ.get("SLURM_CONF") or "unset, so the default /etc/slurm/slurm.conf"
        raise UserError(f"{cmd[0]} got no answer within {t:g} s: the Slurm {daemon} of SLURM_CONF={conf} does not respond; "
                        f"check that it runs (or give it longer with ${SLURM_TIMEOUT_ENV})") from None


def check_slurm(partition: str | None) -> None:
    """sbatch on PATH, the controller answering, and ``partition`` (if any) one of its partitions."""
    if not shutil.which("sbatch"):
        raise UserError("--executor slurm: Slurm is not reachable (sbatch is not on PATH); "
                        "use --executor local, or run where sbatch works")
    p = slurm_cmd(["sinfo", "-h", "-o", "%P"])
    if p.returncode != 0:
        why = last_line(p.stderr) or last_line(p.stdout) or f"sinfo exited {p.returncode}"
        raise UserError(f"--executor slurm: Slurm is not reachable ({why}); use --executor local, or run where sbatch works")
    names = [x.strip().rstrip("*") for x in p.stdout.split()]
    if partition and partition not in names:
        raise UserError(f"Slurm partition {partition!r} does not exist; partitions: {', '.join(names) or 'none'}")


# Slurm's job states (sacct/squeue), as our run states; any other state has ended without a result.
SLURM_STATES = {"PENDING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued", "REQUEUE_FED": "queued",
                "CONFIGURING": "queued", "SUSPENDED": "queued", "STOPPED": "queued", "SPECIAL_EXIT": "queued",
                "RESV_DEL_HOLD": "queued", "RUNNING": "running", "COMPLETING": "running", "RESIZING": "running",
                "SIGNALING": "running", "STAGE_OUT": "running"}
# sacct shows an array's pending tasks as one row, e.g. "2_[2-5%6]" or "2_[1,3-4]".
_ARRAY_ROW = re.compile(r"^(\d+)_\[([0-9,\-]+)(?:%\d+)?\]$")


def expand_job_id(jid: str) -> list[str]:
    """'2_[2-4%6]' -> ['2_2', '2_3', '2_4']; any other id as it is."""
    m = _ARRAY_ROW.match(jid.strip())
    if not m:
        return [jid.strip()]
    out = []
    for part in m.group(2).split(","):
        lo, _, hi = part.partition("-")
        out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def parse_states(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if "|" in line:
            jid, st = line.split("|", 1)
            for j in expand_job_id(jid):
                out[j] = st.split()[0] if st.strip() else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
    return out


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm's state of each job / array task id, from sacct, and squeue for the jobs sacct
    does not know yet (accounting lags the controller by a moment after sbatch)."""
    if not job_ids:
        return {}
    arrays = ",".join(sorted({j.split("_")[0] for j in job_ids}, key=lambda x: (len(x), x)))
    p = slurm_cmd(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", arrays])
    if p.returncode != 0:
        raise UserError(f"cannot read the state of Slurm job(s) {arrays}: {last_line(p.stderr) or f'sacct exited {p.returncode}'}")
    states = parse_states(p.stdout)
    if any(j not in states for j in job_ids):
        q = slurm_cmd(["squeue", "-h", "-r", "-o", "%i|%T", "-j", arrays])
        if q.returncode == 0:
            states = {**parse_states(q.stdout), **states}
        elif "invalid job id" not in q.stderr.lower():  # every job gone from the controller: sacct had the last word
            raise UserError(f"cannot read the state of Slurm job(s) {arrays}: {last_line(q.stderr) or f'squeue exited {q.returncode}'}")
    return states

