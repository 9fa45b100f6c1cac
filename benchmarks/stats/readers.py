"""The readers' own agreement: a reference row for Tables 1-2, from the annotations alone (no CT, no model).

How far are the methods from how well radiologists agree with each other? LIDC-IDRI's nodules were rated for
malignancy (1-5) by up to four radiologists each, and the protocol's label is the class of the mean rating
(benign < 2.5 <= unsure <= 3.5 < malignant). Here each reader plays the role of a method:

- the reader's class: the same rule applied to that reader's single rating (1-2 benign, 3 unsure, 4-5 malignant);
- the truth: the class of the mean of the *other* readers' ratings of the nodule (leave-one-out consensus, same
  rule), so a reader is never scored against a consensus that contains their own rating;
- the nodules: exactly the test nodules of each fold of the protocol (``benchmarks.data.protocols.fold_table``:
  LIDC-A all three classes, LIDC-B/C the nodules whose label is benign or malignant), of one partition (``repeat``);
  each (nodule, reader) pair counts once, so a nodule read by four radiologists gives four pairs.

Handling (documented in docs/statistics.md):
- a nodule read by a single radiologist has no other reader and gives no pair (only possible with min_readers=1);
- LIDC-B/C test benign vs malignant. A pair whose leave-one-out consensus is unsure (e.g. ratings 2, 3, 4: the
  nodule is benign by the mean of all, 3.5 by the others of the reader who said 2) has no benign/malignant truth and
  is left out, counted in ``details["dropped_unsure_consensus"]``. A reader who rates 3 (unsure) on a binary test
  set gave neither test class: the pair is kept and counts as wrong (the methods must choose), counted in
  ``details["reader_unsure"]``;
- a rating sits on one of five levels: the AUC (binary test sets) uses the rating itself as the score.

Per fold, over its pairs: accuracy, recall and F1 of each test class, macro F1 (percent), Cohen's kappa
(unweighted, over the three classes; Cohen 1960) and, on LIDC-A, the quadratic-weighted kappa (as the methods'
``qwk``); on LIDC-B/C also the accuracy over the pairs where the reader gave a test class (``accuracy_decided``)
and the AUC of the rating. The row holds the mean and sample standard deviation (ddof=1) over folds, in the shape of a table cell
(``benchmarks.tables.build.cell_stats``), marked ``reference``: it is never ranked or compared as a method.

Reference. J. Cohen, A coefficient of agreement for nominal scales, Educ. Psychol. Meas. 20 (1960) 37-46.
"""
from __future__ import annotations

import numpy as np

from benchmarks.data.protocols import CLASS_NAMES, DEFAULT_MIN_READERS, N_FOLDS, class_of, fold_table, get_protocol, labelled_folds
from benchmarks.errors import cli_main

LABEL = "Radiologists (leave-one-out)"
UNSURE = CLASS_NAMES.index("unsure")


def ratings_of(cell: str) -> np.ndarray:
    """``"5;4;3"`` (the index's ``malignancy_readers``) -> the readers' ratings as float64, in annotation order."""
    return np.asarray([float(x) for x in str(cell).split(";") if x != ""], dtype=np.float64)


def loo_pairs(malignancy_readers) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every (nodule, reader) pair of nodules with at least two readers: (row, rating, reader class, consensus class).

    ``row`` indexes ``malignancy_readers`` (one ``;``-joined string per nodule). The leave-one-out mean of reader i
    among R ratings x is ``(sum x - x_i) / (R - 1)``; both classes come from ``protocols.class_of``.
    """
    rows, ratings, loo = [], [], []
    for i, cell in enumerate(malignancy_readers):
        x = ratings_of(cell)  # (R,)
        if x.size < 2:
            continue
        rows.append(np.full(x.size, i))
        ratings.append(x)
        loo.append((x.sum() - x) / (x.size - 1))  # (R,) mean of the others
    if not rows:
        empty = np.zeros(0)
        return empty.astype(int), empty, empty.astype(int), empty.astype(int)
    rating = np.concatenate(ratings)
    return np.concatenate(rows), rating, class_of(rating), class_of(np.concatenate(loo))


def pair_metrics(pred: np.ndarray, truth: np.ndarray, rating: np.ndarray, test_classes) -> dict[str, float]:
    """The row's metrics of one fold's pairs (``pred`` and ``truth`` index :data:`CLASS_NAMES`; ``rating`` 1-5).

    Percent: accuracy, recall.<c>, f1.<c> (c in ``test_classes``; a prediction outside them is wrong for every c),
    macro_f1, and with two test classes accuracy_decided (over the pairs where the reader gave a test class).
    Fractions: kappa (Cohen, unweighted, labels = all three classes), qwk (three test classes), auc (two test
    classes: the rating as the score of malignant).
    """
    from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, recall_score, roc_auc_score  # noqa: PLC0415

    idx = [CLASS_NAMES.index(c) for c in test_classes]
    all3 = list(range(len(CLASS_NAMES)))
    recall = recall_score(truth, pred, labels=idx, average=None, zero_division=0)
    f1 = f1_score(truth, pred, labels=idx, average=None, zero_division=0)
    out = {"accuracy": 100.0 * float(accuracy_score(truth, pred))}
    for c, r, f in zip(test_classes, recall, f1):
        out[f"recall.{c}"] = 100.0 * float(r)
        out[f"f1.{c}"] = 100.0 * float(f)
    out["macro_f1"] = 100.0 * float(np.mean(f1))
    out["kappa"] = float(cohen_kappa_score(truth, pred, labels=all3))
    if len(idx) == 3:
        out["qwk"] = float(cohen_kappa_score(truth, pred, labels=all3, weights="quadratic"))
    if len(idx) == 2:
        decided = np.isin(pred, idx)  # the reader gave a test class (not 3, unsure)
        out["accuracy_decided"] = 100.0 * float((pred[decided] == truth[decided]).mean()) if decided.any() else float("nan")
        if len(set(truth.tolist())) == 2:
            out["auc"] = float(roc_auc_score(truth == idx[1], rating))
    return out


def fold_pairs(test, protocol) -> dict:
    """The scored pairs of one fold's test nodules (``test``: rows of the fold table) under ``protocol``."""
    row, rating, pred, truth = loo_pairs(test["malignancy_readers"].tolist())
    idx = [CLASS_NAMES.index(c) for c in protocol.test_classes]
    keep = np.isin(truth, idx)  # LIDC-B/C: a leave-one-out consensus of unsure is no test class
    single = int((test["n_readers"] < 2).sum())
    return {"row": row[keep], "rating": rating[keep], "pred": pred[keep], "truth": truth[keep],
            "dropped_unsure_consensus": int((~keep).sum()), "single_reader_nodules": single,
            "reader_unsure": int(((pred == UNSURE) & keep & (UNSURE not in idx)).sum())}


def reference_row(dataset: str, min_readers: int = DEFAULT_MIN_READERS, repeat: int = 0, table=None) -> dict:
    """The readers' reference row of ``dataset`` (LIDC-A/B/C), in the shape of a table cell.

    ``{"metrics": {key: {"mean", "std", "seed_std": None, "n", "n_folds", "n_seeds": 0}}, "folds", "seeds": [],
    "interval": {}, "reference": True, "method": "readers", "label", "details"}``: per metric the mean and sample
    standard deviation (ddof=1) over the folds of the per-fold value; ``n`` the number of folds with a value.
    ``details``: pairs and nodules scored, pairs left out (unsure leave-one-out consensus), single-reader nodules,
    binary-test pairs where the reader said unsure, per fold and in total. ``table``: the labelled, folded nodules
    (default: those of ``min_readers`` and ``repeat``).
    """
    protocol = get_protocol(dataset)
    t = labelled_folds(min_readers, repeat) if table is None else table
    per_fold: dict[int, dict[str, float]] = {}
    details = {"pairs": {}, "nodules": {}, "dropped_unsure_consensus": {}, "single_reader_nodules": {}, "reader_unsure": {}}
    for fold in range(N_FOLDS):
        ft = fold_table(dataset, fold, min_readers, table=t)
        p = fold_pairs(ft.test, protocol)
        details["pairs"][fold] = int(p["pred"].size)
        details["nodules"][fold] = int(np.unique(p["row"]).size)
        for k in ("dropped_unsure_consensus", "single_reader_nodules", "reader_unsure"):
            details[k][fold] = p[k]
        if p["pred"].size:
            per_fold[fold] = pair_metrics(p["pred"], p["truth"], p["rating"], protocol.test_classes)
    for k in list(details):
        details[k] = {**details[k], "total": int(sum(details[k].values()))}
    metrics = {}
    for key in sorted({k for m in per_fold.values() for k in m}):
        v = np.asarray([per_fold[f][key] for f in sorted(per_fold) if key in per_fold[f]], dtype=np.float64)
        metrics[key] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"), "seed_std": None,
                        "n": int(v.size), "n_folds": int(v.size), "n_seeds": 0}
    return {"metrics": metrics, "folds": sorted(per_fold), "seeds": [], "interval": {}, "reference": True, "method": "readers",
            "label": LABEL, "dataset": dataset, "min_readers": min_readers, "repeat": repeat, "per_fold": per_fold, "details": details}


def markdown(rows: list[dict]) -> str:
    """The readers' rows as the Markdown table of docs/statistics.md (mean ± s.d. over folds)."""
    def ms(m, k, digits):
        return f"{m[k]['mean']:.{digits}f} ± {m[k]['std']:.{digits}f}" if k in m else "—"

    head = ["Dataset", "Accuracy", "Macro F1", "Cohen's kappa", "Quadratic kappa", "AUC", "Accuracy, reader decided",
            "Pairs", "Nodules", "Pairs left out (unsure consensus)", "Pairs where the reader said 3"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m, det = r["metrics"], r["details"]
        cells = [r["dataset"], ms(m, "accuracy", 1), ms(m, "macro_f1", 1), ms(m, "kappa", 3), ms(m, "qwk", 3), ms(m, "auc", 3),
                 ms(m, "accuracy_decided", 1)] + [str(det[k]["total"]) for k in ("pairs", "nodules", "dropped_unsure_consensus", "reader_unsure")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@cli_main
def main(argv=None) -> None:
    """``python -m benchmarks.stats.readers [--min-readers 2] [--repeat 0]``: the readers' rows of LIDC-A/B/C."""
    from benchmarks.cli import ArgumentParser, int_in  # noqa: PLC0415
    from benchmarks.data.partitions import MAX_REPEATS  # noqa: PLC0415
    from benchmarks.data.protocols import PROTOCOLS  # noqa: PLC0415

    ap = ArgumentParser(prog="python -m benchmarks.stats.readers", description=main.__doc__)
    ap.add_argument("--min-readers", type=int_in(1, 4), default=DEFAULT_MIN_READERS, help="label rule: nodules read by at least this many radiologists")
    ap.add_argument("--repeat", type=int_in(0, MAX_REPEATS - 1), default=0, help="the partition whose test folds are scored")
    args = ap.parse_args(argv)
    print(markdown([reference_row(ds, args.min_readers, args.repeat) for ds in PROTOCOLS]), end="")


if __name__ == "__main__":
    main()
