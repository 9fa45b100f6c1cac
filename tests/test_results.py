"""The real-CT results committed in results/ are what the committed records give.

``results/records/quick_slices/`` holds the run records of the sweep of Tables 1-3 on the slices source (quick
profile, 5 folds, seed 0; the weights are not committed). ``tables`` and ``tables --truth pathology`` run on them
again here, with nothing prepared (a fresh clone), must give every cell of the committed JSON and Markdown.

The sweep is 180 runs (12 methods x 3 datasets x 5 folds); where fewer are committed (a sweep still under way), the
committed tables say so themselves (a cell of fewer than 5 folds is marked, a missing one is a dash), and the count
the README and results/README.md print must be the count committed: checked here too.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "results" / "records" / "quick_slices"
TABLES = ROOT / "results" / "tables"
GRID = 180


def _records() -> list[Path]:
    return sorted(RECORDS.glob("*_quick_slices_*.json"))


def test_the_committed_slices_records_are_one_sweep_of_the_grid():
    from benchmarks.grid import cells as grid_cells

    recs = _records()
    assert recs, "no committed records of the slices sweep"
    data = [json.loads(p.read_text()) for p in recs]
    assert {(r["source"], r["profile"], r["seed"]) for r in data} == {("slices", "quick", 0)}
    cells = [(r["method"], r["dataset"], r["fold"]) for r in data]
    assert len(set(cells)) == len(cells), "two records of one run"
    grid = set(grid_cells((1, 2, 3)))
    assert len(grid) * 5 == GRID
    assert {(m, d) for m, d, _ in cells} <= grid and {f for *_, f in cells} <= set(range(5))
    assert len({r["data_scope"] for r in data}) == 1, "records of two preparations of the release"
    # The counts printed beside the results are the committed ones.
    n = len(recs)
    for doc in (ROOT / "README.md", ROOT / "results" / "README.md"):
        said = re.findall(r"(\d+) of (\d+) runs", doc.read_text())
        assert said and all((int(a), int(b)) == (n, GRID) for a, b in said), (doc, said, n)


@pytest.mark.slow
def test_the_committed_slices_tables_and_pathology_table_are_regenerated_from_the_committed_records(tmp_path, tmp_cache):
    from benchmarks.tables import main

    main(["--runs", str(RECORDS), "--source", "slices", "--profile", "quick", "--out", str(tmp_path)])
    main(["--runs", str(RECORDS), "--source", "slices", "--profile", "quick", "--out", str(tmp_path), "--truth", "pathology"])
    for name in ("tables_quick_slices.json", "pathology_quick_slices.json"):
        assert json.loads((tmp_path / name).read_text()) == json.loads((TABLES / name).read_text()), name
    for t in (1, 2, 3):
        assert (tmp_path / f"table{t}_quick_slices.md").read_text() == (TABLES / f"table{t}_quick_slices.md").read_text()
