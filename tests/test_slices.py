"""The slices source: the pinned release, its verification, the match of its folders, its crops, its download.

Driven by ``tests/fixtures/slices_release``: 21 patients' folders of the real release
(and TCIA's diagnosis sheet), unchanged, under CC BY 3.0 (tests/fixtures/NOTICE.md).
The download is tested against a local HTTP server (tests/http_server.py), never the
internet. Tests of the whole release run where ``$CLIPLUNG_SLICES_RELEASE`` names a
copy of it (slow; skipped otherwise, saying why).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import prepare
from benchmarks.data import cache, slices, slices_crop, slices_match
from benchmarks.data.index import load_index
from benchmarks.data.protocols import labelled_folds, protocol_hash
from tests.http_server import ArchiveServer

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "slices_release"
ROOT = Path(__file__).resolve().parent.parent
FULL = os.environ.get("CLIPLUNG_SLICES_RELEASE")


def fixture_files() -> dict[str, bytes]:
    return {p.relative_to(FIXTURE).as_posix(): p.read_bytes() for p in sorted(FIXTURE.rglob("*")) if p.is_file()}


def make_zip(files: dict[str, bytes], top: str = f"LIDC-IDRI-{slices.COMMIT}/") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            z.writestr(top + name, data)
    return buf.getvalue()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Private cache, data and results folders (in-process and for subprocesses)."""
    for var, sub in ((cache.CACHE_ENV, "cache"), ("CLIPLUNG_DATA", "data"), ("CLIPLUNG_RESULTS", "results")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.delenv("CLIPLUNG_RUNS", raising=False)
    cache._MEMO.clear()
    yield tmp_path
    cache._MEMO.clear()


def call(capsys, *args) -> tuple[int, str, str]:
    """``prepare`` in-process: (exit status, stdout, the error: its one line when it failed, else stderr)."""
    try:
        prepare.main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, one_error(out.err) if code else out.err


def one_error(stderr: str) -> str:
    """The one error line of a failed command (above it at most progress bars and log lines), never a traceback."""
    lines = [x.split("\r")[-1] for x in stderr.splitlines() if x.strip()]
    assert "Traceback" not in stderr and sum(x.startswith("error:") for x in lines) == 1, stderr
    return next(x for x in lines if x.startswith("error:")) + "\n"


def test_blob_ids_are_gits_and_every_fixture_file_is_in_the_manifest():
    man = slices.manifest()
    files = fixture_files()
    for rel, data in files.items():
        assert man[rel] == (len(data), slices.blob_id(data)), rel
    if shutil.which("git"):  # a second derivation: git's own hashing of three files
        for rel in list(files)[:3]:
            out = subprocess.run(["git", "hash-object", str(FIXTURE / rel)], capture_output=True, text=True, check=True).stdout.strip()
            assert out == man[rel][1]
    assert len(man) == 77_742 and sum(p.startswith("LIDC-IDRI-slices/") for p in man) == 77_740


def test_the_fixture_verifies_as_a_partial_copy_and_is_named_incomplete_as_a_whole_one():
    v = slices.verify_folder(FIXTURE, partial=True, progress=False)
    assert v.problems() == [] and len(v.patients) == 21 and v.files == len(fixture_files())
    whole = slices.verify_folder(FIXTURE, partial=False, progress=False)
    assert len(whole.missing) == len(slices.manifest()) - v.files
    assert "LIDC-IDRI_MetaData.csv" in whole.missing


def test_the_match_of_the_fixture_patients_is_the_committed_table():
    table = slices_match.build_table(FIXTURE, load_index(), workers=1, progress=False)
    committed = slices_match.load_table()
    committed = committed[committed["patient_id"].isin(table["patient_id"])].reset_index(drop=True)
    got = slices_match.load_table(io.StringIO(table.to_csv(index=False)))  # through the CSV, as committed
    assert len(got) == 25
    pd.testing.assert_frame_equal(got, committed)
    assert dict(got["status"].value_counts()) == {"exact": 23, "near": 1, "unmatched": 1}


def test_the_match_is_pixel_exact_a_moved_or_grown_mask_does_not_agree():
    """One reader's mask moved by one pixel: a second translation (mixed); grown by one pixel: it no longer
    agrees exactly but lies on its annotation (near)."""
    idx = load_index()
    rows = idx[idx["patient_id"] == "LIDC-IDRI-0626"].to_dict("records")
    from benchmarks.data.phantom import annotation_ids, load_annotations

    anns = load_annotations([i for r in rows for i in annotation_ids(r)])
    cands = [{"nodule_id": r["nodule_id"], "readers": int(r["n_readers"]),
              "anns": [slices_match.annotation_voxels(anns[i]) for i in annotation_ids(r)]} for r in rows]
    masks = slices_match.read_masks(FIXTURE / "LIDC-IDRI-slices" / "LIDC-IDRI-0626" / "nodule-0")  # (4, S, 128, 128)
    n = int(masks.any((1, 2, 3)).sum())
    assert slices_match.match_folder(masks, cands)["status"] == "exact"
    moved = masks.copy()
    moved[0] = np.roll(masks[0], 1, axis=2)
    verdict = slices_match.match_folder(moved, cands)
    assert verdict["status"] == "mixed" and "2 different translations" in verdict["why"]
    grown = masks.copy()
    s, y, x = np.argwhere(masks[0])[0]
    grown[0, s, y - 1, x] = True
    verdict = slices_match.match_folder(grown, cands)
    assert verdict["status"] == "near" and verdict["masks_agreeing"] == n - 1 and verdict["iou"] < 1


def test_prepare_slices_from_the_fixture_builds_a_partial_cache_with_its_coverage(env, capsys):
    code, out, err = call(capsys, "slices", "--from", str(FIXTURE), "--partial")
    assert code == 0, err
    assert "a PARTIAL copy (21 patients)" in out and "nodules with slices per readers' threshold" in out
    ids, vols, man = slices_crop.slices_volumes(labelled_folds(2), protocol_hash(2))
    assert man["partial"] and man["n"] == len(ids) == vols.shape[0] and vols.dtype == np.float32
    assert vols.min() >= 0 and vols.max() <= 1 and 0 < man["z_coverage"]["median"] <= 1
    # the two-scan patient 0442: the first scan's nodules have no folder (the second's overwrote them)
    assert man["left_out_nodules"] == {} or man["left_out_nodules"].get("LIDC-IDRI-0442-s0446-n0") == "no folder of the release agrees with it"
    assert man["left_out"]["no folder of the release agrees with it"] >= 3
    assert "LIDC-IDRI-0442-s0446-n0" not in set(ids) and "LIDC-IDRI-0442-s0447-n2" in set(ids)
    assert slices_crop.scope_tag(2).startswith(f"partial:{len(ids)}of1880:")


def test_a_crop_is_the_dicom_paths_cube_sampled_from_the_folder():
    """A second derivation of one crop: explicit loops of trilinear interpolation over the folder's images."""
    use = slices_crop.usable_matches(slices_match.load_table())
    m = use[use["patient_id"] == "LIDC-IDRI-0626"].iloc[0]
    row = load_index().set_index("nodule_id").loc[m.name]
    got, covered = slices_crop.crop_folder(FIXTURE, row, m)
    assert m["slices"] == 1 and (got[16] > 0).mean() > 0.99  # a nodule marked on one slice: that slice, not a black cube
    assert np.array_equal(got[0], got[16]) and np.array_equal(got[31], got[16])  # ... repeated over the whole cube in z
    vol = slices_crop.folder_volume(FIXTURE, m["folder"]).astype(np.float64)  # (128, 128, S)
    c = np.array([row["centroid_i"] - m["origin_i"], row["centroid_j"] - m["origin_j"], row["centroid_k"] - m["first_slice"]])
    side = 2 * row["eq_diameter_mm"]
    sp = (row["pixel_spacing"], row["pixel_spacing"], row["slice_spacing"])

    def at(p):  # trilinear within the folder's voxels; in z beyond the marked slices the nearest one; in-plane beyond the image 0
        p = np.array(p, dtype=float)
        if p[0] < 0 or p[0] > vol.shape[0] - 1 or p[1] < 0 or p[1] > vol.shape[1] - 1:
            return 0.0
        p[2] = min(max(p[2], 0.0), vol.shape[2] - 1.0)
        if vol.shape[2] == 1:
            return at2(p, vol[:, :, 0])
        lo = np.minimum(np.floor(p).astype(int), np.array(vol.shape) - 2)
        f = p - lo
        total = 0.0
        for corner in range(8):
            bits = [(corner >> b) & 1 for b in range(3)]
            idx3 = lo + bits
            w = np.prod([f[a] if bits[a] else 1 - f[a] for a in range(3)])
            total += w * vol[tuple(idx3)]
        return total

    def at2(p, img):  # bilinear in one slice
        lo = np.minimum(np.floor(p[:2]).astype(int), np.array(img.shape) - 2)
        f = p[:2] - lo
        return sum(img[lo[0] + a, lo[1] + b] * (f[0] if a else 1 - f[0]) * (f[1] if b else 1 - f[1]) for a in (0, 1) for b in (0, 1))

    for s, r, q in [(16, 16, 16), (15, 20, 5), (12, 3, 30), (0, 0, 0), (31, 31, 31)]:
        off = ((np.array([r, q, s]) + 0.5) / 32 - 0.5) * side
        want = at(c + off / np.array(sp))
        assert got[s, r, q] == pytest.approx(want, abs=1e-5)
    kk = c[2] + ((np.arange(32) + 0.5) / 32 - 0.5) * side / sp[2]
    assert covered == pytest.approx(np.mean((kk >= -0.5) & (kk <= vol.shape[2] - 0.5)))


def test_a_copy_that_is_not_the_whole_release_is_refused_in_one_line(env, capsys):
    code, out, err = call(capsys, "slices", "--from", str(FIXTURE))
    assert code == 2 and err.count("\n") == 1 and "missing" in err and "does not match its manifest" in err
    assert not any((env / "cache").glob("slices-*/manifest.json"))


@pytest.mark.parametrize("harm", ["damaged", "extra", "missing", "resized"])
def test_a_damaged_extra_or_missing_file_is_named(env, capsys, harm):
    copy = env / "copy"
    shutil.copytree(FIXTURE, copy)
    png = copy / "LIDC-IDRI-slices" / "LIDC-IDRI-0626" / "nodule-0" / "images" / "slice-0.png"
    rel = png.relative_to(copy).as_posix()
    if harm == "damaged":
        data = bytearray(png.read_bytes())
        data[-20] ^= 0xFF
        png.write_bytes(bytes(data))
    elif harm == "resized":
        png.write_bytes(png.read_bytes()[:-7])
    elif harm == "extra":
        rel = "LIDC-IDRI-slices/LIDC-IDRI-0626/nodule-0/images/slice-99.png"
        (copy / rel).write_bytes(b"\x89PNG")
    else:
        png.unlink()
    code, _, err = call(capsys, "slices", "--from", str(copy), "--partial")
    assert code == 2 and err.count("\n") == 1 and rel in err
    assert {"damaged": "content differs", "resized": "bytes, expected", "extra": "1 extra", "missing": "1 missing"}[harm] in err
    assert not any((env / "cache").glob("slices-*/manifest.json"))


def test_zip_and_tar_archives_are_unpacked_verified_and_installed(env, capsys):
    files = fixture_files()
    z = env / "release.zip"
    z.write_bytes(make_zip(files))
    code, out, err = call(capsys, "slices", "--from", str(z), "--partial")
    assert code == 0, err
    target = env / "data" / slices.FOLDER_NAME
    assert slices.read_mark(target)["partial"] and (target / "LIDC-IDRI-slices" / "LIDC-IDRI-0626").is_dir()
    assert not list((env / "data").glob(".*tmp*"))
    t = env / "release.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        tf.add(FIXTURE, arcname="somewhere")
    code, out, err = call(capsys, "slices", "--from", str(t), "--partial", "--to", str(env / "other"))
    assert code == 0, err
    assert slices.read_mark(env / "other") is not None


def test_bad_archives_are_refused_in_one_line(env, capsys):
    not_archive = env / "x.zip"
    not_archive.write_bytes(b"hello, not a zip at all" * 40)
    wrong = env / "wrong.zip"
    wrong.write_bytes(make_zip({"README.md": b"something else"}))
    truncated = env / "cut.zip"
    truncated.write_bytes(make_zip(fixture_files())[:200_000])
    unsafe = env / "unsafe.tar"
    with tarfile.open(unsafe, "w") as tf:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    link = env / "link.tar"
    with tarfile.open(link, "w") as tf:
        info = tarfile.TarInfo("LIDC-IDRI-slices/evil")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    for path, words in ((not_archive, "neither a zip nor a tar"), (wrong, "holds no LIDC-IDRI-slices"),
                        (truncated, "damaged or truncated"), (unsafe, "unsafe path"), (link, "link or special file")):
        code, _, err = call(capsys, "slices", "--from", str(path), "--partial")
        assert code == 2 and err.count("\n") == 1 and words in err, (path.name, err)
    assert not (env / "escape.txt").exists() and not (env / "data" / slices.FOLDER_NAME).exists()


def _sub_env(env: Path, **extra) -> dict:
    return {**os.environ, cache.CACHE_ENV: str(env / "cache"), "CLIPLUNG_DATA": str(env / "data"),
            "CLIPLUNG_RESULTS": str(env / "results"), **extra}


def test_the_download_from_a_local_server_installs_and_a_rerun_reuses_it(env, capsys, monkeypatch):
    with ArchiveServer(make_zip(fixture_files())) as srv:
        monkeypatch.setenv("CLIPLUNG_SLICES_URL", srv.url)
        code, out, err = call(capsys, "slices", "--partial")
        assert code == 0, err
        assert srv.requests == [None]
        code, out, err = call(capsys, "slices", "--partial")
        assert code == 0 and srv.requests == [None]  # verified copy reused: nothing fetched
    target = env / "data" / slices.FOLDER_NAME
    assert slices.read_mark(target)["origin"].startswith("download") and not list((env / "data").glob("*.zip*"))


@pytest.mark.slow
def test_a_download_killed_with_sigkill_continues_where_it_stopped(env):
    payload = make_zip(fixture_files())
    part = env / "data" / f"{slices.FOLDER_NAME}.zip.part"
    with ArchiveServer(payload, rate=150_000) as slow:
        p = subprocess.Popen([sys.executable, "-m", "benchmarks.prepare", "slices", "--partial"], cwd=ROOT,
                             env=_sub_env(env, CLIPLUNG_SLICES_URL=slow.url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not part.exists() or part.stat().st_size < 200_000):
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.wait()
    held = part.stat().st_size
    assert 200_000 <= held < len(payload)
    with ArchiveServer(payload) as srv:
        r = subprocess.run([sys.executable, "-m", "benchmarks.prepare", "slices", "--partial"], cwd=ROOT,
                           env=_sub_env(env, CLIPLUNG_SLICES_URL=srv.url), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert srv.requests == [f"bytes={held}-"] and srv.sent == len(payload) - held
    assert slices.read_mark(env / "data" / slices.FOLDER_NAME) is not None and not part.exists()


def test_a_server_that_ignores_ranges_gets_the_whole_archive_again(env, capsys, monkeypatch):
    payload = make_zip(fixture_files())
    part = env / "data" / f"{slices.FOLDER_NAME}.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(payload[:1000] + b"garbage")  # what a killed run left, from another server
    with ArchiveServer(payload, ranges=False) as srv:
        monkeypatch.setenv("CLIPLUNG_SLICES_URL", srv.url)
        code, out, err = call(capsys, "slices", "--partial")
    assert code == 0, err
    assert srv.requests == ["bytes=1007-"] and srv.sent == len(payload)


@pytest.mark.parametrize("harm", ["damaged", "extra", "wrong"])
def test_a_downloaded_archive_that_is_wrong_is_named_deleted_and_fetched_again_next_time(env, capsys, monkeypatch, harm):
    files = fixture_files()
    rel = "LIDC-IDRI-slices/LIDC-IDRI-0626/nodule-0/images/slice-0.png"
    if harm == "damaged":
        files[rel] = files[rel][:-20] + bytes(20)
    elif harm == "extra":
        rel = "LIDC-IDRI-slices/LIDC-IDRI-0626/notes.txt"
        files[rel] = b"extra"
    else:
        files, rel = {"other/thing.txt": b"not the release"}, "holds no LIDC-IDRI-slices"
    with ArchiveServer(make_zip(files)) as srv:
        monkeypatch.setenv("CLIPLUNG_SLICES_URL", srv.url)
        code, _, err = call(capsys, "slices", "--partial")
    assert code == 2 and err.count("\n") == 1 and rel in err and "fetches it again" in err
    assert not (env / "data" / slices.FOLDER_NAME).exists() and not list((env / "data").glob("*.zip*"))


def test_a_server_that_never_answers_or_no_network_ends_in_one_line(env, capsys, monkeypatch):
    monkeypatch.setenv("CLIPLUNG_HTTP_TIMEOUT", "1.5")
    with ArchiveServer(b"", hang=True) as srv:
        monkeypatch.setenv("CLIPLUNG_SLICES_URL", srv.url)
        t0 = time.monotonic()
        code, _, err = call(capsys, "slices")
    assert code == 2 and time.monotonic() - t0 < 15 and "no answer from 127.0.0.1" in err and "within 1.5 s" in err
    assert "python -m benchmarks.prepare slices" in err and err.count("\n") == 1
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    monkeypatch.setenv("CLIPLUNG_SLICES_URL", f"http://127.0.0.1:{port}/x.zip")
    code, _, err = call(capsys, "slices")
    assert code == 2 and "could not reach 127.0.0.1" in err and err.count("\n") == 1


@pytest.mark.slow
def test_a_smoke_run_on_the_fixture_says_slices_and_partial(env):
    e = _sub_env(env)
    r = subprocess.run([sys.executable, "-m", "benchmarks.prepare", "slices", "--from", str(FIXTURE), "--partial"], cwd=ROOT, env=e,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "benchmarks.run", "--method", "ce", "--dataset", "LIDC-B", "--source", "slices",
                        "--profile", "smoke", "--folds", "0", "--quiet"], cwd=ROOT, env=e, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "have slices" in r.stderr and "PARTIAL" in r.stderr
    (rec_path,) = (env / "results" / "runs").glob("ce_LIDC-B_fold0_seed0_smoke_slices_*.json")
    rec = json.loads(rec_path.read_text())
    assert rec["source"] == "slices" and rec["data_scope"].startswith("partial:")
    cov = rec["data"]["scope"]["slices"]
    assert rec["data"]["scope"]["partial"] and cov["partial"] and cov["nodules_in_protocol"] == 1880
    assert rec["data"]["n_train"] + rec["data"]["n_test"] <= cov["nodules_with_crops"] < 40
    assert rec["data"]["n_test"] >= 4 and rec["data"]["missing"]["test"] > 0


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="needs a copy of the whole slices release: set $CLIPLUNG_SLICES_RELEASE to its folder")
def test_the_whole_release_matches_the_manifest_and_the_committed_match_table(tmp_path):
    root = slices.find_root(Path(FULL))
    v = slices.verify_folder(root, progress=False)
    assert v.problems() == [] and v.files == len(slices.manifest())
    table = slices_match.build_table(root, load_index(), progress=False)
    got = slices_match.load_table(io.StringIO(table.to_csv(index=False)))
    pd.testing.assert_frame_equal(got, slices_match.load_table())


def _slices_record(method: str, fold: int, acc: float, scope: str = "slices:1855of1880:0123456789ab") -> dict:
    from tests.records_synth import record

    r = record(method, "LIDC-C", fold, acc, source="slices")
    r["data_scope"] = scope
    r["data"]["scope"]["slices"] = {"partial": False, "nodules_with_crops": 1855, "nodules_in_protocol": 1880, "patients": 794,
                                    "patients_in_protocol": 796, "left_out": {"no folder of the release agrees with it": 17, "its folder is mixed": 8}}
    return r


def test_tables_of_slices_records_never_mix_sources_and_say_the_coverage(tmp_cache, tmp_path):
    from benchmarks.errors import UserError
    from benchmarks.records import read_records
    from benchmarks.selection import Setting
    from benchmarks.tables import caption_for, select
    from tests.records_synth import record, write

    recs = [_slices_record(m, f, a) for m in ("ce", "clip_lung") for f, a in enumerate([0.8, 0.82, 0.84, 0.86, 0.88])]
    phantom = [record("ce", "LIDC-C", f, 0.5) for f in range(5)]
    runs = write(tmp_path / "runs", recs + phantom)
    with pytest.raises(UserError, match="source phantom .*slices"):
        select(read_records(runs), [2])
    chosen = select(read_records(runs), [2], Setting(source="slices"))
    assert len(chosen) == 10 and {r["source"] for r in chosen} == {"slices"}  # nothing prepared here: the records' own crops
    cap = caption_for(2, chosen)
    assert "Source slices: real CT" in cap and "1855 of the protocol's 1880 nodules" in cap and "17 no folder of the release agrees" in cap
    assert "PARTIAL" not in cap
    other = write(tmp_path / "runs2", recs + [_slices_record("nsb", f, 0.7, scope="slices:1850of1880:ffffffffffff") for f in range(5)])
    with pytest.raises(UserError, match="crops of different preparations"):
        select(read_records(other), [2], Setting(source="slices"))


def test_slices_records_of_another_preparation_are_left_out_once_crops_are_prepared(env, capsys, caplog, tmp_path):
    from benchmarks.records import read_records
    from benchmarks.selection import Setting
    from benchmarks.tables import select
    from tests.records_synth import write

    assert call(capsys, "slices", "--from", str(FIXTURE), "--partial")[0] == 0
    recs = [_slices_record(m, f, 0.8) for m in ("ce", "clip_lung") for f in range(5)]
    with caplog.at_level("WARNING"), pytest.raises(Exception, match="no run records"):
        select(read_records(write(tmp_path / "r", recs)), [2], Setting(source="slices"))
    assert any("the slices release's, crops 0123456789ab" in m and "partial data" in m for m in caplog.messages)
