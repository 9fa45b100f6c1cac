import json
import logging

import numpy as np
import pytest

from benchmarks.data import cache, load_fold
from benchmarks.data.protocols import labelled_folds, protocol_hash
from benchmarks.errors import UserError


def fake_render(nodules, workers=None, progress=True):
    """Stand-in renderer: crop i is filled with i / N (fast, identifiable)."""
    n = len(nodules)
    return np.broadcast_to((np.arange(n, dtype=np.float32) / n)[:, None, None, None], (n, 32, 32, 32)).copy()


def test_small_cache_build_validate_corrupt_and_stale(tmp_cache, caplog):
    table = labelled_folds(2).head(6)
    phash = "f" * 64
    ids, vols = cache.phantom_volumes(table, phash, workers=1, progress=False)
    folder = cache.cache_dir("phantom", phash)
    assert cache.validate(folder, "phantom", phash) is None
    assert list(ids) == list(table["nodule_id"]) and vols.shape == (6, 32, 32, 32)
    vols = np.array(vols)  # the loaded cache is a read-only map of the file, which this test garbles in place

    # Corrupt one byte of the volumes: detected, rebuilt, same content.
    raw = bytearray((folder / "volumes.npy").read_bytes())
    raw[-5] ^= 0xFF
    (folder / "volumes.npy").write_bytes(bytes(raw))
    assert cache.validate(folder, "phantom", phash).startswith("corrupt")
    cache._MEMO.clear()
    with caplog.at_level(logging.WARNING):
        _, again = cache.phantom_volumes(table, phash, workers=1, progress=False)
    assert "not usable" in caplog.text
    np.testing.assert_array_equal(again, vols)

    # Stale: built by another renderer version.
    man = json.loads((folder / "manifest.json").read_text())
    man["version"] = "crop0"
    (folder / "manifest.json").write_text(json.dumps(man))
    assert cache.validate(folder, "phantom", phash).startswith("stale")
    (folder / "manifest.json").write_text("{not json")
    assert "manifest" in cache.validate(folder, "phantom", phash)
    # No temporary folders left behind.
    assert [p.name for p in tmp_cache.iterdir()] == [folder.name]


def test_unwritable_cache_is_a_user_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv(cache.CACHE_ENV, str(blocker / "cache"))
    cache._MEMO.clear()
    with pytest.raises(UserError, match="cannot be written"):
        cache.build_phantom_cache(labelled_folds(2).head(2), "0" * 64, workers=1, progress=False)


@pytest.fixture
def fast_cache(tmp_cache, monkeypatch):
    monkeypatch.setattr(cache, "render_phantoms", fake_render)
    return tmp_cache


@pytest.mark.parametrize("protocol,classes", [("LIDC-A", 3), ("LIDC-B", 3), ("LIDC-C", 2)])
def test_load_fold_api(fast_cache, protocol, classes):
    d = load_fold(protocol, 1, progress=False)
    assert d.num_classes == classes and d.class_names[0] == "benign" and d.class_names[-1] == "malignant"
    assert d.protocol_hash == protocol_hash(2)
    table = labelled_folds(2)
    pos = {n: i for i, n in enumerate(table["nodule_id"])}
    for s in (d.train, d.test):
        assert s.images.shape == (len(s), 32, 32, 32) and s.images.dtype == np.float32
        assert s.attributes.shape == (len(s), 8) and s.labels.dtype == np.int64
        assert set(s.labels) <= set(range(classes))
        # Each image is the cache row of its nodule id.
        expect = np.array([pos[n] for n in s.nodule_ids], np.float32) / len(table)
        np.testing.assert_array_equal(s.images[:, 0, 0, 0], expect)
    assert not set(d.train.patient_ids) & set(d.test.patient_ids)
    if protocol != "LIDC-A":
        assert set(d.test.labels) == {0, classes - 1}  # benign and malignant only
    # Malignant is the last class, whatever K is.
    assert (d.test.malignancy[d.test.labels == classes - 1] > 3.5).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(protocol="LIDC-D", fold=0), "unknown dataset"),
        (dict(protocol="LIDC-A", fold=5), "fold must be"),
        (dict(protocol="LIDC-A", fold=0, source="mri"), "unknown source"),
        (dict(protocol="LIDC-A", fold=0, min_readers=9), "min readers"),
        (dict(protocol="LIDC-A", fold=0, source="lidc"), "DICOM"),
    ],
)
def test_load_fold_bad_input(fast_cache, kwargs, match):
    with pytest.raises(UserError, match=match):
        load_fold(**kwargs)


def test_rows_read_as_the_gathered_array():
    """A split's training crops are gathered when read: every way the code and the tests read them gives what
    indexing the whole array at once gives."""
    from benchmarks.data.dataset import Rows

    base = np.arange(7 * 2 * 3 * 4, dtype=np.float32).reshape(7, 2, 3, 4)
    rows = np.array([5, 0, 3, 3])
    lazy, eager = Rows(base, rows), base[rows]
    assert lazy.shape == eager.shape and lazy.dtype == eager.dtype and len(lazy) == 4
    np.testing.assert_array_equal(np.asarray(lazy), eager)
    np.testing.assert_array_equal(np.asarray(lazy, dtype=np.float64), eager.astype(np.float64))
    for key in (np.array([2, 0]), slice(1, 3), 1, -1, (slice(None), 0, 0, 0), (2, 1), (np.array([3, 1]), slice(None), 2)):
        np.testing.assert_array_equal(lazy[key], eager[key])
