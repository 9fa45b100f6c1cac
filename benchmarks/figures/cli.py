"""python -m benchmarks.figures: interpretability figures from run records (Fig. 3 of the paper and beyond).

  tsne          t-SNE of the test fold's image features, a panel per method
  gradcam       Grad-CAM maps over the nodule's central axial slice, with the
                readers' consensus contour, a row per nodule, a column per method
  localisation  share of the Grad-CAM mass inside the readers' consensus mask,
                per method, mean ± std over folds (--tables: Markdown + LaTeX)
  curves        loss terms (and recorded test metrics) per epoch
  tables        results at one glance: accuracy per method and dataset beside the paper's
  cd            critical-difference diagram (Demsar 2006) of the methods' average ranks
                over datasets and folds, with the Friedman test (--metric)
  tuning        best-so-far validation curves of the tuning studies (benchmarks.tune)

  python -m benchmarks.figures tsne --dataset LIDC-B --methods clip cocoop clip_lung --fold 0
  python -m benchmarks.figures gradcam --dataset LIDC-B --nodules 6
  python -m benchmarks.figures localisation --dataset LIDC-B --tables
  python -m benchmarks.figures curves --dataset LIDC-B --methods ce clip_lung
  python -m benchmarks.figures cd --profile quick --metric accuracy

Every command reads the records (and the final weights saved beside them) of
one setting, chosen as ``tables`` chooses (benchmarks/selection.py): if the runs
folder holds several profiles, sources or label rules, pick one with --profile,
--source or --min-readers; --set picks the records made with those overrides.
Figures go to $CLIPLUNG_RESULTS/figures (results/figures; --out for another
folder) as PNG and PDF, their titles naming the dataset, fold, profile, source and
text encoder.
See benchmarks/interpret.py for the Grad-CAM target and the localisation score.
"""
from __future__ import annotations

from pathlib import Path

from benchmarks.cli import (
    SEED_MAX,
    ArgumentParser,
    add_datasets_flag,
    add_folds_seeds,
    add_plugin_flag,
    add_setting_filters,
    add_tables_flag,
    check_datasets,
    int_in,
    load_plugins,
    output_folder,
    parse_folds,
)
from benchmarks.data.protocols import PROTOCOLS
from benchmarks.errors import UserError, cli_main
from benchmarks.figures.common import DEFAULT_LAYER, DEFAULT_METHODS, LAYER_NAMES
from benchmarks.selection import Setting

METRICS = ("accuracy", "auc", "macro_f1")  # those of figures cd (benchmarks.figures.cd)


def _parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m benchmarks.figures", description=__doc__)
    sub = ap.add_subparsers(dest="command", metavar="{tsne,gradcam,localisation,curves,tables,cd,tuning}")
    common = ArgumentParser(add_help=False)
    common.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), help="registered methods")
    common.add_argument("--seeds", "--seed", nargs=1, type=int_in(0, SEED_MAX), default=[0], metavar="SEED", help="the runs' seed (one)")
    add_setting_filters(common)
    common.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    common.add_argument("--out", default=None, help="folder of the figures (default: $CLIPLUNG_RESULTS/figures, i.e. results/figures)")
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    add_plugin_flag(common)
    one = ArgumentParser(add_help=False)
    one.add_argument("--dataset", required=True, help=f"one of {', '.join(PROTOCOLS)}")
    one.add_argument("--folds", "--fold", nargs=1, default=["0"], metavar="FOLD", help="the test fold (one, 0-4)")
    layer = ArgumentParser(add_help=False)
    layer.add_argument("--layer", default=DEFAULT_LAYER, help=f"Grad-CAM layer: one of {', '.join(LAYER_NAMES)} "
                       f"({DEFAULT_LAYER}: the last convolutional block, a 4 x 4 map on a 32 x 32 crop)")
    sub.add_parser("tsne", parents=[common, one], help="t-SNE of test-fold image features",
                   description="t-SNE (scikit-learn, PCA init) of the pooled image features of a test fold, one panel per method; "
                               "points coloured by true class, misclassified nodules marked x.")
    g = sub.add_parser("gradcam", parents=[common, one, layer], help="Grad-CAM over the central axial slice",
                       description="Grad-CAM for the predicted class, over the nodule's central axial slice with the readers' "
                                   "consensus contour. Rows are picked by rule: the hardest nodules every method gets right "
                                   "(smallest mean margin p(true) - max p(other)), then the most confidently wrong ones.")
    g.add_argument("--nodules", type=int_in(1, 64), default=4, help="number of rows")
    g.add_argument("--ids", nargs="+", help="show these test nodules instead of the rule's")
    loc = sub.add_parser("localisation", parents=[common, layer], help="localisation score table",
                         description="Share of Grad-CAM mass inside the readers' consensus footprint, per method and fold, "
                                     "with a centre-biased and a uniform reference map.")
    loc.add_argument("--dataset", nargs="+", required=True, help=f"one or more of {', '.join(PROTOCOLS)}")
    add_folds_seeds(loc, seeds=False)
    loc.add_argument("--tables", action="store_true", help="write localisation_<datasets>_<layer>_<profile>_<source>.{md,tex,json} under --tables-out")
    loc.add_argument("--tables-out", default=None, help="folder of --tables (default: $CLIPLUNG_RESULTS/tables, i.e. results/tables)")
    cur = sub.add_parser("curves", parents=[common], help="training curves from records",
                         description="Loss terms per epoch (and test metrics where the runs recorded them, --set eval_every=N).")
    cur.add_argument("--dataset", required=True, help=f"one of {', '.join(PROTOCOLS)}")
    add_folds_seeds(cur, seeds=False)
    tab = sub.add_parser("tables", help="results at one glance: accuracy per method and dataset beside the paper's",
                         description="A panel per table and dataset: each method's accuracy over its records (mean, min-max over "
                                     "folds) beside the paper's reported mean +- std; from run records only.")
    cd = sub.add_parser("cd", help="critical-difference diagram of the methods' ranks over datasets and folds",
                        description="The Friedman test of the methods of the tables over (dataset, fold) blocks (seeds averaged), the "
                                    "Nemenyi critical difference, and its diagram (Demsar 2006); cd_<metric>_tables<n>_[<datasets>_]<profile>_<source>[_<plugins>].{png,pdf,json}.")
    cd.add_argument("--metric", default="accuracy", choices=METRICS, help="the metric ranked (auc: the binary datasets only)")
    cd.add_argument("--blocks", default="folds", choices=("folds", "datasets"),
                    help="folds: (dataset, fold) blocks, which share training data (exploratory, the default); datasets: "
                         "Demsar's blocks, one per dataset (the mean over its folds)")
    tun = sub.add_parser("tuning", help="best-so-far validation curves of the tuning studies (benchmarks.tune)",
                         description="Per dataset and method, the best validation value after each finished trial of every fold's "
                                     "study: did each method converge within the budget? tuning_<objective>_<profile>_<source>.{png,pdf,json}.")
    tun.add_argument("--methods", dest="methods_tuned", nargs="+", default=None, help="only these methods' studies")
    add_datasets_flag(tun)
    for flag in ("--profile", "--source"):
        tun.add_argument(flag, default=None, help=f"the studies' {flag[2:]} (needed when they mix several)")
    tun.add_argument("--min-readers", type=int, default=None, help="the studies' label rule")
    tun.add_argument("--objective", default="accuracy", help="the studies' objective")
    tun.add_argument("--tag", default=None, help="the studies' --tag")
    tun.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="the studies' config overrides, as given to tune run (repeatable; default: none)")
    tun.add_argument("--out", default=None, help="folder of the figures (default: $CLIPLUNG_RESULTS/figures)")
    add_plugin_flag(tun)
    for p in (tab, cd):
        add_tables_flag(p)
        add_setting_filters(p)
        p.add_argument("--out", default=None, help="folder of the figures (default: $CLIPLUNG_RESULTS/figures, i.e. results/figures)")
        add_plugin_flag(p)
    return ap


@cli_main
def main(argv=None):
    ap = _parser()
    args = ap.parse_args(argv)
    if not args.command:
        raise UserError("name a figure: tsne, gradcam, localisation, curves, tables, cd or tuning (see --help)")
    # Each figure's module imports torch, the models and the data: after parsing, for --help speed.
    from benchmarks.data.protocols import get_protocol  # noqa: PLC0415
    from benchmarks.figures.cd import cmd_cd  # noqa: PLC0415
    from benchmarks.figures.curves import cmd_curves  # noqa: PLC0415
    from benchmarks.figures.glance import cmd_tables  # noqa: PLC0415
    from benchmarks.figures.gradcam import cmd_gradcam  # noqa: PLC0415
    from benchmarks.figures.localisation import cmd_localisation  # noqa: PLC0415
    from benchmarks.figures.tsne import cmd_tsne  # noqa: PLC0415
    load_plugins(args)
    if getattr(args, "runs", None):
        args.runs = Path(args.runs)
        if not args.runs.is_dir():
            raise UserError(f"--runs {args.runs} is not a folder")
    args.out = output_folder(args.out, "figures", "figures folder")
    if args.command == "tuning":
        from benchmarks.figures.tuning import cmd_tuning  # noqa: PLC0415

        args.datasets = check_datasets(args.datasets)
        print("wrote " + ", ".join(str(p) for p in cmd_tuning(args)))
        return
    if args.command in ("tables", "cd"):
        args.datasets = check_datasets(args.datasets, args.tables)
        print("wrote " + ", ".join(str(p) for p in (cmd_tables if args.command == "tables" else cmd_cd)(args)))
        return
    for ds in args.dataset if isinstance(args.dataset, list) else [args.dataset]:
        get_protocol(ds)
    args.folds = parse_folds(args.folds)
    if args.command in ("tsne", "gradcam"):
        if len(args.folds) > 1:
            raise UserError(f"{args.command} draws one test fold; got {len(args.folds)}")
        args.fold = args.folds[0]
    args.seed = args.seeds[0]
    if len(set(args.methods)) != len(args.methods):
        raise UserError("--methods names a method twice")
    if getattr(args, "tables", False):
        args.tables_out = output_folder(args.tables_out, "tables", "tables folder")
    args.setting = Setting.from_args(args)
    paths = {"tsne": cmd_tsne, "gradcam": cmd_gradcam, "localisation": cmd_localisation, "curves": cmd_curves}[args.command](args)
    if paths:
        print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
