"""The real-CT results committed in results/ are what the committed records give.

``results/records/quick_slices/`` holds the run records of the sweep of Tables 1-3 on the slices source (quick
profile, 5 folds, seed 0; the weights are not committed). ``tables`` and ``tables --truth pathology`` run on them
again here, with nothing prepared (a fresh clone), must give every cell of the committed JSON.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "results" / "records" / "quick_slices"
TABLES = ROOT / "results" / "tables"


@pytest.mark.slow
def test_the_committed_slices_tables_and_pathology_table_are_regenerated_from_the_committed_records(tmp_path, tmp_cache):
    from benchmarks.tables import main

    recs = sorted(RECORDS.glob("*_quick_slices_*.json"))
    assert len(recs) == 180, f"{len(recs)} committed records of the slices sweep, expected 180"
    assert {json.loads(p.read_text())["source"] for p in recs} == {"slices"}
    main(["--runs", str(RECORDS), "--source", "slices", "--profile", "quick", "--out", str(tmp_path)])
    main(["--runs", str(RECORDS), "--source", "slices", "--profile", "quick", "--out", str(tmp_path), "--truth", "pathology"])
    for name in ("tables_quick_slices.json", "pathology_quick_slices.json"):
        assert json.loads((tmp_path / name).read_text()) == json.loads((TABLES / name).read_text()), name
    for t in (1, 2, 3):
        assert (tmp_path / f"table{t}_quick_slices.md").read_text() == (TABLES / f"table{t}_quick_slices.md").read_text()
