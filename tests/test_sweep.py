"""The sweep: the matrix, the local executor, status, and (where a Slurm cluster runs) job arrays and requeue."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.sweep.matrix import matrix


def sweep(*args, env=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "benchmarks.sweep", *args], capture_output=True, text=True, timeout=timeout, env=env or dict(os.environ))


def test_matrix_has_180_distinct_runs():
    specs = matrix([1, 2, 3])
    assert len(specs) == 180 and len({s.key for s in specs}) == 180
    # clip_lung on LIDC-A is in Table 1 and Table 3: run once.
    assert sum(1 for s in specs if s.method == "clip_lung" and s.dataset == "LIDC-A") == 5
    assert {s.profile for s in specs} == {"paper"}


def test_dry_run_json(tmp_path):
    env = {**os.environ, "CLIPLUNG_RUNS": str(tmp_path / "runs"), "CLIPLUNG_SWEEPS": str(tmp_path / "sweeps")}
    p = sweep("run", "--tables", "1", "2", "3", "--dry-run", "--json", env=env)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["runs"] == 180 and out["recorded"] == 0 and len(out["matrix"]) == 180
    assert not (tmp_path / "sweeps").exists()


def test_slurm_unreachable_is_a_clear_error(tmp_path):
    env = {**os.environ, "PATH": "/usr/bin/nothing-here:" + str(Path(sys.executable).parent), "CLIPLUNG_RUNS": str(tmp_path / "r"),
           "CLIPLUNG_SWEEPS": str(tmp_path / "s")}
    p = sweep("run", "--tables", "2", "--methods", "ce", "--folds", "0", "--profile", "smoke", "--executor", "slurm", env=env)
    assert p.returncode == 2 and "Slurm is not reachable" in p.stderr and "Traceback" not in p.stderr
    assert not any((tmp_path / "s").glob("*/sweep.json"))


@pytest.mark.slow
def test_a_local_sweep_keeps_to_its_limit_then_status_and_tables(phantom_env, tmp_path):
    """4 smoke runs, at most 2 tasks alive at once (their start and end times say so), each record saying
    how many tasks shared the machine and with how many threads; then status and the table."""
    env = {**os.environ, "CLIPLUNG_RUNS": str(tmp_path / "runs"), "CLIPLUNG_SWEEPS": str(tmp_path / "sweeps")}
    # ce on LIDC-C (the smallest test folds), folds 0-3: one epoch of one step each, as much as the behaviour needs on 2 shared cores.
    setting = ["--tables", "2", "--methods", "ce", "--datasets", "LIDC-C", "--folds", "0", "1", "2", "3", "--profile", "smoke",
               "--set", "epochs=1", "--set", "train_limit=32"]
    args = ["run", *setting, "--executor", "local", "--max-parallel", "2", "--cpus-per-task", "1"]
    p = sweep(*args, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "4 of 4 runs finished" in p.stdout and "at most 2 at once (--max-parallel), 1 torch threads each" in p.stdout, p.stdout
    recs = [json.loads(f.read_text()) for f in (tmp_path / "runs").glob("*.json")]
    assert len(recs) == 4
    spans = [(r["machine"]["task_started"], r["timing"]["finished"]) for r in recs]
    alive = [sum(1 for s, e in spans if s <= t < e) for t, _ in spans]  # tasks alive when each one started
    assert max(alive) == 2, spans  # never more than the limit, and the limit used
    assert all(r["machine"] | {"task_started": 0} == {"scheduler": "local", "tasks_at_once": 2, "runs_per_task": 1, "runs_at_once": 2,
                                                      "threads": 1, "task_started": 0} for r in recs), recs[0]["machine"]
    st = json.loads(sweep("status", *setting, "--json", env=env).stdout)
    assert st["cells"]["ce/LIDC-C"]["done"] == 4 and not st["failed"]
    assert st["totals"] == {"done": 4, "queued": 0, "running": 0, "failed": 0, "missing": 0}
    again = sweep(*args, env=env)
    assert again.returncode == 0 and "nothing to run" in again.stdout
    t = subprocess.run([sys.executable, "-m", "benchmarks.tables", "--tables", "2", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "tables"),
                        "--set", "epochs=1", "--set", "train_limit=32"], capture_output=True, text=True)
    assert t.returncode == 0, t.stderr
    assert "CE Loss" in (tmp_path / "tables" / "table2_smoke_phantom.md").read_text()


@pytest.mark.slow
def test_kill_9_of_a_local_sweep_mid_run_ends_its_tasks_and_the_rerun_resumes_to_the_uninterrupted_record(phantom_env, tmp_path):
    """`sweep run --executor local` killed (-9) while its task trains: none of its processes (the executor's
    controller, the task) is alive 10 s later (they used to go on training, reparented, and a rerun saw the run
    as running); the same command again resumes the run from its checkpoint to the record of an uninterrupted run."""
    from benchmarks.data.processes import alive
    from tests.test_tune import descendants, gone_within

    setting = ["--tables", "2", "--methods", "ce", "--datasets", "LIDC-C", "--folds", "0", "--profile", "smoke",
               "--set", "epochs=6", "--set", "train_limit=32"]
    args = ["run", *setting, "--executor", "local", "--max-parallel", "1", "--cpus-per-task", "1"]
    env = {**os.environ, "CLIPLUNG_RUNS": str(tmp_path / "runs"), "CLIPLUNG_SWEEPS": str(tmp_path / "sweeps")}
    # The uninterrupted sweep, meanwhile (one torch thread in both: the same arithmetic).
    whole = {**os.environ, "CLIPLUNG_RUNS": str(tmp_path / "whole"), "CLIPLUNG_SWEEPS": str(tmp_path / "whole-sweeps")}
    other = subprocess.Popen([sys.executable, "-m", "benchmarks.sweep", *args], env=whole, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.sweep", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    procs: list[dict] = []
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and not list((tmp_path / "runs").glob("*.ckpt")):
            time.sleep(0.2)
        assert list((tmp_path / "runs").glob("*.ckpt")), "the run never reached its first checkpoint"
        procs = descendants(proc.pid)
        os.kill(proc.pid, 9)
        took = gone_within(procs, 10.0)
        assert took is not None, f"processes of the killed sweep still alive 10 s later: {[p for p in procs if alive(p)]}"
        proc.communicate(timeout=60)
        assert not list((tmp_path / "runs").glob("*.json")), "the run ended before the kill: nothing was tested"
        p = sweep(*args, env=env)
        assert p.returncode == 0 and "1 of 1 runs finished" in p.stdout, p.stdout + p.stderr[-3000:]
        assert other.wait(timeout=600) == 0, other.stderr.read()[-3000:]
        (mine,), (ref,) = ([json.loads(f.read_text()) for f in (root).glob("*.json")] for root in (tmp_path / "runs", tmp_path / "whole"))
        assert mine["key"] == ref["key"] and mine["metrics"] == ref["metrics"] and mine["predictions"] == ref["predictions"]
    finally:
        for q in (proc, other):
            if q.poll() is None:
                os.killpg(q.pid, 9)
                q.communicate()
        for q in procs:
            if alive(q):
                os.kill(q["pid"], 9)


def test_the_local_limit_follows_the_cores_and_the_memory(monkeypatch):
    from types import SimpleNamespace

    from benchmarks.sweep import submit

    monkeypatch.setattr(submit.os, "sched_getaffinity", lambda _: set(range(2)))
    monkeypatch.setattr(submit, "_available_gb", lambda: 20.0)
    args = lambda **kw: SimpleNamespace(**{"cpus_per_task": 4, "mem_gb": None, "max_parallel": None, **kw})  # noqa: E731
    assert submit.local_limits(args(), 1) == {"tasks_at_once": 1, "threads": 2, "why": "2 cores / 4 per task"}
    assert submit.local_limits(args(cpus_per_task=1), 1)["tasks_at_once"] == 2  # cores: 2; memory: 20 GB / 2.5 = 8
    monkeypatch.setattr(submit.os, "sched_getaffinity", lambda _: set(range(64)))
    lim = submit.local_limits(args(cpus_per_task=1), 2)  # packs of 2 runs: 5 GB a task
    assert lim["tasks_at_once"] == 4 and lim["why"] == "20 GB available / 5 GB per task" and lim["threads"] == 1
    assert submit.local_limits(args(cpus_per_task=1, max_parallel=3), 1) == {"tasks_at_once": 3, "threads": 1, "why": "--max-parallel"}
    # More than the machine holds is capped, with a warning: by the memory (20 GB / 2.5 GB), then by the cores.
    lim = submit.local_limits(args(cpus_per_task=1, max_parallel=1000), 1)
    assert lim["tasks_at_once"] == 8 and lim["warning"].startswith("--max-parallel 1000 capped at 8: this machine has 64 cores and 20 GB")
    monkeypatch.setattr(submit.os, "sched_getaffinity", lambda _: set(range(2)))
    assert submit.local_limits(args(cpus_per_task=1, max_parallel=1000), 1)["tasks_at_once"] == 2


def test_max_parallel_is_refused_where_it_would_be_ignored(tmp_path, capsys):
    from benchmarks.sweep import main

    for executor, why in (("slurm", "--array-parallelism"), ("debug", "one by one")):
        with pytest.raises(SystemExit) as e:
            main(["run", "--tables", "1", "--methods", "ce", "--profile", "smoke", "--dry-run", "--executor", executor, "--max-parallel", "4"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: --max-parallel is for --executor local") and why in err and len(err.splitlines()) == 1


def _slurm_up() -> bool:
    if not (shutil.which("sbatch") and os.environ.get("SLURM_CONF")):
        return False
    try:  # a controller that does not answer must not hang the collection
        p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    # A node busy with another test's task ("mixed", "allocated") is up too.
    return p.returncode == 0 and any(s in p.stdout for s in ("idle", "mixed", "allocated", "completing"))


slurm = pytest.mark.skipif(not _slurm_up(), reason="no Slurm cluster here (needs sbatch and SLURM_CONF; .ci/run starts one)")


@slurm
@pytest.mark.slow
def test_slurm_job_array_sweep_requeue_and_tables(phantom_env, tmp_path):
    env = {**os.environ, "CLIPLUNG_RUNS": str(tmp_path / "runs"), "CLIPLUNG_SWEEPS": str(tmp_path / "sweeps")}
    common = ["--profile", "smoke", "--executor", "slurm", "--cpus-per-task", "1", "--mem-gb", "1", "--timeout-min", "20"]
    # 1. A small sweep through one job array (two runs of one epoch of one step: 32 nodules).
    tiny = ["--set", "train_limit=32"]
    first = ["--tables", "2", "--methods", "ce", "--folds", "0", "--profile", "smoke", "--set", "epochs=1", *tiny]
    p = sweep("run", *first, *common, "--wait", env=env)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    assert "as slurm job(s)" in p.stdout
    man = json.loads(next((tmp_path / "sweeps").glob("*/sweep.json")).read_text())
    assert len(man["jobs"]) == 2 and len({j["job_id"].split("_")[0] for j in man["jobs"]}) == 1  # one array
    assert len(list((tmp_path / "runs").glob("*.json"))) == 2
    st = json.loads(sweep("status", *first, "--json", env=env).stdout)
    assert st["cells"]["ce/LIDC-C"]["done"] == 1 and st["totals"]["done"] == 2
    t = subprocess.run([sys.executable, "-m", "benchmarks.tables", "--tables", "2", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "tables")],
                       capture_output=True, text=True)  # the default setting: these records (epochs=1) are another one
    assert t.returncode == 2 and "pick them with --set epochs=1 --set train_limit=32" in t.stderr.splitlines()[-1], t.stderr
    t = subprocess.run([sys.executable, "-m", "benchmarks.tables", "--tables", "2", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "tables"),
                        "--set", "epochs=1", *tiny], capture_output=True, text=True)
    assert t.returncode == 0, t.stderr
    # 2. Requeue a running task: it resumes from its checkpoint and ends with the uninterrupted record.
    # One run (table 1 holds LIDC-A only) of 4 epochs of one step: requeued after its first checkpoint, 3 epochs remain.
    long = ["--set", "epochs=4", *tiny]
    # The uninterrupted reference runs meanwhile (the sweep's task takes the cluster's other CPU).
    ref = subprocess.Popen([sys.executable, "-m", "benchmarks.run", "--method", "ce", "--dataset", "LIDC-A", "--fold", "2", "--profile", "smoke",
                            *long, "--json", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**env, "CLIPLUNG_RUNS": str(tmp_path / "ref")})
    job = None
    try:
        p = sweep("run", "--tables", "1", "--methods", "ce", "--folds", "2", *common, *long, env=env)
        assert p.returncode == 0, p.stderr[-2000:]
        sweep_dirs = sorted((tmp_path / "sweeps").glob("*/sweep.json"))
        man = json.loads(sweep_dirs[-1].read_text())
        (job,) = man["jobs"]  # one run: a plain job, not an array
        ckpt = tmp_path / "runs" / f"{job['stem']}.ckpt"
        deadline = time.time() + 300
        while time.time() < deadline and not ckpt.exists():
            time.sleep(0.2)
        assert ckpt.exists(), "the task never checkpointed"
        r = subprocess.run(["scontrol", "requeue", job["job_id"]], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        # Slurm holds a requeued job back (Reason=BeginTime, ~2.5 min here); what we test is the resume,
        # not that wait: once it is pending again, make it eligible now.
        deadline = time.time() + 60
        while time.time() < deadline:
            q = subprocess.run(["squeue", "-h", "-j", job["job_id"], "-o", "%T|%r"], capture_output=True, text=True, timeout=30)
            if q.stdout.strip() == "PENDING|BeginTime":
                subprocess.run(["scontrol", "update", f"JobId={job['job_id']}", "StartTime=now"], capture_output=True, timeout=30)
                break
            time.sleep(0.5)
        record = tmp_path / "runs" / f"{job['stem']}.json"
        deadline = time.time() + 600
        while time.time() < deadline and not record.exists():
            time.sleep(0.5)
        assert record.exists(), "the requeued task did not finish"
        log = "".join(p.read_text(errors="replace") for p in Path(man["logs"]).glob(f"{job['job_id']}*log.err"))
        assert "resuming from" in log
        ref_out, ref_err = ref.communicate(timeout=600)
        assert ref.returncode == 0, ref_err[-2000:]
        a = json.load(open(json.loads(ref_out)["records"][0]))
        b = json.loads(record.read_text())
        assert a["metrics"] == b["metrics"] and a["predictions"] == b["predictions"]
    finally:  # a failed assertion leaves nothing running for the next test
        if job:
            subprocess.run(["scancel", job["job_id"]], capture_output=True, timeout=30)
        if ref.poll() is None:
            ref.kill()
            ref.communicate()


@slurm
def test_slurm_bad_partition_and_gpus(tmp_path):
    env = {**os.environ, "CLIPLUNG_RUNS": str(tmp_path / "runs"), "CLIPLUNG_SWEEPS": str(tmp_path / "sweeps")}
    base = ["run", "--tables", "2", "--methods", "ce", "--folds", "0", "--profile", "smoke", "--executor", "slurm", "--mem-gb", "1"]
    p = sweep(*base, "--partition", "no-such-partition", env=env)
    assert p.returncode == 2 and "does not exist" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = sweep(*base, "--gpus-per-node", "1", env=env)
    assert p.returncode == 2 and "Slurm refused" in p.stderr and "Traceback" not in p.stderr
    # submitit prints sbatch's stderr itself; we quote it in ours: one line, which names sbatch's reason.
    assert len(p.stderr.strip().splitlines()) == 1 and "sbatch: error:" in p.stderr, p.stderr
    assert not any((tmp_path / "sweeps").glob("*/sweep.json"))  # nothing half-submitted


def test_matrix_adds_other_methods_and_backbones():
    specs = matrix([1], methods=["ce", "nsb", "clip_lung_ic"], folds=[0])
    # ce and nsb are Table 1's; clip_lung_ic is not, so it joins on Table 1's dataset.
    assert sorted((s.method, s.dataset) for s in specs) == [("ce", "LIDC-A"), ("clip_lung_ic", "LIDC-A"), ("nsb", "LIDC-A")]
    bb = matrix([], backbones=["resnet18_2d", "r3d_18"], folds=[0])
    assert len(bb) == 2 * 2 * 3 and {s.backbone for s in bb} == {"resnet18_2d", "r3d_18"}
    # The paper's backbone is the plain Table 1-2 run: the same key, run once.
    assert {s.key for s in bb if s.backbone == "resnet18_2d" and s.method == "ce" and s.dataset == "LIDC-A"} == \
        {s.key for s in matrix([1], methods=["ce"], folds=[0])}
    assert all("r3d_18" in s.stem for s in bb if s.backbone == "r3d_18")
