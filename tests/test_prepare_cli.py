import json
import subprocess
import sys

import pytest


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "benchmarks.prepare", *args], capture_output=True, text=True, env=env)


def test_stats_json_meets_the_protocol_rules():
    p = run("stats", "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert set(s["protocols"]) == {"LIDC-A", "LIDC-B", "LIDC-C"}
    for name, proto in s["protocols"].items():
        assert len(proto["folds"]) == 5
        for f in proto["folds"]:
            assert f["shared_patients"] == 0
            assert f["max_gap_pp"] < 3.0
            if name != "LIDC-A":
                assert f["test"]["unsure"] == 0
            if name == "LIDC-C":
                assert f["train"]["unsure"] == 0


def test_stats_table_is_readable():
    p = run("stats")
    assert p.returncode == 0 and "LIDC-B" in p.stdout and "shared patients" in p.stdout


def test_reference_runs():
    p = run("reference", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    for v in r["protocols"].values():
        assert len(v["accuracy_per_fold"]) == 5 and 0.3 < v["mean"] <= 1.0


@pytest.mark.parametrize(
    "args,env,match",
    [
        (["stats", "--min-readers", "7"], None, "--min-readers must be one of"),
        (["crops"], {"CLIPLUNG_CACHE": "/proc/no/such"}, "cannot be written"),
    ],
)
def test_user_errors_exit_2_without_traceback(args, env, match):
    import os

    p = run(*args, env={**os.environ, **(env or {})})
    assert p.returncode == 2
    assert match in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
