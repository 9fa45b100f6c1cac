"""The real-CT path end to end, on synthetic DICOM series of real scan records.

The series hold the phantom renderer's HU volumes, so the crops that
``prepare crops --source lidc`` makes from them must equal the phantom crops of
the same nodules. Tolerance 4e-4 (in [0, 1] units): the files store integer HU,
so each voxel is off by at most 0.5 HU, which the window maps to 0.5 / 1400 =
3.6e-4; trilinear interpolation is a convex combination and cannot enlarge it.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks.data import cache, load_fold
from benchmarks.data.phantom import phantom_crops
from benchmarks.data.protocols import labelled_folds, protocol_hash
from benchmarks.errors import UserError
from tests.dicom_synth import write_scan

TOL = 4e-4
# Small scans (65-90 slices) whose eligible nodules' render boxes do not overlap.
SCANS = {698: "LIDC-IDRI-0957", 1: "LIDC-IDRI-0078", 672: "LIDC-IDRI-0983"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def table():
    return labelled_folds(2)


@pytest.fixture(scope="module")
def rows_by_scan(table):
    return {s: table[table["scan_id"] == s].to_dict("records") for s in SCANS}


@pytest.fixture(scope="module")
def dicom_roots(tmp_path_factory, rows_by_scan):
    """Two downloads of the same three scans, one per folder layout."""
    roots = {}
    for layout in ("classic", "tcia"):
        root = tmp_path_factory.mktemp(f"lidc-{layout}")
        for rows in rows_by_scan.values():
            write_scan(root, rows, layout)
        roots[layout] = root
    return roots


def prepare(root, cache_dir, *extra, wait=True):
    env = {**os.environ, cache.CACHE_ENV: str(cache_dir)}
    cmd = [sys.executable, "-m", "benchmarks.prepare", "crops", "--source", "lidc", "--lidc-root", str(root), *extra]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


def cached(cache_dir):
    folder = cache_dir / f"lidc-{protocol_hash(2)[:16]}"
    ids = (folder / "nodule_ids.txt").read_text().split()
    return folder, ids, np.load(folder / "volumes.npy")


@pytest.mark.parametrize("layout", ["classic", "tcia"])
def test_dicom_crops_match_phantom_crops(dicom_roots, rows_by_scan, tmp_path, layout):
    p = prepare(dicom_roots[layout], tmp_path / "cache", "--workers", "2")
    assert p.returncode == 0, p.stderr
    n_other = labelled_folds(2)["scan_id"].nunique() - 3  # every other scan is missing, none unreadable
    assert f"{n_other} missing from the download, 0 unreadable" in p.stdout, p.stdout
    folder, ids, vols = cached(tmp_path / "cache")
    want_rows = [r for rows in rows_by_scan.values() for r in rows]
    assert sorted(ids) == sorted(r["nodule_id"] for r in want_rows)
    ref = dict(zip([r["nodule_id"] for r in want_rows], phantom_crops(want_rows)))
    for n, v in zip(ids, vols):
        np.testing.assert_allclose(v, ref[n], atol=TOL, rtol=0, err_msg=n)
    man = json.loads((folder / "manifest.json").read_text())
    assert man["scans_held"] == 3 and man["source"] == "lidc"
    assert len(man["skipped_scans"]) == man["scans_total"] - 3


def test_missing_and_unreadable_scans_and_fold_counts(dicom_roots, rows_by_scan, tmp_path, monkeypatch):
    root = tmp_path / "partial"
    shutil.copytree(dicom_roots["classic"], root)
    shutil.rmtree(root / SCANS[672])  # not downloaded
    broken = next((root / SCANS[1]).rglob("*.dcm"))
    broken.write_bytes(b"not a dicom file")  # a damaged file
    p = prepare(root, tmp_path / "cache", "--workers", "1")
    assert p.returncode == 0, p.stderr
    _, ids, _ = cached(tmp_path / "cache")
    assert sorted(ids) == sorted(r["nodule_id"] for r in rows_by_scan[698])
    man = json.loads(((tmp_path / "cache") / f"lidc-{protocol_hash(2)[:16]}" / "manifest.json").read_text())
    why = {s["scan_id"]: s["why"] for s in man["skipped_scans"]}
    assert why[672].startswith("missing") and why[1].startswith("unreadable")

    # The dataset API serves what is there and counts what is not, per split.
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    cache._MEMO.clear()
    table = labelled_folds(2)
    for fold in range(5):
        d = load_fold("LIDC-A", fold, source="lidc")
        held = set(ids)
        ft_train = table[(table["fold"] != fold)]
        ft_test = table[(table["fold"] == fold)]
        assert d.missing["train"] == (~ft_train["nodule_id"].isin(held)).sum()
        assert d.missing["test"] == (~ft_test["nodule_id"].isin(held)).sum()
        assert set(d.train.nodule_ids) | set(d.test.nodule_ids) <= held
        assert len(d.train) + len(d.test) == len(held)
    cache._MEMO.clear()


def test_resume_after_interruption(dicom_roots, tmp_path):
    # Uninterrupted reference run.
    p = prepare(dicom_roots["classic"], tmp_path / "ref", "--workers", "1")
    assert p.returncode == 0, p.stderr
    _, ref_ids, ref_vols = cached(tmp_path / "ref")
    # Interrupted run: kill it once the first scan is saved.
    proc = prepare(dicom_roots["classic"], tmp_path / "cache", "--workers", "1", wait=False)
    parts = tmp_path / "cache" / f"lidc-{protocol_hash(2)[:16]}" / "scans"
    deadline = time.time() + 120
    while time.time() < deadline and not (parts.exists() and any(parts.glob("scan-*.npz"))):
        time.sleep(0.02)
    proc.kill()
    proc.communicate()
    n_before = len(list(parts.glob("scan-*.npz")))
    assert 1 <= n_before < 3, "the run must have been interrupted part-way"
    assert not (parts.parent / "manifest.json").exists()
    p = prepare(dicom_roots["classic"], tmp_path / "cache", "--workers", "1")
    assert p.returncode == 0, p.stderr
    assert f"({n_before} prepared before)" in p.stdout
    _, ids, vols = cached(tmp_path / "cache")
    assert ids == ref_ids
    np.testing.assert_array_equal(vols, ref_vols)


def test_bad_roots(tmp_path):
    p = prepare(tmp_path / "nope", tmp_path / "cache")
    assert p.returncode == 2 and "does not exist" in p.stderr and "Traceback" not in p.stderr
    (tmp_path / "empty" / "some-folder").mkdir(parents=True)
    p = prepare(tmp_path / "empty", tmp_path / "cache")
    assert p.returncode == 2 and "no DICOM folder of any indexed scan" in p.stderr
    # A patient folder without any DICOM of its scan: nothing could be read.
    (tmp_path / "hollow" / "LIDC-IDRI-0078" / "x").mkdir(parents=True)
    p = prepare(tmp_path / "hollow", tmp_path / "cache")
    assert p.returncode == 2 and "no indexed scan could be read" in p.stderr, p.stderr


def test_lidc_source_without_cache_is_a_clear_error(tmp_cache):
    with pytest.raises(UserError, match="prepare crops --source lidc"):
        load_fold("LIDC-A", 0, source="lidc")
