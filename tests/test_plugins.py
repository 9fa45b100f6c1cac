"""Methods and backbones from outside the package: --plugin, CLIPLUNG_PLUGINS, entry points."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import methods
from benchmarks.errors import UserError
from benchmarks.plugins import PLUGINS_ENV, load
from benchmarks.records import RUNS_ENV

# A method file as a user writes it, outside the repository (smoothing: a config field of its own).
METHOD = '''
from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from methods import register
from methods.backbones import DEFAULT_BACKBONE, build_backbone


@register("{name}")
class Smoothed(nn.Module):
    @dataclass(frozen=True)
    class Config:
        backbone: str = DEFAULT_BACKBONE
        smoothing: float = 0.1

    def __init__(self, cfg, info):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_backbone(cfg.backbone, info.in_channels)
        self.head = nn.Linear(self.encoder.dim, info.num_classes)

    def forward(self, batch):
        feat = self.encoder(batch["image"])
        return {{"features": feat, "logits": self.head(feat)}}

    def loss(self, out, batch):
        ce = F.cross_entropy(out["logits"], batch["label"], label_smoothing=self.cfg.smoothing)
        return {{"loss": ce, "ce": ce}}

    def predict(self, out):
        return out["logits"].softmax(-1)
'''

# A backbone plugin: a tiny encoder (4 channels) so that a smoke fold takes a moment.
BACKBONE = '''
import torch
from torch import nn

from methods.backbones import Backbone, register_backbone


@register_backbone("tiny_cnn")
class Tiny(Backbone):
    dim = 16
    map_hw = (4, 4)

    def __init__(self, in_channels=32):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, self.dim, 3, padding=1)

    def feature_map(self, x):
        return nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4)  # (B, 16, 4, 4)
'''


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def cli(*args, env=None, timeout=600, cwd=None):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd)


def one_error_line(p):
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    lines = [x for x in p.stderr.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_a_method_file_outside_the_repo_runs_a_smoke_fold_and_is_named_in_its_record(phantom_env, tmp_path):
    plugin = write(tmp_path / "smoothed.py", METHOD.format(name="smoothed"))
    tiny = write(tmp_path / "tiny.py", BACKBONE)
    runs = tmp_path / "runs"
    args = ["benchmarks.run", "--plugin", str(plugin), "--plugin", str(tiny), "--method", "smoothed", "--dataset", "LIDC-C",
            "--fold", "0", "--profile", "smoke", "--set", "backbone='tiny_cnn'", "--set", "smoothing=0.2", "--json", "--quiet"]
    p = cli(*args, env={RUNS_ENV: str(runs)})
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads(open(json.loads(p.stdout)["records"][0]).read())
    assert rec["method"] == "smoothed" and rec["backbone"] == "tiny_cnn" and rec["config"]["method"]["smoothing"] == 0.2
    origin = rec["plugin_origin"]
    assert origin["path"] == str(plugin) and len(origin["sha256"]) == 64
    assert rec["plugin"] == f"smoothed.py#{origin['sha256'][:16]}"  # the identity in the run key: file name and hash
    assert re.fullmatch(r"tiny\.py#[0-9a-f]{16}", rec["backbone_plugin"])
    # The same files spelled as relative paths (as a sweep's tasks get them absolute): the same run.
    relative = [a.replace(str(tmp_path), ".") for a in args]
    same = cli(*relative, env={RUNS_ENV: str(runs)}, cwd=tmp_path)
    assert same.returncode == 0 and "reused" in same.stderr, same.stderr[-2000:]
    # Editing the backbone's file, then the method's, is another run each time: no record of old code is reused.
    for n, (path, text) in enumerate([(tiny, BACKBONE), (plugin, METHOD.format(name="smoothed"))], start=2):
        write(path, text + "\n# edited\n")
        again = cli(*args, env={RUNS_ENV: str(runs)})
        assert again.returncode == 0 and "reused" not in again.stderr, again.stderr[-2000:]
        assert len(list(runs.glob("smoothed_*.json"))) == n
    # Tables and the report use the records of the code loaded now and name the old ones they leave out.
    old = {f.name for f in runs.glob("smoothed_*.json")} - {Path(json.loads(again.stdout)["records"][0]).name}
    for cmd in (["benchmarks.tables", "--out", str(tmp_path / "t")], ["benchmarks.report", "--out", str(tmp_path / "r"), "--bootstrap", "200"]):
        p = cli(*cmd, "--plugin", str(plugin), "--plugin", str(tiny), "--tables", "2", "--profile", "smoke", "--set", "backbone='tiny_cnn'",
                "--set", "smoothing=0.2", env={RUNS_ENV: str(runs)})
        assert p.returncode == 0, p.stderr[-3000:]
        # One line for the old records of each reason, with their count and the command that remakes them with the code now.
        said = [x for x in p.stderr.splitlines() if "leaving out" in x and "made by its" in x]
        assert sum(int(x.split("leaving out ")[1].split()[0]) for x in said) == len(old), p.stderr[-3000:]
        assert all("python -m benchmarks.run --method smoothed" in x for x in said), said
    md = (tmp_path / "t" / "table2_smoke_phantom_smoothed_tiny.md").read_text()  # the plugins in the name
    row = next(x for x in md.splitlines() if x.startswith("| smoothed (not in the paper) | **"))  # LIDC-C: the one record of the code now
    assert "†" in row and f"{100 * json.loads(again.stdout)['folds']['0']['accuracy']:.1f}" in row


def test_plugins_from_the_environment_join_the_registry(tmp_path):
    plugin = write(tmp_path / "envmethod.py", METHOD.format(name="env_method"))
    p = cli("benchmarks.run", "--list", env={PLUGINS_ENV: str(plugin)})
    assert p.returncode == 0 and "env_method" in p.stdout and "smoothing=0.1" in p.stdout, p.stderr[-2000:]


@pytest.mark.parametrize("case,text,problem", [
    ("syntax", "def broken(:\n", "failed to import: SyntaxError"),
    ("import", "import no_such_module_here\n", "failed to import: ModuleNotFoundError"),
    ("taken", METHOD.format(name="ce"), "method 'ce' is already registered"),
    ("no loss", METHOD.format(name="no_loss").replace("def loss(", "def lossy("), "breaks the method interface: it has no loss() method"),
    ("not frozen", METHOD.format(name="thawed").replace("@dataclass(frozen=True)", "@dataclass"), "is not frozen"),
    ("shadow", METHOD.format(name="shadow").replace("smoothing: float", "lr: float"), "shadow the training config"),
])
def test_bad_plugins_are_one_line_naming_the_plugin(tmp_path, case, text, problem):
    plugin = write(tmp_path / f"bad_{case.replace(' ', '_')}.py", text)
    with pytest.raises(UserError, match=re.escape(problem)) as e:
        load(str(plugin))
    assert str(plugin) in str(e.value)
    assert case == "taken" or f"{case}" not in methods.REGISTRY


def test_bad_plugin_on_the_command_line_exits_2(tmp_path):
    line = one_error_line(cli("benchmarks.run", "--plugin", str(tmp_path / "missing.py"), "--list"))
    assert "missing.py: no such file or folder" in line
    bad = write(tmp_path / "taken.py", METHOD.format(name="nsb"))
    assert "already registered" in one_error_line(cli("benchmarks.tables", "--plugin", str(bad)))
    assert "already registered" in one_error_line(cli("benchmarks.figures", "tables", "--plugin", str(bad)))
    assert "already registered" in one_error_line(cli("benchmarks.figures", "tsne", "--dataset", "LIDC-B", "--plugin", str(bad)))


def test_a_package_folder_and_a_module_name_are_plugins_too(tmp_path, monkeypatch):
    pkg = tmp_path / "folderplugin"
    pkg.mkdir()
    write(pkg / "__init__.py", "from . import impl  # noqa: F401\n")
    write(pkg / "impl.py", METHOD.format(name="from_folder"))
    origin = load(str(pkg))
    assert methods.get_method("from_folder").origin["sha256"] == origin["sha256"]
    mod = tmp_path / "site"
    mod.mkdir()
    write(mod / "named_plugin.py", METHOD.format(name="from_module"))
    monkeypatch.syspath_prepend(str(mod))
    load("named_plugin")
    assert methods.get_method("from_module").origin["plugin"] == "named_plugin"


def test_the_coral_example_registers_through_its_entry_point():
    try:
        from importlib.metadata import version

        version("cliplung-coral")
    except Exception:  # noqa: BLE001
        pytest.skip("examples/coral is not installed here (CI installs it: pip install ./examples/coral)")
    from benchmarks.plugins import load_plugins

    load_plugins()  # as every command does (an earlier test's command may not have: a wrong name ends before it)
    m = methods.get_method("coral")
    assert m.origin["distribution"] == "cliplung-coral" and m.origin["plugin"].startswith("coral (entry point")


ONE_STEP = ["--profile", "smoke", "--set", "epochs=1", "--set", "train_limit=32"]  # what is tested is where the rows go, not training


@pytest.mark.slow
def test_a_local_sweep_puts_plugin_methods_in_table_1(phantom_env, tmp_path):
    """ce, coral (the installed example) and a method file outside the repo, fold 0 of Table 1, smoke, through
    the local executor in packs of two; then Table 1 has their rows (a text-guided method in a pack: tests/test_pack.py)."""
    from benchmarks.plugins import load_plugins

    load_plugins()  # the installed entry points, as the sweep will see them
    try:
        methods.get_method("coral")
        extra = ["coral"]
    except UserError:
        extra = []  # examples/coral is not installed here (CI installs it)
    plugin = write(tmp_path / "smoothed.py", METHOD.format(name="smoothed"))
    env = {RUNS_ENV: str(tmp_path / "runs"), "CLIPLUNG_SWEEPS": str(tmp_path / "sweeps")}
    p = cli("benchmarks.sweep", "run", "--plugin", str(plugin), "--tables", "1", "--methods", "ce", *extra, "smoothed",
            "--folds", "0", *ONE_STEP, "--executor", "local", "--cpus-per-task", "1", "--runs-per-task", "2", env=env, timeout=1200)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    man = json.loads(next((tmp_path / "sweeps").glob("*/sweep.json")).read_text())
    assert man["plugins"] == [str(plugin)] and man["tasks"] == -(-(2 + len(extra)) // 2)  # packs of two
    st = cli("benchmarks.sweep", "status", "--plugin", str(plugin), "--tables", "1", "--methods", "ce", *extra, "smoothed",
             "--folds", "0", *ONE_STEP, "--json", env=env)
    assert json.loads(st.stdout)["totals"]["done"] == 2 + len(extra), st.stderr[-2000:]
    t = cli("benchmarks.tables", "--plugin", str(plugin), "--tables", "1", *ONE_STEP, "--out", str(tmp_path / "tables"), env=env)
    assert t.returncode == 0, t.stderr[-2000:]
    (table,) = (tmp_path / "tables").glob("table1_smoke_phantom_*smoothed*.md")  # the plugins in the name (coral's too where installed)
    md = table.read_text()
    assert "| smoothed (not in the paper) |" in md and all(f"| {m} (not in the paper) |" in md for m in extra)
