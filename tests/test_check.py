"""``python -m benchmarks.check``: the method contract, on plugins made here that break it one way each; unknown names
refused before torch is imported (``check`` and ``run``)."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import check, plugins
from methods import REGISTRY

ROOT = Path(__file__).resolve().parent.parent

# A tiny method (one convolution, a head): the checks take a fraction of a second on it.
TEMPLATE = '''
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.space import Float, Int
from methods import register


@register("{name}")
class Tiny(nn.Module):
    @dataclass(frozen=True)
    class Config:
        {config_extra}
        width: int = 8
        scale: float = 1.0

    def __init__(self, cfg, info):
        super().__init__()
        self.cfg = cfg
        self.encoder = nn.Sequential(nn.Conv2d(info.in_channels, cfg.width, 3, padding=1), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cfg.width, info.num_classes)

    def forward(self, batch):
        feat = self.encoder(batch["image"])
        out = {{"features": feat, "logits": self.cfg.scale * self.head(feat)}}
        {forward_extra}
        return out

    def loss(self, out, batch):
        ce = F.cross_entropy({loss_logits}, batch["label"]){loss_extra}
        return {{"loss": ce, "ce": ce}}

    def predict(self, out):
        return {predict}
'''
GOOD = {"config_extra": 'SEARCH = {"width": Int(4, 16), "scale": Float(0.5, 2.0)}', "forward_extra": "", "loss_logits": 'out["logits"]', "loss_extra": "", "predict": 'out["logits"].softmax(-1)'}
BROKEN = {
    # predict-time forward keeps the labels, and predict mixes them in: a method that peeks at the answer
    "predict reads no labels or attributes": {
        "forward_extra": 'if not self.training:\n            out["seen"] = F.one_hot(batch["label"], self.head.out_features).float()',
        "predict": '0.5 * out["logits"].softmax(-1) + 0.5 * out.get("seen", out["logits"].softmax(-1))'},
    # one sigmoid per class: values in [0, 1] whose rows do not sum to 1
    "predict gives probabilities": {"predict": 'torch.sigmoid(out["logits"])'},
    # the loss reads detached logits: nothing reaches the head
    "loss finite, gradient to every parameter": {"loss_logits": 'out["logits"].detach()', "loss_extra": ' + 0 * out["features"].sum()'},
}

AND_SO = {"loss finite, gradient to every parameter": ("smoke fit lowers the loss",)}
AND_SO = {k: AND_SO.get(k, ()) for k in BROKEN}


def plugin(folder: Path, name: str, **changes) -> Path:
    path = folder / f"{name}.py"
    path.write_text(TEMPLATE.format(name=name, **{**GOOD, **changes}))
    return path


@pytest.fixture
def own_registry(tmp_path):
    """The plugin files a test loads (from its tmp_path) leave the registry when it ends; what else was
    loaded on the way (the installed plugins) stays, as a module is imported once per process."""
    yield
    for name in [n for n, m in REGISTRY.items() if m.origin and str(m.origin.get("path", "")).startswith(str(tmp_path))]:
        del REGISTRY[name]
    for spec in [s for s in plugins.LOADED if s.startswith(str(tmp_path))]:
        del plugins.LOADED[spec]


def test_a_method_that_keeps_the_contract_passes_every_check(tmp_path, own_registry, capsys):
    check.main(["tiny_ok", "--plugin", str(plugin(tmp_path, "tiny_ok"))])
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("  ")]
    assert len(lines) == len(check.CHECKS) and all(ln.split()[0] == "ok" for ln in lines), out
    assert "config round-trips through --set" in out and "2 field(s): width, scale" in out
    assert "every check passed" in out


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_a_method_that_breaks_the_contract_fails_that_check_by_name(broken, tmp_path, own_registry, capsys):
    name = "tiny_" + "".join(w[0] for w in broken.split())  # a name of its own per case
    with pytest.raises(SystemExit) as e:
        check.main([name, "--plugin", str(plugin(tmp_path, name, **BROKEN[broken]))])
    out = capsys.readouterr().out
    w = max(map(len, check.CHECKS))
    failed = [c for c in check.CHECKS for ln in out.splitlines() if ln.startswith(f"  FAIL  {c:{w}s}  ")]
    # that check, and only it (a loss that reaches no head cannot lower itself either: the smoke fit says so too)
    assert failed == [c for c in check.CHECKS if c in (broken, *AND_SO[broken])], out
    assert isinstance(e.value.code, str) and e.value.code == f"{len(failed)} check(s) failed: " + "; ".join(f"{name}: {c}" for c in failed)


# A search space its own config refuses: tune run would refuse it before any trial, and check names it.
BAD_SPACES = {
    "default outside": ('SEARCH = {"scale": Float(2.0, 4.0)}', "search space of 'scale': the default 1.0 lies outside 2 to 4"),
    "range outside RANGES": ('RANGES = {"scale": "(0, 2]"}; SEARCH = {"scale": Float(0.5, 5.0)}',
                             "search space of 'scale': 0.5 to 5 leaves the field's valid range (0, 2] (its RANGES): 5.0 is outside"),
    "Float on an int": ('SEARCH = {"width": Float(4, 16)}', "search space of 'width': Float on a field of type int"),
}


@pytest.mark.parametrize("bad", sorted(BAD_SPACES))
def test_a_search_space_its_config_refuses_fails_that_check_by_name(bad, tmp_path, own_registry, capsys):
    name = "tiny_space_" + "".join(w[0] for w in bad.split())
    code, why = BAD_SPACES[bad]
    with pytest.raises(SystemExit) as e:
        check.main([name, "--plugin", str(plugin(tmp_path, name, config_extra=code))])
    out = capsys.readouterr().out
    check_name = "search space inside the config's ranges"
    assert e.value.code == f"1 check(s) failed: {name}: {check_name}", out
    line = next(ln for ln in out.splitlines() if ln.startswith("  FAIL"))
    assert check_name in line and why in line, line


def test_the_failures_say_what_is_wrong(tmp_path, own_registry):
    plugins.load(str(plugin(tmp_path, "tiny_detail_a", **BROKEN["loss finite, gradient to every parameter"])))
    plugins.load(str(plugin(tmp_path, "tiny_detail_b", **BROKEN["predict reads no labels or attributes"])))
    plugins.load(str(plugin(tmp_path, "tiny_detail_c", **BROKEN["predict gives probabilities"])))
    a = {r.name: r for r in check.run_checks("tiny_detail_a")}
    assert "no gradient reaches 2 of 4 trainable parameters: head.weight, head.bias" in a["loss finite, gradient to every parameter"].detail
    b = {r.name: r for r in check.run_checks("tiny_detail_b")}
    assert "reads batch['label']" in b["predict reads no labels or attributes"].detail
    c = {r.name: r for r in check.run_checks("tiny_detail_c")}
    assert "rows of predict sum to 1 +-" in c["predict gives probabilities"].detail


def test_a_config_field_that_does_not_round_trip_and_a_bad_decision_rule(tmp_path, own_registry):
    src = plugin(tmp_path, "tiny_rt").read_text()
    src = src.replace("scale: float = 1.0", "scale: float = 1.0\n        sizes: list = (1, 2)")  # a tuple typed as list
    src = src.replace("class Tiny(nn.Module):", "class Tiny(nn.Module):\n    decision_rule = 'mode'")
    (tmp_path / "tiny_rt.py").write_text(src)
    plugins.load(str(tmp_path / "tiny_rt.py"))
    got = {r.name: r for r in check.run_checks("tiny_rt", checks=["attributes", "config round-trips through --set"])}
    assert not got["attributes"].ok and "decision_rule 'mode'" in got["attributes"].detail
    assert not got["config round-trips through --set"].ok and "sizes" in got["config round-trips through --set"].detail


def _timed(args):
    """The command's result, its wall time and its CPU time (user + system: what it takes on an idle core)."""
    import resource

    t, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run([sys.executable, "-c", "import sys, runpy; sys.argv = sys.argv[1:]; "
                        "import atexit; atexit.register(lambda: print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr)); "
                        "runpy.run_module(sys.argv[0], run_name='__main__')", *args],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return p, time.perf_counter() - t, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


@pytest.mark.parametrize("args", [["benchmarks.run", "--method", "nope", "--dataset", "LIDC-B"], ["benchmarks.check", "nope"]])
def test_an_unknown_method_is_refused_before_torch_is_imported(args):
    """It used to take 5.6 s (the name was checked after torch and the plugins were imported); measured 2026-12-05
    on the 2-core machine: see docs/faults.md. The CPU time is asserted (what it takes on an idle core: the wall time
    of a machine shared with other work is several times longer), the wall time only loosely."""
    p, took, cpu = _timed(args)
    assert p.returncode == 2 and p.stderr.startswith("error: unknown method 'nope'; known methods: ce, clip"), p.stderr
    from importlib import metadata

    if any(ep.name == "coral" for ep in metadata.entry_points(group=plugins.ENTRY_POINT_GROUP)):  # examples/coral installed
        assert "coral" in p.stderr.splitlines()[0]  # the plugin's method is known, read from its source
    assert "no torch" in p.stderr and cpu < 1.0 and took < 10.0, (cpu, took, p.stderr)


def test_the_names_read_from_the_sources_are_the_registered_ones():
    """What the fast refusal reads without importing anything is what the registry holds once the plugins load,
    so it never refuses a registered method."""
    from benchmarks.cli import static_method_names

    plugins.load_plugins()
    static = static_method_names()
    assert static is not None and static <= set(REGISTRY)
    assert {n for n, m in REGISTRY.items() if not (m.origin and m.origin.get("path"))} <= static  # all but files loaded by tests
