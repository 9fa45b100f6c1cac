"""An interval for every cell: the patient bootstrap of accuracy and AUC, within folds.

See ``benchmarks/stats/__init__.py`` for the whole method and its references.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.metrics import decide
from benchmarks.stats.paired import NAN

log = logging.getLogger(__name__)

#: A nodule id starts with its patient id, ``LIDC-IDRI-dddd``: 14 characters.
PATIENT_ID_LENGTH = 14
#: The resamples a command accepts (``--bootstrap``; 0 turns the intervals off). Below 200 a 95% percentile interval
#: rests on a handful of replicates per tail (with 1 it is a single replicate, which can exclude its own estimate);
#: Efron & Tibshirani (1993, ch. 19) ask for 1000 or more. Above 100,000 the interval no longer moves at the shown
#: precision while the (resamples, patients) draws alone take ~1 GB per fold.
MIN_BOOT, MAX_BOOT = 200, 100_000
#: Replicates evaluated at once: the (chunk, patients) counts and products stay tens of MB whatever ``n_boot`` is.
CHUNK = 4096

# ------------------------------------------------------------------------------------------------ 3. bootstrap
def patient_of(nodule_id: str) -> str:
    """The patient of a nodule: ``"LIDC-IDRI-0001-s0012-n0"`` -> ``"LIDC-IDRI-0001"`` (the first 14 characters)."""
    if len(nodule_id) < PATIENT_ID_LENGTH:
        raise ValueError(f"not a nodule id: {nodule_id!r}")
    return nodule_id[:PATIENT_ID_LENGTH]


def prediction_rows(records: Iterable[Mapping]) -> list[dict]:
    """The test predictions of run records as rows {fold, seed, id, patient, label, probs}, one per nodule and run."""
    return [{"fold": r["fold"], "seed": r["seed"], "id": p["id"], "patient": patient_of(p["id"]), "label": int(p["label"]),
             "probs": p["probs"]} for r in records for p in r["predictions"]]


def _counts(idx: np.ndarray, n_patients: int) -> np.ndarray:
    """(B, P) draws of patient indices -> (B, P) float64 counts: how often each patient is in each replicate."""
    b = idx.shape[0]
    flat = (idx + n_patients * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n_patients).reshape(b, n_patients).astype(np.float64)


class Accuracy:
    """Accuracy with the decision rule of ``benchmarks.metrics`` (``decide``: argmax, or median, over the test
    classes): the fraction of nodules whose predicted class is their label. Callable on (labels, probs)."""

    name = "accuracy"

    def __init__(self, class_names: Sequence[str], test_class_names: Sequence[str], rule: str = "argmax"):
        self.class_names, self.test_class_names, self.rule = list(class_names), list(test_class_names), rule

    def correct(self, labels, probs) -> np.ndarray:
        """(N,) 1.0 where the decision equals the label, else 0.0."""
        pred = decide(np.asarray(probs, dtype=np.float64), self.class_names, self.test_class_names, self.rule)
        return (pred == np.asarray(labels)).astype(np.float64)

    def __call__(self, labels, probs) -> float:
        c = self.correct(labels, probs)
        return float(c.mean()) if c.size else NAN

    def replicates(self, counts: np.ndarray, patient: np.ndarray, labels, probs) -> np.ndarray:
        """(B,) accuracy of each replicate, where replicate b holds patient q ``counts[b, q]`` times.

        A patient's nodules enter together: ``sum_q w_bq c_q / sum_q w_bq n_q`` with c_q the correct nodules and n_q
        the nodules of patient q.
        """
        n_p = counts.shape[1]
        c = np.bincount(patient, weights=self.correct(labels, probs), minlength=n_p)
        m = np.bincount(patient, minlength=n_p).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (counts @ c) / (counts @ m)


class AUC:
    """The AUC of ``benchmarks.metrics`` on a binary test set: the ranking of p(malignant) - p(benign) against
    "label is the malignant class" (ties count one half, as in ``sklearn.metrics.roc_auc_score``); NaN when the
    labels hold one class only. Callable on (labels, probs)."""

    name = "auc"

    def __init__(self, class_names: Sequence[str], test_class_names: Sequence[str]):
        if len(test_class_names) != 2:
            raise ValueError(f"AUC needs a binary test set, not {list(test_class_names)}")
        self.benign, self.malignant = sorted(list(class_names).index(c) for c in test_class_names)

    def _score(self, labels, probs) -> tuple[np.ndarray, np.ndarray]:
        p = np.asarray(probs, dtype=np.float64)
        return p[:, self.malignant] - p[:, self.benign], np.asarray(labels) == self.malignant

    def __call__(self, labels, probs) -> float:
        from sklearn.metrics import roc_auc_score  # noqa: PLC0415

        score, pos = self._score(labels, probs)
        return float(roc_auc_score(pos, score)) if 0 < pos.sum() < pos.size else NAN

    def replicates(self, counts: np.ndarray, patient: np.ndarray, labels, probs) -> np.ndarray:
        """(B,) AUC of each replicate (NaN where a replicate holds one class only).

        Mann-Whitney form: ``AUC = sum_{i pos, j neg} w_i w_j k_ij / (W_pos W_neg)``, k_ij = 1 if s_i > s_j, 1/2 if
        equal, with w the multiplicity of each nodule (its patient's count). Summed per patient pair first,
        ``K[q, r] = sum over positive nodules of q and negative nodules of r of k_ij``, the numerator is
        ``w_b^T K w_b``: one (B, P+) x (P+, P-) product per fold and seed (P+/P-: patients with a positive/negative nodule).
        """
        score, pos = self._score(labels, probs)
        sp, sn = score[pos], score[~pos]
        k = (sp[:, None] > sn[None, :]).astype(np.float64) + 0.5 * (sp[:, None] == sn[None, :])
        # Only patients with a positive (rows) or a negative (columns) nodule enter K: a smaller product.
        qp, ip = np.unique(patient[pos], return_inverse=True)
        qn, in_ = np.unique(patient[~pos], return_inverse=True)
        a = np.zeros((qp.size, sp.size))
        a[ip, np.arange(sp.size)] = 1.0
        b = np.zeros((qn.size, sn.size))
        b[in_, np.arange(sn.size)] = 1.0
        kpat = a @ k @ b.T  # (patients with a positive, patients with a negative)
        wp, wn = counts[:, qp], counts[:, qn]
        num = np.einsum("bq,bq->b", wp @ kpat, wn)
        den = (wp @ a.sum(1)) * (wn @ b.sum(1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), NAN)


@dataclass(frozen=True)
class BootstrapResult:
    """A percentile bootstrap interval (``patient_bootstrap``)."""

    estimate: float  # the statistic on the data: mean over folds of the seed-mean per-fold statistic
    low: float
    high: float
    alpha: float
    n_boot: int
    n_valid: int  # replicates with a defined value (the percentiles are over these)
    seed: int
    replicates: np.ndarray = field(repr=False)  # (n_boot,), NaN where undefined


def _fold_tables(rows: Iterable[Mapping]) -> dict[Any, tuple[list[str], dict[Any, tuple[np.ndarray, np.ndarray, np.ndarray]]]]:
    """fold -> (sorted patients of the fold, seed -> (patient index (N,), labels (N,), probs (N, K)))."""
    raw: dict[Any, dict[Any, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        patient = r["patient"] if "patient" in r else patient_of(r["id"])
        raw[r["fold"]][r["seed"]].append((patient, int(r["label"]), r["probs"]))
    out = {}
    for fold in sorted(raw):
        patients = sorted({p for seed_rows in raw[fold].values() for p, _, _ in seed_rows})
        where = {p: i for i, p in enumerate(patients)}
        per_seed = {}
        for seed in sorted(raw[fold]):
            sr = raw[fold][seed]
            per_seed[seed] = (np.array([where[p] for p, _, _ in sr], dtype=np.int64), np.array([lab for _, lab, _ in sr], dtype=np.int64),
                              np.array([pr for _, _, pr in sr], dtype=np.float64))
        out[fold] = (patients, per_seed)
    return out


def patient_bootstrap(rows: Iterable[Mapping], statistic: Accuracy | AUC | Callable[[np.ndarray, np.ndarray], float], n_boot: int = 2000,
                      seed: int = 0, alpha: float = 0.05) -> BootstrapResult:
    """(1 - alpha) percentile bootstrap interval of a cell's metric, resampling patients within folds.

    ``rows``: one per nodule and run, {fold, seed, patient (or id), label, probs} (``prediction_rows``). The number
    estimated is the one the table shows, ``T = mean_f mean_s stat(fold f, seed s)``. Replicate b redraws, in every
    fold independently (the fold is the stratum: each fold's test set is its own sample of patients), as many
    patients as the fold holds, with replacement; a drawn patient brings all its nodules (they are not independent),
    and the same draw serves every seed of the fold (the seeds share the test set). ``T_b`` is T on the replicate;
    the interval is the ``alpha/2`` and ``1 - alpha/2`` quantiles of the defined ``T_b`` (``numpy.quantile``, linear).

    Undefined replicates: a replicate in which some fold's resample holds one class only has no AUC for that fold, so
    its ``T_b`` is NaN and it is dropped (``n_valid`` counts the rest; a warning is logged when any is dropped):
    averaging the remaining folds would estimate another number.

    Draw order (what makes it reproducible, and reproducible by a plain loop): ``rng = numpy.random.default_rng(seed)``;
    for each fold in sorted order, one call ``rng.integers(0, P_f, size=(n_boot, P_f))``, whose row b is replicate b's
    draws; P_f is the number of the fold's patients (over all its seeds) and a draw j indexes them sorted by id.

    ``statistic``: ``Accuracy(...)`` or ``AUC(...)`` (vectorised: all replicates of a fold and seed at once), or any
    callable ``f(labels, probs) -> float``, then evaluated once per replicate on the explicitly resampled rows (the
    drawn patients' nodules, in draw order; slow, for other metrics).
    """
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must lie in (0, 1)")
    tables = _fold_tables(rows)
    if not tables:
        raise ValueError("patient_bootstrap: no rows")
    rng = np.random.default_rng(seed)
    fast = hasattr(statistic, "replicates")
    fold_values = np.empty((len(tables), n_boot), dtype=np.float64)
    fold_estimates = np.empty(len(tables), dtype=np.float64)
    for i, (patients, per_seed) in enumerate(tables.values()):
        n_p = len(patients)
        idx = rng.integers(0, n_p, size=(n_boot, n_p))  # (n_boot, P_f): one call, the documented draw order
        seed_values = np.empty((len(per_seed), n_boot), dtype=np.float64)
        seed_estimates = np.empty(len(per_seed), dtype=np.float64)
        for j, (patient, labels, probs) in enumerate(per_seed.values()):
            if fast:  # the estimate through the same code, every patient once (equal to sklearn's to rounding, tested)
                seed_estimates[j] = statistic.replicates(np.ones((1, n_p)), patient, labels, probs)[0]
                for lo in range(0, n_boot, CHUNK):  # (CHUNK, P_f) counts at a time: memory bounded by the chunk, not n_boot
                    seed_values[j, lo:lo + CHUNK] = statistic.replicates(_counts(idx[lo:lo + CHUNK], n_p), patient, labels, probs)
            else:
                seed_estimates[j] = statistic(labels, probs)
                members = [np.flatnonzero(patient == q) for q in range(n_p)]  # each patient's rows
                for b in range(n_boot):
                    take = np.concatenate([members[q] for q in idx[b]])
                    seed_values[j, b] = statistic(labels[take], probs[take])
        fold_values[i] = seed_values.mean(0)
        fold_estimates[i] = seed_estimates.mean()
    reps = fold_values.mean(0)
    valid = reps[~np.isnan(reps)]
    if valid.size < n_boot:
        log.warning("patient bootstrap: %d of %d replicates undefined (a resampled fold with one class) and dropped", n_boot - valid.size, n_boot)
    low, high = (np.quantile(valid, [alpha / 2.0, 1.0 - alpha / 2.0]) if valid.size else (NAN, NAN))
    return BootstrapResult(float(fold_estimates.mean()), float(low), float(high), alpha, n_boot, int(valid.size), seed, reps)


def cell_intervals(records: Sequence[Mapping], n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict[str, BootstrapResult]:
    """The bootstrap intervals of one cell (one method and dataset, all its folds and seeds): accuracy, and AUC on a
    binary test set, from the records' predictions, with their class names and decision rule. Both statistics use
    the same resamples (same seed, same draws)."""
    if not records:
        raise ValueError("cell_intervals: no records")
    first = records[0]
    class_names, test_class_names = first["data"]["class_names"], first["data"]["test_class_names"]
    rule = first.get("decision_rule", "argmax")
    for r in records:
        if (r["data"]["class_names"], r["data"]["test_class_names"], r.get("decision_rule", "argmax")) != (class_names, test_class_names, rule):
            raise ValueError("cell_intervals: the records of a cell disagree on class names or decision rule")
    rows = prediction_rows(records)
    out = {"accuracy": patient_bootstrap(rows, Accuracy(class_names, test_class_names, rule), n_boot, seed, alpha)}
    if len(test_class_names) == 2:
        out["auc"] = patient_bootstrap(rows, AUC(class_names, test_class_names), n_boot, seed, alpha)
    return out


