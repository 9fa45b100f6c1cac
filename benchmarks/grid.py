"""What Tables 1-3 of the paper hold: methods x datasets. Shared by the sweep and the tables."""
from __future__ import annotations

TABLE12_METHODS = ("ce", "poisson", "nsb", "udm", "corf", "clip", "cocoop", "clip_lung")
ABLATIONS = ("clip_lung_ic", "clip_lung_ic_ia", "clip_lung_ia_ca", "clip_lung_ic_ca", "clip_lung")
# (L_IC, L_IA, L_CA) of each Table 3 row.
ABLATION_LOSSES = {
    "clip_lung_ic": (True, False, False),
    "clip_lung_ic_ia": (True, True, False),
    "clip_lung_ia_ca": (False, True, True),
    "clip_lung_ic_ca": (True, False, True),
    "clip_lung": (True, True, True),
}
TABLES = {
    1: {"methods": TABLE12_METHODS, "datasets": ("LIDC-A",)},
    2: {"methods": TABLE12_METHODS, "datasets": ("LIDC-B", "LIDC-C")},
    3: {"methods": ABLATIONS, "datasets": ("LIDC-A", "LIDC-B", "LIDC-C")},
}
DISPLAY = {
    "ce": "CE Loss", "poisson": "Poisson", "nsb": "NSB", "udm": "UDM", "corf": "CORF",
    "clip": "CLIP", "cocoop": "CoCoOp", "clip_lung": "CLIP-Lung",
    "clip_lung_ic": "CLIP-Lung (IC)", "clip_lung_ic_ia": "CLIP-Lung (IC+IA)",
    "clip_lung_ia_ca": "CLIP-Lung (IA+CA)", "clip_lung_ic_ca": "CLIP-Lung (IC+CA)",
}


# Beyond the paper: CE against CLIP-Lung on each image encoder (``tables --backbones``,
# ``sweep run --backbones``). The paper reports one such pair: MV-DAR on LIDC-A.
BACKBONE_TABLE = {"methods": ("ce", "clip_lung"), "datasets": ("LIDC-A", "LIDC-B", "LIDC-C")}


def cells(tables) -> list[tuple[str, str]]:
    """(method, dataset) cells of the given tables, each once, in table order."""
    out: list[tuple[str, str]] = []
    for t in tables:
        for ds in TABLES[t]["datasets"]:
            for m in TABLES[t]["methods"]:
                if (m, ds) not in out:
                    out.append((m, ds))
    return out


PAPER_METHODS = frozenset(m for t in TABLES.values() for m in t["methods"])


def extra_method(method: str) -> bool:
    """A method outside the paper's tables (a plugin's, or any other registered one): shown as
    rows below the paper's in Tables 1-2."""
    return method not in PAPER_METHODS


def display(method: str, label: str | None = None) -> str:
    """The row label of a method: the paper's name, or (a method outside the paper's tables) its own
    label (``label`` on its class, else its registered name) marked as not in the paper."""
    return DISPLAY[method] if method in DISPLAY else f"{label or method} (not in the paper)"
