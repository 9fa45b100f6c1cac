"""Results at one glance and the one-page report, from smoke records; the console script."""
import html.parser
import re
import shutil
import subprocess
import sys

import pytest

from benchmarks import figures, report


@pytest.fixture
def runs(smoke_runs, tmp_path):
    """Only the smoke records of CLIP and CLIP-Lung (other tests' records stay out)."""
    out = tmp_path / "runs"
    out.mkdir()
    for m in ("clip", "clip_lung"):
        for p in smoke_runs.glob(f"{m}_LIDC-B_fold0_seed0_smoke_phantom_*"):
            shutil.copy(p, out / p.name)
    return out


class Checker(html.parser.HTMLParser):
    """Every opened element closed in order (void elements aside); images inline."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.images = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}> at {self.getpos()}")


def test_one_glance_figure_and_report(runs, tmp_path, capsys, caplog):
    out = tmp_path / "figs"
    with caplog.at_level("INFO", logger="benchmarks.figures"):
        figures.main(["tables", "--tables", "2", "--profile", "smoke", "--runs", str(runs), "--out", str(out)])
    assert "table 2: no records on LIDC-C, its panel is left out" in caplog.text  # records are LIDC-B only
    assert (out / "tables2_smoke_phantom.png").stat().st_size > 10_000 and (out / "tables2_smoke_phantom.pdf").exists()
    rep = tmp_path / "report"
    figs = tmp_path / "interp"
    figs.mkdir()
    shutil.copy(out / "tables2_smoke_phantom.png", figs / "tsne_LIDC-B_fold0_smoke_phantom.png")  # an interpretability figure of the setting
    report.main(["--tables", "2", "--profile", "smoke", "--runs", str(runs), "--figures", str(figs), "--out", str(rep)])
    printed = capsys.readouterr().out
    assert "warning: These numbers come from the phantom source" in printed
    md = (rep / "report.md").read_text()
    assert "source **phantom**, profile **smoke**" in md and "2 run records" in md
    assert "| CLIP-Lung |" in md and "*87.5 ± 0.3*" in md  # ours, and the paper's under it
    assert "tsne_LIDC-B_fold0_smoke_phantom" in md and "no gradcam figure of this setting yet" in md
    page = (rep / "report.html").read_text()
    checker = Checker()
    checker.feed(page)
    checker.close()
    assert not checker.errors and not checker.stack, checker.errors
    assert len(checker.images) == 2 and all(src.startswith("data:image/png;base64,") for src in checker.images)
    # Table 2, the pathology table and what moves a cell
    assert page.count("<table>") == 3 and "<blockquote><strong>These numbers come from the phantom source" in page
    assert "## Against pathology" in md and "*Radiologists (mean rating), reference*" in md


def test_console_script_lists_and_runs_the_commands():
    p = subprocess.run([sys.executable, "-c", "from benchmarks.cli import main; main()"], capture_output=True, text=True)
    assert p.returncode == 0 and all(c in p.stdout for c in ("run", "sweep", "tables", "figures", "prepare", "speed", "report"))
    p = subprocess.run([sys.executable, "-c", "from benchmarks.cli import main; main(['tables', '--help'])"], capture_output=True, text=True)
    assert p.returncode == 0 and "--with-paper" in p.stdout
    p = subprocess.run([sys.executable, "-c", "from benchmarks.cli import main; main(['nope'])"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip() == "error: unknown command 'nope'; choose one of " + ", ".join(__import__("benchmarks.cli").cli.COMMANDS)


def test_help_is_quick_and_shows_defaults():
    import time

    for module, *sub in (("run",), ("sweep",), ("sweep", "run"), ("tables",), ("figures",), ("figures", "cd"), ("prepare",),
                         ("prepare", "download"), ("speed",), ("report",), ("device_check",), ("tune",), ("tune", "run"),
                         ("tune", "status"), ("figures", "tuning")):
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *sub, "--help"], capture_output=True, text=True)
        took = time.perf_counter() - t
        assert p.returncode == 0, (module, p.stderr)
        assert took < 3.0, (module, took)  # under a second on an idle machine; a loaded CI machine gets slack
    p = subprocess.run([sys.executable, "-m", "benchmarks.run", "--help"], capture_output=True, text=True)
    assert "(default: paper)" in p.stdout and "--folds FOLD" in p.stdout and "--seeds SEED" in p.stdout


def test_figures_layer_names_match_interpret():
    from benchmarks import interpret

    assert figures.LAYER_NAMES == interpret.LAYERS and figures.DEFAULT_LAYER == interpret.DEFAULT_LAYER


def test_every_flag_of_every_command_has_help_so_its_default_shows(monkeypatch):
    """Each command's parser, caught as it parses: every option has a help text (argparse shows a
    default only beside one), and a default of 0 is shown too."""
    import argparse
    import importlib

    from benchmarks import cli

    class Caught(BaseException):
        pass

    seen = {}

    def catch(self, args=None, namespace=None):
        seen[self.prog] = self
        raise Caught

    monkeypatch.setattr(cli.ArgumentParser, "parse_args", catch)
    for module in ("run", "sweep", "tables", "figures", "prepare", "speed", "report", "device_check"):
        with pytest.raises(Caught):
            importlib.import_module(f"benchmarks.{module}").main([])
    missing = []

    def walk(name, p):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for n, sub in a.choices.items():
                    walk(f"{name} {n}", sub)
            elif a.option_strings and not a.help:
                missing.append(f"{name} {a.option_strings[0]}")

    for name, p in seen.items():
        walk(name, p)
    assert len(seen) == 8 and not missing, missing
    sweep_run = next(a for a in seen["python -m benchmarks.sweep"]._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
    assert "GPUs per Slurm task (default: 0)" in " ".join(sweep_run.format_help().split())


def test_report_of_two_seeds_shows_the_statistics(tmp_path, capsys):
    """Records of 2 seeds x 5 folds, three methods on LIDC-B and LIDC-C (made in the test, from real specs): the
    report shows the seed aggregation, the corrected paired intervals with Holm-adjusted p, the cell intervals
    and the critical-difference diagram with its Friedman test."""
    from tests.records_synth import record, write

    accs = {"ce": 0.78, "nsb": 0.80, "clip_lung": 0.86}
    rs = [record(m, d, f, a + 0.01 * f + 0.005 * s, seed=s) for m, a in accs.items() for d in ("LIDC-B", "LIDC-C") for f in range(5) for s in (0, 1)]
    runs = write(tmp_path / "runs", rs)
    rep = tmp_path / "report"
    report.main(["--tables", "2", "--runs", str(runs), "--figures", str(tmp_path), "--out", str(rep), "--bootstrap", "200"])
    md = (rep / "report.md").read_text()
    assert "seeds 0, 1: each fold's value is the mean over the seeds" in md and "(seed s.d. " in md
    assert "Holm-adjusted" in md and "corrected resampled t-test" in md and "How to read a difference" in md
    ce_row = next(x for x in md.split("**LIDC-C**")[1].splitlines() if x.startswith("| CE Loss |"))
    cells = [c.strip() for c in ce_row.split("|")]
    assert re.fullmatch(r"\[\d+\.\d, \d+\.\d\]", cells[3]), cells  # the accuracy's bootstrap interval
    assert re.fullmatch(r"0\.\d{3} \[0\.\d{3}, 0\.\d{3}\]", cells[4]), cells  # the AUC with its interval
    assert re.fullmatch(r"−\d+\.\d \[−\d+\.\d, [−+]\d+\.\d\]\*?", cells[-4]) and cells[-3].startswith("p "), cells  # Δ and its p
    assert re.fullmatch(r"0\.\d\d \[0\.\d\d, 0\.\d\d\][↑↓]?", cells[-2]), cells  # P(CE > CLIP-Lung) and its interval
    assert "Friedman test of 3 methods by accuracy over 10 (dataset, fold) blocks" in md and "![critical-difference diagram](cd_accuracy.png)" in md
    assert (rep / "cd_accuracy.png").stat().st_size > 5_000


def test_report_of_repeated_partitions_shows_units_prob_variance_and_readers(tmp_path):
    """Smoke records of 2 partitions x 5 folds x 2 seeds (made in the test): the report shows the partitions' spread,
    P(A > B) with its interval, the variance shares (a figure and a table), the readers' reference row and ranks whose
    blocks are named as exploratory."""
    from tests.records_synth import record, write

    rs = [record(m, "LIDC-B", f, (0.76 if m == "ce" else 0.84) + 0.01 * f + 0.005 * s + 0.01 * k, seed=s, repeat=k)
          for m in ("ce", "clip_lung") for k in (0, 1) for f in range(5) for s in (0, 1)]
    rep = tmp_path / "report"
    report.main(["--tables", "2", "--runs", str(write(tmp_path / "runs", rs)), "--figures", str(tmp_path), "--out", str(rep),
                 "--bootstrap", "200", "--repeats", "2"])
    md = (rep / "report.md").read_text()
    ce_row = next(x for x in md.split("**LIDC-B**")[1].splitlines() if x.startswith("| CE Loss |"))
    # CE below CLIP-Lung on all 10 units: P(>) = 0, without Bouthillier's verdict (its rule failed the calibration)
    assert "(2 partitions s.d. " in ce_row and ce_row.endswith("| 0.00 [0.00, 0.00] |") and "↓" not in md
    assert "P(>) is shown without a verdict" in md and "Smallest detectable difference" in md
    assert "Repeated partitions 0, 1" in md and "n = folds x partitions" in md and "Bouthillier" in md
    assert "*Radiologists (leave-one-out)* (reference)" in md.split("**LIDC-B**")[1]
    assert "## What moves a cell" in md and "![variance shares per cell](variance_accuracy.png)" in md
    assert re.search(r"\| ce, LIDC-B \| \d\.\d\d \| \d\.\d\d \| \d\.\d\d \| 20 \|", md)
    assert (rep / "variance_accuracy.png").stat().st_size > 3_000
    assert "not independent and the test is exploratory" in md and re.search(r"chi2 = \d+\.\d\d \(df 1\)", md)


def test_report_names_plugins_keeps_left_out_rows_and_prints_no_tex(tmp_path, monkeypatch):
    """A plugin's identity in the setting, a method whose records were all left out shown with the reason, and no raw
    TeX ($) in the Markdown or the HTML (Table 3's loss headers were $L_{IC}$)."""
    import methods
    from methods.ce import CrossEntropy as CE
    from methods.registry import Method
    from tests.records_synth import record, write

    class Labelled(CE):
        label = "CE+"

    origin = {"plugin": "plus.py", "sha256": "fedcba9876543210" * 4, "path": str(tmp_path / "plus.py")}
    monkeypatch.setitem(methods.REGISTRY, "ce_plus", Method("ce_plus", Labelled, CE.Config(), origin))
    rs = [record(m, "LIDC-B", f, a + 0.01 * f) for m, a in (("ce", 0.78), ("clip_lung", 0.85), ("clip_lung_ic", 0.8), ("ce_plus", 0.8))
          for f in range(5)]
    old = [record("nsb", "LIDC-B", f, 0.9) for f in range(5)]
    for r in old:
        r["method_version"] = 0  # an older implementation: every record left out
    rep = tmp_path / "report"
    report.main(["--tables", "2", "3", "--datasets", "LIDC-B", "--runs", str(write(tmp_path / "runs", rs + old)), "--figures", str(tmp_path),
                 "--out", str(rep), "--bootstrap", "0"])
    md, page = (rep / "report.md").read_text(), (rep / "report.html").read_text()
    assert "- plugins: `plus.py#fedcba9876543210` (ce_plus)" in md
    assert "<li>plugins: <code>plus.py#fedcba9876543210</code> (ce_plus)</li>" in page
    assert "| NSB | — (left out: made by version 0 of nsb, the current one is 1) |" in md
    assert "| CE+ (not in the paper) | " in md and "| L_IC | L_IA | L_CA | LIDC-B |" in md
    assert "$" not in md and "$" not in page


def test_cd_of_repeated_records_over_folds_or_datasets(tmp_path, capsys):
    """figures cd on records of 2 partitions: (dataset, (repeat, fold)) blocks named exploratory; --blocks datasets gives
    one block per dataset (Demsar's), in its own files."""
    import json

    from tests.records_synth import record, write

    rs = [record(m, d, f, {"ce": 0.76, "nsb": 0.80}.get(m, 0.84) + 0.01 * f, repeat=k)
          for m in ("ce", "clip_lung", "nsb") for d in ("LIDC-B", "LIDC-C") for k in (0, 1) for f in range(5)]
    runs, out = write(tmp_path / "runs", rs), tmp_path / "figs"
    figures.main(["cd", "--tables", "2", "--runs", str(runs), "--out", str(out)])
    folds = json.loads(next(out.glob("cd_accuracy_tables2_*.json")).read_text())
    assert folds["exploratory"] and len(folds["blocks"]) == 20 and ["LIDC-B", [1, 4]] in folds["blocks"]
    figures.main(["cd", "--tables", "2", "--runs", str(runs), "--out", str(out), "--blocks", "datasets"])
    ds = json.loads(next(out.glob("cd_datasets_accuracy_tables2_*.json")).read_text())
    assert ds["block_kind"] == "datasets" and not ds["exploratory"] and ds["blocks"] == [["LIDC-B"], ["LIDC-C"]]
    assert ds["average_ranks"]["clip_lung"] == 1.0
    assert "over 2 blocks" in capsys.readouterr().out
