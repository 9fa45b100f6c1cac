"""Simulated benchmarks for the calibration of the tables' tests: a cheap learner run through the whole protocol.

The learner is multinomial logistic regression on the readers' attribute scores of the nodule index
(``benchmarks/data/nodules.csv``: the mean over readers of each of the paper's attributes; no CT), standardised with
the training split's mean and standard deviation, trained by plain minibatch SGD from a random start: ``steps``
steps of ``batch`` nodules drawn with replacement, learning rate ``lr``, weights started from N(0, ``init_sd``^2).
It stops long before convergence on purpose, so that its seed (the start and the minibatches) moves its test accuracy
(measured on 60 benchmarks, 2-core CPU, 2026-12-05: a seed standard deviation of 0.79, 0.68 and 0.65 points per fold
on LIDC-A, -B and -C, beside a spread of about 2 points over folds). Many copies train at once as one (M, d, K) weight array (M models, d attributes, K training classes).

Three learners (``ROLES``), all of the same code:
  A    the attributes of :data:`BASE` (the paper's eight minus lobulation), seeds s;
  A2   the same learner as A with other seeds (the null: two copies of one method that differ only in seed);
  B    A plus lobulation (:data:`EXTRA`): a small real advantage (measured over 1,000 benchmarks: +0.8, +1.3 and +0.7
       points of accuracy on LIDC-A, -B and -C).
  N1   the attributes of A plus a noisy copy of lobulation, ``lobulation + e1``, and
  N2   the same with ``e2``: e1 and e2 are independent N(0, (NOISE_SD sd(lobulation))^2) per nodule, drawn afresh for
       every simulated benchmark and kept across its partitions, folds and seeds. N1 and N2 are equal in expectation
       over benchmarks (exchangeable), yet on any one benchmark one of them is luckier on its nodules, consistently
       over folds and partitions: the data-sampling variance of Bouckaert & Frank's (2004) simulated data sets, which
       two copies of one learner (A, A2) never show.
A learner with fewer attributes is the same (M, d, K) array with the left-out attribute's column zeroed, so that
one batch trains all five; the noise enters as a per-model shift of the lobulation column.

A simulated benchmark draws ``R`` distinct partitions from the suite's pool (repeat 0 = the committed folds, repeats
1.. = the committed repeated partitions, ``benchmarks.data.protocols.labelled_folds``), or, with ``fixed=True``, takes
partitions 0..R-1 in that order, the partitions the tables use (``--repeats R``): every benchmark then shares its
partitions, and what varies between benchmarks is the seeds and the noise of N1 and N2 only. It trains, for each
partition, test fold and learner, ``S`` fresh seeds; LIDC-A and LIDC-B share their training split (all three
classes), so one trained model gives both (LIDC-B decides between benign and malignant by
``benchmarks.metrics.decide``, the tables' rule); LIDC-C trains on benign and malignant only. The result is the
test accuracy (percent) of every (benchmark, learner, dataset, partition slot, fold, seed).

Randomness: ``numpy.random.SeedSequence(seed)`` spawns one generator for the draw of partitions and one per
(partition, fold, training split); a generator draws the starts of all models of its batch, then their minibatch
indices step by step. The same arguments give the same accuracies; a model's numbers depend on its batch.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

from benchmarks.data.index import ATTRIBUTES
from benchmarks.data.protocols import CLASS_NAMES, N_FOLDS, PROTOCOLS, fold_table, labelled_folds
from benchmarks.errors import UserError
from benchmarks.metrics import decide

log = logging.getLogger(__name__)

EXTRA = "lobulation"
BASE = tuple(a for a in ATTRIBUTES if a != EXTRA)
FEATURES = (*BASE, EXTRA)  # column order of the feature matrix
ROLES = ("A", "A2", "B", "N1", "N2")
NOISE_SD = 1.0  # N1/N2: the noise on their copy of lobulation, in standard deviations of lobulation
DATASETS = tuple(PROTOCOLS)
TRAIN_SPLITS = {"3-class": ("LIDC-A", "LIDC-B"), "2-class": ("LIDC-C",)}  # datasets sharing a training split
CHUNK = 4096  # models per array: (CHUNK, batch, d) float32 gathers stay small


@dataclass(frozen=True)
class Learner:
    """The cheap learner's schedule (see the module docstring)."""

    steps: int = 100
    batch: int = 32
    lr: float = 0.3
    init_sd: float = 0.1


def sgd_softmax(X: np.ndarray, y: np.ndarray, K: int, mask: np.ndarray, rng: np.random.Generator, learner: Learner,
                shift: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train ``M = len(mask)`` softmax regressions at once by minibatch SGD on the cross-entropy.

    X: (N, d) standardised attributes; y: (N,) class indices 0..K-1; mask: (M, d) bool, the attributes each model
    sees; shift: (M, N) or None, added to the last attribute of model m's copy of X. Returns W (M, d, K) and
    b (M, 1, K), float32. The gradient of the mean cross-entropy of a batch is
    ``X_b^T (softmax(X_b W + b) - onehot(y_b)) / batch``.
    """
    M, d = mask.shape
    Xf = np.concatenate([np.ones((len(X), 1)), X], 1).astype(np.float32)  # (N, 1 + d): the bias as column 0
    onehot = np.eye(K, dtype=np.float32)[y]  # (N, K)
    m = np.concatenate([np.ones((M, 1), bool), mask], 1).astype(np.float32)[:, :, None]  # (M, 1 + d, 1)
    W = rng.normal(0.0, learner.init_sd, (M, 1 + d, K)).astype(np.float32) * m
    W[:, 0] = 0.0  # the bias starts at 0
    step = np.float32(learner.lr / learner.batch)
    for _ in range(learner.steps):
        idx = rng.integers(0, len(y), (M, learner.batch))  # (M, B) each model its own minibatch
        Xb = Xf[idx]  # (M, B, 1 + d)
        if shift is not None:
            Xb[:, :, -1] += np.take_along_axis(shift, idx, 1)  # (M, B) each model's own copy of the last attribute
        z = Xb @ W  # (M, B, K); a masked attribute's weight is 0 and stays 0 (its gradient is masked below)
        # softmax over the K classes by slices: numpy's reductions over a short last axis are ~10x slower
        cols = [z[..., k] for k in range(K)]  # K x (M, B)
        zmax = functools.reduce(np.maximum, cols)
        e = np.exp(z - zmax[..., None])
        p = e / functools.reduce(np.add, [e[..., k] for k in range(K)])[..., None]
        g = (p - onehot[idx]) * step  # (M, B, K)
        W -= (Xb.transpose(0, 2, 1) @ g) * m
    return W[:, 1:], W[:, :1]


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    return [(a - mu) / sd for a in (train, *others)]


def _accuracy(W, b, X: np.ndarray, labels: np.ndarray, train_classes, test_classes, shift: np.ndarray) -> np.ndarray:
    """(M,) test accuracy in percent of every model, deciding as the tables do (``metrics.decide``); ``shift``
    (M, N) as in ``sgd_softmax``."""
    Xm = np.repeat(X.astype(np.float32)[None], len(W), 0)  # (M, N, d)
    Xm[:, :, -1] += shift
    z = Xm @ W + b  # (M, N, K)
    z -= z.max(-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(-1, keepdims=True)
    M, N, K = p.shape
    pred = decide(p.reshape(M * N, K), train_classes, test_classes).reshape(M, N)  # indices into train_classes
    truth = np.array([list(train_classes).index(CLASS_NAMES[c]) for c in labels])  # (N,)
    return 100.0 * (pred == truth[None, :]).mean(1)


@dataclass
class Simulation:
    """Accuracies of ``n_sims`` simulated benchmarks and the split sizes the corrected t needs."""

    acc: np.ndarray  # (n_sims, roles, datasets, R, folds, seeds) test accuracy, percent
    partitions: np.ndarray  # (n_sims, R) the partition (repeat) in each slot
    n_train: np.ndarray  # (pool, datasets, folds) training nodules
    n_test: np.ndarray  # (pool, datasets, folds) test nodules
    datasets: tuple[str, ...]
    learner: Learner
    fixed: bool = False  # partitions 0..R-1 in every benchmark (the tables' partitions), not a random draw


def pool_tables(min_readers: int, pool: int) -> list:
    """The labelled nodules with the folds of partitions 0..pool-1; a UserError when the index lacks an attribute."""
    out = []
    for r in range(pool):
        t = labelled_folds(min_readers, r)
        missing = [c for c in FEATURES if c not in t.columns]
        if missing:
            raise UserError(f"the nodule index lacks the attributes {', '.join(missing)}; run `python -m benchmarks.prepare index`")
        out.append(t)
    return out


def simulate(n_sims: int, n_seeds: int = 2, n_repeats: int = 5, pool: int = 10, datasets=DATASETS, min_readers: int = 2,
             seed: int = 0, learner: Learner = Learner(), tables=None, fixed: bool = False) -> Simulation:
    """Run ``n_sims`` simulated benchmarks of ``n_repeats`` partitions x 5 folds x ``n_seeds`` seeds per learner.

    ``tables``: the partitions' labelled tables (default: ``pool_tables(min_readers, pool)``). ``fixed``: every
    benchmark uses partitions 0..n_repeats-1 (the tables' partitions) instead of ``n_repeats`` drawn from the pool; the
    draw is made all the same, so that the other random streams do not depend on the mode.
    """
    if not 1 <= n_repeats <= pool:
        raise ValueError(f"n_repeats ({n_repeats}) must lie in 1..pool ({pool})")
    tables = pool_tables(min_readers, pool) if tables is None else tables
    datasets = tuple(datasets)
    ss = np.random.SeedSequence(seed)
    draw_ss, train_ss, noise_ss = ss.spawn(3)
    draw = np.random.default_rng(draw_ss)
    parts = np.stack([draw.permutation(pool)[:n_repeats] for _ in range(n_sims)]) if n_sims else np.zeros((0, n_repeats), int)
    if fixed:
        parts = np.broadcast_to(np.arange(n_repeats), (n_sims, n_repeats)).copy()
    ids = tables[0]["nodule_id"].to_numpy()
    pos_of = dict(zip(ids, range(len(ids))))  # nodule -> column of the noise
    lob_sd = float(tables[0][EXTRA].std(ddof=0))
    # (n_sims, 2, nodules): e1 and e2 of N1 and N2, in standard deviations of lobulation over all nodules
    noise = np.random.default_rng(noise_ss).standard_normal((n_sims, 2, len(ids)), dtype=np.float32) * np.float32(NOISE_SD)
    noisy = [ROLES.index("N1"), ROLES.index("N2")]
    acc = np.full((n_sims, len(ROLES), len(datasets), n_repeats, N_FOLDS, n_seeds), np.nan)
    n_train = np.zeros((pool, len(datasets), N_FOLDS))
    n_test = np.zeros((pool, len(datasets), N_FOLDS))
    base_mask = np.array([c in BASE for c in FEATURES])
    role_mask = {"A": base_mask, "A2": base_mask, "B": np.ones(len(FEATURES), bool), "N1": np.ones(len(FEATURES), bool),
                 "N2": np.ones(len(FEATURES), bool)}
    gens = iter(np.random.default_rng(s) for s in train_ss.spawn(pool * N_FOLDS * len(TRAIN_SPLITS)))
    for p in range(pool):
        sims, slots = np.nonzero(parts == p)  # the benchmarks that use partition p, and in which slot
        for fold in range(N_FOLDS):
            for split, split_ds in TRAIN_SPLITS.items():
                rng = next(gens)  # drawn even when unused, so a partition's streams do not depend on the others
                use = [d for d in split_ds if d in datasets]
                if not use:
                    continue
                fts = {d: fold_table(d, fold, min_readers, table=tables[p]) for d in use}
                first = fts[use[0]]
                train_classes = first.protocol.train_classes
                for d, ft in fts.items():
                    n_train[p, datasets.index(d), fold], n_test[p, datasets.index(d), fold] = len(ft.train), len(ft.test)
                if sims.size == 0:
                    continue
                X = first.train[list(FEATURES)].to_numpy(np.float64)
                y = np.array([list(train_classes).index(CLASS_NAMES[c]) for c in first.train["label"]])
                tests = {d: ft.test[list(FEATURES)].to_numpy(np.float64) for d, ft in fts.items()}
                Xs, *Ts = _standardise(X, *tests.values())
                scale = np.float32(lob_sd / max(float(X[:, -1].std()), 1e-12))  # noise in the training split's standard units
                # models: (benchmark k, role, seed) in C order, k over the benchmarks that use p
                masks = np.stack([role_mask[r] for r in ROLES])  # (roles, d)
                mask = np.broadcast_to(masks[None, :, None, :], (sims.size, len(ROLES), n_seeds, len(FEATURES))).reshape(-1, len(FEATURES))

                def shift_of(frame):  # (models, len(frame)) the noise each model adds to lobulation
                    cols = frame["nodule_id"].map(pos_of).to_numpy()
                    sh = np.zeros((sims.size, len(ROLES), n_seeds, len(cols)), np.float32)
                    sh[:, noisy] = scale * noise[sims][:, :, None, cols]  # (k, 2, 1, N) over the seeds
                    return sh.reshape(-1, len(cols))

                shift_train = shift_of(first.train)
                shift_test = {d: shift_of(ft.test) for d, ft in fts.items()}
                out = {d: np.empty(len(mask)) for d in use}
                for lo in range(0, len(mask), CHUNK):
                    hi = lo + CHUNK
                    W, b = sgd_softmax(Xs, y, len(train_classes), mask[lo:hi], rng, learner, shift_train[lo:hi])
                    for (d, ft), T in zip(fts.items(), Ts):
                        out[d][lo:hi] = _accuracy(W, b, T, ft.test["label"].to_numpy(), train_classes, ft.protocol.test_classes,
                                                  shift_test[d][lo:hi])
                for d in use:
                    a = out[d].reshape(sims.size, len(ROLES), n_seeds)
                    acc[sims, :, datasets.index(d), slots, fold, :] = a
        log.info("partition %d of %d simulated", p + 1, pool)
    return Simulation(acc, parts, n_train, n_test, datasets, learner, fixed)
