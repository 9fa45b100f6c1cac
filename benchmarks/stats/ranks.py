"""Ranks across datasets and folds: the Friedman test, the Nemenyi critical difference and its diagram.

See ``benchmarks/stats/__init__.py`` for the whole method and its references.
"""
from __future__ import annotations

import io
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.stats.paired import NAN

log = logging.getLogger(__name__)

#: A nodule id starts with its patient id, ``LIDC-IDRI-dddd``: 14 characters.
# ------------------------------------------------------------------------------------------------ 4. ranks
@dataclass(frozen=True)
class FriedmanResult:
    """The Friedman test and Nemenyi post-hoc test of k methods over N blocks (``friedman``)."""

    methods: list[str]
    blocks: list
    scores: np.ndarray = field(repr=False)  # (k, N), as given
    ranks: np.ndarray = field(repr=False)  # (k, N), 1 = best in the block, ties averaged
    average_ranks: dict[str, float] = field(default_factory=dict)
    statistic: float = NAN  # Friedman's chi-square, tie-corrected
    df: int = 0  # k - 1
    p: float = NAN
    iman_davenport: float = NAN  # F_F = (N - 1) chi2 / (N (k - 1) - chi2)
    p_iman_davenport: float = NAN  # F with (k - 1, (k - 1)(N - 1)) degrees of freedom
    q_alpha: float = NAN  # studentized range quantile / sqrt(2)
    cd: float = NAN  # Nemenyi critical difference of average ranks
    alpha: float = 0.05
    nemenyi_p: Any = field(default=None, repr=False)  # pandas.DataFrame k x k of Nemenyi p-values (scikit-posthocs)


def _plt():
    """pyplot on the Agg backend (no display), as ``benchmarks.figures`` does; scikit-posthocs imports pyplot too."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def friedman(scores, methods: Sequence[str] | None = None, blocks: Sequence | None = None, alpha: float = 0.05,
             higher_is_better: bool = True) -> FriedmanResult:
    """Friedman's test [Friedman 1937; Demsar 2006] of k methods over N blocks, and the Nemenyi post-hoc test.

    ``scores``: (k methods, N blocks), a pandas DataFrame (index: methods, columns: blocks) or an array (then
    ``methods``/``blocks`` name them). Blocks are (dataset, fold) pairs, seed-averaged (``block_table``); no NaN.
    Within each block the methods are ranked, 1 = best (highest score unless ``higher_is_better`` is False), ties
    averaged; r_j is the average rank of method j over the blocks. Then
    ``chi2 = [12 N / (k (k+1)) (sum_j r_j^2 - k (k+1)^2 / 4)] / C``, ``C = 1 - sum_ties (t^3 - t) / (N k (k^2 - 1))``
    (the tie correction, C = 1 without ties), chi-square with k - 1 degrees of freedom; Iman-Davenport
    ``F = (N - 1) chi2 / (N (k - 1) - chi2)``, F(k - 1, (k - 1)(N - 1)) (Demsar recommends it: chi2 is conservative).
    Nemenyi: ``CD = q_alpha sqrt(k (k+1) / (6 N))``, ``q_alpha = q_{1-alpha}(k, inf) / sqrt(2)`` (studentized range);
    two methods differ when their average ranks differ by more than CD; the pairwise p-values come from
    ``scikit_posthocs.posthoc_nemenyi_friedman`` (p < alpha exactly when the difference exceeds CD).
    """
    import pandas as pd  # noqa: PLC0415
    from scipy import stats  # noqa: PLC0415

    if isinstance(scores, pd.DataFrame):
        methods = [str(m) for m in scores.index] if methods is None else list(methods)
        blocks = list(scores.columns) if blocks is None else list(blocks)
        x = scores.to_numpy(dtype=np.float64)
    else:
        x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError("friedman: scores must be (methods, blocks)")
    k, n = x.shape
    methods = [str(i) for i in range(k)] if methods is None else [str(m) for m in methods]
    blocks = list(range(n)) if blocks is None else list(blocks)
    if len(methods) != k or len(blocks) != n or len(set(methods)) != k:
        raise ValueError("friedman: methods/blocks do not match the scores (or a method repeats)")
    if k < 2 or n < 2:
        raise ValueError(f"friedman: needs at least 2 methods and 2 blocks, got {k} and {n}")
    if np.isnan(x).any():
        raise ValueError("friedman: a score is NaN (drop incomplete blocks first, see block_table)")
    ranks = stats.rankdata(-x if higher_is_better else x, axis=0, method="average")  # per block (column), 1 = best
    avg = ranks.mean(axis=1)
    ties = 0.0
    for col in x.T:  # sum over blocks and tie groups of t^3 - t
        _, t = np.unique(col, return_counts=True)
        ties += float(np.sum(t.astype(np.float64) ** 3 - t))
    c = 1.0 - ties / (n * k * (k * k - 1.0))
    chi2 = 12.0 * n / (k * (k + 1.0)) * (float(np.sum(avg**2)) - k * (k + 1.0) ** 2 / 4.0)
    if c <= 0.0:  # every block a complete tie: nothing to rank
        log.warning("friedman: every block is a complete tie; the statistic is undefined")
        chi2, p, f, pf = NAN, NAN, NAN, NAN
    else:
        chi2 /= c
        p = float(stats.chi2.sf(chi2, k - 1))
        den = n * (k - 1.0) - chi2
        f = (n - 1.0) * chi2 / den if den > 0 else math.inf  # den = 0: identical rankings in every block
        pf = float(stats.f.sf(f, k - 1, (k - 1) * (n - 1))) if den > 0 else 0.0
    q = float(stats.studentized_range.ppf(1.0 - alpha, k, np.inf)) / math.sqrt(2.0)
    cd = q * math.sqrt(k * (k + 1.0) / (6.0 * n))
    _plt()
    import scikit_posthocs as sp  # noqa: PLC0415

    # blocks x methods; the library ranks ascending, but its p depends only on |r_i - r_j|, the same either way.
    nem = sp.posthoc_nemenyi_friedman(pd.DataFrame(x.T, columns=methods))
    return FriedmanResult(methods=methods, blocks=blocks, scores=x, ranks=ranks, average_ranks={m: float(r) for m, r in zip(methods, avg)},
                          statistic=float(chi2), df=k - 1, p=p, iman_davenport=float(f), p_iman_davenport=pf, q_alpha=q, cd=cd, alpha=alpha,
                          nemenyi_p=nem)


BLOCKS = ("folds", "datasets")


def block_table(values: Mapping[tuple[str, Any, Any, Any], float], blocks: str = "folds"):
    """{(method, dataset, fold, seed): metric} -> pandas DataFrame, methods x blocks, each value the mean over seeds.

    ``blocks="folds"``: a block is a (dataset, fold) pair (``fold`` may be a (repeat, fold) pair). The folds of one
    dataset share training data and patients, so these blocks are not the independent data sets the Friedman test and
    Demsar's diagram assume: exploratory. ``blocks="datasets"``: Demsar's (2006) blocks, one per dataset, its value the
    mean over folds of the seed means (few blocks: LIDC-A/B/C are three views of one nodule set, so even these are not
    independent). Blocks that some method lacks, or where a value is NaN, are dropped (logged): the Friedman test
    needs complete blocks."""
    import pandas as pd  # noqa: PLC0415

    if blocks not in BLOCKS:
        raise ValueError(f"blocks must be one of {BLOCKS}, not {blocks!r}")
    acc: dict[tuple, list[float]] = defaultdict(list)
    for (m, ds, fold, _seed), v in values.items():
        acc[(m, ds, fold)].append(float(v))
    if blocks == "datasets":
        folds: dict[tuple, list[float]] = defaultdict(list)
        for (m, ds, _fold), vs in acc.items():
            folds[(m, ds)].append(float(np.mean(vs)))  # seeds averaged within a fold, then folds within a dataset
        methods = sorted({m for m, _ in folds})
        names = sorted({ds for _, ds in folds})
        table = pd.DataFrame([[float(np.mean(folds[(m, ds)])) if (m, ds) in folds else NAN for ds in names] for m in methods],
                             index=methods, columns=pd.Index(names, name="dataset"))
        complete = table.notna().all(axis=0)
        if not complete.all():
            log.warning("block_table: %d incomplete dataset block(s) dropped: %s", int((~complete).sum()), [b for b, ok in complete.items() if not ok])
        return table.loc[:, complete]
    methods = sorted({m for m, _, _ in acc})
    blocks = sorted({(ds, fold) for _, ds, fold in acc})
    table = pd.DataFrame([[float(np.mean(acc[(m, *b)])) if (m, *b) in acc else NAN for b in blocks] for m in methods], index=methods,
                         columns=pd.MultiIndex.from_tuples(blocks, names=["dataset", "fold"]) if blocks else None)
    complete = table.notna().all(axis=0)
    if not complete.all():
        log.warning("block_table: %d incomplete block(s) dropped: %s", int((~complete).sum()), [b for b, ok in complete.items() if not ok])
    return table.loc[:, complete]


def cliques(result: FriedmanResult) -> list[tuple[str, ...]]:
    """The groups of methods the Nemenyi test does not tell apart: maximal runs of methods, consecutive in
    average rank, every pair of which has p >= alpha (without p-values: ranks no more than CD apart), each
    of two or more methods, best first. These are the bars of the diagram."""
    order = sorted(result.methods, key=lambda m: (result.average_ranks[m], m))
    r = result.average_ranks

    def alike(a: str, b: str) -> bool:
        if result.nemenyi_p is not None:
            p = float(result.nemenyi_p.loc[a, b])
            return math.isnan(p) or p >= result.alpha
        return not abs(r[a] - r[b]) > result.cd  # a NaN CD links everything: nothing is told apart

    out: list[tuple[str, ...]] = []
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and all(alike(order[a], order[j + 1]) for a in range(i, j + 1)):
            j += 1
        group = tuple(order[i:j + 1])
        if len(group) > 1 and not any(set(group) <= set(g) for g in out):
            out.append(group)
    return out


def draw_cd(result: FriedmanResult, target, title: str | None = None, annotate: bool = True):
    """The critical-difference diagram [Demsar 2006] of ``result``: an axis of average ranks from 1 (best, at the
    left) to k, each method on a row of its own joined to its rank by an elbow (the better half labelled on the
    left, the other on the right, so that tied methods never hide each other), the methods the Nemenyi test does
    not tell apart (``cliques``) linked by a bar under the axis, and the critical difference above it, drawn
    from rank 1 (as long as the axis at most, said when it is longer: then no pair can differ).

    ``target``: a matplotlib Axes (drawn into, returned) or a path (a PNG, or any format matplotlib knows by the
    suffix, written atomically; the path is returned). ``annotate`` adds the Friedman p and N to the title.
    The axis line carries the gid ``cd-axis`` and each label the gid ``cd-label``.
    """
    plt = _plt()
    k = len(result.methods)
    own = not hasattr(target, "plot")
    if own:
        fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.32 * k))
    else:
        ax = target
    ranks = result.average_ranks
    order = sorted(result.methods, key=lambda m: (ranks[m], m))  # best first
    groups = cliques(result)
    gap = 0.25  # rows (data units) between the clique bars under the axis
    first_row = -gap * (len(groups) + 1) - 0.35  # the labels' rows start below the bars
    half = (k + 1) // 2
    pad = 0.04 * (k - 1) + 0.08  # how far beyond the axis ends the labels stand
    # The axis: 1 to k, a tick at every whole rank (numbers above it).
    ax.plot([1, k], [0, 0], color="k", linewidth=1.2, gid="cd-axis", clip_on=False)
    for x in range(1, k + 1):
        ax.plot([x, x], [0, 0.12], color="k", linewidth=1.0, clip_on=False)
        ax.text(x, 0.18, str(x), ha="center", va="bottom", fontsize=8)
    for i, m in enumerate(order):
        left = i < half
        row = first_row - (i if left else k - 1 - i)  # the worst method on the right's top row: no elbows cross
        x_end = 1 - pad if left else k + pad
        ax.plot([ranks[m], ranks[m], x_end], [0, row, row], color="0.3", linewidth=0.8, clip_on=False)
        text = f"{m} ({ranks[m]:.2f})" if left else f"({ranks[m]:.2f}) {m}"
        ax.text(x_end + (-0.03 if left else 0.03), row, text, ha="right" if left else "left", va="center", fontsize=8,
                gid="cd-label", clip_on=False)
    for level, g in enumerate(groups):
        y = -gap * (level + 1)
        ax.plot([ranks[g[0]] - 0.03, ranks[g[-1]] + 0.03], [y, y], color="k", linewidth=3.0, solid_capstyle="butt", clip_on=False)
    if not math.isnan(result.cd):
        end = min(1 + result.cd, k)
        ax.plot([1, end], [0.75, 0.75], color="k", linewidth=2, clip_on=False)
        ax.plot([1, 1], [0.65, 0.85], color="k", linewidth=1)
        ax.plot([end, end], [0.65, 0.85], color="k", linewidth=1)
        ax.text((1 + end) / 2, 0.9, f"CD = {result.cd:.2f}" + (" (longer than the axis: no pair can differ)" if 1 + result.cd > k else ""),
                ha="center", va="bottom", fontsize=8)
    ax.set_xlim(1, k)
    ax.set_ylim(first_row - max(half, k - half) + 0.4, 1.3)
    ax.axis("off")
    parts = [title] if title else []
    if annotate:
        parts.append(f"Friedman p = {result.p:.3g}, N = {len(result.blocks)} blocks, CD = {result.cd:.2f} (alpha = {result.alpha:g})")
    if parts:
        ax.set_title("\n".join(parts), fontsize=9, pad=12)
    if not own:
        return ax
    from benchmarks.io import atomic_write_bytes  # noqa: PLC0415

    path = Path(target)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=200, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
