"""benchmarks.stats.readers: the readers' reference row, each number against a second derivation (explicit loops)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.data.protocols import N_FOLDS
from benchmarks.stats import readers as R


def _class(x: float) -> int:
    # the label rule written out: benign < 2.5 <= unsure <= 3.5 < malignant
    return 0 if x < 2.5 else (2 if x > 3.5 else 1)


def _kappa_loop(a, b, k=3, quadratic=False) -> float:
    """Cohen's kappa from its definition: 1 - sum w O / sum w E, O the observed and E the chance confusion counts."""
    n = len(a)
    obs = [[0.0] * k for _ in range(k)]
    for x, y in zip(a, b):
        obs[x][y] += 1.0
    rows = [sum(obs[i]) for i in range(k)]
    cols = [sum(obs[i][j] for i in range(k)) for j in range(k)]
    num = den = 0.0
    for i in range(k):
        for j in range(k):
            w = ((i - j) / (k - 1)) ** 2 if quadratic else float(i != j)
            num += w * obs[i][j]
            den += w * rows[i] * cols[j] / n
    return 1.0 - num / den


def test_kappa_matches_its_definition_and_sklearn():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 200)
    pred = np.where(rng.random(200) < 0.6, truth, rng.integers(0, 3, 200))
    m = R.pair_metrics(pred, truth, rng.integers(1, 6, 200).astype(float), ("benign", "unsure", "malignant"))
    assert m["kappa"] == pytest.approx(_kappa_loop(truth.tolist(), pred.tolist()), abs=1e-12)
    assert m["qwk"] == pytest.approx(_kappa_loop(truth.tolist(), pred.tolist(), quadratic=True), abs=1e-12)
    assert m["kappa"] == pytest.approx(cohen_kappa_score(pred, truth), abs=1e-12)  # symmetric in its arguments
    assert 0.3 < m["kappa"] < 0.8  # 60% copied: well above chance, below agreement


def test_leave_one_out_pairs_by_hand():
    # ratings 1,3,3: mean 2.33 (benign). Reader 0: others (3,3) -> 3 unsure; readers 1, 2: others (1,3) -> 2 benign.
    row, rating, pred, truth = R.loo_pairs(["1;3;3", "5", "4;5"])
    assert row.tolist() == [0, 0, 0, 2, 2]  # the single-reader nodule gives no pair
    assert rating.tolist() == [1, 3, 3, 4, 5]
    assert pred.tolist() == [0, 1, 1, 2, 2]
    assert truth.tolist() == [1, 0, 0, 2, 2]


def _synthetic(n=300, seed=1) -> pd.DataFrame:
    """A labelled, folded nodule table as ``protocols.labelled_folds`` gives it, with random ratings."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        r = int(rng.integers(1, 5))  # 1-4 readers
        centre = rng.uniform(1, 5)
        x = np.clip(np.rint(centre + rng.normal(0, 0.9, r)), 1, 5).astype(int)
        rows.append({"nodule_id": f"n{i}", "patient_id": f"p{i // 2}", "n_readers": r, "malignancy_readers": ";".join(map(str, x)),
                     "malignancy": float(x.mean()), "label": _class(float(x.mean())), "fold": (i // 2) % N_FOLDS})
    return pd.DataFrame(rows)


def _row_by_loops(table: pd.DataFrame, test_classes) -> dict[int, dict]:
    """Per fold: accuracy, macro F1, kappa and the counts, from explicit loops over nodules and readers."""
    idx = [("benign", "unsure", "malignant").index(c) for c in test_classes]
    out = {}
    for f in range(N_FOLDS):
        pairs, dropped = [], 0
        for _, nod in table[(table["fold"] == f) & table["label"].isin(idx)].iterrows():
            x = [int(v) for v in nod["malignancy_readers"].split(";")]
            for i in range(len(x)):
                if len(x) < 2:
                    continue
                others = [x[j] for j in range(len(x)) if j != i]
                t = _class(sum(others) / len(others))
                if t not in idx:
                    dropped += 1
                    continue
                pairs.append((_class(x[i]), t))
        f1s = []
        for c in idx:
            tp = sum(p == c and t == c for p, t in pairs)
            fp = sum(p == c and t != c for p, t in pairs)
            fn = sum(p != c and t == c for p, t in pairs)
            f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        out[f] = {"accuracy": 100.0 * sum(p == t for p, t in pairs) / len(pairs), "macro_f1": 100.0 * sum(f1s) / len(f1s),
                  "kappa": _kappa_loop([t for _, t in pairs], [p for p, _ in pairs]), "pairs": len(pairs), "dropped": dropped}
    return out


@pytest.mark.parametrize("dataset,classes", [("LIDC-A", ("benign", "unsure", "malignant")), ("LIDC-B", ("benign", "malignant"))])
def test_reference_row_against_loops(dataset, classes):
    table = _synthetic()
    row = R.reference_row(dataset, table=table)
    want = _row_by_loops(table, classes)
    assert row["folds"] == list(range(N_FOLDS)) and row["reference"] is True and row["seeds"] == []
    for key in ("accuracy", "macro_f1", "kappa"):
        v = np.array([want[f][key] for f in range(N_FOLDS)])
        assert row["metrics"][key]["mean"] == pytest.approx(v.mean(), abs=1e-9), key
        assert row["metrics"][key]["std"] == pytest.approx(v.std(ddof=1), abs=1e-9), key
        assert row["per_fold"][2][key] == pytest.approx(want[2][key], abs=1e-9), key
    assert row["details"]["pairs"]["total"] == sum(w["pairs"] for w in want.values())
    assert row["details"]["dropped_unsure_consensus"]["total"] == sum(w["dropped"] for w in want.values())
    assert (row["details"]["dropped_unsure_consensus"]["total"] > 0) == (dataset != "LIDC-A")
    assert row["details"]["single_reader_nodules"]["total"] > 0  # the synthetic table has single-reader nodules
    assert ("auc" in row["metrics"]) == (dataset != "LIDC-A") and ("qwk" in row["metrics"]) == (dataset == "LIDC-A")


def test_reference_row_of_the_real_annotations():
    """LIDC-A on the committed index: every reader of every eligible nodule scored once; agreement well above chance."""
    from benchmarks.data.protocols import labelled_folds

    table = labelled_folds(2)
    row = R.reference_row("LIDC-A")
    assert row["details"]["pairs"]["total"] == int(table["n_readers"].sum())
    assert row["details"]["nodules"]["total"] == len(table)
    assert set(row["metrics"]) >= {"accuracy", "macro_f1", "kappa", "recall.benign", "f1.unsure"}
    assert 0.1 < row["metrics"]["kappa"]["mean"] < 0.9 and 33.4 < row["metrics"]["accuracy"]["mean"] < 100.0
    assert row["metrics"]["accuracy"]["n_folds"] == N_FOLDS and not np.isnan(row["metrics"]["accuracy"]["std"])


def test_reference_row_of_another_partition():
    """Repeat 1 scores the same pairs, split into other folds (``labelled_folds(min_readers, repeat)``)."""
    r0, r1 = R.reference_row("LIDC-B", repeat=0), R.reference_row("LIDC-B", repeat=1)
    assert r1["repeat"] == 1 and r1["folds"] == list(range(N_FOLDS))
    assert r1["details"]["nodules"]["total"] == r0["details"]["nodules"]["total"]
    assert r1["details"]["pairs"] != r0["details"]["pairs"]  # the per-fold counts move with the partition


def test_the_command_prints_the_rows_and_refuses_a_bad_repeat(capsys):
    R.main([])
    out = capsys.readouterr().out
    assert out.count("\n| LIDC-") == 3 and "Cohen's kappa" in out
    with pytest.raises(SystemExit) as e:
        R.main(["--repeat", "12"])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: argument --repeat")
