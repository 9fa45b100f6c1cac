"""Tuning (benchmarks.tune): search spaces, the inner split, the trial bookkeeping, and the tuned setting end to end."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.errors import UserError
from benchmarks.space import SHARED, Choice, Float, Int, parse_range, space_json, space_of


def tune(*args, env, timeout=900):
    return subprocess.run([sys.executable, "-m", "benchmarks.tune", *args], capture_output=True, text=True, timeout=timeout, env=env)


def cmd(module, *args, env, timeout=900):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def results(phantom_env, tmp_path):
    """A private results root (runs, sweeps, tune) over the session's phantom cache."""
    env = {k: v for k, v in os.environ.items() if k not in ("CLIPLUNG_RUNS", "CLIPLUNG_SWEEPS")}
    env["CLIPLUNG_RESULTS"] = str(tmp_path / "results")
    return env


def study_records(env) -> dict:
    root = Path(env["CLIPLUNG_RESULTS"]) / "tune" / "studies"
    return {p.stem: json.loads(p.read_text()) for p in root.glob("*.json")}


# --- search spaces -------------------------------------------------------------------------------------------------


def test_every_method_has_a_space_that_holds_its_defaults_under_every_profile():
    import methods
    from benchmarks.lifecycle import make_spec

    for name, m in methods.REGISTRY.items():
        for profile in ("paper", "quick", "smoke"):
            s = make_spec(name, "LIDC-B", 0, profile=profile)
            space = space_of(m, defaults={**s.train_config, **s.method_config})
            assert {"lr", "weight_decay"} <= set(space), name
            assert all(space[k] == SHARED[k] for k in SHARED if k not in getattr(m.cls.Config, "SEARCH", {}))
    clip_lung = space_of(methods.get_method("clip_lung"))
    assert clip_lung["alpha"] == Float(0.1, 10.0, log=True) and isinstance(clip_lung["n_ctx"], Choice)
    assert space_json(space_of(methods.get_method("corf")))["depth"] == {"type": "int", "low": 3, "high": 7, "log": False}


def test_ranges_are_checked():
    import methods

    m = methods.get_method("ce")
    assert parse_range("lr=1e-4:1e-2:log") == ("lr", Float(1e-4, 1e-2, log=True))
    assert parse_range("trees=1:5") == ("trees", Int(1, 5))
    assert parse_range("n_ctx=2,4") == ("n_ctx", Choice((2, 4)))
    for bad, why in (({"lr": Float(0.1, 0.01)}, "must be below its high"), ({"lr": Float(0.0, 1.0, log=True)}, "log range must lie above 0"),
                     ({"nope": Float(0.1, 1.0)}, "no such field"), ({"lr": Choice((1,))}, "at least two options")):
        with pytest.raises(UserError, match=why):
            space_of(m, bad)
    with pytest.raises(UserError, match="the default 0.001 lies outside"):
        space_of(m, {"lr": Float(0.01, 0.1)}, defaults={"lr": 1e-3})
    assert json.dumps(space_json(space_of(m)))  # plain JSON for the study's setting


def test_a_range_keeps_to_its_fields_type_ranges_and_choices():
    """One check for a method's SEARCH and --range: of the field's type (whole numbers on a float field, given by
    --range, are a Float range), inside the field's RANGES and CHOICES, never a value a trial's run would refuse."""
    import methods

    clip, corf, lung = (methods.get_method(m) for m in ("clip", "corf", "clip_lung"))
    key, dist = parse_range("init_temperature=1:2:log")
    assert dist == Int(1, 2, log=True) and space_of(clip, {key: dist})["init_temperature"] == Float(1.0, 2.0, log=True)
    assert space_of(clip, dict([parse_range("init_temperature=1,2")]))["init_temperature"] == Choice((1.0, 2.0))
    for m, rng, why in ((clip, "init_temperature=0.001:0.1", "leaves the field's valid range [0.01, inf) (its RANGES): 0.001 is outside"),
                        (corf, "trees=0.5:4.5", "Float on a field of type int; declare it as Int or Choice"),
                        (corf, "trees=1:2000", "leaves the field's valid range [1, 1024]"),
                        (lung, "group_reduction=sum,max", "'max' is not one of the field's CHOICES ('sum', 'mean')"),
                        (lung, "n_ctx=2,4.5", "4.5 is not a value of the field's type int")):
        with pytest.raises(UserError, match=why.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")) as e:
            space_of(m, dict([parse_range(rng)]))
        assert "(--range)" in str(e.value)


def test_the_ablations_are_tuned_over_the_weights_of_the_terms_they_train_only():
    import methods

    spaces = {m: set(space_of(methods.get_method(m))) for m in ("clip_lung", "clip_lung_ic", "clip_lung_ic_ia", "clip_lung_ia_ca", "clip_lung_ic_ca")}
    base = {"lr", "weight_decay", "n_ctx", "init_temperature"}
    assert spaces == {"clip_lung": base | {"alpha", "beta"}, "clip_lung_ic": base, "clip_lung_ic_ia": base | {"alpha"},
                      "clip_lung_ia_ca": base | {"alpha", "beta"}, "clip_lung_ic_ca": base | {"beta"}}
    # --set switching a term off drops its weight too (the space follows the resolved config)
    assert "alpha" not in space_of(methods.get_method("clip_lung"), defaults={"use_ia": False, "alpha": 1.0})
    # the full model's space is that of the studies tuned before: their setting (space hash) still holds
    assert space_json(space_of(methods.get_method("clip_lung")))["alpha"] == {"type": "float", "low": 0.1, "high": 10.0, "log": True}


def test_ties_go_to_the_lower_validation_log_loss_then_to_the_earlier_trial():
    from benchmarks.tune.summary import chosen_trial

    def t(n, value, ll, state="COMPLETE"):
        return {"number": n, "state": state, "value": value, "log_loss": ll, "params": {"lr": n}}

    # trial 0 (the defaults) ties trial 2 on accuracy; trial 2 was surer of its answers: it is chosen
    assert chosen_trial({"trials": [t(0, 0.86, 0.41), t(1, 0.80, 0.30), t(2, 0.86, 0.35), t(3, 0.90, None, "PRUNED")]})["number"] == 2
    assert chosen_trial({"trials": [t(0, 0.86, 0.35), t(1, 0.86, 0.35)]})["number"] == 0  # all equal: the earlier
    assert chosen_trial({"trials": [t(0, 0.86, None), t(1, 0.86, 0.5)]})["number"] == 1  # a study without log losses ranks them last
    assert chosen_trial({"trials": [t(0, 0.86, 0.2), t(1, 0.87, 0.9)]})["number"] == 1  # the objective first


# --- the inner split -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["LIDC-A", "LIDC-B", "LIDC-C"])
def test_the_inner_split_lies_inside_the_training_folds(dataset):
    from benchmarks.data.inner import inner_fold_table
    from benchmarks.data.protocols import CLASS_NAMES, fold_table

    for fold in range(5):
        ft = fold_table(dataset, fold)
        inner = inner_fold_table(ft)
        test_ids, train_ids = set(ft.test["nodule_id"]), set(ft.train["nodule_id"])
        tr, va = set(inner.train["nodule_id"]), set(inner.test["nodule_id"])
        assert not (tr | va) & test_ids and tr | va <= train_ids and not tr & va
        assert not set(inner.train["patient_id"]) & set(inner.test["patient_id"])  # patient-grouped
        assert set(inner.test["label"]) <= {CLASS_NAMES.index(c) for c in ft.protocol.test_classes}
        scored = ft.train["label"].isin([CLASS_NAMES.index(c) for c in ft.protocol.test_classes]).sum()
        assert 0.12 < len(va) / scored < 0.28  # about one in five of the training folds' scored nodules
        again = inner_fold_table(fold_table(dataset, fold))
        assert list(again.test["nodule_id"]) == list(inner.test["nodule_id"])  # deterministic


# --- the bookkeeping, with a stand-in objective ---------------------------------------------------------------------


def _fake_study(root: Path, monkeypatch, budget: int = 5, kill_slot: int | None = None):
    """Claim and finish trials of one study with a deterministic objective of the parameters; at ``kill_slot`` the
    trial's worker 'dies' (its pid is a finished process's), leaving it running: the next claim must reap it."""
    monkeypatch.setenv("CLIPLUNG_RESULTS", str(root))
    from benchmarks.tune.study import claim, finish, open_storage, prepare_study, worker_identity
    from benchmarks.tune.worker import distributions

    storage = open_storage(str(root / "journal.log"))
    defaults = {"lr": 1e-3, "weight_decay": 5e-5}
    prepare_study(storage, "s", {"what": "fake"}, budget, defaults, create=True)
    dists = distributions(space_json(SHARED))
    dead = subprocess.Popen(["true"])
    dead.wait()
    killed = None
    while (got := claim(storage, "s", budget, 4, dists)) is not None:
        study, trial = got
        if trial.user_attrs["slot"] == kill_slot and killed is None:
            killed = trial.number
            trial.set_user_attr("worker", {**worker_identity(), "pid": dead.pid, "pid_start": "gone"})
            continue
        value = -abs(trial.params["lr"] - 0.01) - abs(trial.params["weight_decay"] - 1e-4)
        finish(storage, study, trial, "COMPLETE", value)
    rec = json.loads((root / "tune" / "studies" / "s.json").read_text())
    return rec, killed


def test_a_dead_workers_trial_is_retried_and_the_study_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    from benchmarks.tune.summary import chosen_trial, finished

    whole, _ = _fake_study(tmp_path / "a", monkeypatch)
    cut, killed = _fake_study(tmp_path / "b", monkeypatch, kill_slot=2)
    assert finished(whole) == finished(cut) == 5  # the budget, exactly, never counted twice
    failed = [t for t in cut["trials"] if t["state"] == "FAIL"]
    assert [t["number"] for t in failed] == [killed] and "worker died" in failed[0]["error"]
    retry = [t for t in cut["trials"] if t["retry_of"] == killed]
    assert len(retry) == 1 and retry[0]["params"] == failed[0]["params"] and retry[0]["state"] == "COMPLETE"
    by_slot = lambda rec: {t["slot"]: t["params"] for t in rec["trials"] if t["state"] == "COMPLETE"}  # noqa: E731
    assert by_slot(whole) == by_slot(cut)  # the same parameters in every slot: the kill changed nothing
    assert whole["trials"][0]["defaults"] and whole["trials"][0]["params"] == {"lr": 1e-3, "weight_decay": 5e-5}
    assert chosen_trial(whole)["params"] == chosen_trial(cut)["params"]


# --- bad input: one line, exit 2, nothing written -------------------------------------------------------------------


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    from benchmarks.tune import cli

    monkeypatch.setenv("CLIPLUNG_RESULTS", str(tmp_path / "r"))
    base = ["run", "--methods", "ce", "--datasets", "LIDC-C", "--folds", "0", "--profile", "smoke"]
    cases = [
        ([*base, "--budget", "2", "--objective", "speed"], "unknown objective 'speed'"),
        ([*base, "--budget", "2", "--objective", "qwk"], "not defined on LIDC-C"),
        (["run", "--methods", "nope", "--budget", "2"], "unknown method 'nope'"),
        ([*base, "--budget", "0"], "0 is out of range"),
        ([*base, "--budget", "-1"], "-1 is out of range"),
        ([*base, "--budget", "abc"], "expected an integer, got 'abc'"),
        ([*base, "--budget", "2", "--range", "lr=0.1:0.01"], "must be below its high"),
        ([*base, "--budget", "2", "--storage", "mysql+pymysql://u:secret@127.0.0.1:9/optuna"], "cannot reach the study storage"),
    ]
    for args, want in cases:
        with pytest.raises(SystemExit) as e:
            cli.main(args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and want in err and "Traceback" not in err, (args, err[-2000:])
        assert len(err.strip().splitlines()) == 1, err
        assert "secret" not in err  # a storage URL's password never printed
    assert not (tmp_path / "r").exists()


# --- end to end --------------------------------------------------------------------------------------------------------


SMOKE1 = ["--profile", "smoke", "--set", "epochs=1"]
TINY = [*SMOKE1, "--set", "train_limit=32"]


@pytest.mark.slow
def test_a_study_of_another_setting_in_the_same_storage_is_refused(results):
    one = ["run", "--methods", "ce", "--datasets", "LIDC-C", "--folds", "0", *SMOKE1, "--budget", "1", "--max-parallel", "1"]
    p = tune(*one, env=results)
    assert p.returncode == 0, p.stderr[-3000:]
    journal = Path(results["CLIPLUNG_RESULTS"]) / "tune" / "journal.log"
    before = journal.read_bytes()
    p = tune(*one[:-4], "--budget", "1", "--range", "lr=1e-4:1e-2:log", env=results)
    assert p.returncode == 2 and "holds a study ce.LIDC-C.fold0.smoke.phantom.min2.accuracy" in p.stderr and "of another setting" in p.stderr
    assert "Traceback" not in p.stderr and journal.read_bytes() == before


@pytest.mark.slow
def test_the_test_fold_never_chooses(phantom_env, tmp_path, monkeypatch):
    """Two studies of one cell, the second with the test fold's labels flipped and its images blanked: every trial
    (parameters, values per epoch) and the chosen configuration are the same."""
    import numpy as np

    from benchmarks.data import dataset
    from benchmarks.tune import cli

    monkeypatch.delenv("CLIPLUNG_RUNS", raising=False)
    args = ["run", "--methods", "ce", "--datasets", "LIDC-C", "--folds", "0", *SMOKE1, "--budget", "3", "--executor", "debug"]
    monkeypatch.setenv("CLIPLUNG_RESULTS", str(tmp_path / "a"))
    cli.main(args)
    real_table, real_volumes = dataset.labelled_folds, dataset.cache.phantom_volumes

    def flipped(*a, **k):
        t = real_table(*a, **k).copy()
        test = t["fold"] == 0
        t.loc[test, "label"] = 2 - t.loc[test, "label"]  # benign <-> malignant on the test fold only
        return t

    def blanked(table, phash, progress=True):
        ids, vols = real_volumes(table, phash, progress=progress)
        vols = vols.copy()
        vols[np.isin(ids, table.loc[table["fold"] == 0, "nodule_id"].to_numpy())] = 0.5
        return ids, vols

    monkeypatch.setattr(dataset, "labelled_folds", flipped)
    monkeypatch.setattr(dataset.cache, "phantom_volumes", blanked)
    assert (flipped(2)["label"] != real_table(2)["label"]).any()
    monkeypatch.setenv("CLIPLUNG_RESULTS", str(tmp_path / "b"))
    cli.main(args)
    a = study_records({"CLIPLUNG_RESULTS": str(tmp_path / "a")})
    b = study_records({"CLIPLUNG_RESULTS": str(tmp_path / "b")})
    keep = ("number", "state", "params", "value", "intermediate")
    assert a.keys() == b.keys() and len(a) == 1
    for name in a:
        assert [{k: t[k] for k in keep} for t in a[name]["trials"]] == [{k: t[k] for k in keep} for t in b[name]["trials"]]


def _pids_of_running(env, name):
    rec_path = Path(env["CLIPLUNG_RESULTS"]) / "tune" / "journal.log"
    import optuna

    from benchmarks.tune.study import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(str(rec_path), write=False))
    return [(t.number, t.user_attrs.get("slot"), t.user_attrs["worker"]["pid"]) for t in study.get_trials(deepcopy=False)
            if t.state.name == "RUNNING" and "worker" in t.user_attrs]


def descendants(pid: int) -> list[dict]:
    """Every living process under ``pid`` (children, their children, ...), each as {"pid", "start"}."""
    from benchmarks.data.processes import identity

    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return [identity(c) for c in out]


def gone_within(procs: list[dict], seconds: float) -> float | None:
    """Seconds until every process of ``procs`` has ended, None when one is still alive after ``seconds``."""
    from benchmarks.data.processes import alive

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if not any(alive(p) for p in procs):
            return time.perf_counter() - t0
        time.sleep(0.1)
    return None


@pytest.mark.slow
def test_kill_9_of_tune_run_mid_trial_ends_its_workers_and_the_rerun_is_the_uninterrupted_study(results, tmp_path):
    """One worker; the `tune run` command is killed (-9) in the middle of the second trial: none of its processes
    (the executor's controller, the worker) is alive 10 s later; the same command again ends with exactly the budget,
    the killed trial's parameters tried again, every slot as in an uninterrupted study and its choice."""
    from benchmarks.data.processes import alive
    from benchmarks.tune.summary import chosen_trial, finished

    # Two epochs of one step each (32 nodules): a trial long enough to be killed in, and a pruner that can act.
    args = ["run", "--methods", "ce", "--datasets", "LIDC-C", "--folds", "0", "--profile", "smoke", "--set", "train_limit=32", "--budget", "2",
            "--max-parallel", "1"]
    # The uninterrupted study of the same command, in another results root, meanwhile (each study is serial: the two
    # share the cores' idle time of start-ups and journal writes).
    other = {**results, "CLIPLUNG_RESULTS": str(tmp_path / "whole")}
    uninterrupted = subprocess.Popen([sys.executable, "-m", "benchmarks.tune", *args], env=other, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)  # its own group: its worker goes with it
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.tune", *args], env=results, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    procs: list[dict] = []
    try:
        study = None
        victim = None
        deadline = time.time() + 600
        while victim is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            journal = Path(results["CLIPLUNG_RESULTS"]) / "tune" / "journal.log"
            if not journal.exists():
                continue
            if study is None:
                import optuna

                from benchmarks.tune.study import open_storage

                names = [s.study_name for s in optuna.study.get_all_study_summaries(open_storage(str(journal), write=False))]
                study = names[0] if names else None
                if study is None:
                    continue
            running = [r for r in _pids_of_running(results, study) if r[1] == 1]
            if running:
                time.sleep(1.0)  # into the trial (its data and model are being made, or its first step)
                victim = running[0]
                procs = descendants(proc.pid)
                assert any(p["pid"] == victim[2] for p in procs), (victim, procs)  # the worker is the command's
                os.kill(proc.pid, signal.SIGKILL)
        assert victim is not None, "the second trial never started"
        took = gone_within(procs, 10.0)  # the killed command not reaped yet (a zombie), as a shell's job may stay
        print(f"every process of the killed command ended {took} s after the kill")
        proc.communicate(timeout=60)
        assert took is not None, f"processes of the killed command still alive 10 s later: {[p for p in procs if alive(p)]}"
        p = tune(*args, env=results)
        assert p.returncode == 0, p.stderr[-3000:]
        rec = study_records(results)[study]
        assert finished(rec) == 2 and rec["counts"]["FAIL"] == 1 and rec["counts"]["RUNNING"] == 0
        killed = next(t for t in rec["trials"] if t["number"] == victim[0])
        assert killed["state"] == "FAIL" and "worker died" in killed["error"], killed
        retry = [t for t in rec["trials"] if t["retry_of"] == victim[0]]
        assert len(retry) == 1 and retry[0]["params"] == killed["params"]
        assert len({t["worker"]["pid"] for t in rec["trials"] if t["number"] > victim[0]}) == 1  # one worker at a time, as asked
        out, err = uninterrupted.communicate(timeout=600)
        assert uninterrupted.returncode == 0, err[-3000:]
        whole = study_records(other)[study]
        slots = lambda r: {t["slot"]: (t["params"], t["value"]) for t in r["trials"] if t["state"] in ("COMPLETE", "PRUNED")}  # noqa: E731
        assert slots(whole) == slots(rec)
        assert chosen_trial(whole)["params"] == chosen_trial(rec)["params"]
    finally:  # a failed assertion leaves nothing running for the next test
        for q in (uninterrupted, proc):
            if q.poll() is None:
                os.killpg(q.pid, signal.SIGKILL)
                q.communicate()
        for q in procs:  # the killed command's own, had one outlived it
            if alive(q):
                os.kill(q["pid"], signal.SIGKILL)


@pytest.mark.slow
def test_tune_then_sweep_tables_figures_and_report_end_to_end(results):
    """The issue's smoke run, cut to two methods (a baseline and a text-guided one) on LIDC-C, folds 0 and 1, two trials each (the defaults and one drawn), two workers; then the chosen
    configurations on the test folds, the untuned runs beside them, Tables 2 of the tuned setting, the tuned-vs-paper
    table, the best-so-far figure and the report's Tuning section."""
    from benchmarks.tune.summary import finished

    # One step a trial and a run (one epoch on 32 nodules): what is tested is the plumbing, not the training.
    cell = ["--methods", "ce", "clip_lung", "--datasets", "LIDC-C", "--folds", "0", "1", *TINY]
    p = tune("run", *cell, "--budget", "2", "--max-parallel", "2", env=results)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "4 studies, 8 trials to run by 2 local workers" in p.stdout, p.stdout
    studies = study_records(results)
    assert len(studies) == 4 and all(finished(s) == 2 and s["budget"] == 2 for s in studies.values())
    assert all(s["trials"][0]["defaults"] and s["trials"][0]["params"]["lr"] == 1e-3 for s in studies.values())
    assert {k for s in studies.values() if s["setting"]["method"] == "clip_lung" for k in s["trials"][1]["params"]} == \
        {"alpha", "beta", "n_ctx", "init_temperature", "lr", "weight_decay"}
    p = tune("status", *TINY, env=results, timeout=300)
    assert p.returncode == 0 and p.stdout.count("2/2") == 4, p.stdout + p.stderr
    # Two runs to a task (a pack, as on a GPU): two processes a sweep instead of four.
    sweep = ["--tables", "2", *cell, "--executor", "local", "--max-parallel", "2", "--cpus-per-task", "1", "--runs-per-task", "2"]
    for extra in (["--tuned"], []):
        p = cmd("benchmarks.sweep", "run", *sweep, *extra, env=results)
        assert p.returncode == 0 and "4 of 4 runs finished" in p.stdout, p.stdout + p.stderr[-3000:]
    runs = [{**json.loads(f.read_text()), "_file": f.name} for f in (Path(results["CLIPLUNG_RESULTS"]) / "runs").glob("*.json")]
    tuned = [r for r in runs if r.get("tuning")]
    assert len(tuned) == 4 and all(r["tuning"]["budget"] == 2 and r["tuning"]["objective"] == "accuracy" for r in tuned)
    for r in tuned:  # the record's configuration is the chosen trial's
        chosen = r["tuning"]["params"]
        assert all(r["config"]["train"].get(k, r["config"]["method"].get(k)) == v for k, v in chosen.items())
        assert r["tuning"]["study"] in studies and "_tuned_" in r["_file"]
    setting = [*TINY, "--tables", "2", "--datasets", "LIDC-C", "--bootstrap", "0"]
    p = cmd("benchmarks.tables", "--tuned", *setting, env=results)
    assert p.returncode == 0, p.stderr[-3000:]
    out = Path(results["CLIPLUNG_RESULTS"]) / "tables"
    md = (out / "tuning_LIDC-C_smoke_phantom_tuned.md").read_text()
    assert "of 2 trials" in md and md.count("| LIDC-C |") == 2 and "0: trial" in md and "1: trial" in md
    data = json.loads((out / "tuning_LIDC-C_smoke_phantom_tuned.json").read_text())["tuning"]["LIDC-C"]
    assert all(e["paper"] and e["tuned"] and e["diff"] and e["diff"]["n"] == 2 for e in data.values())
    table2 = (out / "table2_LIDC-C_smoke_phantom_tuned.md").read_text()
    assert table2.startswith("### Table 2 (tuned)") and ". Tuned: each test fold's configuration" in table2 and "2023).Tuned" not in table2
    assert "pick them with --tuned" not in p.stderr and "#### Search spaces" in md  # the search spaces beside the choices
    spaces = json.loads((out / "tuning_LIDC-C_smoke_phantom_tuned.json").read_text())["spaces"]
    assert set(spaces) == {"ce", "clip_lung"} and "alpha 0.1 to 10 (log)" in spaces["clip_lung"]["text"]
    assert all(e["studies"] == 2 and e["budget"] == "2" and e["train_h"] > 0 and e["setup_h"] > 0 for e in spaces.values())
    assert not (out / "table2_LIDC-C_smoke_phantom.md").exists()  # the untuned table is its own file, made only when asked
    p = cmd("benchmarks.figures", "tuning", *TINY, env=results)
    assert p.returncode == 0, p.stderr[-3000:]
    fig = json.loads((Path(results["CLIPLUNG_RESULTS"]) / "figures" / "tuning_accuracy_smoke_phantom.json").read_text())
    assert set(fig["curves"]["LIDC-C"]) == {"ce", "clip_lung"} and all(len(c["mean"]) == 2 for c in fig["curves"]["LIDC-C"].values())
    p = cmd("benchmarks.report", "--tuned", *setting, env=results)
    assert p.returncode == 0, p.stderr[-3000:]
    report = (Path(results["CLIPLUNG_RESULTS"]) / "report" / "report.md").read_text()
    assert "## Tuning" in report and "tuning_best_so_far.png" in report and "Chosen per fold" in report
    assert report.startswith("# Results: profile smoke, source phantom, tuned (validation accuracy)") and "## Table 2 (tuned)" in report
    assert "- **tuned**: each method's configuration chosen per test fold" in report
    assert report.count(". Tuned: each test fold's configuration") == 1 and "2023).Tuned" not in report  # Table 2's caption in the report too
    assert "### Search spaces and cost" in report and spaces["clip_lung"]["text"] in report and "lr=" in report  # space and choice


PLUGIN = '''
from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.space import Int
from methods.registry import register


@register("tiny_tuned")
class TinyTuned(nn.Module):
    @dataclass(frozen=True)
    class Config:
        SEARCH = {"width": Int(2, 8)}
        width: int = 4

    def __init__(self, cfg, info):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(32, cfg.width), nn.ReLU(), nn.Linear(cfg.width, info.num_classes))

    def forward(self, batch):
        feat = batch["image"].mean(dim=(2, 3))  # (B, 32): one number per slice
        return {"features": feat, "logits": self.body(feat)}

    def loss(self, out, batch):
        ce = nn.functional.cross_entropy(out["logits"], batch["label"])
        return {"loss": ce, "ce": ce}

    def predict(self, out):
        return torch.softmax(out["logits"], dim=1)
'''


@pytest.mark.slow
def test_a_plugin_that_declares_a_space_is_tuned_over_it(results, tmp_path):
    plugin = tmp_path / "tiny_tuned.py"
    plugin.write_text(PLUGIN)
    # One local task of two workers (as trials pack onto a GPU): both pull trials of the one study.
    p = tune("run", "--methods", "tiny_tuned", "--datasets", "LIDC-C", "--folds", "0", *SMOKE1, "--budget", "4", "--max-parallel", "1",
             "--workers-per-task", "2", "--plugin", str(plugin), env=results)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "by 1 local tasks of 2 workers" in p.stdout, p.stdout
    (rec,) = study_records(results).values()
    assert len({t["worker"]["pid"] for t in rec["trials"]}) == 2
    assert rec["setting"]["plugin"].startswith("tiny_tuned.py#") and set(rec["setting"]["space"]) == {"width", "lr", "weight_decay"}
    assert [t["params"]["width"] for t in rec["trials"]][0] == 4 and all(2 <= t["params"]["width"] <= 8 for t in rec["trials"])


PICKY = PLUGIN.replace('"tiny_tuned"', '"tiny_picky"').replace("class TinyTuned", "class TinyPicky").replace(
    'SEARCH = {"width": Int(2, 8)}\n        width: int = 4',
    'SEARCH = {"width": Int(2, 8), "scale": Float(0.5, 2.0)}\n        width: int = 4\n        scale: float = 1.0').replace(
    "from benchmarks.space import Int", "from benchmarks.errors import UserError\nfrom benchmarks.space import Float, Int").replace(
    "        super().__init__()\n", "        super().__init__()\n        if cfg.scale != 1.0:\n"
    "            raise UserError(f'scale={cfg.scale}: this method is built at scale 1.0 only')\n", 1)


def test_a_space_that_leaves_the_configs_ranges_is_refused_before_anything_is_written(results, tmp_path):
    plugin = tmp_path / "tiny_ranged.py"
    plugin.write_text(PLUGIN.replace('"tiny_tuned"', '"tiny_ranged"').replace(
        'SEARCH = {"width": Int(2, 8)}', 'RANGES = {"width": "[4, 16]"}\n        SEARCH = {"width": Int(2, 8)}'))
    t0 = time.perf_counter()
    p = tune("run", "--methods", "tiny_ranged", "--datasets", "LIDC-C", "--folds", "0", *SMOKE1, "--budget", "2", "--plugin", str(plugin),
             env=results)
    took = time.perf_counter() - t0
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "tiny_ranged: search space of 'width': 2 to 8, integers leaves the field's valid range [4, 16] (its RANGES)" in p.stderr
    assert took < 60 and not Path(results["CLIPLUNG_RESULTS"]).exists(), took


@pytest.mark.slow
def test_an_error_that_recurs_is_shown_and_not_tried_again(results, tmp_path):
    """A trial that fails with an error of the setting (here the method refuses a value its own space offers) ends the
    command with the trial's own error line and exit 2; no worker tries it again, and the command does not advise to
    run it again unchanged. (One worker in the command's process: what a local worker's failure prints is tested
    below without training.)"""
    plugin = tmp_path / "tiny_picky.py"
    plugin.write_text(PICKY)
    p = tune("run", "--methods", "tiny_picky", "--datasets", "LIDC-C", "--folds", "0", *TINY, "--budget", "3", "--executor", "debug",
             "--plugin", str(plugin), env=results)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
    (rec,) = study_records(results).values()
    assert [t["state"] for t in rec["trials"]] == ["COMPLETE", "FAIL"] and rec["trials"][1]["recurs"], rec["trials"]
    scale = rec["trials"][1]["params"]["scale"]
    assert f"failed: study {rec['study']}, trial 1 (lr=" in p.stderr and "this method is built at scale 1.0 only" in p.stderr
    assert f"scale={scale}: this method" in p.stderr and "- /" not in p.stderr and "run the same command again:" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("error: the error above is one of the setting, the data or the values")


def test_a_failed_local_workers_line_is_its_own_error_not_the_log_path(tmp_path):
    """submitit's error for a failed local task ends in the paths of its logs ('- <log>'): `tune run` printed that
    line. It reads the task's own last error line from its result file instead."""
    import pickle

    from benchmarks.tune import cli

    trace = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
             "benchmarks.errors.UserError: study s, trial 2 (lr=0.01): scale=1.7: refused\n")
    (tmp_path / "4242_0_result.pkl").write_bytes(pickle.dumps(("error", trace)))

    class Job:
        job_id = "4242"

        def done(self):
            return True

        def result(self):
            raise RuntimeError("Job (task=0) failed during processing with trace:\n----\n" + trace
                               + "----\nYou can check full logs with 'job.stderr(0)' and 'job.stdout(0)'or at paths:\n  - /x/4242_0_log.err")

    errors = cli._wait([Job()], None, [], 0, tmp_path)
    assert errors == ["worker 4242: UserError: study s, trial 2 (lr=0.01): scale=1.7: refused"]


needs_slurm = pytest.mark.skipif(not (shutil.which("sbatch") and os.environ.get("SLURM_CONF")),
                                 reason="no Slurm cluster here (needs sbatch and SLURM_CONF; .ci/run starts one)")


@needs_slurm
@pytest.mark.slow
def test_a_slurm_job_array_of_two_tasks_shares_one_study_through_the_journal(results):
    from benchmarks.tune.summary import finished

    p = tune("run", "--methods", "ce", "--datasets", "LIDC-C", "--folds", "0", "--profile", "smoke", "--set", "train_limit=32", "--budget", "4",
             "--executor", "slurm", "--workers", "2", "--wait", "--cpus-per-task", "1", "--mem-gb", "1", "--timeout-min", "20", env=results)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    (rec,) = study_records(results).values()
    assert finished(rec) == 4 and rec["counts"]["RUNNING"] == 0
    tasks = {t["worker"]["slurm"] for t in rec["trials"] if t["state"] in ("COMPLETE", "PRUNED")}
    assert len(tasks) == 2 and all("_" in t for t in tasks), tasks  # both array tasks pulled trials of the one study


MYSQL_ENV = "CLIPLUNG_TEST_MYSQL_URL"


@pytest.mark.skipif(not os.environ.get(MYSQL_ENV) and os.environ.get("CI") != "true",
                    reason=f"no database server here (${MYSQL_ENV}; .ci/run sets it to CI's MariaDB)")
@pytest.mark.slow
def test_a_database_storage(results):
    """The same study in CI's MariaDB (the one slurmdbd uses, a database of its own) instead of the journal file."""
    from benchmarks.tune.summary import finished

    url = os.environ.get(MYSQL_ENV)
    assert url, f"CI runs this test against its MariaDB: ${MYSQL_ENV} is not set"
    p = tune("run", "--methods", "ce", "--datasets", "LIDC-C", "--folds", "0", *SMOKE1, "--budget", "2", "--executor", "debug",
             "--storage", url, "--tag", f"db{os.getpid()}", env=results)
    assert p.returncode == 0, p.stderr[-3000:]
    assert not (Path(results["CLIPLUNG_RESULTS"]) / "tune" / "journal.log").exists()
    (rec,) = study_records(results).values()
    assert finished(rec) == 2 and rec["storage"].startswith("mysql+pymysql://") and "***" in rec["storage"]
    p = tune("status", "--storage", url, "--json", env=results, timeout=300)
    assert p.returncode == 0 and any(r["study"] == rec["study"] and r["finished"] == 2 for r in json.loads(p.stdout)), p.stdout + p.stderr


def test_tuned_sweeps_and_tables_need_finished_studies(tmp_path, monkeypatch, capsys):
    from benchmarks.sweep import cli as sweep_cli

    monkeypatch.setenv("CLIPLUNG_RESULTS", str(tmp_path / "r"))
    with pytest.raises(SystemExit) as e:
        sweep_cli.main(["run", "--tuned", "--tables", "2", "--methods", "ce", "--datasets", "LIDC-C", "--folds", "0", "--profile", "smoke",
                        "--executor", "local", "--dry-run"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "no study ce.LIDC-C.fold0.smoke.phantom.min2.accuracy in" in err and "tune run" in err, err
    assert len(err.strip().splitlines()) == 1


STUDY_OF = """
import json, sys
from benchmarks.plugins import load_plugins
from benchmarks.lifecycle import make_spec
from benchmarks.tune.summary import StudyKey, write_study_record
load_plugins([sys.argv[1]])
base = make_spec("tiny_tuned", "LIDC-C", 0, 0, "smoke", "phantom", 2, [], split="inner")
key = StudyKey("tiny_tuned", "LIDC-C", 0, "smoke", "phantom", 2)
setting = {"method": "tiny_tuned", "dataset": "LIDC-C", "fold": 0, "profile": "smoke", "source": "phantom", "min_readers": 2, "sets": [],
           "objective": "accuracy", "seed": 0, "budget": 1, "space": {}, "space_hash": "0" * 64, "inner_hash": "1" * 64,
           "config_hash": base.config_hash, "method_version": base.method_version, "plugin": base.plugin, "backbone_plugin": base.backbone_plugin}
trial = {"number": 0, "state": "COMPLETE", "params": {"width": 4}, "value": 0.8, "log_loss": 0.5}
write_study_record({"schema": 1, "kind": "study", "study": key.name, "setting": setting, "budget": 1, "trials": [trial]})
print(base.plugin)
"""


def test_a_study_tuned_for_older_code_is_refused_by_sweep_and_tables(results, tmp_path, monkeypatch):
    """A plugin edited after its studies were tuned (a new identity): `sweep run --tuned` refuses the old studies
    naming the difference and the command that tunes them anew (it used to run their choice under the new code);
    `tables --tuned` refuses tuned records whose study was tuned for other code."""
    from benchmarks.errors import UserError
    from benchmarks.tune.summary import check_tuned_records, read_study_record

    plugin = tmp_path / "tiny_tuned.py"
    plugin.write_text(PLUGIN)
    made = subprocess.run([sys.executable, "-c", STUDY_OF, str(plugin)], capture_output=True, text=True, env=results)
    assert made.returncode == 0, made.stderr
    old = made.stdout.strip()
    dry = ["run", "--tuned", "--tables", "2", "--methods", "tiny_tuned", "--datasets", "LIDC-C", "--folds", "0", "--profile", "smoke",
           "--executor", "local", "--dry-run", "--plugin", str(plugin)]
    p = cmd("benchmarks.sweep", *dry, env=results)
    assert p.returncode == 0 and "1 to run" in p.stdout, p.stdout + p.stderr  # the same code: its study is used
    plugin.write_text(PLUGIN + "# edited\n")
    p = cmd("benchmarks.sweep", *dry, env=results)
    err = p.stderr.strip()
    assert p.returncode == 2 and len(err.splitlines()) == 1, err
    assert f"the study tiny_tuned.LIDC-C.fold0.smoke.phantom.min2.accuracy was tuned for other code (plugin {old} there, tiny_tuned.py#" in err
    assert "tune it anew: `python -m benchmarks.tune run --methods tiny_tuned --datasets LIDC-C --folds 0 --profile smoke --source phantom " \
           "--budget 1 --tag " in err and "then use --tag" in err
    monkeypatch.setenv("CLIPLUNG_RESULTS", results["CLIPLUNG_RESULTS"])
    study = read_study_record("tiny_tuned.LIDC-C.fold0.smoke.phantom.min2.accuracy")
    record = {"tuning": {"study": study["study"]}, "method_version": 1, "plugin": "tiny_tuned.py#0123456789abcdef", "backbone_plugin": None}
    with pytest.raises(UserError, match=f"plugin {old} there, tiny_tuned.py#0123456789abcdef now"):
        check_tuned_records([record])
    check_tuned_records([{**record, "plugin": old}])  # its own code: fine


def test_a_diverging_trial_is_pruned_and_a_failing_one_fails(tmp_path, monkeypatch):
    """The worker's ends of a trial, with the training replaced: divergence spends the slot (pruned, said why), any
    other error fails the trial and ends the worker with it (its parameters are tried again by the next claim)."""
    monkeypatch.setenv("CLIPLUNG_RESULTS", str(tmp_path))
    from benchmarks import lifecycle, train
    from benchmarks.tune import worker
    from benchmarks.tune.study import claim, open_storage, prepare_study

    storage = open_storage(str(tmp_path / "journal.log"))
    prepare_study(storage, "s", {"what": "fake"}, 3, {"lr": 1e-3, "weight_decay": 5e-5}, create=True)
    item = {"key": {"method": "ce", "dataset": "LIDC-C", "fold": 0, "profile": "smoke", "source": "phantom", "min_readers": 2},
            "sets": [], "seed": 0, "epochs": 2, "objective": "accuracy", "study": "s"}
    monkeypatch.setattr(lifecycle, "prepare_run", lambda spec, device, progress=False, folds=None: type("P", (), {
        "model": None, "data": None, "train": None, "device": None})())

    def diverge(*a, **k):
        raise train.Diverged("non-finite loss (nan) in epoch 1 of 2 (lr 10.0)")

    monkeypatch.setattr(train, "fit", diverge)
    dists = worker.distributions(space_json(SHARED))
    assert worker.run_trial(storage, item, *claim(storage, "s", 3, 2, dists)) == "PRUNED"

    def broken(*a, **k):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(train, "fit", broken)
    with pytest.raises(RuntimeError):
        worker.run_trial(storage, item, *claim(storage, "s", 3, 2, dists))
    rec = json.loads((tmp_path / "tune" / "studies" / "s.json").read_text())
    assert [t["state"] for t in rec["trials"]] == ["PRUNED", "FAIL"]
    assert "non-finite loss" in rec["trials"][0]["diverged"] and rec["trials"][1]["error"] == "CUDA out of memory"
    study, retry = claim(storage, "s", 3, 2, dists)
    assert retry.user_attrs["retry_of"] == 1 and retry.params == rec["trials"][1]["params"]
