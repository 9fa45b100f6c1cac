"""Packs: several runs stepped in turn in one process compute exactly what they compute alone."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from benchmarks.lifecycle import make_spec, prepare_run, run_one
from benchmarks.pack import run_pack
from benchmarks.records import RUNS_ENV

# A text-guided method, two baselines, two datasets and folds: streams that must not mix.
PACK = [("clip_lung", "LIDC-C", 0), ("ce", "LIDC-C", 1), ("udm", "LIDC-B", 0)]


EPOCHS = 3  # a checkpoint mid-run for the kill test
LIMIT = 32  # one step an epoch: the streams interleave all the same


def specs():
    return [make_spec(m, d, f, profile="smoke", sets=[f"epochs={EPOCHS}", f"train_limit={LIMIT}"]) for m, d, f in PACK]


@pytest.fixture(scope="module")
def alone(phantom_env, tmp_path_factory):
    """The runs made one at a time: what every pack must reproduce."""
    runs = tmp_path_factory.mktemp("alone")
    old = os.environ.get(RUNS_ENV)
    os.environ[RUNS_ENV] = str(runs)
    try:
        return [run_one(s, progress=False) for s in specs()]
    finally:
        if old is None:
            os.environ.pop(RUNS_ENV)
        else:
            os.environ[RUNS_ENV] = old


def same_records(a: dict, b: dict):
    assert a["key"] == b["key"] and a["metrics"] == b["metrics"], (a["method"], a["metrics"], b["metrics"])
    pa = np.array([p["probs"] for p in a["predictions"]])
    pb = np.array([p["probs"] for p in b["predictions"]])
    np.testing.assert_allclose(pa, pb, atol=1e-5, rtol=0)
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]


def test_a_pack_gives_the_records_of_its_runs_alone(alone, tmp_path, monkeypatch):
    # The seeded initial weights: preparing the runs one after another (as a pack does)
    # gives each the weights it gets alone.
    first = [prepare_run(s).model.state_dict() for s in specs()]
    again = prepare_run(specs()[1]).model.state_dict()
    assert all(torch.equal(first[1][k], again[k]) for k in again)
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "packed"))
    packed = run_pack(specs())
    for a, b in zip(alone, packed):
        assert isinstance(b, dict), b
        same_records(a, b)  # the first epoch's losses included
        assert len(b["timing"]["packed_with"]) == len(PACK) - 1
    # A second pack reuses every record.
    assert [r["key"] for r in run_pack(specs())] == [r["key"] for r in packed]


PACK_SCRIPT = """
import json, sys
from benchmarks.errors import setup_logging
from benchmarks.pack import run_pack
from benchmarks.lifecycle import make_spec
setup_logging()
pack = [make_spec(m, d, f, profile="smoke", sets=[f"epochs={sys.argv[2]}", f"train_limit={sys.argv[3]}"]) for m, d, f in json.loads(sys.argv[1])]
print(json.dumps([r["key"] if isinstance(r, dict) else repr(r) for r in run_pack(pack)]))
"""


def test_a_killed_pack_resumes_every_run_to_the_same_records(alone, tmp_path):
    runs = tmp_path / "killed"
    env = {**os.environ, RUNS_ENV: str(runs)}
    args = [sys.executable, "-c", PACK_SCRIPT, json.dumps(PACK), str(EPOCHS), str(LIMIT)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 600
    while time.time() < deadline and len(list(runs.glob("*.ckpt"))) < len(PACK):
        time.sleep(0.05)
    proc.kill()  # mid-epoch: every run has checkpointed an epoch, none has finished
    proc.communicate()
    assert len(list(runs.glob("*.ckpt"))) == len(PACK) and not list(runs.glob("*.json"))
    resumed = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count("resuming from") == len(PACK)
    for a, s in zip(alone, specs()):
        same_records(a, json.loads(s.path(".json", runs).read_text()))
    assert not list(runs.glob("*.ckpt"))
