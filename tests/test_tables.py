"""Tables from run records: every number from the records' predictions, one setting, the statistics, LaTeX that compiles."""
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as ss

import methods
from benchmarks.errors import UserError
from benchmarks.records import read_records
from benchmarks.selection import Setting
from benchmarks.tables import build, select, write_tables
from tests.records_synth import accuracy_of, record, write

CE = [0.80, 0.82, 0.84, 0.86, 0.88]


def shown(rs, method=None, dataset=None) -> str:
    """'84.0 ± 3.2': the accuracy cell of these records as a table shows it, computed by hand from their predictions."""
    acc = [100 * accuracy_of(r) for r in rs if (method is None or r["method"] == method) and (dataset is None or r["dataset"] == dataset)]
    return f"{np.mean(acc):.1f} ± {np.std(acc, ddof=1):.1f}"
CL = [0.85, 0.86, 0.87, 0.90, 0.91]


@pytest.fixture(scope="module")
def recs():
    out = [record("ce", "LIDC-C", f, a) for f, a in enumerate(CE)]
    out += [record("clip_lung", "LIDC-C", f, a) for f, a in enumerate(CL)]
    out += [record("nsb", "LIDC-C", f, 0.5) for f in range(3)]  # fewer than 5 folds
    return out


def test_cells_and_paired_differences_by_hand(tmp_path, recs):
    runs = write(tmp_path / "runs", recs)
    chosen = select(read_records(runs), [2])
    data = build(chosen, [2], n_boot=200)
    acc = {m: [100 * accuracy_of(r) for r in recs if r["method"] == m] for m in ("ce", "clip_lung")}
    ce = data[2]["LIDC-C"]["ce"]["metrics"]["accuracy"]
    assert ce["mean"] == pytest.approx(np.mean(acc["ce"])) and ce["std"] == pytest.approx(np.std(acc["ce"], ddof=1))
    assert ce["seed_std"] is None and ce["n_seeds"] == 1
    # The corrected resampled t-test over the 5 folds, by hand in float64: var x (1/n + n_test/n_train).
    d = np.array(acc["ce"], dtype=np.float64) - np.array(acc["clip_lung"], dtype=np.float64)
    n_tr = np.mean([r["data"]["n_train_used"] for r in recs if r["method"] == "ce"])
    n_te = np.mean([r["data"]["n_test"] for r in recs if r["method"] == "ce"])
    var = sum((x - d.mean()) ** 2 for x in d) / (len(d) - 1)
    se = math.sqrt((1 / len(d) + n_te / n_tr) * var)
    half = ss.t.ppf(0.975, len(d) - 1) * se
    c = data[2]["LIDC-C"]["ce"]["vs_reference"]["accuracy"]
    assert c["mean"] == pytest.approx(d.mean()) and c["low"] == pytest.approx(d.mean() - half) and c["high"] == pytest.approx(d.mean() + half)
    assert c["p"] == pytest.approx(2 * ss.t.sf(abs(d.mean() / se), len(d) - 1))
    assert data[2]["LIDC-C"]["clip_lung"].get("vs_reference") is None  # the reference itself
    # Holm across the methods of the table: ce and nsb (3 pairs) are the family.
    p_nsb = data[2]["LIDC-C"]["nsb"]["vs_reference"]["accuracy"]["p"]
    lo, hi = sorted([c["p"], p_nsb])
    holm = {lo: min(1, 2 * lo), hi: min(1, max(2 * lo, hi))}
    assert c["p_holm"] == pytest.approx(holm[c["p"]])
    # The bootstrap interval of the cell holds its mean, and its estimate is that mean.
    iv = data[2]["LIDC-C"]["ce"]["interval"]["accuracy"]
    assert iv["low"] < ce["mean"] < iv["high"] and iv["estimate"] == pytest.approx(ce["mean"])
    paths = write_tables([2], chosen, tmp_path / "tables", n_boot=200)
    md = (tmp_path / "tables" / "table2_smoke_phantom.md").read_text()
    assert f"| CE Loss | {np.mean(acc['ce']):.1f} ± {np.std(acc['ce'], ddof=1):.1f} |" in md
    assert f"**{np.mean(acc['clip_lung']):.1f} ± {np.std(acc['clip_lung'], ddof=1):.1f}**" in md  # CLIP-Lung's accuracy is the best: bold
    assert f"| NSB | {shown(recs, 'nsb')}† |" in md  # 3 folds: marked
    assert "| Poisson | — |" in md  # missing
    assert "*89.5 ± 0.4*" in md  # the paper's CLIP-Lung on LIDC-C beside ours
    assert f"−{abs(d.mean()):.1f} [" in md and "corrected resampled t-test" in md and "Holm" in md and "seed 0" in md
    tex = (tmp_path / "tables" / "table2_smoke_phantom.tex").read_text()
    assert r"\toprule" in tex and r"\textbf{" in tex and "$^\\dagger$" in tex
    assert {p.name for p in paths} >= {"table2_smoke_phantom.tex", "table2_smoke_phantom.md", "tables_smoke_phantom.json"}
    js = json.loads((tmp_path / "tables" / "tables_smoke_phantom.json").read_text())
    got = js["tables"]["2"]["LIDC-C"]["ce"]["vs_reference"]["accuracy"]
    assert got["p_holm"] == pytest.approx(c["p_holm"]) and js["test"] == "corrected_t"


def test_seeds_are_averaged_within_folds_and_their_spread_is_reported(tmp_path):
    """Two seeds x five folds: a fold's value is its seed mean; ± is over folds; the seed s.d. is pooled within folds."""
    acc = {(f, s): 0.80 + 0.02 * f + (0.01 if s else -0.01) * (1 + f % 2) for f in range(5) for s in (0, 1)}
    rs = [record("ce", "LIDC-B", f, a, seed=s) for (f, s), a in acc.items()]
    rs += [record("clip_lung", "LIDC-B", f, 0.85, seed=s) for f in range(5) for s in (0, 1)]
    got = {(r["fold"], r["seed"]): 100 * accuracy_of(r) for r in rs if r["method"] == "ce"}
    fold_means = [np.mean([got[(f, s)] for s in (0, 1)]) for f in range(5)]
    pooled = math.sqrt(sum((got[(f, s)] - fold_means[f]) ** 2 for f in range(5) for s in (0, 1)) / 5)  # 5 folds x (2 - 1)
    chosen = select(read_records(write(tmp_path / "runs", rs)), [2])
    cell = build(chosen, [2], n_boot=100)[2]["LIDC-B"]["ce"]
    m = cell["metrics"]["accuracy"]
    assert m["mean"] == pytest.approx(np.mean(fold_means)) and m["std"] == pytest.approx(np.std(fold_means, ddof=1))
    assert m["seed_std"] == pytest.approx(pooled) and m["n_seeds"] == 2 and m["n_folds"] == 5
    assert cell["vs_reference"]["accuracy"]["n"] == 5  # the unit is a test fold: seeds averaged within it
    write_tables([2], chosen, tmp_path / "t", n_boot=100)
    md = (tmp_path / "t" / "table2_smoke_phantom.md").read_text()
    assert f"(seed s.d. {pooled:.1f})" in md and "seeds 0, 1: each fold's value is the mean over the seeds" in md


def test_a_record_whose_stored_metrics_disagree_with_its_predictions_is_left_out(tmp_path, recs, caplog):
    edited = json.loads(json.dumps(recs[0]))
    edited["metrics"]["accuracy"] = 0.9  # hand-edited; its predictions give 0.80
    runs = write(tmp_path / "runs", [edited] + recs[1:])
    with caplog.at_level("WARNING"):
        chosen = select(read_records(runs), [2])
    assert not any(r["method"] == "ce" and r["fold"] == 0 for r in chosen)
    assert any("r000.json" in m and "stored accuracy (0.9)" in m for m in caplog.messages), caplog.messages
    assert build(chosen, [2], n_boot=0)[2]["LIDC-C"]["ce"]["folds"] == [1, 2, 3, 4]


def test_mixed_sources_and_profiles_are_refused_other_text_encoders_left_out(tmp_path, recs, caplog):
    runs = write(tmp_path / "a", recs + [record("ce", "LIDC-C", 0, 0.7, source="lidc")])
    with pytest.raises(UserError, match=r"source lidc \(1 records\), phantom \(\d+ records\).*--source"):
        select(read_records(runs), [2])
    assert len(select(read_records(runs), [2], Setting(source="phantom"))) == len(recs)
    runs2 = write(tmp_path / "b", recs + [record("ce", "LIDC-C", 1, 0.7, profile="quick")])
    with pytest.raises(UserError, match="profile quick"):
        select(read_records(runs2), [2])
    other = [record("clip_lung", "LIDC-C", f, 0.7, sets=["text_encoder='tiny-random'"]) for f in range(2)]
    runs3 = write(tmp_path / "c", recs + other)
    with caplog.at_level("WARNING"):
        chosen = select(read_records(runs3), [2])
    assert len(chosen) == len(recs) and any("text_encoder 'tiny-random' there" in m for m in caplog.messages)
    picked = select(read_records(runs3), [2], Setting(text_encoder="tiny-random"))
    assert {r["method"] for r in picked} == {"ce", "nsb", "clip_lung"} and sum(r["method"] == "clip_lung" for r in picked) == 2


def test_records_of_another_set_are_another_setting(tmp_path, recs, caplog, capsys):
    """Default and --set epochs=20 records in one folder: the default setting by default, the other by --set."""
    from benchmarks.tables import main

    longer = [record("nsb", "LIDC-C", f, 0.6, sets=["epochs=20"]) for f in range(5)]
    runs = write(tmp_path / "runs", recs + longer)
    with caplog.at_level("WARNING"):
        main(["--tables", "2", "--runs", str(runs), "--out", str(tmp_path / "t"), "--bootstrap", "0"])
    assert any("leaving out 5 records of nsb on LIDC-C of another setting (epochs 20 there, 2 here); pick them with --set epochs=20" in m
               for m in caplog.messages), caplog.messages
    assert f"| NSB | {shown(recs, 'nsb')}† |" in (tmp_path / "t" / "table2_smoke_phantom.md").read_text()
    main(["--tables", "2", "--runs", str(runs), "--out", str(tmp_path / "u"), "--set", "epochs=20", "--bootstrap", "0"])
    md = (tmp_path / "u" / "table2_smoke_phantom.md").read_text()
    assert f"| NSB | **{shown(longer)}** |" in md and "| CE Loss | — |" in md  # only nsb was made with epochs=20
    with pytest.raises(SystemExit) as e:
        main(["--tables", "2", "--runs", str(runs), "--set", "no_such_key=1"])
    assert e.value.code == 2 and "unknown --set key 'no_such_key'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # only another setting's records: the one line says which flag picks them
        main(["--tables", "2", "--runs", str(write(tmp_path / "only", longer)), "--out", str(tmp_path / "v")])
    assert e.value.code == 2 and capsys.readouterr().err.splitlines()[-1].endswith("pick them with --set epochs=20")


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
    assert len(udm) == 2 and all(abs(r["metrics"]["accuracy"] - 0.6) < 0.01 for r in udm)
    assert [m.split(": made by")[0] for m in caplog.messages if "made by version 1 of udm" in m] == ["leaving out 5 records of udm on LIDC-C"]


def test_table3_check_marks(tmp_path):
    rs = [record(m, d, f, 0.6 if m == "clip_lung" else 0.5) for m in ("clip_lung", "clip_lung_ic") for d in ("LIDC-A", "LIDC-B", "LIDC-C")
          for f in range(5)]
    write_tables([3], select(read_records(write(tmp_path / "runs", rs)), [3]), tmp_path / "t", n_boot=0)
    md = (tmp_path / "t" / "table3_smoke_phantom.md").read_text()
    ic = next(x for x in md.splitlines() if x.startswith("| ✓ |  |  |"))
    full = next(x for x in md.splitlines() if x.startswith("| ✓ | ✓ | ✓ |"))
    assert shown(rs, "clip_lung_ic", "LIDC-A") in ic and f"**{shown(rs, 'clip_lung', 'LIDC-A')}**" in full and "| — |" in md
    assert full.count("*") >= 6 and "*" in ic.split("|")[4]  # the full model bold; the ablation differs from it at p < 0.05


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (Debian: texlive-latex-recommended)")
def test_latex_compiles(tmp_path, recs):
    full = recs + [record(m, "LIDC-A", f, 0.55) for m in ("ce", "clip_lung") for f in range(5)]
    full += [record("clip_lung_ic_ia", d, f, 0.6) for d in ("LIDC-A", "LIDC-B", "LIDC-C") for f in range(5)]
    full += [record("ce", "LIDC-B", f, 0.8, seed=1) for f in range(5)] + [record("ce", "LIDC-B", f, 0.8) for f in range(5)]
    out = tmp_path / "tables"
    write_tables([1, 2, 3], select(read_records(write(tmp_path / "runs", full)), [1, 2, 3]), out, with_paper=True, n_boot=50)
    # The standalone document written beside the tables, with the preamble it documents.
    p = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "tables_smoke_phantom.tex"], cwd=out, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-2000:]
    assert (out / "tables_smoke_phantom.pdf").exists()
    assert r"\usepackage{amssymb}" in (out / "preamble.tex").read_text()


def test_methods_outside_the_paper_are_rows_below_it_with_their_label(tmp_path, recs, monkeypatch):
    from methods.ce import CrossEntropy as CE
    from methods.registry import Method

    class Labelled(CE):
        label = "CE+"

    monkeypatch.setitem(methods.REGISTRY, "ce_plus", Method("ce_plus", Labelled, CE.Config()))
    plus = [record("ce_plus", "LIDC-C", f, a) for f, a in enumerate([0.9, 0.9, 0.9, 0.9, 0.95])]
    chosen = select(read_records(write(tmp_path / "runs", recs + plus)), [2])
    data = build(chosen, [2], n_boot=0)
    assert list(data[2]["LIDC-C"])[-1] == "ce_plus"
    diff = [100 * (accuracy_of(a) - accuracy_of(b)) for a, b in zip(plus, [r for r in recs if r["method"] == "clip_lung"])]
    assert data[2]["LIDC-C"]["ce_plus"]["vs_reference"]["accuracy"]["mean"] == pytest.approx(np.mean(diff))
    write_tables([2], chosen, tmp_path / "t", n_boot=0)
    md = (tmp_path / "t" / "table2_smoke_phantom.md").read_text()
    assert "| CE+ (not in the paper) | **" in md
    tex = (tmp_path / "t" / "table2_smoke_phantom.tex").read_text()
    assert r"CE+ (not in the paper)" in tex and tex.count(r"\midrule") == 3  # a rule above the extra rows, one above the readers' reference row
    assert "ce_plus" not in "".join(build(chosen, [3], n_boot=0)[3]["LIDC-C"])  # not on Table 3, which ablates CLIP-Lung


def test_a_method_that_is_not_registered_is_left_out_with_a_warning(tmp_path, recs, caplog):
    ghost = [dict(r, method="ghost") for r in recs if r["method"] == "ce"]
    with caplog.at_level("WARNING"):
        chosen = select(read_records(write(tmp_path / "runs", recs + ghost)), [2])
    assert "ghost" not in {r["method"] for r in chosen}
    assert any("5 records of ghost: no such method is registered here (load its plugin with --plugin)" in m for m in caplog.messages)


def test_backbone_table_pairs_ce_and_clip_lung_per_backbone(tmp_path):
    from benchmarks.tables import build_backbones, select_backbones, write_backbones

    rs = []
    for b, (ce, cl) in {"resnet18_2d": (0.50, 0.54), "r3d_18": (0.50, 0.53)}.items():
        for f in range(5):
            rs += [record("ce", "LIDC-A", f, ce + f / 100, sets=[f"backbone={b!r}"]),
                   record("clip_lung", "LIDC-A", f, cl + f / 50, sets=[f"backbone={b!r}"])]
    runs = write(tmp_path / "runs", rs)
    chosen = select_backbones(read_records(runs))
    data = build_backbones(chosen, n_boot=0)
    assert list(data) == ["resnet18_2d", "r3d_18"]  # the paper's first
    gain = data["r3d_18"]["LIDC-A"]["gain"]
    by = {(r["method"], r["fold"]): 100 * accuracy_of(r) for r in rs if r["backbone"] == "r3d_18"}
    assert gain["mean"] == pytest.approx(np.mean([by[("clip_lung", f)] - by[("ce", f)] for f in range(5)]))
    assert data["r3d_18"]["LIDC-B"]["ce"] is None
    out = tmp_path / "t"
    out.mkdir()
    write_backbones(chosen, out, n_boot=0)
    md = (out / "backbones_smoke_phantom.md").read_text()
    assert "| r3d_18 | " in md and "*paper: MV-DAR [12]* | *57.3* | *58.9* | *+1.6*" in md
    # The main tables keep to the paper's backbone unless --set picks another.
    assert {r["backbone"] for r in select(read_records(runs), [1])} == {"resnet18_2d"}
    assert {r["backbone"] for r in select(read_records(runs), [1], Setting(sets=("backbone='r3d_18'",)))} == {"r3d_18"}
    if shutil.which("pdflatex"):
        p = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "backbones_smoke_phantom_doc.tex"], cwd=out, capture_output=True, text=True)
        assert p.returncode == 0, p.stdout[-2000:]


def test_paper_profile_on_the_phantom_source_warns_and_datasets_restrict(tmp_path, recs, capsys):
    from benchmarks.tables import main

    paper = [record(r["method"], r["dataset"], r["fold"], accuracy_of(r), profile="paper") for r in recs]
    main(["--tables", "2", "--runs", str(write(tmp_path / "p", paper)), "--out", str(tmp_path / "t"), "--bootstrap", "0"])
    err = capsys.readouterr().err
    assert err.count("warning: the paper profile on the phantom source") == 1
    assert (tmp_path / "t" / "table2_paper_phantom.md").exists()
    runs = write(tmp_path / "q", recs + [record("ce", "LIDC-B", 0, 0.7)])
    main(["--tables", "2", "--runs", str(runs), "--out", str(tmp_path / "u"), "--datasets", "LIDC-B", "--bootstrap", "0"])
    assert "warning" not in capsys.readouterr().err
    md = (tmp_path / "u" / "table2_LIDC-B_smoke_phantom.md").read_text()
    assert "**LIDC-B**" in md and "LIDC-C" not in md.split("\n\n", 2)[2]


def test_records_of_a_pilot_say_partial_and_never_mix_with_the_whole(tmp_path, tmp_cache, monkeypatch, caplog):
    """Records made on a pilot's crops: their tables say PARTIAL DATA with the nodule counts and mark the cells;
    once the crops hold every nodule, the pilot's records are left out (named), never averaged with the whole's."""
    from benchmarks.data import cache
    from benchmarks.data.protocols import labelled_folds, protocol_hash

    total = len(labelled_folds(2))
    folder = cache.cache_dir("lidc", protocol_hash(2))
    folder.mkdir(parents=True)
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"n": 126, "nodules_total": total, "ids_sha256": "ab" * 32}))
    prot = {"partial": True, "nodules_with_crops": 126, "nodules_in_protocol": total, "patients": 50, "patients_in_protocol": 796,
            "pilot_patients": 50}
    pilot = [record(m, "LIDC-C", f, 0.8, source="lidc", partial=3) for m in ("ce", "clip_lung") for f in range(5)]
    for r in pilot:
        assert r["data_scope"] == f"partial:126of{total}:" + "ab" * 6
        r["data"]["scope"]["protocol"] = prot
    runs = write(tmp_path / "runs", pilot)
    write_tables([2], select(read_records(runs), [2]), tmp_path / "t", n_boot=0)
    md = (tmp_path / "t" / "table2_smoke_lidc.md").read_text()
    assert f"PARTIAL DATA (‡): 126 of the protocol's {total} nodules had a CT crop (50 of 796 patients, a pilot download of 50 patients)" in md
    row = [x for x in md.split("**LIDC-C**")[1].splitlines() if x.startswith("| CE Loss | ")][0]
    assert row.split("|")[2].strip().endswith("‡"), row
    manifest.write_text(json.dumps({"n": total, "nodules_total": total, "ids_sha256": "cd" * 32}))  # the whole download cropped
    whole = [record("ce", "LIDC-C", f, 0.85, source="lidc") for f in range(5)]
    assert whole[0]["data_scope"] is None
    with caplog.at_level("WARNING"):
        chosen = select(read_records(write(tmp_path / "runs2", pilot + whole)), [2])
    assert {r["key"] for r in chosen} == {r["key"] for r in whole}
    said = [m for m in caplog.messages if "made on 126 of" in m and "the crops prepared now hold every nodule of the protocol" in m]
    assert sorted(m.split(":")[0] for m in said) == ["leaving out 5 records of ce on LIDC-C", "leaving out 5 records of clip_lung on LIDC-C"]
    assert all("rerun them: `python -m benchmarks.run --method " in m and "--source lidc" in m for m in said)


def test_a_dataset_outside_the_tables_is_one_line_not_a_sweep_advice(tmp_path, recs, capsys):
    from benchmarks.tables import main

    with pytest.raises(SystemExit) as e:
        main(["--tables", "2", "--datasets", "LIDC-A", "--runs", str(write(tmp_path / "runs", recs)), "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == "error: --datasets LIDC-A: LIDC-A is not in Table 2 (Table 2: LIDC-B, LIDC-C)\n"


@pytest.fixture
def plugin_method(monkeypatch):
    """A method registered as a file plugin would be ('plus.py#<sha>'), labelled CE+."""
    from methods.ce import CrossEntropy as CE
    from methods.registry import Method

    class Labelled(CE):
        label = "CE+"

    origin = {"plugin": "plus.py", "sha256": "0123456789abcdef" * 4, "path": "/somewhere/plus.py"}
    monkeypatch.setitem(methods.REGISTRY, "ce_plus", Method("ce_plus", Labelled, CE.Config(), origin))
    return "ce_plus"


def test_captions_counts_and_file_names_follow_the_datasets_and_plugins(tmp_path, recs, plugin_method, capsys):
    from benchmarks.tables import main

    plus = [record(plugin_method, "LIDC-C", f, 0.9) for f in range(5)]
    assert plus[0]["plugin"] == "plus.py#0123456789abcdef"
    runs = write(tmp_path / "runs", recs + plus + [record("ce", "LIDC-B", f, 0.7) for f in range(5)])
    main(["--tables", "2", "--runs", str(runs), "--out", str(tmp_path / "t"), "--bootstrap", "0"])
    out = capsys.readouterr().out
    # 8 methods x 2 datasets of Table 2, and the plugin's cell: counted in both numerator and denominator.
    assert out.startswith("23 records in 5 of 17 cells -> "), out
    both = (tmp_path / "t" / "table2_smoke_phantom_plus.md").read_text()  # the plugin in the name: never overwritten by a run without it
    assert "test sets of LIDC-B and LIDC-C (ours" in both
    main(["--tables", "2", "--datasets", "LIDC-B", "--runs", str(runs), "--out", str(tmp_path / "t"), "--bootstrap", "0"])
    assert capsys.readouterr().out.startswith("5 records in 1 of 8 cells -> ")
    one = (tmp_path / "t" / "table2_LIDC-B_smoke_phantom.md").read_text()  # the datasets in the name
    assert "test sets of LIDC-B (ours" in one and "LIDC-C" not in one
    assert (tmp_path / "t" / "table2_smoke_phantom_plus.md").read_text() == both  # the other run's files untouched
    assert json.loads((tmp_path / "t" / "tables_LIDC-B_smoke_phantom.json").read_text())["tables"]["2"].keys() == {"LIDC-B"}


def test_a_method_whose_records_were_all_left_out_keeps_its_row_with_the_reason(tmp_path, recs, plugin_method, caplog):
    from benchmarks.tables import main

    ahead = [record(plugin_method, "LIDC-C", f, 0.9) for f in range(5)]
    for r in ahead:
        r["method_version"] = 7  # made by newer code than this
    old = [record("udm", "LIDC-C", f, 0.9) for f in range(5)]
    for r in old:
        del r["method_version"]  # version 1: older than udm's now
    with caplog.at_level("WARNING"):
        main(["--tables", "2", "--datasets", "LIDC-C", "--runs", str(write(tmp_path / "runs", recs + ahead + old)), "--out", str(tmp_path / "t"),
              "--bootstrap", "0"])
    md = (tmp_path / "t" / "table2_LIDC-C_smoke_phantom.md").read_text()
    assert "| CE+ (not in the paper) | — (left out: made by version 7 of ce_plus, newer code than this copy's version 1) |" in md, md
    assert "| UDM | — (left out: made by version 1 of udm, the current one is " in md
    left = json.loads((tmp_path / "t" / "tables_LIDC-C_smoke_phantom.json").read_text())["left_out"]
    assert {x["method"] for x in left} == {"ce_plus", "udm"}
    # One warning per reason, with the count and the command that fixes it (not one line per record, not "rerun" for newer code).
    lines = [x for x in caplog.messages if "leaving out" in x]
    assert len(lines) == 2, lines
    udm = next(x for x in lines if "of udm" in x)
    assert "leaving out 5 records of udm on LIDC-C" in udm
    assert udm.endswith("rerun them: `python -m benchmarks.run --method udm --dataset LIDC-C --folds 0 1 2 3 4 --profile smoke --source phantom`")
    plus = next(x for x in lines if "of ce_plus" in x)
    assert "update this copy of the suite to use them" in plus and "--plugin /somewhere/plus.py" in plus and "rerun them" not in plus


def test_only_cells_with_every_fold_compete_for_bold(tmp_path, recs):
    lucky = [record("poisson", "LIDC-C", 0, 1.0)]  # one fold, above every five-fold mean
    data = build(select(read_records(write(tmp_path / "runs", recs + lucky)), [2]), [2], n_boot=0)
    write_tables([2], select(read_records(tmp_path / "runs"), [2]), tmp_path / "t", n_boot=0)
    md = (tmp_path / "t" / "table2_smoke_phantom.md").read_text()
    row = {x.split("|")[1].strip(): x for x in md.splitlines() if x.startswith("| ")}
    assert data[2]["LIDC-C"]["poisson"]["folds"] == [0]
    assert "**" not in row["Poisson"].split("|")[2] and "†" in row["Poisson"]
    assert f"**{shown(recs, 'clip_lung', 'LIDC-C')}**" in row["CLIP-Lung"]  # the best of the five-fold cells


# ---------------------------------------------------------------- repeated partitions, P(A > B), variance, the readers' row
def _old_cell(recs, method):
    """A cell and its comparison as the tables made them before repeats: seed_summary over (fold, seed) and the
    corrected t over the (fold, seed) pairs (the old unit)."""
    from benchmarks import stats as S

    vals = {m: {(r["fold"], r["seed"]): 100 * accuracy_of(r) for r in recs if r["method"] == m} for m in (method, "clip_lung")}
    keys = sorted(set(vals[method]) & set(vals["clip_lung"]))
    d = [vals[method][k] - vals["clip_lung"][k] for k in keys]
    n_tr = np.mean([r["data"]["n_train_used"] for r in recs if r["seed"] == 0 and r["method"] == method])
    n_te = np.mean([r["data"]["n_test"] for r in recs if r["seed"] == 0 and r["method"] == method])
    return S.seed_summary(vals[method]), S.corrected_t(d, n_tr, n_te)


def test_one_repeat_tables_are_as_before_apart_from_the_unit(tmp_path):
    """Records of partition 0 only (every record made before repeats): each cell's numbers are those of the old
    aggregation; the comparison differs only in its unit: with one seed not at all, with two seeds n = 5 folds."""
    rs = [record("ce", "LIDC-B", f, 0.78 + 0.02 * f + 0.01 * s * (f % 2)) for f in range(5) for s in (0,)]
    rs += [record("clip_lung", "LIDC-B", f, 0.84 + 0.01 * f) for f in range(5)]
    assert all(r["repeat"] == 0 and "repeat" not in json.dumps(r["key"]) for r in rs)
    data = build(select(read_records(write(tmp_path / "one", rs)), [2]), [2], n_boot=100)
    cell = data[2]["LIDC-B"]["ce"]
    old, t = _old_cell(rs, "ce")
    m = cell["metrics"]["accuracy"]
    assert (m["mean"], m["std"], m["seed_std"], m["n_folds"]) == (pytest.approx(old.mean), pytest.approx(old.std), None, 5)
    assert "partition_std" not in m and "repeats" not in cell
    c = cell["vs_reference"]["accuracy"]
    assert (c["n"], c["p"], c["low"], c["high"]) == (5, pytest.approx(t.p), pytest.approx(t.low), pytest.approx(t.high))
    two = rs + [record(r["method"], "LIDC-B", r["fold"], 0.80 + 0.015 * r["fold"] if r["method"] == "ce" else 0.85, seed=1) for r in rs]
    data = build(select(read_records(write(tmp_path / "two", two)), [2]), [2], n_boot=100)
    old, t_pairs = _old_cell(two, "ce")
    m = data[2]["LIDC-B"]["ce"]["metrics"]["accuracy"]
    assert (m["mean"], m["std"], m["seed_std"]) == (pytest.approx(old.mean), pytest.approx(old.std), pytest.approx(old.seed_std))
    c = data[2]["LIDC-B"]["ce"]["vs_reference"]["accuracy"]
    assert t_pairs.n == 10 and c["n"] == 5 and c["unit"].startswith("(repeat, fold)")  # the unit: a test fold, not a (fold, seed) pair
    assert c["mean"] == pytest.approx(t_pairs.mean)  # the same mean difference (balanced seeds), another variance


@pytest.fixture(scope="module")
def repeated():
    """Smoke records of 2 partitions x 5 folds x 2 seeds, CE and CLIP-Lung on LIDC-A (Table 1) and LIDC-B (Table 2)."""
    return [record(m, d, f, (0.74 if m == "ce" else 0.80) + 0.01 * ((3 * f + 2 * s + 5 * k) % 4), seed=s, repeat=k)
            for m in ("ce", "clip_lung") for d in ("LIDC-A", "LIDC-B") for k in (0, 1) for f in range(5) for s in (0, 1)]


def test_repeated_partitions_in_tables_json_markdown_and_latex(tmp_path, repeated):
    from benchmarks import stats as S

    assert {r["repeat"] for r in repeated} == {0, 1} and len({r["key"] for r in repeated}) == len(repeated)
    chosen = select(read_records(write(tmp_path / "runs", repeated)), [1, 2])
    assert len(chosen) == len(repeated)
    write_tables([1, 2], chosen, tmp_path / "t", n_boot=100)
    js = json.loads((tmp_path / "t" / "tables_smoke_phantom.json").read_text())
    ce = js["tables"]["2"]["LIDC-B"]["ce"]
    acc = {(r["repeat"], r["fold"], r["seed"]): 100 * accuracy_of(r) for r in repeated if r["method"] == "ce" and r["dataset"] == "LIDC-B"}
    ref = {(r["repeat"], r["fold"], r["seed"]): 100 * accuracy_of(r) for r in repeated if r["method"] == "clip_lung" and r["dataset"] == "LIDC-B"}
    rep_means = [np.mean([acc[(k, f, s)] for f in range(5) for s in (0, 1)]) for k in (0, 1)]
    m = ce["metrics"]["accuracy"]
    assert m["mean"] == pytest.approx(np.mean(rep_means)) and m["partition_std"] == pytest.approx(np.std(rep_means, ddof=1))
    assert m["n_repeats"] == 2 and m["n_units"] == 10 and ce["repeats"] == [0, 1]
    c = ce["vs_reference"]["accuracy"]
    units = sorted({(k, f) for k, f, _ in acc})
    d = [np.mean([acc[(*u, s)] for s in (0, 1)]) - np.mean([ref[(*u, s)] for s in (0, 1)]) for u in units]
    assert c["n"] == 10 and c["n_repeats"] == 2 and c["mean"] == pytest.approx(np.mean(d))
    assert c["prob"]["p"] == pytest.approx(np.mean([(x > 0) + 0.5 * (x == 0) for x in d])) and c["prob"]["n"] == 10
    var = ce["variance"]["accuracy"]
    want = S.cell_components(acc)
    assert var["shares"] == pytest.approx(want["shares"], rel=1e-9) and var["components"] == pytest.approx(want["components"], rel=1e-9)
    assert var["df"] == {"partition": 1, "fold": 8, "seed": 10} and var["hyperparameters"] is None
    assert js["readers"]["LIDC-A"]["reference"] is True and js["readers"]["LIDC-B"]["metrics"]["accuracy"]["mean"] > 0
    for t, ds in ((1, "LIDC-A"), (2, "LIDC-B")):
        md = (tmp_path / "t" / f"table{t}_smoke_phantom.md").read_text()
        row = next(x for x in md.split(f"**{ds}**")[1].splitlines() if x.startswith("| CE Loss |"))
        assert "(2 partitions s.d. " in row and re.search(r"\| [01]\.\d\d \[[01]\.\d\d, [01]\.\d\d\][↑↓]? \|$", row), row
        readers = next(x for x in md.split(f"**{ds}**")[1].splitlines() if "Radiologists" in x)
        assert "(reference)" in readers and "**" not in readers  # a reference: never bold
        assert "P(> CLIP-Lung)" in md and "Repeated partitions 0, 1" in md
        tex = (tmp_path / "t" / f"table{t}_smoke_phantom.tex").read_text()
        assert "Radiologists (leave-one-out), reference" in tex and r"$P(>)$" in tex


def test_repeats_flag_keeps_the_first_partitions(tmp_path, repeated, caplog):
    runs = write(tmp_path / "runs", [r for r in repeated if r["dataset"] == "LIDC-B"])
    chosen = select(read_records(runs), [2], Setting(repeats=1))
    assert {r["repeat"] for r in chosen} == {0}
    with caplog.at_level("WARNING"):
        select(read_records(runs), [2], Setting(repeats=3))
    assert "no records of partition(s) 2" in caplog.text
    with pytest.raises(UserError, match="--repeats must be an integer in 1-10"):
        select(read_records(runs), [2], Setting(repeats=11))


def test_bootstrap_size_is_bounded_and_computed_in_chunks(tmp_path, recs, capsys, monkeypatch):
    from benchmarks.stats import bootstrap as B
    from benchmarks.tables import main

    runs = write(tmp_path / "runs", recs)
    for n in ("1", "199", "100001"):
        with pytest.raises(SystemExit) as e:
            main(["--tables", "2", "--runs", str(runs), "--out", str(tmp_path / "t"), "--bootstrap", n])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and "use 0 (no intervals) or 200 to 100,000" in err, err
    # Chunks of 7 replicates give the very replicates of one pass (the draws are made once per fold, in the documented order).
    cell = [r for r in recs if r["method"] == "ce"]
    whole = B.cell_intervals(cell, n_boot=300, seed=3)
    monkeypatch.setattr(B, "CHUNK", 7)
    chunked = B.cell_intervals(cell, n_boot=300, seed=3)
    for k in ("accuracy", "auc"):
        assert np.array_equal(whole[k].replicates, chunked[k].replicates, equal_nan=True) and whole[k].low == chunked[k].low


# ------------------------------------------------------------------ verdicts that keep their level; the smallest detectable difference
DOCS = Path(__file__).resolve().parent.parent / "docs" / "statistics.md"
NAME = re.compile(r"^(units t|Wilcoxon|P\(A>B\)) \(R=(\d+)\)(?: \*\*default\*\*)?$")


def _docs_rows(head: str):
    """(family, R, cells) of every test row of the docs/statistics.md tables whose header starts with ``head``."""
    for chunk in DOCS.read_text().split(head)[1:]:
        for line in chunk.split("\n\n")[0].splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            m = NAME.match(cells[0])
            if m:
                yield m.group(1), int(m.group(2)), cells[1:]


def _rate(cell: str) -> tuple[float, float]:
    """'0.026 [0.018, 0.038]' -> (0.026, 0.038): a rate and the upper end of its interval."""
    m = re.fullmatch(r"([0-9.]+) \[[0-9.]+, ([0-9.]+)\]", cell)
    return float(m.group(1)), float(m.group(2))


def docs_rates() -> dict[tuple[str, int], tuple[float, float]]:
    """{(rule, R): (its highest measured false-positive rate, the upper end of its 95% interval)}, from the rules table
    of docs/statistics.md."""
    from benchmarks.stats.verdicts import CALIBRATION_NAMES

    names = {v: k for k, v in CALIBRATION_NAMES.items()}
    return {(names[f], r): _rate(cells[0]) for f, r, cells in _docs_rows("| Test | highest false-positive rate")}


def test_verdict_rules_in_code_are_the_docs_calibration():
    """``stats.verdicts.MEASURED`` is the docs' rules table; that table is the highest null rate of the docs' per-mode
    tables (random and fixed partitions); a rule may mark exactly where its measured rate is at most 0.05 (P(A > B),
    a description, never), and nowhere it was not measured."""
    from benchmarks.stats.verdicts import CALIBRATION_NAMES, DESCRIPTIVE, MEASURED, verdict

    rates = docs_rates()
    assert rates == {(rule, r): v for rule, per in MEASURED.items() for r, v in per.items()}
    assert set(MEASURED["corrected_t"]) == set(range(1, 11))  # every R a table can have (--repeats 1-10)
    assert DOCS.read_text().count("| Test | null (seed): LIDC-A") == 2  # both partition modes
    worst: dict = {}
    for f, r, cells in _docs_rows("| Test | null (seed): LIDC-A"):
        worst[(f, r)] = max([worst.get((f, r), (0.0, 0.0))] + [_rate(c) for c in cells[:6]])  # both nulls, three datasets
    assert {(CALIBRATION_NAMES[k[0]], k[1]): v for k, v in rates.items()} == worst
    for (rule, r), (rate, high) in rates.items():
        assert verdict(rule, r).allowed == (rate <= 0.05 and rule not in DESCRIPTIVE), (rule, r, rate, high)
    assert not verdict("corrected_t", 11).allowed and "not calibrated" in verdict("corrected_t", 11).reason
    assert all(verdict("corrected_t", r).allowed for r in range(1, 11))  # the default test marks at every R
    assert [r for r in range(1, 11) if verdict("wilcoxon", r).allowed] == [1]  # where it cannot reach 0.05 anyway
    # P(A > B): a description at every R; its rule is under 0.05 only at R = 10, within the interval's reach of it
    assert DESCRIPTIVE == ("prob_outperform",) and not any(verdict("prob_outperform", r).allowed for r in range(1, 11))
    assert [r for r in range(1, 11) if rates[("prob_outperform", r)][0] <= 0.05] == [10] and rates[("prob_outperform", 10)][1] > 0.05


def _marks(text: str, latex: bool) -> list[str]:
    """The verdict marks of a rendered table: '*' (the test's: a cell ending in a single *; LaTeX $^{*}$) and '↑'/'↓'
    (P(A > B)'s), in the rows of methods (the italic paper and reference rows aside)."""
    if latex:
        return ["*"] * text.count("$^{*}$") + ["↑"] * text.count(r"$^{\uparrow}$") + ["↓"] * text.count(r"$^{\downarrow}$")
    out = []
    for line in text.splitlines():
        if not line.startswith("|") or "(reference)" in line or "*paper*" in line:
            continue
        for cell in (c.strip() for c in line.strip("|").split("|")):
            out += ["*"] if cell.endswith("*") and not cell.endswith("**") and not cell.startswith("*") else []
            out += [ch for ch in cell if ch in "↑↓"]
    return out


def test_no_verdict_mark_comes_from_a_rule_that_failed_its_calibration(tmp_path, caplog):
    """Tables 2 and 3 on 2 partitions where every rule would fire (CE and an ablation 6 points below CLIP-Lung on every
    unit): each mark printed, in Markdown and LaTeX, comes from a rule whose false-positive rate in the docs' table is at
    most 0.05. The corrected t marks (the check bites); Wilcoxon at R = 2 and P(A > B) reject but print no mark."""
    rates = docs_rates()
    rs = [record(m, "LIDC-B", f, (0.74 if m != "clip_lung" else 0.80) + 0.01 * ((f + 2 * k + (m == "clip_lung")) % 3), repeat=k)
          for m in ("ce", "clip_lung", "clip_lung_ic") for k in (0, 1) for f in range(5)]
    chosen = select(read_records(write(tmp_path / "runs", rs)), [2, 3])
    for test in ("corrected_t", "wilcoxon"):
        out = tmp_path / test
        with caplog.at_level("WARNING"):
            write_tables([2, 3], chosen, out, datasets=["LIDC-B"], test=test, n_boot=0)
        js = json.loads((out / "tables_LIDC-B_smoke_phantom.json").read_text())
        comps = [c["vs_reference"]["accuracy"] for t in ("2", "3") for c in js["tables"][t]["LIDC-B"].values() if c and c.get("vs_reference")]
        assert comps and all(c["n_repeats"] == 2 and c["rejects"] for c in comps)  # every rule would fire here
        assert all(c["prob"]["conclusion"] == "worse" and not c["prob"]["verdict"]["mark_allowed"] for c in comps)
        found = []
        for t in (2, 3):
            for suffix, latex in ((".md", False), (".tex", True)):
                found += _marks((out / f"table{t}_LIDC-B_smoke_phantom{suffix}").read_text(), latex)
        for mark in found:
            rule = "prob_outperform" if mark in "↑↓" else test
            assert rates[(rule, 2)][0] <= 0.05, (mark, rule)  # the measured rate of the mark's rule at R = 2
        if test == "corrected_t":
            assert found.count("*") == 4 and all(c["significant"] for c in comps)  # Tables 2 and 3, Markdown and LaTeX
        else:
            assert found == [] and not any(c["significant"] for c in comps)
            assert "--test wilcoxon on 2 partitions" in caplog.text and "without the * mark" in caplog.text
            md = (out / "table2_LIDC-B_smoke_phantom.md").read_text()
            assert "No * marks: Wilcoxon rejected up to" in md
        assert "P(>) is shown without a verdict: in the calibration Bouthillier et al.'s rule rejected up to" \
            in (out / "table2_LIDC-B_smoke_phantom.md").read_text()


def test_detectable_difference_in_every_caption_and_the_json(tmp_path):
    """Tables 1-3: each caption (Markdown and LaTeX) states the MDE of its datasets; the JSON holds it with how it was
    pooled, and each comparison's own MDE, all equal to the formula on the unit differences computed by hand."""
    from benchmarks.stats.power import detectable_difference, detectable_floor

    accs = {"ce": 0.78, "nsb": 0.80, "clip_lung": 0.84, "clip_lung_ic": 0.81}
    rs = [record(m, d, f, a + 0.013 * ((f * (i + 1)) % 4)) for i, (m, a) in enumerate(accs.items()) for d in ("LIDC-A", "LIDC-B") for f in range(5)
          if not (d == "LIDC-A" and m == "clip_lung_ic")]
    chosen = select(read_records(write(tmp_path / "runs", rs)), [1, 2, 3])
    write_tables([1, 2, 3], chosen, tmp_path / "t", datasets=["LIDC-A", "LIDC-B"], n_boot=0)
    js = json.loads((tmp_path / "t" / "tables_LIDC-A+LIDC-B_smoke_phantom.json").read_text())
    acc = {(r["method"], r["dataset"], r["fold"]): 100 * accuracy_of(r) for r in rs}
    for t, ds, others in ((1, "LIDC-A", ("ce", "nsb")), (2, "LIDC-B", ("ce", "nsb")), (3, "LIDC-B", ("clip_lung_ic",))):
        d = {m: np.array([acc[(m, ds, f)] - acc[("clip_lung", ds, f)] for f in range(5)]) for m in others}
        rho = np.mean([r["data"]["n_test"] for r in rs if r["dataset"] == ds]) / np.mean([r["data"]["n_train_used"] for r in rs if r["dataset"] == ds])
        for m, x in d.items():
            c = js["tables"][str(t)][ds][m]["vs_reference"]["accuracy"]
            assert c["sd"] == pytest.approx(np.std(x, ddof=1)) and c["mde"] == pytest.approx(detectable_difference(np.std(x, ddof=1), 5, rho))
        sd = math.sqrt(sum(np.sum((x - x.mean()) ** 2) for x in d.values()) / (4 * len(d)))
        e = js["detectable"][str(t)][ds]
        assert (e["n"], e["n_repeats"], e["df_pooled"], e["pooled_over"], e["power"]) == (5, 1, 4 * len(d), sorted(others), 0.8)
        assert e["sd_pooled"] == pytest.approx(sd) and e["correction"] == pytest.approx(rho)
        assert e["mde"] == pytest.approx(detectable_difference(sd, 5, rho)) and e["floor"] == pytest.approx(detectable_floor(sd, rho))
        want = f"{ds} {e['mde']:.1f} points (n = 5 units, n_test/n_train = {e['correction']:.4f}, s.d. {e['sd_pooled']:.2f}"
        assert want in (tmp_path / "t" / f"table{t}_LIDC-A+LIDC-B_smoke_phantom.md").read_text()
        assert want.replace("_", r"\_") in (tmp_path / "t" / f"table{t}_LIDC-A+LIDC-B_smoke_phantom.tex").read_text()
    assert js["detectable"]["3"]["LIDC-A"] is None  # no ablation on LIDC-A: no comparison
    assert "Smallest detectable difference: none on LIDC-A" in (tmp_path / "t" / "table3_LIDC-A+LIDC-B_smoke_phantom.md").read_text()
