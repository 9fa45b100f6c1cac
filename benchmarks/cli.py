"""What every command line of the suite shares: a parser whose mistakes are one line, and range-checked numbers.

A bad flag (unknown option, missing value, a number out of range) ends like every
other user error: ``error: ...`` on one line and exit status 2, not argparse's
usage dump. ``int_in(lo, hi)`` is an argparse ``type`` that says the valid range.
"""
from __future__ import annotations

import argparse
import re

from benchmarks.data.protocols import N_FOLDS, PROTOCOLS
from benchmarks.errors import UserError

SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (a UserError, turned into exit status 2 by ``cli_main``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions kept as written (module docstrings); every flag's default shown (those
    that have one: not for switches and optional values)."""

    def _get_help_string(self, action):
        # "is": a default of 0 is shown (0 == False would hide it)
        if action.default is None or action.default is False or action.default == [] or action.default is argparse.SUPPRESS \
                or re.search(r"\bdefault\b", action.help or ""):  # a help that says its default itself ('... default 1)')
            return action.help
        default = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
        return f"{action.help} (default: {default})"


def int_in(lo: int, hi: int | None = None):
    """argparse type: an integer in [lo, hi] (no upper bound when hi is None)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{v} is out of range: valid [{lo}, {hi if hi is not None else 'inf'}]")
        return v

    parse.__name__ = "int"
    return parse


def add_plugin_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE|FILE.py|FOLDER",
                        help="load methods/backbones from a plugin (repeatable; also $CLIPLUNG_PLUGINS)")


def load_plugins(args) -> list[dict]:
    """Load the plugins a parsed command line sees: installed entry points, ``$CLIPLUNG_PLUGINS``
    and its ``--plugin`` flags."""
    from benchmarks import plugins  # noqa: PLC0415

    return plugins.load_plugins(getattr(args, "plugin", []) or [])


def _registered_names(source: str) -> set[str] | None:
    """The method names a module's source registers, read without running it: the string
    literals of its ``register("name")`` calls; None when it cannot be told so (a name that
    is not a literal, ``register`` imported under another name, a file Python cannot parse)."""
    import ast  # noqa: PLC0415

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(a.name == "register" and a.asname not in (None, "register") for a in node.names):
            return None
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "register":
            first = node.args[0] if node.args else None
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                return None
            names.add(first.value)
    return names


def _plugin_sources(spec: str):
    """The ``.py`` files a plugin spec (a file, a folder, a module) is made of, found without
    importing it; None when they cannot be found so."""
    import importlib.util  # noqa: PLC0415
    import os  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    path = Path(spec).expanduser()
    if not (spec.endswith(".py") or os.sep in spec or path.exists()):
        try:
            found = importlib.util.find_spec(spec.split(".")[0])  # a top-level name: found, not run
        except (ImportError, ValueError):
            return None
        if found is None or not found.origin or not found.origin.endswith(".py"):
            return None
        path = Path(found.origin)
        path = path.parent if path.name == "__init__.py" else path
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts) if path.is_dir() else None


def static_method_names(plugin_flags=()) -> set[str] | None:
    """Every method name the built-ins and the plugins a command sees (entry points,
    ``$CLIPLUNG_PLUGINS``, ``--plugin``) can register, read from their sources without
    importing them (and so without torch); None when some source cannot be read so.

    A name outside this set is registered by nobody: a command refuses it at once instead of
    after seconds of imports. The set may hold more (a method file that ``methods`` does not
    import): those names go on to the registry, which has the last word.
    """
    from importlib import metadata  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from benchmarks.plugins import ENTRY_POINT_GROUP, plugin_specs  # noqa: PLC0415

    files = sorted((Path(__file__).resolve().parent.parent / "methods").glob("*.py"))
    for spec in [ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)] + plugin_specs(plugin_flags):
        found = _plugin_sources(spec)
        if found is None:
            return None
        files += found
    names: set[str] = set()
    for f in files:
        try:
            got = _registered_names(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return None
        if got is None:
            return None
        names |= got
    return names


def refuse_unknown_methods(names, plugin_flags=()) -> None:
    """A UserError for a method name that no source can register, before torch is imported
    (the registry answers the same for the others, once the plugins are loaded)."""
    from benchmarks.errors import unknown_method  # noqa: PLC0415
    from benchmarks.plugins import plugin_specs  # noqa: PLC0415

    known = static_method_names(plugin_flags) if names else None
    unknown = [n for n in names or () if known is not None and n not in known]
    if unknown:
        raise UserError(unknown_method(unknown[0], known, bool(plugin_specs(plugin_flags))))


def lazy_import(name: str):
    """The module ``name``, loaded on first attribute access (a command's ``--help`` then does
    not pay for torch)."""
    import importlib.util  # noqa: PLC0415
    import sys  # noqa: PLC0415

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


def add_folds_seeds(parser: argparse.ArgumentParser, folds_default=("all",), seeds=True) -> None:
    """``--folds`` and ``--seeds`` (lists; ``--fold`` and ``--seed`` are the same flags), as in
    every command."""
    parser.add_argument("--folds", "--fold", nargs="+", default=list(folds_default), metavar="FOLD",
                        help=f"test folds 0-{N_FOLDS - 1} (or all; 0,1 works too)")
    if seeds:
        parser.add_argument("--seeds", "--seed", nargs="+", type=int_in(0, SEED_MAX), default=[0], metavar="SEED",
                            help="training seeds (each run's initialisation, order and augmentation)")


def parse_folds(values) -> list[int]:
    """["all"] | ["0", "3"] | ["0,3"] -> sorted distinct folds; a UserError names a bad one."""
    out = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if part == "all":
                out += range(N_FOLDS)
            elif part:
                try:
                    f = int(part)
                except ValueError:
                    raise UserError(f"--folds: {part!r} is not a fold; folds are 0-{N_FOLDS - 1} or all") from None
                if not 0 <= f < N_FOLDS:
                    raise UserError(f"--folds: fold {f} does not exist; folds are 0-{N_FOLDS - 1}")
                out.append(f)
    if not out:
        raise UserError("--folds: name at least one fold")
    return sorted(set(out))


COMMANDS = {
    "run": ("benchmarks.run", "train and evaluate one method on one dataset, fold by fold"),
    "sweep": ("benchmarks.sweep", "the runs of Tables 1-3 on Slurm or locally; their status"),
    "tune": ("benchmarks.tune", "the same tuning budget for every method, nested (Optuna; local or Slurm workers); its studies' status"),
    "tables": ("benchmarks.tables", "Tables 1-3 (LaTeX, Markdown, JSON) from run records, with intervals and paired tests"),
    "figures": ("benchmarks.figures", "t-SNE, Grad-CAM, localisation, curves, results at one glance, critical-difference diagram"),
    "report": ("benchmarks.report", "one page (Markdown, HTML) of a setting's results"),
    "prepare": ("benchmarks.prepare", "the real CT from the Imaging Data Commons, crop caches, nodule index, statistics"),
    "speed": ("benchmarks.speed", "training-step and inference cost of every method"),
    "calibrate": ("benchmarks.stats.calibrate", "the tables' tests' false-positive rate and power, measured on simulated benchmarks"),
    "check": ("benchmarks.check", "the method contract, checked on any registered method (a plugin's too)"),
    "device-check": ("benchmarks.device_check", "the GPU measurements of the README in one command"),
}


def main(argv=None) -> None:
    """``cliplung COMMAND ...``: the same commands as ``python -m benchmarks.COMMAND``."""
    import importlib  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from benchmarks.errors import cli_main  # noqa: PLC0415

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        module, _ = COMMANDS[argv[0]]
        return importlib.import_module(module).main(argv[1:])
    return cli_main(_usage)(argv)


def _usage(argv) -> None:
    """The list of commands (``cliplung``, ``cliplung --help``); an unknown one is a UserError."""
    if argv and argv[0] not in ("-h", "--help"):
        raise UserError(f"unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}")
    width = max(map(len, COMMANDS))
    lines = ["usage: cliplung COMMAND [options]    (cliplung COMMAND --help for each)", "", "commands:"]
    lines += [f"  {name:{width}s}  {what}" for name, (_, what) in COMMANDS.items()]
    print("\n".join(lines))


def warn_phantom(profile: str, source: str) -> None:
    """One line on stderr when a paper-profile run, sweep or table uses the phantom source: its
    numbers check the pipeline, they are not results about CT scans."""
    import sys  # noqa: PLC0415

    if profile == "paper" and source == "phantom":
        print("warning: the paper profile on the phantom source (volumes rendered from the readers' annotations): "
              "a check of the pipeline, not results; use --source slices (prepare slices) or lidc for real CT", file=sys.stderr)


def add_tables_flag(parser: argparse.ArgumentParser) -> None:
    """``--tables``: which of the paper's Tables 1-3 (tables, figures tables, report), and
    ``--datasets``: only these datasets of them."""
    parser.add_argument("--tables", nargs="+", type=int, default=[1, 2, 3], choices=[1, 2, 3], help="which of the paper's tables")
    add_datasets_flag(parser)


def add_datasets_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", nargs="+", default=None, metavar="DATASET",
                        help=f"only these datasets of the tables ({', '.join(PROTOCOLS)}) (default: all of them)")


def check_datasets(datasets, tables=None) -> list[str] | None:
    """``--datasets`` checked against the protocols (None: every dataset) and, when ``tables`` are
    given, against their datasets: one that none of them holds would select nothing, silently."""
    if datasets is None:
        return None
    for d in datasets:
        if d not in PROTOCOLS:
            raise UserError(f"--datasets: unknown dataset {d!r}; choose from {', '.join(PROTOCOLS)}")
    if tables:
        from benchmarks.grid import TABLES  # noqa: PLC0415

        tables = [t for t in tables if t in TABLES]  # an unknown table is its command's to name
        held = {ds for t in tables for ds in TABLES[t]["datasets"]}
        for d in datasets:
            if tables and d not in held:
                names = " or ".join(f"Table {t}" for t in tables)
                raise UserError(f"--datasets {d}: {d} is not in {names} (" + "; ".join(
                    f"Table {t}: {', '.join(TABLES[t]['datasets'])}" for t in tables) + ")")
    return list(dict.fromkeys(datasets))


def add_setting_filters(parser: argparse.ArgumentParser, runs: bool = True) -> None:
    """The flags that pick the records of one setting (tables, figures, report), as ``sweep``
    names a setting: the source, profile, label rule and ``--set`` overrides."""
    parser.add_argument("--source", help="pick records of this source (phantom, slices, lidc)")
    parser.add_argument("--profile", help="pick records of this profile (paper, quick, smoke)")
    parser.add_argument("--text-encoder", help="pick records of this text encoder (the text-guided methods' --set text_encoder=...)")
    parser.add_argument("--min-readers", type=int, help="pick records of this label rule (minimum readers)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="pick records made with these config overrides, as given to run or sweep (repeatable; default: none, "
                             "the profile's own configs)")
    parser.add_argument("--repeats", type=int, metavar="R",
                        help="use the records of partitions 0..R-1 (repeated partitions; default: every partition the records hold)")
    add_tuned_flags(parser)
    if runs:
        parser.add_argument("--runs", help="folder of run records (default $CLIPLUNG_RUNS, else $CLIPLUNG_RESULTS/runs)")


def add_tuned_flags(parser: argparse.ArgumentParser) -> None:
    """``--tuned`` and the flags that name a tuned setting (sweep, tables, figures, report; benchmarks.tune)."""
    parser.add_argument("--tuned", action="store_true",
                        help="the tuned setting: each fold's configuration as its study chose it (python -m benchmarks.tune)")
    parser.add_argument("--objective", default="accuracy", help="with --tuned: the studies' validation objective (accuracy, macro_f1, auc, qwk)")
    parser.add_argument("--tag", default=None, help="with --tuned: the studies' --tag")


def runs_folder(args):
    """``--runs`` or the runs folder of the environment, which must exist: one line otherwise."""
    from pathlib import Path  # noqa: PLC0415

    from benchmarks.paths import file_in_the_way, runs_dir, variable_of  # noqa: PLC0415

    runs = Path(args.runs) if getattr(args, "runs", None) else runs_dir()
    if not runs.is_dir():
        bad = file_in_the_way(runs)
        raise UserError((f"no runs folder {runs}: {bad} is a file, not a folder" if bad else f"no runs folder {runs}")
                        + ("" if getattr(args, "runs", None) else f" ({variable_of('runs')})"))
    return runs


def output_folder(given: str | None, kind: str, what: str):
    """``--out`` or ``$CLIPLUNG_RESULTS/<kind>``, checked writable before any work."""
    from benchmarks.io import writable_dir  # noqa: PLC0415
    from benchmarks.paths import RESULTS_ENV, output_dir  # noqa: PLC0415

    if given:
        return writable_dir(given, what, "pick another with --out")
    return writable_dir(output_dir(kind), what, f"pick another with --out or ${RESULTS_ENV}")
