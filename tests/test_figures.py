"""Interpretability: localisation score, masks in the crop grid, t-SNE, Grad-CAM figures and their errors."""
import json
import shutil
import subprocess

import numpy as np
import pytest

from benchmarks import figures
from benchmarks.data.crop import crop, crop_mask
from benchmarks.interpret import centre_map, footprint, localisation_score, pick_nodules, tsne_embed

METHODS = ("clip", "clip_lung")  # the smoke_runs fixture's


# ------------------------------------------------------------------ the score
def test_score_of_the_mask_indicator_is_one_and_of_a_uniform_map_the_area_share():
    rng = np.random.default_rng(0)
    masks = rng.random((5, 32, 32)) < rng.uniform(0.05, 0.6, (5, 1, 1))
    assert np.allclose(localisation_score(masks.astype(float), masks), 1.0)
    assert np.allclose(localisation_score(np.full(masks.shape, 0.3), masks), masks.mean(axis=(1, 2)))
    # Mass outside only: 0; the score does not depend on the map's scale.
    assert np.allclose(localisation_score((~masks).astype(float), masks), 0.0)
    m = rng.random((32, 32))
    assert localisation_score(7 * m, masks[0]) == pytest.approx(localisation_score(m, masks[0]))


def test_score_edge_cases():
    mask = np.zeros((32, 32), bool)
    mask[10:20, 10:20] = True
    assert np.isnan(localisation_score(np.zeros((32, 32)), mask))  # no mass: undefined, not 0
    with pytest.raises(ValueError, match="shape"):
        localisation_score(np.ones((32, 32)), np.ones((16, 16), bool))
    with pytest.raises(ValueError, match="non-negative"):
        localisation_score(-np.ones((32, 32)), mask)


def test_footprint_is_the_union_over_slices_dilated_by_one_pixel():
    m = np.zeros((32, 32, 32), bool)
    m[3, 10, 10] = True
    m[20, 5, 7] = True
    assert footprint(m, 0).sum() == 2 and footprint(m, 0)[10, 10] and footprint(m, 0)[5, 7]
    fp = footprint(m)  # + 4-neighbours of each
    assert fp.sum() == 10 and fp[9, 10] and fp[10, 11] and not fp[9, 9]
    assert footprint(np.stack([m, m])).shape == (2, 32, 32)


def test_centre_map_is_the_central_half_at_the_layers_resolution():
    c4 = centre_map("layer4")
    assert c4.shape == (32, 32) and c4.max() == pytest.approx(1.0) and c4[0, 0] == 0.0
    assert np.allclose(c4, c4.T) and np.allclose(c4, c4[::-1, ::-1])
    c1 = centre_map("layer1")  # a 32 x 32 grid: exactly the central 16 x 16 pixels
    want = np.zeros((32, 32))
    want[8:24, 8:24] = 1
    assert np.array_equal(c1, want)
    # A disc of the nodule's equivalent diameter (half the side) sits mostly inside it.
    yy, xx = np.mgrid[:32, :32] + 0.5 - 16
    disc = yy**2 + xx**2 < 8**2
    assert localisation_score(c4, disc) > 0.6 > localisation_score(np.ones((32, 32)), disc)


# ------------------------------------------------------------------ the mask in the crop grid
def _sphere_scan(radius_mm: float):
    """An anisotropic (60, 60, 20) scan holding a sphere: (spacing, centroid, mask)."""
    spacing = (0.7, 0.7, 2.5)
    centre = np.array([30.2, 28.7, 9.6])
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in (60, 60, 20)], indexing="ij")
    r = np.sqrt(((ii - centre[0]) * spacing[0]) ** 2 + ((jj - centre[1]) * spacing[1]) ** 2 + ((kk - centre[2]) * spacing[2]) ** 2)
    return spacing, centre, r < radius_mm


def test_crop_mask_samples_like_the_image():
    # An anisotropic scan with a sphere of radius 6 mm: the mask and the image go through one sampling.
    spacing, centre, sphere = _sphere_scan(6.0)
    cm = crop_mask(sphere, spacing, centre, 12.0)
    img = crop(np.where(sphere, 400.0, -1000.0), spacing, centre, 12.0)  # window [-1000, 400] -> {0, 1}
    assert cm.shape == (32, 32, 32) and cm.dtype == bool
    assert np.array_equal(cm, img >= 0.5)
    # The equivalent diameter is half the crop's side: the central slice holds a disc of radius ~8 px.
    area = cm[16].sum()
    assert abs(np.sqrt(area / np.pi) - 8) < 1.0
    assert not cm[:, 0, :].any() and not cm[:, :, 0].any()


def test_a_mask_cut_to_its_box_samples_as_in_the_whole_scan(monkeypatch):
    # pylidc hands the consensus cut to its tight box: the crop of the box must equal the crop of the scan.
    from benchmarks.data import masks as masks_mod

    spacing, centre, sphere = _sphere_scan(4.0)
    box = tuple(slice(int(np.min(w)), int(np.max(w)) + 1) for w in np.nonzero(sphere))
    row = {"centroid_i": centre[0], "centroid_j": centre[1], "centroid_k": centre[2], "pixel_spacing": 0.7,
           "slice_spacing": 2.5, "eq_diameter_mm": 8.0}
    monkeypatch.setattr(masks_mod, "consensus_from_db", lambda row, annotations=None: (sphere[box], box))
    boxed = masks_mod.consensus_crop_mask(row)
    assert np.array_equal(boxed, crop_mask(sphere, spacing, centre, 8.0))


def test_consensus_masks_lie_on_the_phantom_nodules():
    from benchmarks.data.masks import consensus_crop_masks
    from benchmarks.data.phantom import phantom_crops
    from benchmarks.data.protocols import fold_table

    rows = fold_table("LIDC-B", 0).test.iloc[:6]
    masks = consensus_crop_masks(rows)
    imgs = np.stack(phantom_crops(rows.to_dict("records")))
    assert masks.shape == (6, 32, 32, 32)
    for m, x in zip(masks, imgs):
        assert 0.01 < m.mean() < 0.5
        assert x[m].mean() > x[~m].mean() + 0.15  # the rendered nodule is where its contour is


# ------------------------------------------------------------------ t-SNE and picking
def test_tsne_shapes_and_input_checks():
    x = np.random.default_rng(0).normal(size=(25, 12))
    emb = tsne_embed(x)
    assert emb.shape == (25, 2) and np.isfinite(emb).all()
    assert np.allclose(emb, tsne_embed(x))  # seeded
    assert tsne_embed(x[:5]).shape == (5, 2)  # perplexity lowered for few points
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        tsne_embed(x[0])
    with pytest.raises(ValueError, match="at least 4"):
        tsne_embed(x[:3])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        tsne_embed(bad)


def test_nodules_are_picked_by_the_rule():
    # Classes (benign, unsure, malignant), tested on benign (0) and malignant (2).
    true = np.array([0, 0, 2, 2, 0])
    a = np.array([[0.6, 0.1, 0.3], [0.9, 0, 0.1], [0.2, 0.1, 0.7], [0.7, 0.1, 0.2], [0.45, 0.2, 0.35]])
    b = np.array([[0.5, 0.2, 0.3], [0.8, 0, 0.2], [0.4, 0.0, 0.6], [0.6, 0.0, 0.4], [0.3, 0.1, 0.6]])
    ids = ["n0", "n1", "n2", "n3", "n4"]
    # Margins (mean of a and b): n0 0.25, n1 0.7, n2 0.35, n3 -0.35, n4 -0.1 (b wrong).
    assert pick_nodules(true, [a, b], [0, 2], 4, ids) == [0, 2, 3, 4]
    assert pick_nodules(true, [a, b], [0, 2], 5, ids) == [0, 2, 1, 3, 4]  # short of wrong ones: more right ones
    assert pick_nodules(true, [a], [0, 2], 2, ids) == [4, 3]  # with a alone n4 (margin 0.1) is right


# ------------------------------------------------------------------ the commands on smoke records
def _main(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        figures.main(list(argv))
    return e.value.code, capsys.readouterr()


@pytest.mark.slow
def test_figure_commands_write_their_files(smoke_runs, tmp_path, capsys):
    out = tmp_path / "figs"
    common = ["--out", str(out), "--quiet", "--profile", "smoke"]
    figures.main(["tsne", "--dataset", "LIDC-B", "--methods", *METHODS, *common])
    figures.main(["tsne", "--dataset", "LIDC-B", "--methods", "clip_lung", "clip", *common])  # its own file
    figures.main(["gradcam", "--dataset", "LIDC-B", "--methods", *METHODS, "--nodules", "2", *common])
    figures.main(["curves", "--dataset", "LIDC-B", "--methods", *METHODS, "--folds", "0", *common])
    tables = tmp_path / "tables"
    figures.main(["localisation", "--dataset", "LIDC-B", "--methods", *METHODS, "--folds", "0", "--tables", "--tables-out", str(tables), *common])
    printed = capsys.readouterr().out
    own = "_" + "+".join(METHODS)  # not the default methods (clip cocoop clip_lung): each figure's file names them
    for stem in (f"tsne_LIDC-B_fold0_smoke_phantom{own}", "tsne_LIDC-B_fold0_smoke_phantom_clip_lung+clip",
                 f"gradcam_layer4_LIDC-B_fold0_smoke_phantom{own}", f"curves_LIDC-B_smoke_phantom{own}"):
        for fmt in ("png", "pdf"):
            p = out / f"{stem}.{fmt}"
            assert p.exists() and p.stat().st_size > 10_000, p
    assert not list(out.glob("*.tmp*"))
    md = (tables / f"localisation_LIDC-B_layer4_smoke_phantom{own}.md").read_text()
    for name in ("CLIP", "CLIP-Lung", "centre-biased", "uniform", "profile smoke, source phantom"):
        assert name in md and name in printed
    res = json.loads((tables / f"localisation_LIDC-B_layer4_smoke_phantom{own}.json").read_text())
    row = res["datasets"]["LIDC-B"]
    for k in (*METHODS, "centre", "uniform"):
        v = row[k]["folds"]["0"]
        assert v is None or 0.0 <= v <= 1.0
    assert row["centre"]["folds"]["0"] > row["uniform"]["folds"]["0"]
    if shutil.which("pdflatex"):
        doc = tmp_path / "doc.tex"
        doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                       f"\\input{{{tables / f'localisation_LIDC-B_layer4_smoke_phantom{own}.tex'}}}\n\\end{{document}}\n")
        p = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path, capture_output=True, text=True)
        assert p.returncode == 0, p.stdout[-2000:]


@pytest.mark.slow
def test_gradcam_maps_of_a_trained_model(smoke_runs):
    import torch

    from benchmarks.interpret import Setting, find_records, gradcam, load_model, load_test

    rec = find_records(["clip_lung"], "LIDC-B", [0], Setting(profile="smoke"))[("clip_lung", 0)]
    model = load_model(rec, torch.device("cpu"))
    data = load_test(rec)
    maps = gradcam(model, data.test.images[:5], np.array([0, 2, 0, 2, 1]), torch.device("cpu"))
    assert maps.shape == (5, 32, 32) and maps.dtype == np.float32
    assert (maps >= 0).all() and (maps <= 1 + 1e-6).all()
    assert all(p.grad is None for p in model.parameters())  # nothing left behind on the model


def _one_error_line(code, cap, match):
    lines = [ln for ln in cap.err.strip().splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and match in lines[0], cap.err
    assert "Traceback" not in cap.err


@pytest.mark.slow
def test_errors_are_one_line_exit_2(smoke_runs, tmp_path, capsys):
    base = ["--out", str(tmp_path / "figs"), "--quiet", "--profile", "smoke"]
    _one_error_line(*_main(capsys, "tsne", "--dataset", "LIDC-B", "--methods", "clip", "ce", *base), "no record of ce on LIDC-B fold 0")
    _one_error_line(*_main(capsys, "tsne", "--dataset", "LIDC-B", "--methods", "nope", *base), "unknown method 'nope'")
    _one_error_line(*_main(capsys, "tsne", "--dataset", "LIDC-Z", *base), "LIDC-Z")
    _one_error_line(*_main(capsys, "tsne", "--dataset", "LIDC-B", "--fold", "7", *base), "fold 7")
    _one_error_line(*_main(capsys, "gradcam", "--dataset", "LIDC-B", "--methods", *METHODS, "--layer", "layer9", *base), "unknown layer 'layer9'")
    _one_error_line(*_main(capsys, "localisation", "--dataset", "LIDC-B", "--methods", *METHODS, "--folds", "0,9", *base), "fold 9")
    _one_error_line(*_main(capsys, "curves", "--dataset", "LIDC-B", "--folds", "0", "--runs", str(tmp_path / "none"), *base), "not a folder")
    _one_error_line(*_main(capsys), "name a figure")

    # A record without weights, and one whose weights were deleted.
    runs = tmp_path / "runs"
    runs.mkdir()
    src = next(smoke_runs.glob("clip_LIDC-B_fold0_seed0_smoke_*.json"))
    rec = json.loads(src.read_text())
    (runs / src.name).write_text(json.dumps({**rec, "weights": None}))
    _one_error_line(*_main(capsys, "tsne", "--dataset", "LIDC-B", "--methods", "clip", "--runs", str(runs), *base), "has no weights")
    (runs / src.name).write_text(json.dumps(rec))
    _one_error_line(*_main(capsys, "tsne", "--dataset", "LIDC-B", "--methods", "clip", "--runs", str(runs), *base), "are missing")
    # Weights that no longer fit the method (a parameter gone): say so, with the command that redoes the run.
    import torch

    saved = torch.load(smoke_runs / rec["weights"], weights_only=True)
    saved["state_dict"].pop("head.weight")
    torch.save(saved, runs / rec["weights"])
    _one_error_line(*_main(capsys, "tsne", "--dataset", "LIDC-B", "--methods", "clip", "--runs", str(runs), *base),
                    "do not fit this version's clip")
    (runs / rec["weights"]).unlink()

    # Records of two profiles for one request: ask which.
    other = {**rec, "profile": "quick", "key": "x" * 64}
    (runs / src.name.replace("_smoke_", "_quick_")).write_text(json.dumps(other))
    _one_error_line(*_main(capsys, "curves", "--dataset", "LIDC-B", "--methods", "clip", "--folds", "0", "--runs", str(runs),
                           "--out", str(tmp_path / "figs")), "--profile")
    assert not (tmp_path / "figs").exists()  # nothing written on a mistake


# ------------------------------------------------------------------ the critical-difference diagram
def test_cd_axis_runs_from_1_to_k_and_tied_methods_have_rows_of_their_own():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.stats import draw_cd, friedman
    from benchmarks.stats.ranks import cliques

    # 5 methods over 6 blocks; B and C tie in every block, D and E too: observed ranks 1.5-4.5, k = 5.
    x = np.array([[0.9, 0.8, 0.85, 0.9, 0.7, 0.75], [0.7, 0.6, 0.65, 0.7, 0.5, 0.55], [0.7, 0.6, 0.65, 0.7, 0.5, 0.55],
                  [0.6, 0.5, 0.55, 0.6, 0.4, 0.45], [0.6, 0.5, 0.55, 0.6, 0.4, 0.45]])
    res = friedman(x, methods=list("ABCDE"))
    assert res.average_ranks["B"] == res.average_ranks["C"] == 2.5 and res.cd > 2  # a CD wider than the observed spread
    fig, ax = plt.subplots(figsize=(6.4, 3))
    draw_cd(res, ax)
    (axis,) = [ln for ln in ax.lines if ln.get_gid() == "cd-axis"]
    assert list(axis.get_xdata()) == [1, 5] and ax.get_xlim() == (1, 5)
    assert sorted(t.get_text() for t in ax.texts if t.get_text() in list("12345")) == list("12345")  # a tick at every whole rank
    fig.canvas.draw()
    labels = [t for t in ax.texts if t.get_gid() == "cd-label"]
    assert len(labels) == 5 and sorted(t.get_text().split()[0].strip("()") for t in labels if t.get_ha() == "right") == ["A", "B", "C"]
    boxes = [t.get_window_extent() for t in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])  # no label hides another
    # The bars: the groups not told apart, by the Nemenyi p-values, checked against |rank difference| <= CD by hand.
    by_hand = [g for g in cliques(res) if all(abs(res.average_ranks[a] - res.average_ranks[b]) <= res.cd for a in g for b in g)]
    assert cliques(res) == by_hand and ("B", "C") <= max(cliques(res), key=len)
    plt.close(fig)


def test_cd_command_lacking_data_is_one_line_and_its_json_is_strict(tmp_path, capsys):
    from tests.records_synth import record, write

    one = write(tmp_path / "one", [record("ce", "LIDC-B", f, 0.8) for f in range(5)])
    code, cap = _main(capsys, "cd", "--tables", "2", "--datasets", "LIDC-B", "--runs", str(one), "--out", str(tmp_path / "f"))
    assert code == 2 and cap.err.count("\n") == 1 and cap.err.startswith("error: no critical-difference diagram: 1 methods over 5 complete"), cap.err
    # Every block a complete tie (the same predictions for both methods): chi2 is undefined, null in the JSON.
    ties = write(tmp_path / "ties", [record(m, "LIDC-B", f, 0.8, rng_seed=f) for m in ("ce", "clip_lung") for f in range(5)])
    figures.main(["cd", "--tables", "2", "--datasets", "LIDC-B", "--runs", str(ties), "--out", str(tmp_path / "f")])
    text = (tmp_path / "f" / "cd_accuracy_tables2_LIDC-B_smoke_phantom.json").read_text()  # the datasets in its name

    def refuse(name):
        raise AssertionError(f"{name} in the JSON")

    summary = json.loads(text, parse_constant=refuse)
    assert summary["chi2"] is None and summary["p"] is None and summary["average_ranks"] == {"ce": 1.5, "clip_lung": 1.5}


def test_the_default_methods_write_the_plain_file_name_and_others_their_own():
    """The smoke figure runs use two methods; the default trio's file name (no method list) is checked here."""
    from benchmarks.figures.common import DEFAULT_METHODS, methods_tag

    assert DEFAULT_METHODS == ("clip", "cocoop", "clip_lung") and methods_tag(list(DEFAULT_METHODS)) == ""
    assert methods_tag(["clip", "clip_lung"]) == "_clip+clip_lung" and methods_tag(["clip_lung", "clip"]) == "_clip_lung+clip"
