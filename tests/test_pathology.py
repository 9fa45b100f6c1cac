"""The pathology truth (TCIA's diagnosis sheet as data) and the per-patient evaluation against it.

Every test name holds "patholog", so that ``pytest -k patholog`` selects them.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.data import pathology
from benchmarks.stats import pathology as pstats
from tests.records_synth import record, write

SHEET = Path(__file__).resolve().parent / "fixtures" / "slices_release" / pathology.SHEET


def test_pathology_csv_is_rebuilt_byte_for_byte_from_the_pinned_sheet(tmp_path):
    table = pathology.read_sheet(SHEET)
    assert pathology.to_csv(table) == pathology.CSV_PATH.read_text()
    pd.testing.assert_frame_equal(pathology.load(), table)
    counts = table["diagnosis"].value_counts().to_dict()
    assert len(table) == 157 and counts == {3: 51, 2: 43, 1: 36, 0: 27}
    assert table["method"].value_counts().to_dict() == {2: 46, 3: 39, 1: 28, 0: 28, 4: 16}
    out = tmp_path / "p.csv"
    pathology.main(["--sheet", str(SHEET), "--out", str(out)])
    assert out.read_bytes() == pathology.CSV_PATH.read_bytes()


def test_pathology_a_sheet_that_is_not_the_pinned_one_is_refused_in_one_line(tmp_path, capsys):
    other = tmp_path / pathology.SHEET
    data = bytearray(SHEET.read_bytes())
    data[5000] ^= 0xFF
    other.write_bytes(bytes(data))
    with pytest.raises(SystemExit) as e:
        pathology.main(["--sheet", str(other), "--out", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "is not TCIA's" in err and not (tmp_path / "x.csv").exists()


def test_pathology_auc_equals_an_explicit_loop_over_pairs_and_scikit_learn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.random(40) < 0.6
    s = rng.integers(0, 5, 40).astype(float)  # many ties
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in itertools.product(s[y], s[~y])]
    assert pstats.auc(y, s) == pytest.approx(np.mean(pairs), abs=1e-12)
    assert pstats.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(pstats.auc(np.ones(3, bool), np.arange(3.0)))


def test_pathology_a_patient_takes_its_highest_score_and_is_called_by_any_nodule():
    rows = [{"id": "LIDC-IDRI-0001-s0012-n0", "fold": 0, "score": 0.1, "called": False},
            {"id": "LIDC-IDRI-0001-s0012-n1", "fold": 0, "score": 0.7, "called": True},
            {"id": "LIDC-IDRI-0002-s0013-n0", "fold": 1, "score": -0.2, "called": False},
            {"id": "LIDC-IDRI-0003-s0014-n0", "fold": 2, "score": 0.9, "called": True}]  # no truth: not counted
    got = pstats.patients(rows, {"LIDC-IDRI-0001": 2, "LIDC-IDRI-0002": 1})
    assert got == {"LIDC-IDRI-0001": {"score": 0.7, "called": True, "fold": 0, "diagnosis": 2},
                   "LIDC-IDRI-0002": {"score": -0.2, "called": False, "fold": 1, "diagnosis": 1}}
    with pytest.raises(ValueError, match="not patient-grouped"):
        pstats.patients([*rows, {"id": "LIDC-IDRI-0002-s0013-n1", "fold": 3, "score": 0.0, "called": False}], {"LIDC-IDRI-0002": 1})


def test_pathology_bootstrap_is_reproduced_by_an_explicit_loop():
    rng = np.random.default_rng(0)
    per = {f"LIDC-IDRI-{i:04d}": {"score": float(rng.normal()), "called": bool(rng.random() < 0.5), "fold": i % 3,
                                  "diagnosis": int(rng.choice([1, 2, 3]))} for i in range(60)}
    got = pstats.evaluate(per, n_boot=300, seed=7)
    ids = sorted(per)
    draw = np.random.default_rng(7)
    by_fold = [[p for p in ids if per[p]["fold"] == f] for f in sorted({v["fold"] for v in per.values()})]
    picks = [draw.integers(0, len(g), size=(300, len(g))) for g in by_fold]
    aucs, sens = [], []
    for b in range(300):
        chosen = [g[j] for g, pk in zip(by_fold, picks) for j in pk[b]]
        y = np.array([per[p]["diagnosis"] >= 2 for p in chosen])
        s = np.array([per[p]["score"] for p in chosen])
        c = np.array([per[p]["called"] for p in chosen])
        aucs.append(pstats.auc(y, s))
        sens.append(c[y].mean())
    assert got["auc"]["low"] == pytest.approx(np.percentile(aucs, 2.5)) and got["auc"]["high"] == pytest.approx(np.percentile(aucs, 97.5))
    assert got["sensitivity"]["high"] == pytest.approx(np.percentile(sens, 97.5))
    assert got["n"]["patients"] == 60 and got["n"]["malignant"] + got["n"]["benign"] == 60


def test_pathology_the_readers_against_the_sheet_count_112_patients_with_an_auc_of_0_767():
    r = pstats.readers_against_pathology(n_boot=200)
    assert r["n"] == {"patients": 112, "malignant": 84, "benign": 28, "primary": 39, "metastatic": 45}
    assert r["auc"]["value"] == pytest.approx(0.7672, abs=1e-4) and r["auc"]["low"] < 0.767 < r["auc"]["high"]
    assert r["sensitivity"]["value"] == pytest.approx(48 / 84) and r["specificity"]["value"] == pytest.approx(23 / 28)


def test_pathology_table_has_reference_rows_never_ranked_for_any_source(tmp_path, tmp_cache, capsys):
    from benchmarks.tables import main

    recs = [record(m, "LIDC-B", f, a, profile="quick", source=src) for src in ("phantom", "slices")
            for m, a in (("ce", 0.8), ("clip_lung", 0.85)) for f in range(5)]
    runs = write(tmp_path / "runs", recs)
    for src in ("phantom", "slices"):
        main(["--runs", str(runs), "--truth", "pathology", "--source", src, "--profile", "quick", "--out", str(tmp_path / "t"),
              "--bootstrap", "200"])
        data = json.loads((tmp_path / "t" / f"pathology_quick_{src}.json").read_text())
        rows = data["datasets"]["LIDC-B"]["rows"]
        assert [r["method"] for r in rows] == ["readers", "attributes", "ce", "clip_lung"]
        assert [r["reference"] for r in rows] == [True, True, False, False]
        assert data["setting"]["source"] == src and all(r["n"]["patients"] == 80 for r in rows)
        md = (tmp_path / "t" / f"pathology_quick_{src}.md").read_text()
        assert "*Radiologists (mean rating), reference*" in md and "**" not in md.split("\n\n", 2)[2].replace("**LIDC-B**", "")
        tex = (tmp_path / "t" / f"pathology_quick_{src}.tex").read_text()
        assert r"\textit{Radiologists" in tex and r"\textbf" not in tex
    assert "scored against pathology" in capsys.readouterr().out
