"""Tables from run records: statistics, layout, refusal to mix settings, LaTeX that compiles."""
import json
import math
import shutil
import subprocess

import numpy as np
import pytest

import methods
from benchmarks.errors import UserError
from benchmarks.records import read_records
from benchmarks.tables import build, select, write_tables


def record(method, dataset, fold, acc, source="phantom", profile="smoke", seed=0, enc=None, rec_b=0.5, f1_b=0.5):
    classes = ["benign", "malignant"] if dataset != "LIDC-A" else ["benign", "unsure", "malignant"]
    return {
        "method": method, "dataset": dataset, "fold": fold, "seed": seed, "source": source, "profile": profile,
        "min_readers": 2, "text_encoder": enc if method in ("clip", "cocoop") or method.startswith("clip_lung") else None,
        "config_hash": f"{method}-cfg", "key": f"{method}{dataset}{fold}{seed}{source}{profile}",
        "method_version": methods.REGISTRY[method].version,
        "metrics": {"accuracy": acc, "recall": {c: rec_b for c in classes}, "f1": {c: f1_b for c in classes}},
        "config": {"method": {}, "train": {"epochs": 2}}, "predictions": [],
    }


def write(tmp_path, recs):
    d = tmp_path / "runs"
    d.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(recs):
        (d / f"r{i:03d}.json").write_text(json.dumps(r))
    return d


@pytest.fixture
def recs():
    ce = [0.80, 0.82, 0.84, 0.86, 0.88]
    cl = [0.85, 0.86, 0.87, 0.90, 0.91]
    out = [record("ce", "LIDC-C", f, a) for f, a in enumerate(ce)]
    out += [record("clip_lung", "LIDC-C", f, a, enc="minilm-l6", rec_b=0.4) for f, a in enumerate(cl)]
    out += [record("nsb", "LIDC-C", f, 0.5) for f in range(3)]  # fewer than 5 folds
    return out


def test_hand_computed_mean_std_bold_and_marks(tmp_path, recs):
    runs = write(tmp_path, recs)
    chosen = select(read_records(runs), [2])
    data = build(chosen, [2])
    ce = data[2]["LIDC-C"]["ce"]["metrics"]["accuracy"]
    assert ce["mean"] == pytest.approx(84.0) and ce["std"] == pytest.approx(np.std([80, 82, 84, 86, 88], ddof=1))
    # Paired difference to CLIP-Lung over the same folds: ce - clip_lung = [-5, -4, -3, -4, -3].
    d = np.array([-5.0, -4, -3, -4, -3])
    half = 2.7764451051977987 * d.std(ddof=1) / math.sqrt(5)  # t(0.975, 4)
    diff = data[2]["LIDC-C"]["ce"]["vs_clip_lung"]
    assert diff["mean"] == pytest.approx(d.mean()) and diff["low"] == pytest.approx(d.mean() - half)
    paths = write_tables([2], chosen, tmp_path / "tables")
    md = (tmp_path / "tables" / "table2_smoke_phantom.md").read_text()
    assert "| CE Loss | 84.0 ± 3.2 |" in md  # sample std of 80..88 = 3.16
    assert "**87.8 ± 2.6**" in md  # CLIP-Lung's accuracy is the best: bold
    assert "| NSB | 50.0 ± 0.0† |" in md  # 3 folds: marked
    assert "| Poisson | — |" in md  # missing
    assert "*89.5 ± 0.4*" in md  # the paper's CLIP-Lung on LIDC-C beside ours
    assert "−3.8 [" in md
    tex = (tmp_path / "tables" / "table2_smoke_phantom.tex").read_text()
    assert r"\toprule" in tex and r"\textbf{87.8 $\pm$ 2.6}" in tex and "$^\\dagger$" in tex
    assert {p.name for p in paths} >= {"table2_smoke_phantom.tex", "table2_smoke_phantom.md", "tables_smoke_phantom.json"}


def test_mixed_settings_are_refused(tmp_path, recs):
    other = [record("ce", "LIDC-C", 0, 0.7, source="lidc")]
    runs = write(tmp_path, recs + other)
    with pytest.raises(UserError, match=r"source lidc \(1 records\), phantom \(\d+ records\).*--source"):
        select(read_records(runs), [2])
    assert len(select(read_records(runs), [2], source="phantom")) == len(recs)
    prof = [record("ce", "LIDC-C", 1, 0.7, profile="quick")]
    runs2 = write(tmp_path / "b", recs + prof)
    with pytest.raises(UserError, match="profile quick"):
        select(read_records(runs2), [2])
    enc = [record("clip_lung", "LIDC-C", 1, 0.7, enc="clip-vit-b16:openai")]
    runs3 = write(tmp_path / "c", recs + enc)
    with pytest.raises(UserError, match="text-encoder"):
        select(read_records(runs3), [2])


def test_a_cell_of_mixed_configurations_is_refused(tmp_path, recs):
    # Fold 0 trained 2 epochs and fold 1 trained 4: one cell must never average them.
    mixed = [dict(record("udm", "LIDC-C", f, 0.6), config_hash=f"udm-{e}", config={"train": {"epochs": e, "lr": 0.001}, "method": {}})
             for f, e in ((0, 2), (1, 4))]
    runs = write(tmp_path, recs + mixed)
    with pytest.raises(UserError, match=r"udm on LIDC-C differ in epochs \(2, 4\)"):
        select(read_records(runs), [2])


def test_records_of_an_older_implementation_are_left_out_with_a_warning(tmp_path, recs, caplog):
    assert methods.REGISTRY["udm"].version >= 2
    old = [record("udm", "LIDC-C", f, 0.99) for f in range(5)]
    for r in old:
        del r["method_version"]  # a record from before versions: version 1
    new = [record("udm", "LIDC-C", f, 0.6) for f in range(2)]
    runs = write(tmp_path, recs + old + new)
    with caplog.at_level("WARNING"):
        chosen = select(read_records(runs), [2])
    udm = [r for r in chosen if r["method"] == "udm"]
    assert len(udm) == 2 and all(r["metrics"]["accuracy"] == 0.6 for r in udm)
    assert sum("made by version 1 of udm" in m for m in caplog.messages) == 5
    assert build(chosen, [2])[2]["LIDC-C"]["udm"]["metrics"]["accuracy"]["mean"] == pytest.approx(60.0)


def test_table3_check_marks(tmp_path):
    recs = [record(m, d, f, 0.6 if m == "clip_lung" else 0.5) for m in ("clip_lung", "clip_lung_ic") for d in ("LIDC-A", "LIDC-B", "LIDC-C") for f in range(5)]
    runs = write(tmp_path, recs)
    write_tables([3], select(read_records(runs), [3]), tmp_path / "t")
    md = (tmp_path / "t" / "table3_smoke_phantom.md").read_text()
    assert "| ✓ |  |  | 50.0 ± 0.0 |" in md and "| ✓ | ✓ | ✓ | **60.0 ± 0.0** |" in md and "| — |" in md


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (Debian: texlive-latex-recommended)")
def test_latex_compiles(tmp_path, recs):
    full = recs + [record(m, "LIDC-A", f, 0.55) for m in ("ce", "clip_lung") for f in range(5)]
    full += [record("clip_lung_ic_ia", d, f, 0.6) for d in ("LIDC-A", "LIDC-B", "LIDC-C") for f in range(5)]
    runs = write(tmp_path, full)
    out = tmp_path / "tables"
    write_tables([1, 2, 3], select(read_records(runs), [1, 2, 3]), out, with_paper=True)
    # The standalone document written beside the tables, with the preamble it documents.
    p = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "tables_smoke_phantom.tex"], cwd=out, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-2000:]
    assert (out / "tables_smoke_phantom.pdf").exists()
    assert r"\usepackage{amssymb}" in (out / "preamble.tex").read_text()


def test_methods_outside_the_paper_are_rows_below_it(tmp_path, recs):
    # A plugin's method (not in the registry here) on LIDC-C: its own row, marked, with the
    # paired difference to CLIP-Lung like every other row.
    coral = [dict(record("ce", "LIDC-C", f, a), method="coral", config_hash="coral-cfg") for f, a in enumerate([0.9, 0.9, 0.9, 0.9, 0.95])]
    runs = write(tmp_path, recs + coral)
    chosen = select(read_records(runs), [2])
    data = build(chosen, [2])
    assert list(data[2]["LIDC-C"])[-1] == "coral"
    assert data[2]["LIDC-C"]["coral"]["vs_clip_lung"]["mean"] == pytest.approx(np.mean([5, 4, 3, 0, 4]))
    write_tables([2], chosen, tmp_path / "t")
    md = (tmp_path / "t" / "table2_smoke_phantom.md").read_text()
    assert "| coral (not in the paper) | **91.0 ± 2.2** |" in md
    tex = (tmp_path / "t" / "table2_smoke_phantom.tex").read_text()
    assert r"coral (not in the paper)" in tex and tex.count(r"\midrule") == 2  # a rule above the extra rows
    # Not on Table 3, which ablates CLIP-Lung.
    assert "coral" not in "".join(build(chosen, [3])[3]["LIDC-C"])


def test_backbone_table_pairs_ce_and_clip_lung_per_backbone(tmp_path):
    from benchmarks.tables import build_backbones, select_backbones, write_backbones

    recs = []
    for b, (ce, cl) in {"resnet18_2d": (0.80, 0.84), "r3d_18": (0.70, 0.71)}.items():
        for f in range(5):
            for m, acc in (("ce", ce + f / 100), ("clip_lung", cl + f / 50)):
                r = record(m, "LIDC-A", f, acc, enc="minilm-l6")
                r.update(backbone=b, config_hash=f"{m}-{b}", config={"method": {"backbone": b}, "train": {}})
                recs.append(r)
    runs = write(tmp_path, recs)
    chosen = select_backbones(read_records(runs))
    data = build_backbones(chosen)
    assert list(data) == ["resnet18_2d", "r3d_18"]  # the paper's first
    gain = data["r3d_18"]["LIDC-A"]["gain"]
    assert gain["mean"] == pytest.approx(np.mean([1 + f for f in range(5)]))  # (0.71 + f/50) - (0.70 + f/100), in points
    assert data["r3d_18"]["LIDC-B"]["ce"] is None
    out = tmp_path / "t"
    out.mkdir()
    write_backbones(chosen, out)
    md = (out / "backbones_smoke_phantom.md").read_text()
    assert "| r3d_18 | 72.0 ± 1.6 | 75.0 ± 3.2 | +3.0 [" in md and "*paper: MV-DAR [12]* | *57.3* | *58.9* | *+1.6*" in md
    # The main tables keep to the paper's backbone: an r3d_18 record does not enter them.
    assert {r.get("backbone") for r in select(read_records(runs), [1])} == {"resnet18_2d"}
    if shutil.which("pdflatex"):
        p = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "backbones_smoke_phantom_doc.tex"], cwd=out, capture_output=True, text=True)
        assert p.returncode == 0, p.stdout[-2000:]


def test_paper_profile_on_the_phantom_source_warns(tmp_path, recs, capsys):
    from benchmarks.tables import main

    runs = write(tmp_path, [dict(r, profile="paper") for r in recs])
    main(["--tables", "2", "--runs", str(runs), "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert err.count("warning: the paper profile on the phantom source") == 1
    assert (tmp_path / "t" / "table2_paper_phantom.md").exists()
    main(["--tables", "2", "--runs", str(write(tmp_path / "q", recs)), "--out", str(tmp_path / "t")])  # smoke: no warning
    assert "warning" not in capsys.readouterr().err
