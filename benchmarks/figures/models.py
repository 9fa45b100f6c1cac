"""Trained runs brought back: each record's model rebuilt from its weights and run on its test fold."""
from __future__ import annotations

from benchmarks import interpret as ip
from benchmarks.metrics import decide
from benchmarks.train import resolve_device


def device(name: str):
    return resolve_device(name)


def rebuilt(recs: dict, methods: list[str], fold: int, data, device, layer: str | None = None) -> dict:
    """{method: (model, probs (N, K), features (N, 512), decided class (N,))} on ``data``'s test fold,
    each record checked against the folds (and ``layer`` against the model) before any work."""
    out = {}
    for m in methods:
        rec = recs[(m, fold)]
        ip.check_folds(rec, data)
        model = ip.load_model(rec, device)
        if layer is not None:
            ip.target_layer(model, layer)
        probs, feats = ip.test_features(model, data, device)
        pred = decide(probs, data.class_names, data.test_class_names, getattr(model, "decision_rule", "argmax"))
        ip.check_predictions(rec, data, pred)
        out[m] = (model, probs, feats, pred)
    return out


def index_rows(min_readers: int, ids):
    """The nodule index rows of ``ids``, in that order."""
    from benchmarks.data.protocols import labelled_folds  # noqa: PLC0415

    return labelled_folds(min_readers).set_index("nodule_id").loc[list(ids)].reset_index()


