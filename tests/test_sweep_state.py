"""Sweep state you can believe: every run of one setting is done, queued, running, failed (with its
error line) or missing; a queued or running run is never submitted again; Slurm that does not
answer is one line within $CLIPLUNG_SLURM_TIMEOUT."""
import json
import os
import pickle
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.lifecycle import make_spec
from benchmarks.sweep import main as sweep_main
from benchmarks.sweep.matrix import describe, matrix
from benchmarks.sweep.slurm import SLURM_TIMEOUT_ENV, expand_job_id, parse_states
from benchmarks.sweep.state import task_result
from tests.test_sweep import slurm, sweep

ONE_RUN = ["--tables", "1", "--methods", "ce", "--folds", "0", "--profile", "smoke", "--set", "epochs=1"]


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """A fresh runs and sweeps folder (Slurm job ids restart at 1 with a new cluster: never reuse one)."""
    monkeypatch.setenv("CLIPLUNG_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("CLIPLUNG_SWEEPS", str(tmp_path / "sweeps"))
    return tmp_path


def call(capsys, *argv):
    """``python -m benchmarks.sweep argv`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        sweep_main(list(argv))
        rc = 0
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def status(capsys, *argv) -> dict:
    rc, out, err = call(capsys, "status", *argv, "--json")
    assert rc == 0, err
    return json.loads(out)


def table_row(text: str, cell: str) -> dict:
    """The counts of one cell in the text table of `status`."""
    head = next(x for x in text.splitlines() if x.split()[:1] == ["cell"]).split()[1:]
    row = next(x for x in text.splitlines() if x.split()[:1] == [cell]).split()[1:]
    return dict(zip(head, map(int, row)))


def write_manifest(sweeps: Path, sweep_id: str, executor: str, runs: Path, jobs: list[tuple[str, object]], **extra) -> Path:
    folder = sweeps / sweep_id
    (folder / "logs").mkdir(parents=True)
    man = {"id": sweep_id, "executor": executor, "submitted_at": time.time(), "host": socket.gethostname(),
           "runs_dir": str(runs.resolve()), "logs": str(folder / "logs"),
           "jobs": [{"job_id": jid, **describe(s)} for jid, s in jobs], **extra}
    (folder / "sweep.json").write_text(json.dumps(man))
    return folder / "logs"


# --- without any cluster ------------------------------------------------------------------------

def test_array_rows_of_pending_tasks_expand_to_one_id_per_task():
    assert expand_job_id("2_[2-5%6]") == ["2_2", "2_3", "2_4", "2_5"]
    assert expand_job_id("2_[1,3-4]") == ["2_1", "2_3", "2_4"]
    assert expand_job_id("7") == ["7"] and expand_job_id("2_3") == ["2_3"]
    sacct = "5_0|RUNNING\n5_[1-2%1]|PENDING\n6|CANCELLED by 0\n"
    assert parse_states(sacct) == {"5_0": "RUNNING", "5_1": "PENDING", "5_2": "PENDING", "6": "CANCELLED"}


def test_result_files_are_read_as_plain_values_only(tmp_path):
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\nbenchmarks.errors.UserError: --device cuda: CUDA is not available\n'
    (tmp_path / "5_1_0_result.pkl").write_bytes(pickle.dumps(("error", trace)))
    assert task_result(tmp_path, "5_1") == ("error", "UserError: --device cuda: CUDA is not available")
    (tmp_path / "5_2_0_result.pkl").write_bytes(pickle.dumps(("success", "/runs/x.json")))
    assert task_result(tmp_path, "5_2") == ("success", None)
    assert task_result(tmp_path, "5_3") == (None, None)  # not finished: no file
    # A pickle that would call a function on load (here a harmless one) is refused, not run.
    (tmp_path / "5_4_0_result.pkl").write_bytes(pickle.dumps(("error", _CallsOnLoad())))
    outcome, err = task_result(tmp_path, "5_4")
    assert outcome == "error" and "unreadable result file" in err


class _CallsOnLoad:
    def __reduce__(self):
        return (os.getpid, ())


def test_every_run_of_the_setting_gets_one_state(folders, capsys):
    """From files alone: a damaged record is not done, a local task whose process is gone failed,
    one whose process lives runs, a success with no record left failed, a run in no sweep (or in a
    sweep of another runs folder) is missing."""
    runs, sweeps = folders / "runs", folders / "sweeps"
    runs.mkdir()
    specs = matrix([1], profile="smoke", methods=["ce"], sets=["epochs=1"])  # ce/LIDC-A folds 0-4
    specs[0].path(".json", runs).write_text('{"method": "ce", "trunc')
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "submitit"])  # a stand-in job controller
    try:
        logs = write_manifest(sweeps, "20260101-000000-1", "local", runs,
                              [(str(dead.pid), specs[1]), (str(alive.pid), specs[2]), ("999999", specs[3])])
        (logs / "999999_0_result.pkl").write_bytes(pickle.dumps(("success", "x")))
        write_manifest(sweeps, "20260101-000000-2", "local", folders / "other-runs", [(str(alive.pid), specs[4])])
        st = status(capsys, "--tables", "1", "--methods", "ce", "--profile", "smoke", "--set", "epochs=1")
    finally:
        alive.kill()
        alive.wait()
    by_fold = {r["fold"]: r for r in st["runs"]}
    assert [by_fold[f]["state"] for f in range(5)] == ["missing", "failed", "running", "failed", "missing"]
    assert "damaged" in by_fold[0]["error"]
    assert "ended without a result" in by_fold[1]["error"] and by_fold[1]["sweep"] == "20260101-000000-1"
    assert "record" in by_fold[3]["error"] and "gone" in by_fold[3]["error"]
    assert st["cells"]["ce/LIDC-A"] == {"done": 0, "queued": 0, "running": 1, "failed": 2, "missing": 2}
    assert st["sweeps"] == 1  # the other runs folder's sweep is not ours


def test_a_local_run_waiting_for_a_slot_is_queued_while_its_sweep_lives(folders, capsys):
    """A local sweep lists every run from the start; one not started yet (no job id) is queued while the
    sweep's process lives, and missing (never started) once it is gone, so a new sweep may run it."""
    runs, sweeps = folders / "runs", folders / "sweeps"
    runs.mkdir()
    specs = matrix([1], profile="smoke", methods=["ce"], sets=["epochs=1"], folds=[0, 1])
    sweep_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a stand-in `sweep run`
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        write_manifest(sweeps, "20260101-000000-1", "local", runs, [(None, specs[0])], pid=sweep_proc.pid)
        write_manifest(sweeps, "20260101-000000-2", "local", runs, [(None, specs[1])], pid=dead.pid)
        st = status(capsys, "--tables", "1", "--methods", "ce", "--profile", "smoke", "--set", "epochs=1", "--folds", "0", "1")
    finally:
        sweep_proc.kill()
        sweep_proc.wait()
    by_fold = {r["fold"]: r for r in st["runs"]}
    assert by_fold[0]["state"] == "queued" and by_fold[0]["sweep"] == "20260101-000000-1"
    assert by_fold[1]["state"] == "missing" and "ended before this run started" in by_fold[1]["error"]


@pytest.mark.slow
def test_local_failed_task_shows_failed_with_its_line(folders, capsys):
    env = {**os.environ}
    p = sweep("run", *ONE_RUN, "--executor", "local", "--cpus-per-task", "1", "--device", "cuda", env=env, timeout=300)
    assert p.returncode == 1 and "CUDA is not available" in p.stderr, p.stdout + p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    st = status(capsys, *ONE_RUN)
    (run,) = st["runs"]
    assert run["state"] == "failed" and "--device cuda: CUDA is not available on this machine" in run["error"], run
    rc, out, _ = call(capsys, "status", *ONE_RUN)
    assert table_row(out, "ce/LIDC-A") == {"done": 0, "queued": 0, "running": 0, "failed": 1, "missing": 0}
    assert "CUDA is not available" in out and out.startswith("setting: profile smoke")
    rc, out, _ = call(capsys, "run", *ONE_RUN, "--retry-failed", "--dry-run", "--json")
    assert rc == 0 and json.loads(out)["to_run"] == 1


def test_a_failed_pack_gives_its_error_to_each_of_its_runs(folders, capsys, monkeypatch):
    import pdb

    monkeypatch.setattr(pdb, "post_mortem", lambda *a: None)  # submitit's debug executor opens the debugger on a failure
    two = [a if a != "0" else "0 1" for a in ONE_RUN]
    two = [x for a in two for x in a.split(" ")]  # --folds 0 1
    rc, out, err = call(capsys, "run", *two, "--executor", "debug", "--runs-per-task", "2", "--device", "cuda")
    assert rc == 1 and "submitted 2 runs in 1 tasks" in out and "0 of 2 runs finished" in out, out + err
    lines = [x for x in err.splitlines() if x.startswith("failed: ce_LIDC-A_fold")]
    assert [x.split()[1][:20] for x in lines] == ["ce_LIDC-A_fold0_seed", "ce_LIDC-A_fold1_seed"], err
    assert all("CUDA is not available" in x for x in lines), err
    st = status(capsys, *two)
    assert [r["state"] for r in st["runs"]] == ["failed", "failed"], st["runs"]
    assert all("CUDA is not available" in r["error"] for r in st["runs"]), st["runs"]
    # The last line names the status command of this very setting: typed as printed, it shows these 2 runs, not the paper's 180.
    hint = out.strip().splitlines()[-1].split("see `", 1)[1].rstrip("`")
    assert hint.startswith("python -m benchmarks.sweep status ") and "--profile smoke" in hint and "--set epochs=1" in hint, hint
    rc, shown, err = call(capsys, *shlex.split(hint)[3:])
    assert rc == 0 and table_row(shown, "total") == {"done": 0, "queued": 0, "running": 0, "failed": 2, "missing": 0}, shown + err


def test_status_loads_the_plugins_its_sweeps_recorded(folders, capsys, tmp_path):
    """`status --methods X` without --plugin: X's plugin is the one the sweep of this runs folder recorded."""
    from tests.test_plugins import METHOD

    plugin = tmp_path / "status_plugin.py"
    plugin.write_text(METHOD.format(name="status_plugin_method"))
    write_manifest(folders / "sweeps", "20260101-000000-1", "local", folders / "runs", [], plugins=[str(plugin)])
    rc, out, err = call(capsys, "status", "--tables", "1", "--methods", "status_plugin_method", "--folds", "0", "--profile", "smoke")
    assert rc == 0 and f"loaded plugin {plugin}, as recorded by sweep 20260101-000000-1" in err, err
    assert table_row(out, "status_plugin_method/LIDC-A")["missing"] == 1
    rc, _, err = call(capsys, "status", "--tables", "1", "--methods", "no_such_method", "--profile", "smoke")
    assert rc == 2 and "unknown method 'no_such_method'" in err and "--plugin" in err and len(err.splitlines()) == 1


def test_a_results_root_that_is_a_file_is_one_line_naming_its_variable(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CLIPLUNG_RUNS", raising=False)
    monkeypatch.delenv("CLIPLUNG_SWEEPS", raising=False)
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("CLIPLUNG_RESULTS", str(tmp_path / "afile"))
    rc, out, err = call(capsys, "status", *ONE_RUN)
    assert rc == 2 and not out and len(err.splitlines()) == 1, err
    assert "is a file, not a folder" in err and "$CLIPLUNG_RESULTS" in err and "$CLIPLUNG_RUNS)" in err, err


@pytest.mark.slow
def test_a_record_made_by_run_is_done_for_its_setting_only(phantom_env, folders, capsys):
    from benchmarks.run import main as run_main

    run_main(["--method", "ce", "--dataset", "LIDC-A", "--fold", "0", "--profile", "smoke", "--set", "epochs=1", "--quiet", "--json"])
    smoke = status(capsys, *ONE_RUN)
    assert smoke["cells"]["ce/LIDC-A"] == {"done": 1, "queued": 0, "running": 0, "failed": 0, "missing": 0}
    assert smoke["setting"]["profile"] == "smoke" and smoke["setting"]["overrides"] == ["epochs=1"]
    quick = ONE_RUN[:ONE_RUN.index("--profile")] + ["--profile", "quick", "--set", "epochs=1"]
    q = status(capsys, *quick)
    assert q["cells"]["ce/LIDC-A"] == {"done": 0, "queued": 0, "running": 0, "failed": 0, "missing": 1}
    rc, out, _ = call(capsys, "status", *quick)
    assert "profile quick" in out.splitlines()[0] and table_row(out, "ce/LIDC-A")["missing"] == 1
    rc, out, _ = call(capsys, "run", *ONE_RUN, "--executor", "local", "--retry-failed")
    assert rc == 0 and "no failed runs to retry" in out
    rc, out, _ = call(capsys, "run", *ONE_RUN, "--executor", "local")
    assert rc == 0 and "nothing to run: all 1 runs have records" in out
    assert not (folders / "sweeps").exists() or not any((folders / "sweeps").glob("*/sweep.json"))


# --- a controller that does not answer ------------------------------------------------------------

needs_slurm_client = pytest.mark.skipif(not all(shutil.which(c) for c in ("sbatch", "sinfo", "sacct", "squeue")),
                                        reason="needs the Slurm client commands (sbatch, sinfo, sacct, squeue)")


@pytest.fixture
def silent_slurm(tmp_path, monkeypatch):
    """A slurm.conf whose controller and accounting daemon accept connections and never answer
    (a hung slurmctld: the worst case; a closed port fails by itself after ~10 s), with a 60 s
    MessageTimeout so that only our timeout can end the wait early."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    port = srv.getsockname()[1]
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"""ClusterName=silent
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={port}
AuthType=auth/none
CredType=cred/none
MessageTimeout=60
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={port}
NodeName=localhost CPUs=1 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES
""")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    monkeypatch.setenv(SLURM_TIMEOUT_ENV, "2")
    yield conf
    srv.close()


@needs_slurm_client
def test_a_controller_that_does_not_answer_is_one_line_within_the_timeout(silent_slurm, folders, capsys):
    # `sweep run`, the whole command line: sinfo is stopped after 2 s.
    t0 = time.monotonic()
    p = sweep("run", *ONE_RUN, "--executor", "slurm", env=dict(os.environ), timeout=120)
    took = time.monotonic() - t0
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "sinfo got no answer within 2 s" in p.stderr and str(silent_slurm) in p.stderr
    assert took < 40, took  # imports (~6 s) + 2 s, not sinfo's own 60 s
    assert not any((folders / "sweeps").glob("*/sweep.json"))
    # `status` of a sweep whose jobs only Slurm knows about: sacct is stopped after 2 s.
    spec = make_spec("ce", "LIDC-A", 0, profile="smoke", sets=["epochs=1"])
    write_manifest(folders / "sweeps", "20260101-000000-3", "slurm", folders / "runs", [("1_0", spec)])
    t0 = time.monotonic()
    rc, out, err = call(capsys, "status", *ONE_RUN)
    took = time.monotonic() - t0
    assert rc == 2 and err.startswith("error: sacct got no answer within 2 s") and len(err.strip().splitlines()) == 1, err
    assert "slurmdbd" in err and str(silent_slurm) in err
    assert took < 10, took


def test_a_bad_timeout_value_is_one_line(folders, capsys, monkeypatch):
    monkeypatch.setenv(SLURM_TIMEOUT_ENV, "soon")
    spec = make_spec("ce", "LIDC-A", 0, profile="smoke", sets=["epochs=1"])
    write_manifest(folders / "sweeps", "20260101-000000-4", "slurm", folders / "runs", [("1_0", spec)])
    rc, _, err = call(capsys, "status", *ONE_RUN)
    assert rc == 2 and "CLIPLUNG_SLURM_TIMEOUT='soon'" in err


# --- against the real Slurm ------------------------------------------------------------------------

def _scancel(*ids):
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def _wait_gone(array: str, limit: float = 60) -> None:
    deadline = time.time() + limit
    while time.time() < deadline:
        q = subprocess.run(["squeue", "-h", "-j", array], capture_output=True, text=True, timeout=30)
        if not q.stdout.strip():
            return
        time.sleep(0.5)


@slurm
@pytest.mark.slow
def test_slurm_pending_tasks_are_queued_failures_say_why_and_nothing_is_submitted_twice(phantom_env, folders, capsys):
    slurm_args = ["--executor", "slurm", "--cpus-per-task", "1", "--mem-gb", "1", "--timeout-min", "5"]
    cell, setting = ["--tables", "1", "--methods", "ce"], ["--profile", "smoke", "--set", "epochs=1"]
    three = [*cell, "--folds", "0", "1", "2", *setting]
    four = [*cell, "--folds", "0", "1", "2", "3", *setting]
    # Three runs one at a time: two (at least) wait as one sacct row "N_[1-2%1]".
    rc, out, err = call(capsys, "run", *three, *slurm_args, "--array-parallelism", "1")
    assert rc == 0, err
    (man_path,) = (folders / "sweeps").glob("*/sweep.json")
    man = json.loads(man_path.read_text())
    array = man["jobs"][0]["job_id"].split("_")[0]
    arrays = [array]
    try:
        # A task made to fail: no GPU here.
        rc, out, err = call(capsys, "run", *cell, "--folds", "3", *setting, *slurm_args, "--device", "cuda")
        assert rc == 0, err
        bad = next(json.loads(p.read_text()) for p in (folders / "sweeps").glob("*/sweep.json") if p != man_path)
        arrays.append(bad["jobs"][0]["job_id"].split("_")[0])
        st = status(capsys, *three)
        states = [r["state"] for r in st["runs"]]
        assert set(states) <= {"queued", "running", "done"} and states.count("queued") >= 1, st["runs"]
        assert st["totals"]["failed"] == 0 and st["totals"]["missing"] == 0
        rc, out, _ = call(capsys, "status", *three)
        row = table_row(out, "ce/LIDC-A")
        assert row["queued"] >= 1 and row["queued"] + row["running"] + row["done"] == 3, out
        # The same sweep again while it is queued: nothing submitted, and it says why.
        rc, out, err = call(capsys, "run", *three, *slurm_args, "--array-parallelism", "1")
        assert rc == 0, err
        assert f"runs already queued or running in sweep {man['id']}: skipped" in out and "submitted" not in out, out
        assert len(list((folders / "sweeps").glob("*/sweep.json"))) == 2
        # The failed task: failed, with its own last line.
        result = Path(bad["logs"]) / f"{bad['jobs'][0]['job_id']}_0_result.pkl"
        deadline = time.time() + 180
        while time.time() < deadline and not result.exists():
            time.sleep(0.5)
        st = status(capsys, *four)
        fold3 = next(r for r in st["runs"] if r["fold"] == 3)
        assert fold3["state"] == "failed" and "--device cuda: CUDA is not available" in fold3["error"], fold3
        rc, out, _ = call(capsys, "status", *four)
        assert "CUDA is not available" in out
    finally:
        _scancel(*arrays)
    _wait_gone(array)
    # Cancelled: failed with Slurm's word for it (or done, had one finished); --retry-failed takes exactly those.
    st = status(capsys, *four)
    assert {r["state"] for r in st["runs"]} <= {"failed", "done"}, st["runs"]
    assert all("CANCELLED" in r["error"] or "CUDA" in r["error"] for r in st["failed"]), st["failed"]
    rc, out, _ = call(capsys, "run", *four, *slurm_args, "--retry-failed", "--dry-run", "--json")
    assert rc == 0 and json.loads(out)["to_run"] == st["totals"]["failed"] >= 2


def test_folds_are_spelled_as_in_run(folders, capsys):
    base = ["run", "--tables", "2", "--methods", "ce", "--profile", "smoke", "--executor", "local", "--dry-run", "--json"]
    for folds, n in ((["0,1"], 4), (["0", "1"], 4), (["all"], 10), (["3"], 2)):
        rc, out, err = call(capsys, *base, "--folds", *folds)
        assert rc == 0 and json.loads(out)["runs"] == n, (folds, out, err)  # Table 2: LIDC-B and LIDC-C
    rc, _, err = call(capsys, *base, "--folds", "5")
    assert rc == 2 and err.strip() == "error: --folds: fold 5 does not exist; folds are 0-4", err
