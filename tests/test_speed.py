"""The cost commands run and report what they say (the ratios themselves are measured, not tested)."""
import json

import pytest

from benchmarks import speed


def test_speed_pack_reports_alone_packed_and_a_projection(capsys):
    speed.main(["--methods", "ce", "nsb", "--pack", "2", "--rounds", "1", "--batch-size", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["pack"] == 2 and set(out["methods"]) == {"ce", "nsb"}
    for v in out["methods"].values():
        assert v["alone_step_s"] > 0 and v["packed_step_s_per_run"] > 0
    proj = out["projected_sweep"]["alone"]
    assert proj["runs"] == 180 and proj["steps_per_epoch"] == {"LIDC-A": 47, "LIDC-B": 47, "LIDC-C": 22}
    assert proj["hours"] > 0 and "udm" in proj["methods_not_timed"]


def test_project_sweep_by_hand():
    # One second a step for everything: 5 folds x 100 epochs x steps of each cell, summed over the 36 cells.
    step = {m: 1.0 for m in ("ce", "poisson", "nsb", "udm", "corf", "clip", "cocoop", "clip_lung",
                             "clip_lung_ic", "clip_lung_ic_ia", "clip_lung_ia_ca", "clip_lung_ic_ca")}
    cells = 8 * (47 + 47 + 22) + 5 * (47 + 47 + 22) - (47 + 47 + 22)  # clip_lung's cells are in Tables 2 and 3: once
    assert speed.project_sweep(step)["hours"] == pytest.approx(5 * 100 * cells / 3600, abs=1e-3)


def test_speed_times_backbones(capsys):
    speed.main(["--methods", "ce", "--backbones", "mv3_resnet18", "--rounds", "1", "--batch-size", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert list(out["methods"]) == ["ce@resnet18_2d", "ce@mv3_resnet18"]
