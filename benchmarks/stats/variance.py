"""What moves a cell: its variance split into the share of the partition, the fold and the seed.

A cell's runs form a nested (hierarchical) design: partitions (repeats) r, test folds f within a
partition, seeds s within a fold; ``x_rfs`` one run's metric. The random-effects model
``x_rfs = mu + a_r + b_rf + e_rfs`` (independent zero-mean effects with variances
``sigma2_partition``, ``sigma2_fold``, ``sigma2_seed``) is estimated by the nested analysis of
variance, method of moments (e.g. Searle, Casella & McCulloch, Variance Components, 1992, ch. 3-4),
on a balanced design (R partitions x F folds x S seeds):

  ``MS_partition = F S sum_r (xbar_r - xbar)^2 / (R - 1)``
  ``MS_fold      = S sum_rf (xbar_rf - xbar_r)^2 / (R (F - 1))``
  ``MS_seed      = sum_rfs (x_rfs - xbar_rf)^2 / (R F (S - 1))``
  ``sigma2_seed = MS_seed``, ``sigma2_fold = (MS_fold - MS_seed) / S``,
  ``sigma2_partition = (MS_partition - MS_fold) / (F S)``,

each negative estimate set to 0 (and said so); the shares are each component over their sum.
The function is written for any number of nested levels (:func:`nested_components`), so that a
level for the hyperparameters (a tuning draw, once tuning records exist) slots in between fold
and seed, or above the partition, by adding one element to the keys and one name to ``levels``;
:func:`cell_components` leaves ``hyperparameters`` at None until then.

A level with one value (one partition, one seed) has no variance to estimate: its component is
None and its variance is folded into the level above it (with one seed, the fold component holds
seed variance too). Unbalanced runs (a fold with fewer seeds) are cut to the largest balanced
design (the seeds every unit has, the folds every partition has), and the answer says how many
runs were left out.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

LEVELS = ("partition", "fold", "seed")


def nested_components(values: Mapping[tuple, float], levels: Sequence[str] = LEVELS) -> dict:
    """Variance components of a balanced nested design, ``values[(l1, l2, ..., lk)]``.

    Returns {"components": {level: sigma2 or None}, "shares": {level: share or None}, "mean_squares":
    {level: MS}, "df": {level: df}, "truncated": [levels whose estimate was negative, set to 0], "n": runs}.
    """
    k = len(levels)
    keys = sorted(values)
    if not keys or any(len(key) != k for key in keys):
        raise ValueError(f"nested_components: keys must be {k}-tuples ({', '.join(levels)})")
    x = np.array([float(values[key]) for key in keys], dtype=np.float64)  # (N,)
    # sizes[j]: the number of distinct values of level j within one group of the levels above (balanced: the same everywhere)
    sizes = []
    for j in range(k):
        per_parent = defaultdict(set)
        for key in keys:
            per_parent[key[:j]].add(key[j])
        counts = {len(v) for v in per_parent.values()}
        if len(counts) != 1:
            raise ValueError(f"nested_components: unbalanced at level {levels[j]!r} ({sorted(counts)} values per group)")
        sizes.append(counts.pop())
    if int(np.prod(sizes)) != len(keys):
        raise ValueError("nested_components: not a complete nested design")
    # group means at each depth: depth j groups by the first j key elements (depth 0: the grand mean)
    means = []
    for j in range(k + 1):
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            groups[key[:j]].append(i)
        means.append({g: float(x[idx].mean()) for g, idx in groups.items()})
    ms, df = {}, {}
    for j in range(k):
        below = int(np.prod(sizes[j + 1:]))  # runs per group of depth j + 1
        ss = sum(below * (means[j + 1][g] - means[j][g[:j]]) ** 2 for g in means[j + 1])
        d = int(np.prod(sizes[:j])) * (sizes[j] - 1)
        ms[levels[j]] = ss / d if d > 0 else None
        df[levels[j]] = d
    comps: dict[str, float | None] = {}
    truncated = []
    for j in range(k):
        name = levels[j]
        if ms[name] is None:
            comps[name] = None
            continue
        nxt = next((ms[levels[i]] for i in range(j + 1, k) if ms[levels[i]] is not None), 0.0)
        est = (ms[name] - nxt) / int(np.prod(sizes[j + 1:]))
        if est < 0:
            truncated.append(name)
            est = 0.0
        comps[name] = est
    total = sum(v for v in comps.values() if v is not None)
    shares = {n: (v / total if total > 0 else None) if v is not None else None for n, v in comps.items()}
    return {"components": comps, "shares": shares, "mean_squares": ms, "df": df, "truncated": truncated, "n": len(keys),
            "sizes": dict(zip(levels, sizes))}


def balanced_subset(values: Mapping[tuple, float]) -> tuple[dict[tuple, float], int]:
    """The largest balanced part of ``values[(repeat, fold, seed)]``: the seeds every (repeat, fold) has, the
    folds every repeat has; (that part, runs left out)."""
    units = defaultdict(set)
    for r, f, s in values:
        units[(r, f)].add(s)
    folds_of = defaultdict(set)
    for r, f in units:
        folds_of[r].add(f)
    folds = set.intersection(*folds_of.values()) if folds_of else set()
    seeds = set.intersection(*(units[(r, f)] for r in folds_of for f in folds)) if folds else set()
    keep = {key: v for key, v in values.items() if key[1] in folds and key[2] in seeds}
    return keep, len(values) - len(keep)


def cell_components(values: Mapping[tuple, float]) -> dict | None:
    """The decomposition of one cell's metric, ``values[(repeat, fold, seed)]`` (a ``(fold, seed)`` key is
    repeat 0), or None with fewer than two runs. Adds "left_out" (runs cut to balance) and
    "hyperparameters": None (the hook: no tuning draws in the records yet)."""
    v3 = {(tuple(k) if len(k) == 3 else (0, *k)): float(v) for k, v in values.items()}
    v3 = {k: v for k, v in v3.items() if np.isfinite(v)}
    keep, left_out = balanced_subset(v3)
    if len(keep) < 2:
        return None
    out = nested_components(keep, LEVELS)
    out["left_out"] = left_out
    out["hyperparameters"] = None
    return out
