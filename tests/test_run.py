"""The training loop, run records and the run CLI, on the real folds of the phantom source."""
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import methods
from benchmarks.config import apply_overrides, field_types
from benchmarks.errors import UserError
from benchmarks.lifecycle import make_spec, run_one
from benchmarks.profiles import PROFILES, get_profile
from benchmarks.records import RUNS_ENV
from benchmarks.train import Diverged, TrainConfig, augment, stratified_subset

BASELINES = ["ce", "poisson", "nsb", "udm", "corf"]


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "benchmarks.run", *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


def test_set_overrides_are_parsed_and_type_checked():
    cfgs = {"train": TrainConfig(), "method": methods.get_method("udm").config}
    out = apply_overrides(cfgs, ["lr=0.01", "epochs=3", "augment=False", "aggressive_margin=1"])
    assert out["train"].lr == 0.01 and out["train"].epochs == 3 and out["train"].augment is False
    assert out["method"].aggressive_margin == 1.0 and isinstance(out["method"].aggressive_margin, float)
    with pytest.raises(UserError, match="unknown --set key 'nope'; known keys: .*lr"):
        apply_overrides(cfgs, ["nope=1"])
    with pytest.raises(UserError, match="--set epochs expects int"):
        apply_overrides(cfgs, ["epochs=2.5"])
    with pytest.raises(UserError, match="--set augment expects bool"):
        apply_overrides(cfgs, ["augment=maybe"])
    with pytest.raises(UserError, match="key=value"):
        apply_overrides(cfgs, ["lr"])


@pytest.mark.parametrize("name", sorted(methods.REGISTRY))
def test_method_config_names_do_not_shadow_training_config(name):
    assert not set(field_types(methods.get_method(name).config)) & set(field_types(TrainConfig()))


def test_profiles():
    assert get_profile("paper").train == TrainConfig()
    assert get_profile("paper").train.epochs == 100 and get_profile("paper").train.lr == 1e-3
    for p in PROFILES:
        t = get_profile(p).train
        assert (t.lr, t.momentum, t.weight_decay, t.batch_size) == (1e-3, 0.9, 5e-5, 32)
    with pytest.raises(UserError, match="unknown profile"):
        get_profile("fast")


def test_stratified_subset_and_augmentation():
    labels = np.array([0] * 50 + [1] * 100 + [2] * 30)
    idx = stratified_subset(labels, 36, seed=0)
    assert len(idx) == 36 and np.bincount(labels[idx]).tolist() == [10, 20, 6]
    assert np.array_equal(idx, stratified_subset(labels, 36, seed=0))
    x = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4, 4)
    y = augment(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and torch.equal(torch.sort(y.flatten(1))[0], torch.sort(x.flatten(1))[0])


@pytest.mark.parametrize("name", BASELINES)
def test_smoke_run_writes_a_full_record(phantom_env, name):
    # One step an epoch (32 nodules): the record is what is tested. The command line for CE (the same path
    # for every method); the others in this process, which spares each a start-up of torch and the fold.
    argv = ["--method", name, "--dataset", "LIDC-C", "--fold", "0", "--profile", "smoke", "--set", "train_limit=32", "--json", "--quiet"]
    if name == "ce":
        p = cli(*argv)
        assert p.returncode == 0, p.stderr[-2000:]
        out = json.loads(p.stdout)
        path = out["records"][0]
    else:
        spec = make_spec(name, "LIDC-C", 0, profile="smoke", sets=["train_limit=32"])
        run_one(spec, progress=False)
        path = spec.path(".json")
    rec = json.loads(open(path).read())
    for k in ("config", "config_hash", "protocol_hash", "source", "profile", "git", "versions", "device", "timing", "metrics", "predictions", "history"):
        assert k in rec, k
    assert rec["source"] == "phantom" and rec["profile"] == "smoke" and rec["method"] == name
    assert rec["config"]["train"]["epochs"] == 2 and len(rec["timing"]["seconds_per_epoch"]) == 2
    assert rec["data"]["n_test"] == len(rec["predictions"]) > 100
    pr = rec["predictions"][0]
    assert set(pr) == {"id", "label", "probs"} and len(pr["probs"]) == 2 and abs(sum(pr["probs"]) - 1) < 1e-4
    assert 0 <= rec["metrics"]["accuracy"] <= 1 and "auc" in rec["metrics"]
    assert os.path.exists(os.path.join(os.path.dirname(path), rec["weights"]))
    if name != "ce":
        return
    # A second call reuses the record (the same path for every method: checked once).
    t = time.time()
    again = cli(*argv)
    assert again.returncode == 0 and json.loads(again.stdout)["folds"]["0"] == out["folds"]["0"]
    assert "reused" in again.stderr and time.time() - t < 30


def test_resume_after_kill_gives_the_uninterrupted_result(phantom_env, tmp_path):
    # Four epochs of one step each (32 nodules): a checkpoint to resume from, at the least training.
    args = ["--method", "ce", "--dataset", "LIDC-C", "--fold", "1", "--profile", "smoke", "--set", "epochs=4", "--set", "train_limit=32",
            "--json", "--quiet"]
    env = dict(os.environ)
    ref = subprocess.run([sys.executable, "-m", "benchmarks.run", *args, "--force"], capture_output=True, text=True, env={**env, RUNS_ENV: str(tmp_path / "ref")})
    assert ref.returncode == 0, ref.stderr[-2000:]
    runs = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**env, RUNS_ENV: str(runs)})
    deadline = time.time() + 300
    while time.time() < deadline and not list(runs.glob("*.ckpt")):
        time.sleep(0.05)
    proc.kill()
    proc.communicate()
    ckpt = list(runs.glob("*.ckpt"))
    assert ckpt and not list(runs.glob("*.json")), "the run must be killed between its first checkpoint and its record"
    done = torch.load(ckpt[0], weights_only=False)["epoch"]
    assert 1 <= done < 4
    resumed = subprocess.run([sys.executable, "-m", "benchmarks.run", *args], capture_output=True, text=True, env={**env, RUNS_ENV: str(runs)})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at epoch {done + 1} of 4" in resumed.stderr
    a = json.load(open(json.loads(ref.stdout)["records"][0]))
    b = json.load(open(json.loads(resumed.stdout)["records"][0]))
    assert a["metrics"] == b["metrics"]
    assert [p["probs"] for p in a["predictions"]] == [p["probs"] for p in b["predictions"]]
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    assert not list(runs.glob("*.ckpt"))


def test_non_finite_loss_stops_without_a_record(phantom_env):
    @dataclass(frozen=True)
    class Config:
        backbone: str = "resnet18_2d"

    class Exploding(methods.REGISTRY["ce"].cls):
        def loss(self, out, batch):
            terms = super().loss(out, batch)
            return {k: v * float("nan") for k, v in terms.items()}

    Exploding.Config = Config
    methods.register("test_exploding")(Exploding)
    try:
        spec = make_spec("test_exploding", "LIDC-C", 0, profile="smoke")
        with pytest.raises(Diverged, match="non-finite loss"):
            run_one(spec, progress=False)
        assert not spec.path(".json").exists() and not spec.path(".pt").exists()
    finally:
        methods.REGISTRY.pop("test_exploding")


def test_divergence_exits_2_without_a_record(phantom_env):
    # lr = 1000 blows the weights up within two smoke epochs on LIDC-A; before the check
    # such a run wrote a record of NaN predictions that a table showed in bold.
    args = ["--method", "ce", "--dataset", "LIDC-A", "--fold", "0", "--profile", "smoke", "--set", "lr=1000", "--quiet"]
    p = cli(*args)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [x for x in p.stderr.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "not finite" in lines[0] and "epoch" in lines[0] and "--set lr=" in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    spec = make_spec("ce", "LIDC-A", 0, profile="smoke", sets=["lr=1000"])
    assert not spec.path(".json").exists() and not spec.path(".pt").exists() and not spec.path(".ckpt").exists()


def test_implementation_version_enters_the_key_and_old_records_are_not_reused(phantom_env, monkeypatch):
    tiny = ["train_limit=32"]  # one step an epoch; the record of test_smoke_run_writes_a_full_record[ce] where that ran first
    spec = make_spec("ce", "LIDC-C", 0, profile="smoke", sets=tiny)
    assert spec.method_version == 1
    # Version 1 leaves the key as it was before versions existed (old records keep their names).
    legacy = dataclasses.asdict(spec)
    # Fields added after the first records, at their first value (repeat 0; no inner split, no tuning):
    for added in ("method_version", "plugin", "backbone_plugin", "data_scope", "repeat", "split", "tuning"):
        del legacy[added]
    del legacy["method_config"]["backbone"]
    assert spec.key == hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()
    assert make_spec("udm", "LIDC-C", 0, profile="smoke").method_version >= 2
    assert make_spec("clip_lung_ic", "LIDC-C", 0, profile="smoke").method_version == methods.REGISTRY["clip_lung"].version >= 2
    # A record made by version 1 of a method whose maths has since changed is not reused.
    old = run_one(spec, progress=False)
    monkeypatch.setattr(methods.REGISTRY["ce"].cls, "version", 2, raising=False)
    bumped = make_spec("ce", "LIDC-C", 0, profile="smoke", sets=tiny)
    assert bumped.key != spec.key and not bumped.path(".json").exists()
    new = run_one(bumped, progress=False)
    assert new["method_version"] == 2 and old["method_version"] == 1 and bumped.path(".json").exists()


def test_specs_differ_by_config_and_are_stable():
    a = make_spec("ce", "LIDC-A", 0, profile="smoke")
    assert a.key == make_spec("ce", "LIDC-A", 0, profile="smoke").key
    assert a.key != make_spec("ce", "LIDC-A", 0, profile="smoke", sets=["lr=0.01"]).key
    assert a.key != make_spec("ce", "LIDC-A", 1, profile="smoke").key
    assert a.config_hash == make_spec("ce", "LIDC-A", 1, profile="smoke").config_hash
    assert dataclasses.asdict(a)["train_config"]["epochs"] == 2


def test_list_names_the_baselines():
    p = cli("--list")
    assert p.returncode == 0
    for n in BASELINES:
        assert n in p.stdout


@pytest.mark.parametrize(
    "args,match",
    [
        (["--method", "resnet", "--dataset", "LIDC-A"], "unknown method 'resnet'; known methods:"),
        (["--method", "ce", "--dataset", "LIDC-Z"], "unknown dataset"),
        (["--method", "ce", "--dataset", "LIDC-A", "--profile", "fast"], "unknown profile"),
        (["--method", "ce", "--dataset", "LIDC-A", "--source", "mri"], "unknown source"),
        (["--method", "ce", "--dataset", "LIDC-A", "--set", "lrr=1"], "unknown --set key 'lrr'"),
        (["--method", "ce", "--dataset", "LIDC-A", "--set", "epochs=many"], "--set epochs expects int"),
        (["--method", "ce", "--dataset", "LIDC-A", "--fold", "5"], "--folds: fold 5 does not exist"),
        (["--method", "ce", "--dataset", "LIDC-A", "--fold", "x"], "--folds: 'x' is not a fold"),
        (["--method", "ce"], "required"),
    ],
)
def test_user_errors_exit_2_with_one_line(args, match):
    p = cli(*args)
    assert p.returncode == 2, p.stderr
    assert match in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
