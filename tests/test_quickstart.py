"""The README's Quickstart figures are those of a real run of its command, kept as that command's own JSON output.

``results/quickstart.json`` is what ``python -m benchmarks.run ... --json`` printed over the Quickstart run's
records (the README names the command); the README's accuracy and AUC must be those numbers, formatted as the
command prints them, and the JSON must be the run the README's command makes (method, dataset, profile, 5 folds).
"""
import json
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ".venv/bin/python -m benchmarks.run --method clip_lung --dataset LIDC-B --source slices --profile quick"


def quickstart() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]


def test_readme_quickstart_numbers_are_those_of_the_committed_run():
    section = quickstart()
    assert COMMAND in section  # the command the user types
    assert f"{COMMAND.replace('.venv/bin/', '')} --json > results/quickstart.json" in " ".join(section.split())  # and the one that wrote the file
    out = json.loads((ROOT / "results" / "quickstart.json").read_text())
    assert (out["method"], out["dataset"], out["profile"], out["source"]) == ("clip_lung", "LIDC-B", "quick", "slices")
    assert sorted(int(f) for f in out["folds"]) == [0, 1, 2, 3, 4] and len(out["runs"]) == 5
    # The summary, derived a second way: mean and sample s.d. (ddof 1) of the five folds' own metrics, in float64 by hand.
    acc = np.array([r["metrics"]["accuracy"] for r in out["runs"]], dtype=np.float64)
    auc = np.array([r["metrics"]["auc"] for r in out["runs"]], dtype=np.float64)
    for name, v in (("accuracy", acc), ("auc", auc)):
        mean = sum(v) / len(v)
        std = (sum((x - mean) ** 2 for x in v) / (len(v) - 1)) ** 0.5
        assert out["summary"][name]["mean"] == pytest.approx(mean) and out["summary"][name]["std"] == pytest.approx(std)
    m = re.search(r"here (\d+\.\d) ± (\d+\.\d) accuracy, (\d\.\d{3}) ± (\d\.\d{3}) AUC", " ".join(section.split()))
    assert m, "the Quickstart no longer states the accuracy and AUC as 'here A ± S accuracy, U ± V AUC'"
    s = out["summary"]
    # As the command prints them: accuracy in % with one decimal, the AUC with three.
    assert m.groups() == (f"{100 * s['accuracy']['mean']:.1f}", f"{100 * s['accuracy']['std']:.1f}",
                          f"{s['auc']['mean']:.3f}", f"{s['auc']['std']:.3f}")
