"""What a trained run looks at: features, Grad-CAM maps and a localisation score.

Everything here starts from a run record and the final weights saved beside it
(``<stem>.pt``): the model is rebuilt from the saved method config and data
info, and run on the test fold of the record's own protocol, fold, source and
label rule. Nothing is retrained.

Grad-CAM (Selvaraju et al., ICCV 2017) comes from the maintained ``grad-cam``
package (``pytorch_grad_cam``). Our network is 2-D: the 32 axial slices of the
crop are its 32 input channels, so a map is over (row, col) of the whole crop,
(32, 32), and the package serves it as it is (it only reads the spatial size
of the input). The target of a nodule is the class the run predicts (the
metrics' decision rule): its logit for methods with a linear head, its log
probability for the ordinal ones (NSB, UDM, CORF), whose outputs are not
logits. The map is the package's: ReLU of the gradient-weighted activations of
the chosen layer, scaled to [0, 1] by its minimum and maximum, resized
bilinearly to 32 x 32.

Localisation score (ours, not in the paper): the share of a map's mass inside
the readers' consensus mask,

    s(M) = sum_p M_p [p in D] / sum_p M_p,

with D the axial footprint of the consensus mask in the crop (the union of its
32 slices, the region the 2-D map can point at) dilated by one pixel. A map
equal to 1 on D and 0 elsewhere scores 1; a uniform map scores the area share
|D| / 32^2. Two reference maps are scored beside the methods: that uniform
map, and a centre-biased map at the layer's own resolution, which knows only
where the crop puts every nodule (at its centre, its equivalent diameter half
the crop's side): on the layer's grid (4 x 4 for layer4) it is 1 on the cells
covering the crop's central half and 0 elsewhere, resized to 32 x 32 as the
maps are. A method whose maps score no higher than that one has learnt no more
about where the nodule is than the crop already says.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.errors import UserError
from benchmarks.io import DamagedFile, load_torch_file
from benchmarks.metrics import decide
from benchmarks.paths import runs_dir
from benchmarks.records import read_records
from benchmarks.selection import Setting, select

log = logging.getLogger(__name__)

# The encoder's residual blocks and their strides: layer4, the last convolutional
# block, gives (B, 512, 4, 4) on a 32^3 crop.
LAYER_STRIDE = {"layer1": 1, "layer2": 2, "layer3": 4, "layer4": 8}
LAYERS = tuple(LAYER_STRIDE)
DEFAULT_LAYER = "layer4"
DILATE_PX = 1


# ------------------------------------------------------------------ records
def find_records(methods: list[str], dataset: str, folds: list[int], setting: Setting, seed: int = 0, root: Path | None = None) -> dict:
    """{(method, fold): record} of the requested runs, all of one setting (``benchmarks.selection``).

    A method or fold without a record of that setting ends in a UserError naming the command that makes it.
    """
    import methods as registry  # noqa: PLC0415  (torch is loaded already: this module imports it)

    for m in methods:
        registry.get_method(m)
    wanted = {(m, f) for m in methods for f in folds}
    flags = " ".join(x for x in (setting.flags(), f"--seed {seed}" if seed else "") if x)

    def missing_error(m, f, more=0):
        return (f"no record of {m} on {dataset} fold {f}{f' (and {more} more)' if more else ''} in {root or runs_dir()}"
                + (f" with {flags}" if flags else "")
                + f"; run `python -m benchmarks.run --method {m} --dataset {dataset} --fold {f}" + (f" {flags}" if flags else "") + "`")

    first = sorted(wanted, key=lambda k: (methods.index(k[0]), k[1]))[0]
    recs = select(read_records(root), setting,
                  # partition 0's folds (the committed ones): the figures name a fold, not a repeated partition
                  where=lambda r: (r.get("method"), r.get("fold")) in wanted and r.get("dataset") == dataset and r.get("seed") == seed
                  and r.get("repeat", 0) == 0,
                  none_found=missing_error(*first, len(wanted) - 1))
    out = {(r["method"], r["fold"]): r for r in recs}
    missing = sorted(wanted - set(out), key=lambda k: (methods.index(k[0]), k[1]))
    if missing:
        raise UserError(missing_error(*missing[0], len(missing) - 1))
    return out


def describe(rec: dict) -> str:
    """The setting of a record, for titles: 'profile quick, source phantom, text encoder minilm-l6'."""
    enc = rec.get("text_encoder")
    return f"profile {rec['profile']}, source {rec['source']}" + (f", text encoder {enc}" if enc else "")


def setting_of(recs) -> str:
    """:func:`describe` of a set of records (one setting; the text encoder of the text methods)."""
    recs = list(recs)
    enc = next((r["text_encoder"] for r in recs if r.get("text_encoder")), None)
    return describe({**recs[0], "text_encoder": enc})


# ------------------------------------------------------------------ models and data
def rerun_command(rec: dict) -> str:
    """The command that redoes a record's run (its --set overrides aside)."""
    return (f"`python -m benchmarks.run --method {rec['method']} --dataset {rec['dataset']} --fold {rec['fold']} "
            f"--seed {rec['seed']} --profile {rec['profile']} --source {rec['source']} --min-readers {rec['min_readers']} --force`")


def weights_path(rec: dict) -> Path:
    name = rec.get("weights")
    where = Path(rec.get("_path", runs_dir() / "x.json")).parent
    if not name:
        raise UserError(f"the record {rec.get('_path', rec.get('key'))} has no weights (run without keeping them); "
                        f"rerun it: {rerun_command(rec)}")
    path = where / name
    if not path.exists():
        raise UserError(f"the weights of record {rec.get('_path', rec.get('key'))} are missing ({path}); "
                        f"rerun it: {rerun_command(rec)}")
    return path


def load_model(rec: dict, device):
    """The run's final model, rebuilt from its saved config and weights, in eval mode on ``device``."""
    import methods  # noqa: PLC0415

    path = weights_path(rec)
    try:
        saved = load_torch_file(path)  # weights_only: nothing in the file can run code
    except DamagedFile as e:  # one line: the file and the cause, then how to get them back
        raise UserError(f"cannot read the weights {e}; rerun the run: {rerun_command(rec)}") from None
    try:
        m = methods.get_method(saved["method"])
        info = methods.DataInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["info"].items()})
        model = m.cls(m.cls.Config(**saved["method_config"]), info)
        model.load_state_dict(saved["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"the weights {path} do not fit this version's {rec['method']} ({first}); "
                        f"rerun the run: {rerun_command(rec)}") from None
    return model.to(device).eval()


def load_test(rec: dict):
    """The record's test fold (FoldData), checked against the record's protocol hash."""
    from benchmarks.data import load_fold  # noqa: PLC0415

    data = load_fold(rec["dataset"], rec["fold"], source=rec["source"], min_readers=rec["min_readers"], progress=False,
                     repeat=rec.get("repeat", 0))
    check_folds(rec, data)
    return data


def check_folds(rec: dict, data) -> None:
    """A UserError unless ``rec`` was run on the folds and labels of ``data``."""
    if data.protocol_hash != rec["protocol_hash"]:
        raise UserError(f"the folds or labels changed since {rec.get('_path')} was run (protocol hash "
                        f"{rec['protocol_hash'][:12]} there, {data.protocol_hash[:12]} now); rerun it")


def check_predictions(rec: dict, data, pred: np.ndarray) -> None:
    """Warn when the rebuilt model does not decide as the recorded run did."""
    recorded = {p["id"]: p["probs"] for p in rec.get("predictions", [])}
    if not recorded:
        return
    probs = np.array([recorded.get(i, [np.nan] * data.num_classes) for i in data.test.nodule_ids])
    if np.isnan(probs).any():
        log.warning("%s: the record's predictions do not cover this test fold", rec.get("_path"))
        return
    then = decide(probs, data.class_names, data.test_class_names, rec.get("decision_rule", "argmax"))
    n = int((then != pred).sum())
    if n:
        log.warning("%s: the rebuilt model decides %d of %d test nodules differently from the record "
                    "(another device or library version)", rec.get("_path"), n, len(pred))


# ------------------------------------------------------------------ features and t-SNE
def test_features(model, data, device) -> tuple[np.ndarray, np.ndarray]:
    """(probs (N, K), features (N, 512)): the pooled image feature the linear head reads."""
    from benchmarks.train import predict  # noqa: PLC0415

    return predict(model, data.test, device, return_features=True)


def tsne_embed(features: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """t-SNE (scikit-learn, PCA initialisation) of (N, D) features: (N, 2).

    The perplexity is lowered to (N - 1) / 3 for small N (scikit-learn needs it below N).
    """
    from sklearn.manifold import TSNE  # noqa: PLC0415

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"t-SNE needs (N, D) features, got shape {x.shape}")
    if len(x) < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {len(x)}")
    if not np.isfinite(x).all():
        raise ValueError("features hold non-finite values")
    perp = min(perplexity, (len(x) - 1) / 3)
    return TSNE(n_components=2, perplexity=perp, init="pca", learning_rate="auto", random_state=seed).fit_transform(x)


# ------------------------------------------------------------------ Grad-CAM
class ClassScores(nn.Module):
    """Wraps a method for the package: (B, 32, 32, 32) image -> (B, K) class scores."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        b = image.shape[0]
        batch = {"image": image, "label": torch.zeros(b, dtype=torch.long, device=image.device),
                 "attributes": torch.zeros(b, 8, device=image.device)}  # unused in eval mode
        out = self.inner(batch)
        if "logits" in out:  # a linear head (or Poisson's unimodal logits)
            return out["logits"]
        return self.inner.predict(out).clamp_min(1e-12).log()  # ordinal methods: log-probabilities


def target_layer(model, layer: str):
    if layer not in LAYERS:
        raise UserError(f"unknown layer {layer!r}; choose one of {', '.join(LAYERS)} (the encoder's residual blocks)")
    return getattr(model.encoder.net, layer)


def gradcam(model, images: np.ndarray, targets: np.ndarray, device, layer: str = DEFAULT_LAYER, batch_size: int = 64) -> np.ndarray:
    """Grad-CAM maps (N, 32, 32) in [0, 1] of ``images`` (N, 32, 32, 32) for class ``targets`` (N,)."""
    from pytorch_grad_cam import GradCAM  # noqa: PLC0415
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: PLC0415

    scores = ClassScores(model).to(device).eval()
    cam = GradCAM(model=scores, target_layers=[target_layer(model, layer)])
    maps = []
    try:  # not `with`: the package's __exit__ swallows IndexErrors
        for s in range(0, len(images), batch_size):
            x = torch.as_tensor(np.ascontiguousarray(images[s : s + batch_size]), dtype=torch.float32, device=device)
            t = [ClassifierOutputTarget(int(c)) for c in targets[s : s + batch_size]]
            maps.append(cam(input_tensor=x, targets=t))
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
    out = np.concatenate(maps) if maps else np.zeros((0, 32, 32), np.float32)
    if len(out) != len(images):
        raise RuntimeError(f"Grad-CAM gave {len(out)} maps for {len(images)} images")
    return out


# ------------------------------------------------------------------ localisation
def footprint(mask3d: np.ndarray, dilate_px: int = DILATE_PX) -> np.ndarray:
    """Axial footprint of (..., S, H, W) crop masks, dilated by ``dilate_px``: (..., H, W) bool."""
    from scipy.ndimage import binary_dilation, generate_binary_structure  # noqa: PLC0415

    fp = np.asarray(mask3d, bool).any(axis=-3)
    if dilate_px <= 0:
        return fp
    st = generate_binary_structure(2, 1)  # 4-neighbourhood
    st = st.reshape((1,) * (fp.ndim - 2) + st.shape)
    return binary_dilation(fp, structure=st, iterations=dilate_px)


def localisation_score(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """s = sum(M * D) / sum(M) per map: (..., H, W) maps >= 0 and masks -> (...,); NaN for an all-zero map."""
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks, bool)
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ in shape")
    if (maps < 0).any():
        raise ValueError("maps must be non-negative")
    total = maps.sum(axis=(-2, -1))
    inside = (maps * masks).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


def centre_map(layer: str = DEFAULT_LAYER, size: int = 32) -> np.ndarray:
    """The centre-biased reference, (size, size) in [0, 1]: on the layer's own grid
    (size / stride cells a side), 1 on the cells whose centres lie in the crop's
    central half (where the crop puts the nodule's equivalent diameter), 0
    elsewhere; resized to ``size`` bilinearly as the package resizes a map."""
    import cv2  # noqa: PLC0415  (the package's own resize)

    g = size // LAYER_STRIDE[layer]
    c = np.arange(g) + 0.5 - g / 2  # cell centres, 0 at the crop's centre
    inner = np.abs(c) < g / 4
    grid = (inner[:, None] & inner[None, :]).astype(np.float32)
    return np.clip(cv2.resize(grid, (size, size)), 0.0, 1.0)


# ------------------------------------------------------------------ picking nodules
def pick_nodules(true: np.ndarray, probs_by_method: list[np.ndarray], class_idx: list[int], n: int, ids) -> list[int]:
    """Rows to show, by a rule (never by hand).

    margin_i = mean over the methods of p(true class) - max p(other test class).
    The first ceil(n/2): nodules every method gets right, smallest margin first
    (the hardest right); the rest: nodules at least one method gets wrong, most
    negative margin first (the most confidently wrong). A short group is filled
    from the other. Ties break by nodule id.
    """
    true = np.asarray(true)
    ids = np.asarray(ids)
    margins, right = [], []
    for p in probs_by_method:
        sub = np.asarray(p)[:, class_idx]  # (N, C) test classes
        t = np.array([class_idx.index(y) for y in true])
        pt = sub[np.arange(len(t)), t]
        other = np.where(np.eye(len(class_idx), dtype=bool)[t], -np.inf, sub).max(1)
        margins.append(pt - other)
        right.append(pt > other)
    margin = np.mean(margins, axis=0)
    all_right = np.all(right, axis=0)
    order = np.lexsort((ids, margin))  # by margin, then id
    easy_hard = [i for i in order if all_right[i]]
    wrong = [i for i in order if not all_right[i]]
    n_right = min(len(easy_hard), (n + 1) // 2)
    n_wrong = min(len(wrong), n - n_right)
    n_right = min(len(easy_hard), n - n_wrong)
    return [int(i) for i in easy_hard[:n_right] + wrong[:n_wrong]]
