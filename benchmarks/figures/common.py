"""What every figure shares: names, colours, file names, and writing PNG and PDF."""
from __future__ import annotations

import io
from pathlib import Path

from benchmarks.grid import DISPLAY
from benchmarks.io import atomic_write_bytes

# interpret.LAYERS and DEFAULT_LAYER, spelled out for the parser (a test keeps them equal).
LAYER_NAMES = ("layer1", "layer2", "layer3", "layer4")
DEFAULT_LAYER = "layer4"

DEFAULT_METHODS = ("clip", "cocoop", "clip_lung")
CLASS_COLOURS = {"benign": "#1b9e77", "unsure": "#7570b3", "malignant": "#d95f02"}
CONTOUR = "#39ff14"  # the consensus contour on the slice
FOOTPRINT = "#ffd700"  # the scored footprint


def name(method: str) -> str:
    """A method's name in figures: the paper's, else its ``label`` (its registered name without one)."""
    import methods  # noqa: PLC0415  (torch: deferred for --help speed; loaded already when a figure is drawn)

    m = methods.REGISTRY.get(method)
    return DISPLAY.get(method) or (m.label if m else method)


def plt_():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def save_figure(fig, out_dir: Path, stem: str) -> list[Path]:
    """PNG (200 dpi) and PDF, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=200, bbox_inches="tight")
        p = out_dir / f"{stem}.{fmt}"
        atomic_write_bytes(p, buf.getvalue())
        paths.append(p)
    plt_().close(fig)
    return paths


def methods_tag(methods) -> str:
    """'' for the default trio, else '_' + the methods joined by '+', so that a call with
    other methods writes its own files instead of overwriting the default figure."""
    return "" if tuple(methods) == DEFAULT_METHODS else "_" + "+".join(methods)


def stem(kind: str, dataset: str, fold, rec: dict, methods=DEFAULT_METHODS) -> str:
    """File name of a figure: kind, dataset, fold, profile, source (and seed, label rule,
    method list when not the defaults)."""
    from benchmarks.data.protocols import DEFAULT_MIN_READERS  # noqa: PLC0415

    f = f"_fold{fold}" if fold is not None else ""
    extra = (f"_seed{rec['seed']}" if rec.get("seed") else "") + \
        (f"_min{rec['min_readers']}" if rec.get("min_readers", DEFAULT_MIN_READERS) != DEFAULT_MIN_READERS else "")
    return f"{kind}_{dataset}{f}_{rec['profile']}_{rec['source']}{extra}{methods_tag(methods)}"


