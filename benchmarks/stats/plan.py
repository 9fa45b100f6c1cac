r"""python -m benchmarks.stats.plan: how many partitions a comparison needs to detect a given difference.

  python -m benchmarks.stats.plan --effect 1.0 --dataset LIDC-B                     # the unit s.d. from the run records
  python -m benchmarks.stats.plan --effect 1.0 --dataset LIDC-B --profile quick --source slices
  python -m benchmarks.stats.plan --effect 1.0 --dataset LIDC-B --sd 1.3            # no records: a unit s.d. given

The tables compare two methods by the corrected resampled t-test (Nadeau & Bengio 2003; Bouckaert & Frank 2004) on
n = 5 R units, a unit being a test fold of one of R partitions (seeds averaged). For R = 1 to ``--max-repeats`` this
prints the test's power against a true difference ``--effect`` (accuracy in points; ``--metric auc``: AUC as a
fraction) at two-sided alpha 0.05, and the smallest difference it detects with 80% power (``--power``), then the
smallest R that reaches that power. The correction n_test/n_train does not shrink with R (every partition re-uses the
same nodules), so the power has a ceiling and the detectable difference a floor, printed when no R up to the maximum
is enough. The formulas and their assumptions: ``benchmarks.stats.power`` and docs/statistics.md.

The unit s.d. (the standard deviation of one unit's difference between two methods) comes from the run records of one
setting, picked by the flags of ``python -m benchmarks.tables`` (``--source``, ``--profile``, ``--set``, ...): the s.d.
of the unit differences of every method against the reference on the dataset, pooled (each comparison weighted by
n - 1), and n_test/n_train from the same records. Or ``--sd`` gives it; n_test/n_train then comes from the committed
folds of the dataset (partition 0, ``--min-readers``, default 2), with the training split cut to the ``--profile``'s
subset when it has one (quick 768, smoke 96 nodules; the paper profile trains on the whole split).
"""
from __future__ import annotations

import argparse
import math

from benchmarks.cli import ArgumentParser, add_plugin_flag, add_setting_filters, int_in, load_plugins, runs_folder
from benchmarks.errors import UserError, cli_main
from benchmarks.stats.power import ALPHA, POWER, detectable_floor, limit_power, plan_partitions

FOLDS = 5


def positive(text: str) -> float:
    """argparse type: a finite number above 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"{text} is not a number above 0")
    return v


def power_level(text: str) -> float:
    v = positive(text)
    if not 0.5 <= v < 1:
        raise argparse.ArgumentTypeError(f"{text}: the power must lie in [0.5, 1)")
    return v


def correction_of_folds(dataset: str, min_readers: int, profile: str | None) -> tuple[float, str]:
    """(n_test / n_train, how it was found) from the committed folds of partition 0; the training split cut to the
    profile's subset (``train_limit``) when the profile has one."""
    from benchmarks.data.protocols import fold_table  # noqa: PLC0415
    from benchmarks.profiles import get_profile  # noqa: PLC0415

    limit = get_profile(profile).train.train_limit if profile else 0
    tables = [fold_table(dataset, f, min_readers) for f in range(FOLDS)]
    n_train = sum(min(len(t.train), limit) if limit else len(t.train) for t in tables) / FOLDS
    n_test = sum(len(t.test) for t in tables) / FOLDS
    cut = f", training split cut to profile {profile}'s {limit}" if limit else ", whole training split"
    return n_test / n_train, f"from the committed folds ({n_test:.1f} test / {n_train:.1f} training nodules on average{cut})"


def sd_of_records(args, dataset: str, metric: str) -> tuple[float, float, str]:
    """(pooled unit s.d., n_test / n_train, where they come from) of the setting's records on ``dataset``."""
    from benchmarks.records import read_records  # noqa: PLC0415
    from benchmarks.selection import Setting, select  # noqa: PLC0415
    from benchmarks.tables.build import comparisons  # noqa: PLC0415
    from benchmarks.tables.levels import detectable_entry  # noqa: PLC0415

    hint = "; give the unit s.d. with --sd (the s.d. of one unit's difference between two methods)"
    try:
        runs = runs_folder(args)
    except UserError as e:
        raise UserError(f"no unit s.d.: {e}{hint}") from None
    setting = Setting.from_args(args)
    recs = select(read_records(runs), setting, lambda r: r.get("dataset") == dataset,
                  none_found=f"no unit s.d.: no run records of {dataset} in {runs} with these filters{hint}")
    cells: dict[str, list[dict]] = {}
    for r in recs:
        cells.setdefault(r["method"], []).append(r)
    reference = args.reference or "clip_lung"
    if reference not in cells:
        raise UserError(f"no unit s.d.: no records of the reference {reference} on {dataset} (methods with records: "
                        f"{', '.join(sorted(cells))}; pick one with --reference){hint}")
    entry = detectable_entry(comparisons(cells, reference), metric, reference)
    if entry is None:
        raise UserError(f"no unit s.d.: no method shares two units or more with {reference} on {dataset}{hint}")
    r0 = recs[0]
    where = (f"pooled over {len(entry['pooled_over'])} comparison(s) with {reference} ({', '.join(entry['pooled_over'])}; "
             f"{entry['df_pooled']} degrees of freedom) in the records of profile {r0['profile']}, source {r0['source']}, "
             f"{entry['n_repeats']} partition(s); n_test/n_train from the same records "
             f"({entry['n_test']:.1f} test / {entry['n_train']:.1f} training nodules on average)")
    return entry["sd_pooled"], entry["correction"], where


def report(effect: float, sd: float, rho: float, where: str, dataset: str, metric: str, max_repeats: int, power: float) -> str:
    """The plan as text: one line per R, then the answer."""
    unit = "points" if metric == "accuracy" else "(AUC)"

    def amount(x: float) -> str:  # '1 point', '1.5 points', '0.02 (AUC)'
        return f"{x:.3g} " + ("point" if unit == "points" and x == 1 else unit)

    need, rows = plan_partitions(effect, sd, rho, FOLDS, max_repeats, ALPHA, power)
    lines = [f"{dataset}, {metric}: unit s.d. {amount(sd)}, {where}; n_test/n_train = {rho:.4f}",
             f"power of the corrected resampled t-test (two-sided alpha {ALPHA:g}) against a true difference of {amount(effect)}, "
             f"on {FOLDS} folds x R partitions:",
             f"{'R':>4} {'units':>6} {'power':>7}  {'detectable at ' + format(power, '.0%'):>18}"]
    lines += [f"{r.repeats:>4} {r.n:>6} {r.power:>7.3f}  {r.mde:>18.{3 if unit != 'points' else 2}f}" for r in rows]
    floor, ceiling = detectable_floor(sd, rho, ALPHA, power), limit_power(effect, sd, rho, ALPHA)
    if need is not None:
        row = rows[need - 1]
        lines.append(f"R = {need} partition{'s' if need > 1 else ''} ({row.n} units) give{'s' if need == 1 else ''} power {row.power:.3f}: "
                     f"run and tabulate with --repeats {need}.")
    else:
        last = rows[-1]
        lines.append(f"no R up to {max_repeats} reaches power {power:g} (at R = {last.repeats}: {last.power:.3f}). The correction "
                     f"n_test/n_train = {rho:.4f} does not shrink with R, so the power never exceeds {ceiling:.3f} at {amount(effect)} "
                     f"and the smallest detectable difference never falls below {amount(floor)} (its limit as R grows), "
                     "however many partitions.")
    return "\n".join(lines)


@cli_main
def main(argv=None) -> None:
    from benchmarks.data.partitions import MAX_REPEATS  # noqa: PLC0415
    from benchmarks.data.protocols import PROTOCOLS  # noqa: PLC0415

    ap = ArgumentParser(prog="python -m benchmarks.stats.plan", description=__doc__)
    ap.add_argument("--effect", type=positive, required=True, help="the true difference to detect (accuracy: points; auc: a fraction)")
    ap.add_argument("--dataset", required=True, help="LIDC-A, LIDC-B or LIDC-C")
    ap.add_argument("--sd", type=positive, default=None, help="the unit s.d. (instead of the records'), in the effect's units")
    ap.add_argument("--metric", choices=("accuracy", "auc"), default="accuracy", help="the metric compared")
    ap.add_argument("--power", type=power_level, default=POWER, help="the power wanted")
    ap.add_argument("--max-repeats", type=int_in(1, MAX_REPEATS), default=MAX_REPEATS, help="the most partitions considered")
    ap.add_argument("--reference", default=None, help="the method the others are compared with in the records (default: clip_lung)")
    add_setting_filters(ap)
    add_plugin_flag(ap)
    args = ap.parse_args(argv)
    if args.dataset not in PROTOCOLS:
        raise UserError(f"--dataset: unknown dataset {args.dataset!r}; choose from {', '.join(PROTOCOLS)}")
    dataset = args.dataset
    if args.sd is not None:
        rho, how = correction_of_folds(dataset, args.min_readers or 2, args.profile)
        sd, where = args.sd, f"given (--sd); n_test/n_train {how}"
    else:
        load_plugins(args)
        sd, rho, where = sd_of_records(args, dataset, args.metric)
    print(report(args.effect, sd, rho, where, dataset, args.metric, args.max_repeats, args.power))


if __name__ == "__main__":
    main()
