"""Damaged downloads, unevenly spaced slices and a killed parent on the lidc path.

Synthetic DICOM series of real scan records (``tests/dicom_synth.py``). Where
only the files matter the slices are 16 x 16 pixels, so a series of ~100
slices is written in a fraction of a second; the uneven-spacing case stores a
full 512 x 512 volume whose HU rise linearly with z, so that a crop sampled at
the wrong heights shows it.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from benchmarks.data import cache, load_fold
from benchmarks.data.crop import HU_WINDOW, crop, sample_offsets_mm, window_hu
from benchmarks.data.dicom import crop_at_true_z, locate_series, read_series, scan_records
from benchmarks.data.lidc import PART_VERSION, part_path, prepare_lidc
from benchmarks.data.protocols import labelled_folds, protocol_hash
from tests.dicom_synth import scan_record, series_folder, write_scan

TCIA_SIBLINGS = (368, 369)  # LIDC-IDRI-0365, 101 and 98 slices, TCIA's nested layout
CLASSIC_SIBLINGS = (10, 153)  # LIDC-IDRI-0151, 111 and 112 slices, <study uid>/<series uid>/
UNEVEN = 267  # LIDC-IDRI-0267: 0.5 mm gaps among 2.5 mm ones, up to 4 mm off the regular grid
SMALL = 16
TOL = 4e-4  # integer HU storage: 0.5 HU in the 1400 HU window (see test_lidc_path.py)


@pytest.fixture(scope="module")
def table():
    return labelled_folds(2)


def rows_of(table, scan_id):
    return table[table["scan_id"] == scan_id].to_dict("records")


def flat(n_slices):
    return np.broadcast_to(np.float32(-800.0), (SMALL, SMALL, n_slices))


def ramp_of(z):
    """HU rising linearly over the scan's z range, from -1000 to 400: the whole window."""
    z = np.asarray(z, float)
    lo, hi = HU_WINDOW
    return lo + (hi - lo) * (z - z[0]) / (z[-1] - z[0])


def prepare(root, cache_dir, *extra, wait=True, **kw):
    env = {**os.environ, cache.CACHE_ENV: str(cache_dir)}
    cmd = [sys.executable, "-m", "benchmarks.prepare", "crops", "--source", "lidc", "--lidc-root", str(root), *extra]
    if not wait:
        return subprocess.Popen(cmd, env=env, **kw)
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


def first_walked_series(patient_dir):
    """The folder and file that a walk like pylidc's (os.walk order, first .dcm) reads first."""
    for dpath, _, fnames in os.walk(patient_dir):
        names = [f for f in fnames if f.endswith(".dcm") and not f.startswith(".")]
        if names:
            return Path(dpath), Path(dpath) / names[0]
    raise AssertionError(f"no DICOM file under {patient_dir}")


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, table):
    """One prepare run on a download with a damaged series beside an intact one, twice, and an uneven scan."""
    root = tmp_path_factory.mktemp("lidc-damaged")
    folders = {}
    for s in TCIA_SIBLINGS:
        folders[s] = write_scan(root, rows_of(table, s), "tcia", hu=flat(len(scan_record(s).slice_zvals)))
    # TCIA's layout adds a LIDC-IDRI folder; the classic series go into it as well.
    for s in CLASSIC_SIBLINGS:
        folders[s] = write_scan(root / "LIDC-IDRI", rows_of(table, s), "classic", hu=flat(len(scan_record(s).slice_zvals)))
    z = np.asarray(scan_record(UNEVEN).slice_zvals, float)
    write_scan(root / "LIDC-IDRI", rows_of(table, UNEVEN), "classic", hu=np.broadcast_to(ramp_of(z).astype(np.float32), (512, 512, len(z))))
    # TCIA layout: empty the very file that pylidc's folder search reads first,
    # which made it fail the sibling series too.
    folder, empty = first_walked_series(root / "LIDC-IDRI" / "LIDC-IDRI-0365")
    empty_scan = next(s for s in TCIA_SIBLINGS if folders[s] == folder)
    empty.write_bytes(b"")
    # Classic layout: a file cut short inside its pixel data (its header still parses).
    cut = sorted(folders[CLASSIC_SIBLINGS[0]].glob("*.dcm"))[0]
    cut.write_bytes(cut.read_bytes()[:-100])
    cache_dir = tmp_path_factory.mktemp("cache")
    p = prepare(root / "LIDC-IDRI", cache_dir, "--workers", "1")
    folder_c = cache_dir / f"lidc-{protocol_hash(2)[:16]}"
    return {
        "proc": p,
        "cache": cache_dir,
        "manifest": json.loads((folder_c / "manifest.json").read_text()) if p.returncode == 0 else None,
        "ids": (folder_c / "nodule_ids.txt").read_text().split() if p.returncode == 0 else None,
        "vols": np.load(folder_c / "volumes.npy") if p.returncode == 0 else None,
        "empty_scan": empty_scan,
        "bad": {empty_scan: empty, CLASSIC_SIBLINGS[0]: cut},
        "good": [s for s in (*TCIA_SIBLINGS, *CLASSIC_SIBLINGS) if s not in (empty_scan, CLASSIC_SIBLINGS[0])],
    }


def test_damaged_file_skips_only_its_own_series(damaged, table):
    p = damaged["proc"]
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    want = {r["nodule_id"] for s in (*damaged["good"], UNEVEN) for r in rows_of(table, s)}
    assert set(damaged["ids"]) == want  # the intact siblings are prepared, the damaged series are not
    why = {e["scan_id"]: e for e in damaged["manifest"]["skipped_scans"]}
    for s, path in damaged["bad"].items():
        assert why[s]["status"] == "unreadable"
        # The reason names the damaged file and the series folder to fetch again.
        assert str(path) in why[s]["why"] and f"fetch the series folder {path.parent} again" in why[s]["why"], why[s]
    assert "(0 bytes)" in why[damaged["empty_scan"]]["why"]
    assert "pixel data is less than expected" in why[CLASSIC_SIBLINGS[0]]["why"]
    missing = [e for e in why.values() if e["status"] == "missing"]
    assert len(missing) == table["scan_id"].nunique() - 5
    assert all(f"no folder {damaged['manifest']['lidc_root']}/{e['patient_id']}" in e["why"] for e in missing)


def test_summary_lists_every_unreadable_scan_apart_from_the_missing_count(damaged, table):
    out = damaged["proc"].stdout
    n_missing = table["scan_id"].nunique() - 5
    assert f"skipped {n_missing + 2} scans: {n_missing} missing from the download, 2 unreadable:" in out, out
    lines = out.splitlines()
    for s, path in damaged["bad"].items():
        patient = rows_of(table, s)[0]["patient_id"]
        line = next((x for x in lines if x.startswith(f"  scan {s} ({patient}) unreadable: ")), None)
        assert line is not None and str(path) in line, out
    assert "LIDC-IDRI-0001" not in out  # missing scans are counted, not listed


def test_load_fold_tells_missing_from_unreadable(damaged, table, monkeypatch, caplog):
    monkeypatch.setenv(cache.CACHE_ENV, str(damaged["cache"]))
    cache._MEMO.clear()
    try:
        d = load_fold("LIDC-A", 0, source="lidc")
    finally:
        cache._MEMO.clear()
    held = set(damaged["ids"])
    bad = sorted(damaged["bad"])
    want = {}
    for split, rows in (("train", table[table["fold"] != 0]), ("test", table[table["fold"] == 0])):
        no_crop = rows[~rows["nodule_id"].isin(held)]
        n_bad = int(no_crop["scan_id"].isin(bad).sum())
        want[split] = (len(no_crop) - n_bad, n_bad)
        assert d.missing[split] == len(no_crop)
    assert sum(b for _, b in want.values()) == sum(len(rows_of(table, s)) for s in bad)
    msg = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert f"train {want['train'][0]}, test {want['test'][0]} of scans missing from the download" in msg, msg
    assert f"train {want['train'][1]}, test {want['test'][1]} of unreadable scans {bad[0]}, {bad[1]}" in msg, msg


def test_uneven_slices_are_cropped_at_their_true_positions(damaged, table):
    assert damaged["proc"].returncode == 0, damaged["proc"].stderr
    z = np.asarray(scan_record(UNEVEN).slice_zvals, float)
    hu_z = np.rint(ramp_of(z))  # what the files store, per slice
    ids = list(damaged["ids"])
    for r in rows_of(table, UNEVEN):
        heights = r["centroid_z_mm"] + sample_offsets_mm(2 * r["eq_diameter_mm"])  # (32,)
        inside = (heights >= z[0]) & (heights <= z[-1])
        want = window_hu(np.where(inside, np.interp(heights, z, hu_z), -1000.0))
        got = damaged["vols"][ids.index(r["nodule_id"])]  # (slice, row, col): constant in-plane
        np.testing.assert_allclose(got, np.broadcast_to(want[:, None, None], got.shape), atol=TOL, rtol=0, err_msg=r["nodule_id"])
    assert damaged["manifest"]["uneven_slice_scans"] == [
        {"scan_id": UNEVEN, "patient_id": "LIDC-IDRI-0267", "max_departure_mm": 4.0, "cropped": "at the slices' true z positions"}
    ]
    assert "unevenly spaced slices, cropped at their true z positions: scans 267 (4.00 mm)" in damaged["proc"].stdout


def test_crop_at_true_z_is_crop_on_evenly_spaced_slices():
    rng = np.random.default_rng(0)
    vol = rng.uniform(-1000, 400, (40, 40, 30)).astype(np.float32)
    row = {"centroid_i": 19.3, "centroid_j": 21.7, "centroid_k": 14.4, "eq_diameter_mm": 9.0, "pixel_spacing": 0.7}
    z = -100.0 + 1.25 * np.arange(30)
    for k in (14.4, 28.6):  # inside, and near the end where part of the cube lies outside the scan
        row["centroid_k"] = k
        want = crop(vol, (0.7, 0.7, 1.25), np.array([19.3, 21.7, k]), 9.0)
        np.testing.assert_allclose(crop_at_true_z(vol, z, row), want, atol=1e-5, rtol=0)


def test_crop_at_true_z_across_a_gap():
    # 2.5 mm slices with three at 0.5 mm in the middle of the nodule's cube, as in
    # scan 267; HU rise linearly with z, so every sample height shows in the crop.
    z = np.cumsum([0.0] + [2.5] * 12 + [0.5] * 3 + [2.5] * 12)
    hu = ramp_of(z)
    vol = np.broadcast_to(hu.astype(np.float32), (12, 12, len(z))).copy()
    row = {"centroid_i": 5.5, "centroid_j": 5.5, "centroid_k": 13.2, "eq_diameter_mm": 8.0, "pixel_spacing": 2.0, "slice_spacing": 2.5}
    heights = np.interp(13.2, np.arange(len(z)), z) + sample_offsets_mm(16.0)
    inside = (heights >= z[0]) & (heights <= z[-1])
    want = window_hu(np.where(inside, np.interp(heights, z, hu), -1000.0))
    got = crop_at_true_z(vol, z, row)
    np.testing.assert_allclose(got, np.broadcast_to(want[:, None, None], got.shape), atol=1e-5, rtol=0)
    # Sampled as if evenly spaced (slice k at k * 2.5 mm), the crop is off by up to 4 mm here.
    regular = crop(vol, (2.0, 2.0, 2.5), np.array([5.5, 5.5, 13.2]), 8.0)
    assert np.abs(regular - got).max() > 0.01


def _children(pid):
    """{child pid: command line} of a process, from /proc."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
    return out


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has ended; its new parent reaps it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes through /proc")
def test_workers_end_when_the_parent_is_killed(tmp_path, table):
    root = tmp_path / "lidc"
    write_scan(root, rows_of(table, 1), "classic", hu=flat(len(scan_record(1).slice_zvals)))
    # A FIFO named like a slice blocks the worker that opens it until someone
    # writes: the workers are certainly busy when the parent dies.
    for s in (672, 698):
        folder = series_folder(root, scan_record(s), "classic")
        folder.mkdir(parents=True)
        os.mkfifo(folder / "1.dcm")
    part = tmp_path / "cache" / f"lidc-{protocol_hash(2)[:16]}" / "scans" / "scan-0001.npz"
    proc = prepare(root, tmp_path / "cache", "--workers", "2", wait=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers = {}
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not part.exists() and proc.poll() is None:
            time.sleep(0.05)
        assert part.exists(), f"scan 1 was never prepared: {proc.poll()} {proc.stderr.read().decode() if proc.poll() is not None else ''}"
        workers = {p: c for p, c in _children(proc.pid).items() if "spawn_main" in c}
        assert len(workers) == 2, _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 5
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.05)
        assert not [p for p in workers if _alive(p)], "workers outlived their killed parent"
    finally:
        for p in workers:  # only if the test failed: do not leave them blocked on the FIFOs
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_series_search_and_check_messages(tmp_path, table):
    rec = scan_records([369])[369]
    pdir = tmp_path / "LIDC-IDRI-0365"
    (pdir / "other").mkdir(parents=True)
    # No folder of the series, one whose only file cannot be read: that may be it.
    (pdir / "other" / "1.dcm").write_bytes(b"\0" * 300)
    assert locate_series(pdir, rec) == (None, (
        f"unreadable: series {rec['series_uid']} not found in {pdir}, and no file of {pdir / 'other'} "
        f"can be read (it may be this series); fetch the folder {pdir / 'other'} again"))
    (pdir / "other" / "1.dcm").unlink()
    assert locate_series(pdir, rec) == (None, f"missing: no series {rec['series_uid']} in {pdir}; fetch that series into this folder")
    folder = write_scan(tmp_path, rows_of(table, 369), "tcia", hu=flat(len(rec["z"])))
    assert locate_series(tmp_path / "LIDC-IDRI" / "LIDC-IDRI-0365", rec) == (folder, None)
    vol, z, why = read_series(folder, rec)
    assert why is None and vol.shape == (SMALL, SMALL, len(rec["z"])) and np.all(vol == -800.0)
    # Two slices at one z: the lesser InstanceNumber is kept, as pylidc does.
    src = sorted(folder.glob("*.dcm"))[3]
    for inum, kept in ((10_000, -800.0), (0, -700.0)):
        ds = pydicom.dcmread(src)
        ds.InstanceNumber = inum
        ds.PixelData = np.full((SMALL, SMALL), 324, np.uint16).tobytes()  # -700 HU
        ds.save_as(folder / "dup.dcm")
        vol, z2, why = read_series(folder, rec)
        assert why is None and np.array_equal(z2, z)
        assert np.all(vol[:, :, int(np.flatnonzero(z == float(ds.ImagePositionPatient[2]))[0])] == kept)
    (folder / "dup.dcm").unlink()
    again = f"fetch the series folder {folder} again"
    shifted = {**rec, "z": list(np.asarray(rec["z"]) + 0.5)}
    assert read_series(folder, shifted)[2] == f"unreadable: slice positions in {folder} differ from pylidc's record by up to 0.50 mm; {again}"
    sorted(folder.glob("*.dcm"))[5].unlink()
    assert read_series(folder, rec)[2] == f"unreadable: incomplete series in {folder}: {len(z) - 1} of {len(z)} slices; {again}"


def test_outdated_parts_are_read_again_only_for_uneven_scans(tmp_path, tmp_cache, table):
    # Parts written before uneven scans were cropped at true z positions have no
    # version entry: an uneven scan's part is read again, an even scan's kept.
    sub = table[table["scan_id"].isin([369, UNEVEN])].reset_index(drop=True)
    for s in (369, UNEVEN):
        write_scan(tmp_path, rows_of(table, s), "classic", hu=flat(len(scan_record(s).slice_zvals)))
    first = prepare_lidc(sub, "0" * 64, tmp_path, workers=1, progress=False)
    assert first["scans_read_now"] == 2 and first["uneven_slice_scans"][0]["scan_id"] == UNEVEN
    folder = Path(first["folder"])
    for s in (369, UNEVEN):
        with np.load(part_path(folder, s)) as z:
            ids, crops = z["nodule_ids"], z["crops"]
        np.savez(part_path(folder, s), nodule_ids=ids, crops=np.full_like(crops, 0.123))  # as the old code wrote them
    again = prepare_lidc(sub, "0" * 64, tmp_path, workers=1, progress=False)
    assert (again["scans_done_before"], again["scans_read_now"]) == (1, 1)
    with np.load(part_path(folder, 369)) as z:
        assert np.all(z["crops"] == np.float32(0.123)) and "version" not in z.files
    with np.load(part_path(folder, UNEVEN)) as z:
        assert int(z["version"]) == PART_VERSION and not np.any(z["crops"] == np.float32(0.123))
