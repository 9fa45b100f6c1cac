"""The pathology truth: TCIA's diagnosis sheet for LIDC-IDRI, as a committed CSV.

TCIA publishes, for 157 of the LIDC-IDRI patients, a diagnosis established
outside the readers' impressions: ``tcia-diagnosis-data-2012-04-20.xls``
(46,080 bytes, sha256 :data:`SHEET_SHA256`; at the root of the public slices
release, ``benchmarks.data.slices``; TCIA, CC BY 3.0). Its facts are
:data:`CSV_PATH`, derived from the pinned sheet by this module::

    python -m benchmarks.data.pathology --sheet PATH/tcia-diagnosis-data-2012-04-20.xls

which refuses a file of any other sha256 and rewrites the CSV byte for byte
(``tests/test_pathology.py`` rebuilds it from the copy of the sheet in the test
fixture). The sheet is read with xlrd (a reader of the .xls format that runs
nothing in the file).

Codes, as the sheet's header states them:
  diagnosis  0 unknown; 1 benign or non-malignant disease; 2 malignant, primary
             lung cancer; 3 malignant, metastatic
  method     0 unknown; 1 review of radiological images to show 2 years of
             stable nodule; 2 biopsy; 3 surgical resection; 4 progression or
             response
Columns: ``patient_id``, ``diagnosis``, ``method`` (the patient-level diagnosis
and how it was established), ``primary_site`` (the sheet's free text: the
primary tumour for metastatic disease, sometimes filled for primary lung cancer
too), and ``nodule<i>_diagnosis`` / ``nodule<i>_method`` for i = 1..5, the
sheet's nodule-level columns (filled for at most two nodules a patient). Those
nodule numbers name nothing the readers' annotations can be matched to, so the
suite uses the patient-level truth only (``benchmarks.stats.pathology``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from benchmarks.errors import UserError, cli_main
from benchmarks.io import atomic_write_text, sha256_file

DATA_DIR = Path(__file__).resolve().parent
CSV_PATH = DATA_DIR / "pathology.csv"
SHEET = "tcia-diagnosis-data-2012-04-20.xls"
SHEET_SHA256 = "dc91810f2063889a055680e5e95f431ee2bb3bc81333444f37e97e1ee55c9b1e"
DIAGNOSIS = {0: "unknown", 1: "benign", 2: "primary lung cancer", 3: "metastatic"}
METHOD = {0: "unknown", 1: "2-year stability", 2: "biopsy", 3: "resection", 4: "progression or response"}
MALIGNANT = (2, 3)
N_NODULES = 5
COLUMNS = ["patient_id", "diagnosis", "method", "primary_site"] + [f"nodule{i}_{k}" for i in range(1, N_NODULES + 1) for k in ("diagnosis", "method")]
HEAD = ("# TCIA's LIDC-IDRI diagnosis sheet tcia-diagnosis-data-2012-04-20.xls (sha256 " + SHEET_SHA256[:16] + "...), as data; "
        "made by benchmarks/data/pathology.py; TCIA, CC BY 3.0 (benchmarks/data/NOTICE.md). diagnosis: 0 unknown, 1 benign, "
        "2 primary lung cancer, 3 metastatic; method: 0 unknown, 1 2-year stability, 2 biopsy, 3 resection, 4 progression or response\n")


def _code(cell, allowed, where: str) -> int | None:
    """A code cell: an integer of ``allowed``, None for an empty cell."""
    v = cell.value
    if cell.ctype == 0 or (isinstance(v, str) and not v.strip()):  # xlrd's XL_CELL_EMPTY, or a blank text
        return None
    if not isinstance(v, float) or v != int(v) or int(v) not in allowed:
        raise UserError(f"{where}: {v!r} is not one of the sheet's codes {sorted(allowed)}")
    return int(v)


def read_sheet(path: str | Path) -> pd.DataFrame:
    """The sheet's rows as a table of :data:`COLUMNS`; a UserError for a file that is not the pinned sheet."""
    import xlrd  # noqa: PLC0415  (only to rebuild the CSV)

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--sheet {path}: no such file")
    got = sha256_file(path)
    if got != SHEET_SHA256:
        raise UserError(f"{path} is not TCIA's {SHEET} (sha256 {got[:16]}..., expected {SHEET_SHA256[:16]}...)")
    sheet = xlrd.open_workbook(str(path)).sheet_by_index(0)
    rows = []
    for r in range(1, sheet.nrows):  # row 0: the header with the codes
        pid = str(sheet.cell(r, 0).value).strip()
        row = {"patient_id": pid, "diagnosis": _code(sheet.cell(r, 1), DIAGNOSIS, f"{pid} diagnosis"),
               "method": _code(sheet.cell(r, 2), METHOD, f"{pid} method"), "primary_site": str(sheet.cell(r, 3).value).strip()}
        for i in range(N_NODULES):
            row[f"nodule{i + 1}_diagnosis"] = _code(sheet.cell(r, 4 + 2 * i), DIAGNOSIS, f"{pid} nodule {i + 1} diagnosis")
            row[f"nodule{i + 1}_method"] = _code(sheet.cell(r, 5 + 2 * i), METHOD, f"{pid} nodule {i + 1} method")
        rows.append(row)
    out = pd.DataFrame(rows, columns=COLUMNS)
    for c in COLUMNS[1:2] + COLUMNS[2:3] + COLUMNS[4:]:
        out[c] = out[c].astype("Int64")
    return out.sort_values("patient_id").reset_index(drop=True)


def to_csv(table: pd.DataFrame) -> str:
    return HEAD + table.to_csv(index=False)


def load(path: str | Path = CSV_PATH) -> pd.DataFrame:
    """The committed truth: one row per patient of the sheet (see the module docstring)."""
    t = pd.read_csv(path, skiprows=1, dtype={"patient_id": str, "primary_site": str}, keep_default_na=False,
                    na_values={c: [""] for c in COLUMNS if c not in ("patient_id", "primary_site")})
    for c in COLUMNS:
        if c not in ("patient_id", "primary_site"):
            t[c] = t[c].astype("Int64")
    return t


def known(table: pd.DataFrame | None = None) -> pd.Series:
    """{patient id: diagnosis code 1-3} of the patients whose diagnosis is known."""
    t = load() if table is None else table
    t = t[t["diagnosis"].isin([1, 2, 3])]
    return pd.Series(t["diagnosis"].astype(int).to_numpy(), index=t["patient_id"].to_numpy())


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.data.pathology", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sheet", required=True, help=f"TCIA's {SHEET} (at the root of the slices release)")
    ap.add_argument("--out", default=str(CSV_PATH), help="the CSV to write")
    args = ap.parse_args(argv)
    table = read_sheet(args.sheet)
    atomic_write_text(args.out, to_csv(table))
    counts = ", ".join(f"{DIAGNOSIS[k]} {v}" for k, v in sorted(table["diagnosis"].value_counts().items()))
    print(f"{len(table)} patients ({counts}) -> {args.out}")


if __name__ == "__main__":
    main()
