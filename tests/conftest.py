import pytest

from benchmarks.data import cache


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """A private, empty crop cache for one test."""
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    cache._MEMO.clear()
    yield tmp_path / "cache"
    cache._MEMO.clear()
