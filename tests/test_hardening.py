"""A hostile or unlucky user: crafted and damaged files, values out of range, folders that cannot be written.

Every case ends in the documented behaviour (docs/faults.md), with one line and
exit status 2 where it is the user's to fix, and never with a traceback.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.errors import UserError
from benchmarks.lifecycle import make_spec, run_one
from benchmarks.records import RUNS_ENV, DamagedRecord, read_record, read_records

ROOT_CAN_BYPASS = os.geteuid() == 0


class Done:
    """What an in-process CLI call left: exit status and stderr (as subprocess.run gives)."""

    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def call(module, *args, env=None, capsys=None, monkeypatch=None):
    """``python -m module args`` in this process (no second torch import): its exit status and stderr.
    Log records go to stderr through the handler ``setup_logging`` installs."""
    import importlib
    import logging

    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    root.addHandler(handler)
    try:
        capsys.readouterr()
        try:
            importlib.import_module(module).main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    finally:
        root.removeHandler(handler)
    return Done(code, capsys.readouterr().err)


def one_error_line(p):
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    errors = [x for x in p.stderr.strip().splitlines() if x.startswith("error:")]
    assert len(errors) == 1, p.stderr
    return errors[0]


# ------------------------------------------------------------------ checkpoints run no code
class Payload:
    """Unpickling this runs ``open(marker, 'w')``: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_checkpoint_does_not_run_its_payload(phantom_env, tmp_path, caplog):
    spec = make_spec("ce", "LIDC-C", 2, profile="smoke", sets=["epochs=1"])
    marker = tmp_path / "pwned"
    ckpt = spec.path(".ckpt")
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"tag": spec.key, "epoch": 0, "model": Payload(str(marker))}, ckpt)
    with caplog.at_level("WARNING"):
        rec = run_one(spec, progress=False)
    assert not marker.exists(), "the checkpoint's payload ran"
    assert rec["method"] == "ce" and spec.path(".json").exists()
    assert ckpt.with_name(ckpt.name + ".bad").exists() and not ckpt.exists()
    assert any("cannot use the checkpoint" in m and "starting from epoch 0" in m for m in caplog.messages)


def test_a_truncated_checkpoint_is_moved_aside_and_the_run_restarts(phantom_env, capsys, monkeypatch):
    spec = make_spec("ce", "LIDC-C", 3, profile="smoke", sets=["epochs=1"])
    ckpt = spec.path(".ckpt")
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"PK\x03\x04 truncated zip")
    p = call("benchmarks.run", "--method", "ce", "--dataset", "LIDC-C", "--fold", "3", "--profile", "smoke", "--set", "epochs=1", "--quiet",
             capsys=capsys, monkeypatch=monkeypatch)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "cannot use the checkpoint" in p.stderr and spec.path(".json").exists()
    assert ckpt.with_name(ckpt.name + ".bad").exists()


# ------------------------------------------------------------------ values out of range
@pytest.mark.parametrize("args,field", [
    (["--set", "lr=-1"], "lr=-1.0 is out of range: valid (0, inf)"),
    (["--set", "momentum=-5"], "momentum=-5.0 is out of range: valid [0, 1)"),
    (["--set", "batch_size=0"], "batch_size=0 is out of range"),
    (["--set", "eval_batch_size=0"], "eval_batch_size=0 is out of range"),
    (["--set", "epochs=0"], "epochs=0 is out of range: valid [1, inf)"),
    (["--set", "ema_decay=1.0"], "ema_decay=1.0 is out of range: valid [0, 1)"),
    (["--set", "train_limit=-5"], "train_limit=-5 is out of range"),
    (["--set", "lr=1e999"], "lr=inf is not a finite number"),
    (["--seed", str(2**70)], "argument --seed"),
    (["--set", "aggressive_margin=-1"], "aggressive_margin=-1.0 is out of range"),
])
def test_values_out_of_range_exit_2_before_any_work(tmp_path, args, field, capsys, monkeypatch):
    runs = tmp_path / "runs"
    method = "udm" if "margin" in args[-1] else "ce"
    p = call("benchmarks.run", "--method", method, "--dataset", "LIDC-A", "--fold", "0", "--profile", "smoke", *args,
             env={RUNS_ENV: str(runs)}, capsys=capsys, monkeypatch=monkeypatch)
    assert field in one_error_line(p)
    assert not runs.exists() or not any(runs.iterdir())  # no record, no checkpoint


@pytest.mark.parametrize("name,sets,field", [
    ("corf", ["depth=6", "units=32"], "units=32 is out of range"),
    ("corf", ["decision='mode'"], "decision='mode' is not one of"),
    ("clip_lung", ["group_reduction='max'"], "group_reduction='max' is not one of"),
    ("clip_lung", ["n_ctx=0"], "n_ctx=0 is out of range"),
    ("poisson", ["first_class=2"], "first_class=2 is not one of"),
    ("cocoop", ["text_encoder='bert'"], "text_encoder='bert' is not one of"),
])
def test_method_config_values_are_checked(name, sets, field):
    with pytest.raises(UserError, match=field.replace("(", r"\(").replace(")", r"\)")):
        make_spec(name, "LIDC-A", 0, profile="smoke", sets=sets)


def test_numeric_flags_of_the_other_commands(tmp_path, capsys, monkeypatch):
    kw = {"capsys": capsys, "monkeypatch": monkeypatch}
    p = call("benchmarks.prepare", "show", "--per-class", "0", "--out", str(tmp_path / "x.png"), **kw)
    assert "argument --per-class: 0 is out of range" in one_error_line(p)
    p = call("benchmarks.sweep", "run", "--tables", "1", "--seeds", "-3", "--dry-run", **kw)
    assert "argument --seeds" in one_error_line(p)
    p = call("benchmarks.figures", "tsne", "--dataset", "LIDC-B", "--fold", "9", **kw)
    assert "--folds: fold 9 does not exist" in one_error_line(p)


# ------------------------------------------------------------------ damaged records
DAMAGED = {
    "truncated": b'{"method": "ce", "dataset": "LIDC-C", "fold"',
    "binary": bytes(range(256)),
    "not an object": b"[1, 2, 3]",
    "missing fields": json.dumps({"method": "ce", "dataset": "LIDC-C"}).encode(),
}


@pytest.mark.parametrize("kind", sorted(DAMAGED))
def test_damaged_records_are_recognised(tmp_path, kind):
    p = tmp_path / "r.json"
    p.write_bytes(DAMAGED[kind])
    with pytest.raises(DamagedRecord):
        read_record(p)


def test_run_redoes_a_damaged_record_and_keeps_it_aside(phantom_env, capsys, monkeypatch):
    spec = make_spec("ce", "LIDC-C", 4, profile="smoke", sets=["epochs=1"])
    path = spec.path(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(DAMAGED["truncated"])
    p = call("benchmarks.run", "--method", "ce", "--dataset", "LIDC-C", "--fold", "4", "--profile", "smoke", "--set", "epochs=1", "--quiet",
             capsys=capsys, monkeypatch=monkeypatch)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "is damaged" in p.stderr and "running again" in p.stderr
    assert read_record(path)["fold"] == 4 and path.with_name(path.name + ".bad").read_bytes() == DAMAGED["truncated"]


def test_tables_and_figures_skip_damaged_records_with_a_warning(tmp_path, caplog, capsys, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    for kind, data in DAMAGED.items():
        (runs / f"{kind.replace(' ', '_')}.json").write_bytes(data)
    with caplog.at_level("WARNING"):
        assert read_records(runs) == []
    assert sum("not a usable record" in m for m in caplog.messages) == len(DAMAGED)
    kw = {"capsys": capsys, "monkeypatch": monkeypatch}
    p = call("benchmarks.tables", "--runs", str(runs), "--out", str(tmp_path / "t"), **kw)
    line = one_error_line(p)  # nothing usable: "no run records ... in DIR"
    assert str(runs) in line and "not a usable record" in p.stderr
    p = call("benchmarks.figures", "tsne", "--dataset", "LIDC-B", "--runs", str(runs), "--out", str(tmp_path / "f"), **kw)
    assert "no record of" in one_error_line(p) and "not a usable record" in p.stderr


def test_tables_name_the_runs_folder_they_read(tmp_path, capsys, monkeypatch):
    kw = {"capsys": capsys, "monkeypatch": monkeypatch}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert str(empty) in one_error_line(call("benchmarks.tables", "--runs", str(empty), "--out", str(tmp_path / "t"), **kw))
    assert str(tmp_path / "nope") in one_error_line(call("benchmarks.tables", "--runs", str(tmp_path / "nope"), **kw))


def test_sweep_refuses_unknown_method_names(capsys, monkeypatch):
    p = call("benchmarks.sweep", "run", "--tables", "1", "--methods", "nope", "--dry-run", capsys=capsys, monkeypatch=monkeypatch)
    assert "unknown method 'nope'" in one_error_line(p)


# ------------------------------------------------------------------ folders that cannot be written
def _readonly(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    return path


needs_setpriv = pytest.mark.skipif(ROOT_CAN_BYPASS and shutil.which("setpriv") is None,
                                   reason="as root, a read-only folder needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE")


@pytest.mark.parametrize("case", ["file in its place", "under a file"])
def test_runs_folder_that_cannot_be_a_folder_exits_2(tmp_path, case, capsys, monkeypatch):
    (tmp_path / "f").write_text("x")
    target = tmp_path / "f" if case == "file in its place" else tmp_path / "f" / "runs"
    p = call("benchmarks.run", "--method", "ce", "--dataset", "LIDC-C", "--fold", "0", "--profile", "smoke",
             env={RUNS_ENV: str(target)}, capsys=capsys, monkeypatch=monkeypatch)
    line = one_error_line(p)
    assert "runs folder" in line and RUNS_ENV in line and "epoch" not in p.stderr


# Each command of a read-only folder, called in one child process that cannot override file
# permissions (as root: CAP_DAC_OVERRIDE dropped), so the folder is read-only to it too.
READONLY_SCRIPT = """
import contextlib, io, json, os, sys
cases = json.loads(sys.argv[1])
out = {}
for name, (module, args, env) in cases.items():
    os.environ.update(env)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            __import__(module, fromlist=["main"]).main(args)
            code = 0
        except SystemExit as e:
            code = e.code
    out[name] = [code, err.getvalue()]
print(json.dumps(out))
"""


@needs_setpriv
def test_read_only_folders_exit_2_before_any_work(tmp_path):
    ro = _readonly(tmp_path / "ro")
    runs = tmp_path / "runs"
    runs.mkdir()
    smoke = ["--profile", "smoke"]
    cases = {
        "runs folder": ("benchmarks.run", ["--method", "ce", "--dataset", "LIDC-C", "--fold", "0", *smoke], {RUNS_ENV: str(ro / "runs")}),
        "tables folder": ("benchmarks.tables", ["--runs", str(runs), "--out", str(ro / "t")], {RUNS_ENV: str(runs)}),
        "figures folder": ("benchmarks.figures", ["tsne", "--dataset", "LIDC-B", "--out", str(ro / "f")], {}),
        "figures folder ": ("benchmarks.prepare", ["show", "--out", str(ro / "s" / "x.png")], {}),
        "report folder": ("benchmarks.report", ["--runs", str(runs), "--out", str(ro / "r")], {}),
        "sweeps folder": ("benchmarks.sweep", ["run", "--tables", "2", "--methods", "ce", "--folds", "0", *smoke, "--executor", "local"],
                          {"CLIPLUNG_SWEEPS": str(ro / "sweeps")}),
        "folder of --out": ("benchmarks.device_check", ["--device", "cpu", "--quick", "--out", str(ro / "d" / "check.json")], {}),
    }
    cmd = [sys.executable, "-c", READONLY_SCRIPT, json.dumps(cases)]
    if ROOT_CAN_BYPASS:
        cmd = ["setpriv", "--bounding-set", "-dac_override", "--", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    for what, (code, err) in json.loads(p.stdout).items():
        line = one_error_line(Done(code, err))
        assert f"cannot write to the {what.strip()}" in line and "epoch" not in err, (what, err)
    assert not any(ro.iterdir())


def test_a_folder_turning_read_only_mid_run_keeps_the_last_checkpoint(phantom_env, monkeypatch, tmp_path):
    import benchmarks.io as bio

    spec = make_spec("ce", "LIDC-C", 1, profile="smoke", sets=["epochs=3"])
    real = os.replace
    calls = {"n": 0}

    def replace(src, dst):  # the second checkpoint cannot be written: the folder went read-only
        if str(dst).endswith(".ckpt"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise PermissionError(13, "Permission denied")
        return real(src, dst)

    monkeypatch.setattr(bio.os, "replace", replace)
    with pytest.raises(UserError, match="cannot write .*ckpt: Permission denied"):
        run_one(spec, progress=False)
    state = torch.load(spec.path(".ckpt"), weights_only=True)
    assert state["epoch"] == 1 and not spec.path(".json").exists()
    assert not list(spec.path(".ckpt").parent.glob(".*.tmp"))  # no half-written file left behind


def test_every_epoch_but_the_last_is_checkpointed(phantom_env, monkeypatch, tmp_path):
    """The last epoch's checkpoint would be deleted moments later, with the record written: it is not made."""
    import benchmarks.io as bio

    monkeypatch.setenv(RUNS_ENV, str(tmp_path))
    spec = make_spec("ce", "LIDC-C", 1, profile="smoke", sets=["epochs=3", "train_limit=32"])
    real = os.replace
    epochs = []

    def replace(src, dst):
        if str(dst).endswith(".ckpt"):
            epochs.append(torch.load(src, weights_only=True)["epoch"])
        return real(src, dst)

    monkeypatch.setattr(bio.os, "replace", replace)
    rec = run_one(spec, progress=False)
    assert epochs == [1, 2] and len(rec["history"]) == 3 and not spec.path(".ckpt").exists()
