"""Scores against the pathology truth: does a method find the patients whose diagnosis was malignant?

The suite's labels are the radiologists' malignancy impressions. For 130 patients of LIDC-IDRI a diagnosis was
established otherwise (``benchmarks.data.pathology``: biopsy, resection, two years of stability, progression; 27
more are "unknown"), per patient: its nodules cannot be told apart in TCIA's sheet. So the evaluation is per patient:

- **the patients**: those with a known diagnosis (benign; primary lung cancer or metastatic: malignant) that have at
  least one nodule among the test predictions of the run set (its five test folds pooled; folds are
  patient-grouped, so each patient is scored by the one model that never saw it);
- **the score**: the patient's highest predicted malignancy over its test nodules, a nodule's malignancy being
  ``p(malignant) - p(benign)``, the score of the tables' AUC (``benchmarks.metrics``); with several seeds each
  nodule's probabilities are averaged over the seeds first; records of repeated partitions other than 0 are not
  used (every patient would count once per partition);
- **the decision**: malignant when the method decides malignant (its own rule, ``benchmarks.metrics.decide``) for
  at least one of the patient's test nodules;
- **the numbers**: AUC of the score (Mann-Whitney, ties counting one half), sensitivity and specificity of the
  decision, each with a 95% percentile patient-bootstrap interval: within each test fold the patients are drawn with
  replacement (``default_rng(seed)``, then for each fold in sorted order one call ``integers(0, P_f, size=(n_boot,
  P_f))``, patients sorted by id), a replicate without both classes gives no AUC (counted in ``n_valid``); and the
  AUC of each malignant kind against the benign patients alone (primary lung cancer vs benign, metastatic vs benign)
  where both groups hold at least :data:`MIN_GROUP` patients.

Reference rows, scored the same way on the same nodules: the radiologists (:func:`readers_rows`: a nodule's score
is the mean of its readers' malignancy ratings, the decision the protocol's label rule, mean > 3.5) and the
attribute-only model (:func:`attribute_rows`, ``benchmarks.stats.attributes``). What this can and cannot show:
docs/statistics.md, "Against pathology".
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np

from benchmarks.data.pathology import known
from benchmarks.data.protocols import CLASS_NAMES, DEFAULT_MIN_READERS, MALIGNANT_ABOVE, N_FOLDS, get_protocol, labelled_folds
from benchmarks.errors import cli_main
from benchmarks.metrics import decide
from benchmarks.stats.attributes import fold_predictions
from benchmarks.stats.bootstrap import patient_of

MIN_GROUP = 10
N_BOOT = 2000
MALIGNANT_KINDS = {2: "primary", 3: "metastatic"}


def auc(y: np.ndarray, s: np.ndarray) -> float:
    """AUC of scores ``s`` for labels ``y`` (1 positive): the Mann-Whitney probability that a positive outscores a
    negative, ties one half; NaN without both classes."""
    y, s = np.asarray(y, bool), np.asarray(s, np.float64)
    pos, neg = s[y], s[~y]
    if not pos.size or not neg.size:
        return float("nan")
    # U counted over the (n_pos, n_neg) pairs: the bootstrap calls this ~250,000 times for a table of a
    # hundred patients, where ranking (scipy's rankdata) cost 2/3 of the command. U is a whole or half
    # number either way, so the quotient is the same float as the rank-sum formula's.
    gt = np.count_nonzero(pos[:, None] > neg[None, :])
    eq = np.count_nonzero(pos[:, None] == neg[None, :])
    return float((gt + 0.5 * eq) / (pos.size * neg.size))


def patients(nodules: Iterable[Mapping], truth: Mapping[str, int]) -> dict:
    """Per patient with a known diagnosis: {patient: {"score", "called", "fold", "diagnosis"}} from nodule rows
    {"id", "fold", "score", "called"} (the patient's highest score; called when any nodule is)."""
    out: dict[str, dict] = {}
    for n in nodules:
        p = patient_of(n["id"])
        if p not in truth:
            continue
        cur = out.setdefault(p, {"score": -np.inf, "called": False, "fold": n["fold"], "diagnosis": int(truth[p])})
        if cur["fold"] != n["fold"]:
            raise ValueError(f"patient {p} is in test folds {cur['fold']} and {n['fold']}: the folds are not patient-grouped")
        cur["score"] = max(cur["score"], float(n["score"]))
        cur["called"] = cur["called"] or bool(n["called"])
    return out


def _interval(values: list[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if np.isfinite(x)])
    return (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) if v.size else (float("nan"), float("nan"))


def evaluate(per_patient: Mapping[str, dict], n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """AUC, sensitivity, specificity (and the AUC of each malignant kind against benign) of patient-level scores and
    decisions, each with its patient-bootstrap interval within folds (see the module docstring)."""
    ids = sorted(per_patient)
    dx = np.array([per_patient[p]["diagnosis"] for p in ids])
    y = dx >= 2  # (P,) malignant
    s = np.array([per_patient[p]["score"] for p in ids])
    c = np.array([per_patient[p]["called"] for p in ids])
    fold = np.array([per_patient[p]["fold"] for p in ids])

    def stats(idx: np.ndarray) -> dict:
        yy, ss, cc, dd = y[idx], s[idx], c[idx], dx[idx]
        out = {"auc": auc(yy, ss), "sensitivity": float(cc[yy].mean()) if yy.any() else float("nan"),
               "specificity": float((~cc[~yy]).mean()) if (~yy).any() else float("nan")}
        for code, kind in MALIGNANT_KINDS.items():
            keep = (dd == code) | (dd == 1)
            out[f"auc_{kind}"] = auc(yy[keep], ss[keep])
        return out

    point = stats(np.arange(len(ids)))
    rng = np.random.default_rng(seed)
    draws = [np.flatnonzero(fold == f)[rng.integers(0, int((fold == f).sum()), size=(n_boot, int((fold == f).sum())))]
             for f in sorted(set(fold.tolist()))]  # per fold (B, P_f) indices into ids
    reps = [stats(np.concatenate([d[b] for d in draws])) for b in range(n_boot)] if n_boot and len(ids) else []
    counts = {"patients": len(ids), "malignant": int(y.sum()), "benign": int((~y).sum()),
              **{kind: int((dx == code).sum()) for code, kind in MALIGNANT_KINDS.items()}}
    out = {"n": counts}
    for k, v in point.items():
        kind = k[4:] if k.startswith("auc_") else None
        if kind and min(counts[kind], counts["benign"]) < MIN_GROUP:
            out[k] = None  # too few patients of the kind or benign for an AUC worth printing
            continue
        lo, hi = _interval([r[k] for r in reps])
        out[k] = {"value": v, "low": lo, "high": hi, "n_valid": int(sum(np.isfinite(r[k]) for r in reps))}
    return out


def record_nodules(records: list[dict]) -> list[dict]:
    """Nodule rows {"id", "fold", "score", "called"} of one method's run set on one dataset: repeat 0 only, each
    nodule's probabilities averaged over seeds, decided by the records' own rule."""
    probs: dict[tuple, list] = defaultdict(list)
    meta = {}
    for r in records:
        if r.get("repeat", 0):
            continue
        d = r["data"]
        for p in r["predictions"]:
            probs[(r["fold"], p["id"])].append(p["probs"])
        meta = (d["class_names"], d["test_class_names"], r.get("decision_rule", "argmax"))
    if not probs:
        return []
    classes, test_classes, rule = meta
    keys = sorted(probs)
    pr = np.array([np.mean(probs[k], axis=0) for k in keys])  # (N, K) seed means
    mal, ben = classes.index("malignant"), classes.index("benign")
    called = decide(pr, classes, test_classes, rule) == mal
    return [{"fold": f, "id": i, "score": float(pr[j, mal] - pr[j, ben]), "called": bool(called[j])} for j, (f, i) in enumerate(keys)]


def _index_rows(dataset: str, nodule_ids: set[str], min_readers: int):
    """The labelled, folded index rows of ``dataset``'s test folds (repeat 0) whose ids are in ``nodule_ids``."""
    p = get_protocol(dataset)
    t = labelled_folds(min_readers)
    t = t[t["label"].isin([CLASS_NAMES.index(c) for c in p.test_classes])]
    return t[t["nodule_id"].isin(nodule_ids)]


def readers_rows(dataset: str, nodule_ids: set[str], min_readers: int = DEFAULT_MIN_READERS) -> list[dict]:
    """The radiologists as a reference: each test nodule's mean malignancy rating as its score, malignant when it is
    above 3.5 (the protocol's label rule)."""
    t = _index_rows(dataset, nodule_ids, min_readers)
    return [{"fold": int(f), "id": i, "score": float(m), "called": bool(m > MALIGNANT_ABOVE)}
            for i, f, m in zip(t["nodule_id"], t["fold"], t["malignancy"])]


def attribute_rows(dataset: str, nodule_ids: set[str], min_readers: int = DEFAULT_MIN_READERS) -> list[dict]:
    """The attribute-only model as a reference (``benchmarks.stats.attributes``), on the same nodules."""
    table = labelled_folds(min_readers)
    p = get_protocol(dataset)
    out = []
    for fold in range(N_FOLDS):
        test, proba, classes = fold_predictions(dataset, fold, min_readers, table)
        called = decide(proba, classes, p.test_classes) == classes.index("malignant")
        score = proba[:, classes.index("malignant")] - proba[:, classes.index("benign")]
        out += [{"fold": fold, "id": i, "score": float(sc), "called": bool(cl)}
                for i, sc, cl in zip(test["nodule_id"], score, called) if i in nodule_ids]
    return out


def readers_against_pathology(min_readers: int = DEFAULT_MIN_READERS, n_boot: int = N_BOOT) -> dict:
    """The radiologists against pathology on every test nodule of LIDC-A (all the protocol's nodules, repeat 0):
    the number docs/statistics.md prints."""
    ids = set(labelled_folds(min_readers)["nodule_id"])
    return evaluate(patients(readers_rows("LIDC-A", ids, min_readers), known().to_dict()), n_boot)


@cli_main
def main(argv=None) -> None:
    """``python -m benchmarks.stats.pathology [--min-readers 2]``: the radiologists against pathology (every test
    nodule of the protocol, repeat 0), the number docs/statistics.md prints."""
    from benchmarks.cli import ArgumentParser, int_in  # noqa: PLC0415

    ap = ArgumentParser(prog="python -m benchmarks.stats.pathology", description=main.__doc__)
    ap.add_argument("--min-readers", type=int_in(1, 4), default=DEFAULT_MIN_READERS, help="label rule: nodules read by at least this many radiologists")
    ap.add_argument("--bootstrap", type=int_in(200, 100_000), default=N_BOOT, help="patient-bootstrap resamples")
    args = ap.parse_args(argv)
    r = readers_against_pathology(args.min_readers, args.bootstrap)
    n = r["n"]
    print(f"radiologists (a nodule's mean rating; a patient's highest) against pathology, >= {args.min_readers} readers: "
          f"{n['patients']} patients ({n['malignant']} malignant: {n['primary']} primary, {n['metastatic']} metastatic; {n['benign']} benign)")
    for k in ("auc", "sensitivity", "specificity", "auc_primary", "auc_metastatic"):
        v = r[k]
        print(f"  {k}: " + ("too few patients" if v is None else f"{v['value']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"))


if __name__ == "__main__":
    main()
