"""The matrix of a sweep: every run of the named tables for one setting, each once."""
from __future__ import annotations

from benchmarks.data.protocols import N_FOLDS
from benchmarks.errors import UserError
from benchmarks.grid import BACKBONE_TABLE, TABLES, cells
from benchmarks.lifecycle import check_sets, make_spec, sets_for
from benchmarks.records import RunSpec


def matrix(tables, seeds=(0,), profile="paper", source="phantom", min_readers=2, sets=None,
           folds=None, methods=None, backbones=None, datasets=None, repeats: int = 1) -> list[RunSpec]:
    """Every run of the tables, each once.

    ``methods`` restricts the tables' methods; a registered method that is not in the
    tables (a plugin's, say) is added on every dataset of the named tables, with the
    same folds, seeds and profile. ``backbones`` adds the runs of the backbone table
    (CE and CLIP-Lung on LIDC-A/B/C with ``backbone=`` each name). ``folds`` and
    ``datasets`` restrict the folds and the datasets (pilots, one dataset, tests). Each
    ``--set`` override goes to the methods whose configs have its key (the training
    config's keys to all); a key that no method of the matrix has is an error. ``repeats``: the
    partitions 0..repeats-1 (``benchmarks.data.partitions``; 1: the committed folds only).
    """
    from benchmarks.data.partitions import check_repeats  # noqa: PLC0415

    check_repeats(repeats)
    import methods as registry  # noqa: PLC0415  (torch: deferred for --help speed)
    from methods.backbones import BACKBONES  # noqa: PLC0415

    for t in tables:
        if t not in TABLES:
            raise UserError(f"unknown table {t}; choose from {', '.join(map(str, TABLES))}")
    for m in methods or []:
        registry.get_method(m)  # an unknown name: one line listing the known ones
    for b in backbones or []:
        if b not in BACKBONES:
            raise UserError(f"--backbones {b}: unknown backbone; known backbones: {', '.join(sorted(BACKBONES))}")
    in_tables = {m for m, _ in cells(tables)}
    all_ds = list(dict.fromkeys(ds for t in tables for ds in TABLES[t]["datasets"]))
    grid = [(m, ds, ()) for m, ds in cells(tables) if not methods or m in methods]
    grid += [(m, ds, ()) for m in (methods or []) if m not in in_tables for ds in all_ds]
    grid += [(m, ds, (f"backbone={b!r}",)) for b in (backbones or []) for m in BACKBONE_TABLE["methods"] for ds in BACKBONE_TABLE["datasets"]]
    if datasets is not None:
        grid = [g for g in grid if g[1] in datasets]
    check_sets(sets, sorted({m for m, _, _ in grid}) or ["ce"])
    specs, seen = [], set()
    for method, dataset, extra in grid:
        own = sets_for(method, sets)
        for seed in seeds:
            for repeat in range(repeats):
                for fold in (folds if folds is not None else range(N_FOLDS)):
                    s = make_spec(method, dataset, fold, seed, profile, source, min_readers, [*own, *extra], repeat=repeat)
                    if s.key not in seen:
                        seen.add(s.key)
                        specs.append(s)
    return specs


def describe(s: RunSpec) -> dict:
    """What a manifest and ``status`` say of one run."""
    return {"key": s.key, "stem": s.stem, "method": s.method, "dataset": s.dataset, "fold": s.fold, "seed": s.seed, "repeat": s.repeat}
