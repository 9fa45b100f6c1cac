"""Results at one glance and the one-page report, from smoke records; the console script."""
import html.parser
import shutil
import subprocess
import sys

import pytest

from benchmarks import figures, report


@pytest.fixture
def runs(smoke_runs, tmp_path):
    """Only the smoke records of CLIP, CoCoOp and CLIP-Lung (other tests' records stay out)."""
    out = tmp_path / "runs"
    out.mkdir()
    for m in ("clip", "cocoop", "clip_lung"):
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
    assert "source **phantom**, profile **smoke**" in md and "3 run records" in md
    assert "| CLIP-Lung |" in md and "*87.5 ± 0.3*" in md  # ours, and the paper's under it
    assert "tsne_LIDC-B_fold0_smoke_phantom" in md and "no gradcam figure of this setting yet" in md
    page = (rep / "report.html").read_text()
    checker = Checker()
    checker.feed(page)
    checker.close()
    assert not checker.errors and not checker.stack, checker.errors
    assert len(checker.images) == 2 and all(src.startswith("data:image/png;base64,") for src in checker.images)
    assert page.count("<table>") == 2 and "<blockquote><strong>These numbers come from the phantom source" in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no headless browser here (Debian: chromium); the HTML is checked by a parser above")
def test_report_opens_in_a_headless_browser(runs, tmp_path):
    rep = tmp_path / "report"
    report.main(["--tables", "2", "--profile", "smoke", "--runs", str(runs), "--figures", str(tmp_path), "--out", str(rep)])
    p = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", (rep / "report.html").as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "<h2>Table 2</h2>" in p.stdout and "CLIP-Lung" in p.stdout


def test_console_script_lists_and_runs_the_commands():
    p = subprocess.run([sys.executable, "-c", "from benchmarks.cli import main; main()"], capture_output=True, text=True)
    assert p.returncode == 0 and all(c in p.stdout for c in ("run", "sweep", "tables", "figures", "prepare", "speed", "report"))
    p = subprocess.run([sys.executable, "-c", "from benchmarks.cli import main; main(['tables', '--help'])"], capture_output=True, text=True)
    assert p.returncode == 0 and "--with-paper" in p.stdout
    p = subprocess.run([sys.executable, "-c", "from benchmarks.cli import main; main(['nope'])"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip() == "error: unknown command 'nope'; choose one of " + ", ".join(__import__("benchmarks.cli").cli.COMMANDS)


def test_help_is_quick_and_shows_defaults():
    import time

    for module in ("run", "sweep", "tables", "figures", "prepare", "speed", "report"):
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--help"], capture_output=True, text=True)
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
