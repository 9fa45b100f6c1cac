import pytest

from benchmarks.data import cache


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """A private, empty crop cache for one test."""
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    cache._MEMO.clear()
    yield tmp_path / "cache"
    cache._MEMO.clear()


@pytest.fixture(scope="session")
def phantom_env(tmp_path_factory):
    """A session-wide phantom cache and runs folder, shared with subprocesses through the environment."""
    import os

    from benchmarks import records

    root = tmp_path_factory.mktemp("session")
    old = {k: os.environ.get(k) for k in (cache.CACHE_ENV, records.RUNS_ENV)}
    os.environ[cache.CACHE_ENV] = str(root / "cache")
    os.environ[records.RUNS_ENV] = str(root / "runs")
    cache._MEMO.clear()
    from benchmarks.data.protocols import labelled_folds, protocol_hash

    cache.phantom_volumes(labelled_folds(2), protocol_hash(2), progress=False)
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    cache._MEMO.clear()


@pytest.fixture(scope="session")
def smoke_runs(phantom_env):
    """Smoke records (and weights) of CLIP and CLIP-Lung on LIDC-B fold 0, in the session's runs folder (two text-guided
    methods, one with the paper's losses: CoCoOp's smoke run, 19 s, is covered by tests/test_text_methods.py)."""
    from benchmarks.lifecycle import make_spec, run_one

    for m in ("clip", "clip_lung"):
        run_one(make_spec(m, "LIDC-B", 0, profile="smoke"), progress=False)
    return phantom_env / "runs"
