"""Tuning's storage and status under faults: a torn or garbled journal, a status that must not write, a typo'd path."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_tune import SMOKE1, _fake_study, study_records, tune

ROOT_CAN_BYPASS = os.geteuid() == 0


def status(*args, env=None):
    return subprocess.run([sys.executable, "-m", "benchmarks.tune", "status", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def finished_trials(rec: dict) -> dict:
    return {t["number"]: (t["params"], t["value"]) for t in rec["trials"] if t["state"] in ("COMPLETE", "PRUNED")}


def test_a_torn_last_record_is_set_aside_and_the_study_goes_on(tmp_path, monkeypatch, caplog):
    """The last 60 bytes of a study's journal cut (a kill or a full disk during an append): status reads the finished
    trials before it with one warning and writes nothing; the next writer keeps every record before the tear, keeps
    the damaged file beside it, and the study goes on to its budget."""
    from benchmarks.space import SHARED, space_json
    from benchmarks.tune.study import claim, finish, open_storage
    from benchmarks.tune.summary import finished
    from benchmarks.tune.worker import distributions

    whole, _ = _fake_study(tmp_path, monkeypatch, budget=4)
    journal = tmp_path / "journal.log"
    data = journal.read_bytes()
    journal.write_bytes(data[:-60])
    torn = journal.read_bytes()

    p = status("--storage", str(journal), env={"CLIPLUNG_RESULTS": str(tmp_path)})
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    warn = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(warn) == 1 and f"the study journal {journal} ends in a torn or garbled record" in warn[0], p.stderr
    assert journal.read_bytes() == torn and sorted(x.name for x in tmp_path.iterdir()) == ["journal.log", "tune"]  # nothing written

    with caplog.at_level("WARNING"):
        storage = open_storage(str(journal))  # a writer: the tear is set aside
    (line,) = [r.getMessage() for r in caplog.records if "torn" in r.getMessage()]
    assert f"the study journal {journal} ended in a torn or garbled record" in line and f"kept as {journal}.bad" in line
    assert (tmp_path / "journal.log.bad").read_bytes() == torn and torn.startswith(journal.read_bytes())
    dists = distributions(space_json(SHARED))
    while (got := claim(storage, "s", 4, 4, dists)) is not None:  # the study goes on to its budget
        study, trial = got
        finish(storage, study, trial, "COMPLETE", -abs(trial.params["lr"] - 0.01))
    rec = json.loads((tmp_path / "tune" / "studies" / "s.json").read_text())
    assert finished(rec) == 4
    before = finished_trials(whole)
    kept = {n: v for n, v in finished_trials(rec).items() if n in before}
    assert len(kept) >= 3 and all(before[n] == v for n, v in kept.items())  # every trial finished before the tear, as it was


@pytest.mark.parametrize("damage", ["garbage", "middle"])
def test_a_journal_damaged_elsewhere_than_its_last_record_is_refused_in_one_line_and_left_as_it_is(tmp_path, monkeypatch, damage):
    from benchmarks.errors import UserError
    from benchmarks.tune.study import open_storage

    _fake_study(tmp_path, monkeypatch, budget=2)
    journal = tmp_path / "journal.log"
    lines = journal.read_bytes().splitlines(keepends=True)
    if damage == "garbage":
        data = bytes(range(256)) * 40  # not UTF-8, not JSON: not a journal at all
        want = "is not an Optuna journal"
    else:
        data = b"".join(lines[:3] + [b'{"op_code": 5, "worker_id"\n'] + lines[3:])
        want = "is damaged in the middle (line 4"
    journal.write_bytes(data)
    for write in (True, False):
        with pytest.raises(UserError, match="the study journal") as e:
            import optuna

            optuna.study.get_all_study_summaries(open_storage(str(journal), write=write))
        assert want in str(e.value) and "\n" not in str(e.value)
    assert journal.read_bytes() == data and not (tmp_path / "journal.log.bad").exists()
    p = status("--storage", str(journal), env={"CLIPLUNG_RESULTS": str(tmp_path)})
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and want in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_status_never_creates_a_journal(tmp_path):
    p = status("--storage", str(tmp_path / "typo" / "none.log"), env={"CLIPLUNG_RESULTS": str(tmp_path / "r")})
    assert p.returncode == 2 and p.stderr.startswith(f"error: no study journal {tmp_path / 'typo' / 'none.log'}"), p.stderr
    assert p.stderr.count("\n") == 1 and not any(tmp_path.iterdir())


@pytest.mark.skipif(ROOT_CAN_BYPASS and shutil.which("setpriv") is None,
                    reason="as root, a read-only folder needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
def test_status_reads_a_finished_journal_in_a_read_only_folder(tmp_path, monkeypatch):
    _fake_study(tmp_path, monkeypatch, budget=2)
    (tmp_path / "journal.log.lock").unlink(missing_ok=True)
    tmp_path.chmod(0o555)
    try:
        cmd = [sys.executable, "-m", "benchmarks.tune", "status", "--storage", str(tmp_path / "journal.log"), "--json"]
        if ROOT_CAN_BYPASS:
            cmd = ["setpriv", "--bounding-set", "-dac_override", "--", *cmd]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "CLIPLUNG_RESULTS": str(tmp_path / "r")})
    finally:
        tmp_path.chmod(0o755)
    assert p.returncode == 0, p.stderr
    (row,) = json.loads(p.stdout)
    assert row["study"] == "s" and row["finished"] == 2 and row["COMPLETE"] == 2


@pytest.mark.slow
def test_tune_run_after_a_torn_journal_keeps_the_finished_trials_and_finishes_the_study(phantom_env, tmp_path):
    """The acceptance case end to end: a real study's journal cut in its last record (the end of its last trial); the
    same `tune run` again warns once, keeps every trial finished before the tear, runs the torn trial's parameters
    again (its end was lost) and ends with the budget."""
    env = {k: v for k, v in os.environ.items() if k not in ("CLIPLUNG_RUNS", "CLIPLUNG_SWEEPS")}
    env["CLIPLUNG_RESULTS"] = str(tmp_path / "results")
    args = ["run", "--methods", "ce", "--datasets", "LIDC-C", "--folds", "0", *SMOKE1, "--set", "train_limit=32", "--executor", "debug",
            "--budget", "2"]
    p = tune(*args, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    (before,) = study_records(env).values()
    journal = tmp_path / "results" / "tune" / "journal.log"
    journal.write_bytes(journal.read_bytes()[:-60])
    p = tune(*args, env=env)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert sum("torn or garbled record" in ln for ln in p.stderr.splitlines()) == 1, p.stderr
    (after,) = study_records(env).values()
    assert sum(t["state"] in ("COMPLETE", "PRUNED") for t in after["trials"]) == 2 and after["counts"]["RUNNING"] == 0
    assert finished_trials(after)[0] == finished_trials(before)[0]  # trial 0, finished before the tear, as it was
    torn = next(t for t in after["trials"] if t["number"] == 1)
    assert torn["state"] == "FAIL" and "worker died" in torn["error"]  # its end was in the torn record: it ran again
    (retry,) = [t for t in after["trials"] if t["retry_of"] == 1]
    assert (retry["params"], retry["value"]) == finished_trials(before)[1]  # the same trial, the same value
    assert Path(f"{journal}.bad").exists()
