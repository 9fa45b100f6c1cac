"""The one training loop, for every method.

SGD (momentum 0.9, weight decay 5e-5), learning rate 1e-3 with cosine decay
over the epochs (stepped once per epoch, to 0), batch 32, 100 epochs (profile
``paper``). The model evaluated is the final epoch's (or its EMA when
``ema_decay`` > 0): no epoch is ever chosen on the test fold. ``eval_every``
only adds test metrics to the per-epoch history for curves.

Augmentation (``augment``, on by default): each training crop is flipped along
each of its three axes with probability 1/2 and rotated by a random multiple
of 90 degrees in the axial plane. Nodule malignancy does not depend on
orientation, and these eight-fold symmetries keep the voxel grid (no
interpolation).

Determinism and resume. Everything random is seeded from the run's seed: the
model's initialisation, and each epoch's order and augmentation from a
generator seeded by (seed, epoch), so an epoch does not depend on how the run
got there. A checkpoint (model, optimiser, schedule, EMA, history, RNG state)
is written atomically at each epoch end but the last (whose result, the record,
follows at once); a killed run started again resumes at the next epoch and, on
the CPU, ends with the same weights and predictions as an uninterrupted run. On CUDA, ``amp=True`` runs forward and loss under
bfloat16 autocast (weights and optimiser stay float32). It is off by default:
these models are small enough that a GPU step is bound by kernel launches, and
autocast's extra casts did not pay (H100, LIDC-A, 47 steps an epoch, two
runs each: CLIP-Lung 2.45-2.57 s an epoch with autocast against 1.80-2.17 s
without; CE 0.56-0.68 s against 0.62-0.78 s).
"""
from __future__ import annotations

import io
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.config import TrainConfig  # noqa: F401  (re-exported: the loop's settings)
from benchmarks.errors import UserError
from benchmarks.io import atomic_write_bytes, load_torch_file, move_aside
from benchmarks.metrics import evaluate, log_loss

log = logging.getLogger(__name__)


class Diverged(UserError):
    """Training diverged (a non-finite loss, weights or test probabilities): the run stops
    and writes no record, since its numbers would be meaningless in a table."""

    advice = "lower the learning rate (--set lr=...) or check the method's settings"


def _first_non_finite(model: torch.nn.Module, ema: dict | None) -> str | None:
    """Name of the first parameter or buffer (or EMA entry) that holds a NaN or inf, else None."""
    items = list(model.state_dict().items()) + [(f"ema.{k}", v) for k, v in (ema or {}).items()]
    for name, v in items:
        if v.dtype.is_floating_point and not torch.isfinite(v).all():
            return name
    return None


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use auto, cpu or cuda") from None


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a class-stratified subset of size ``n`` (sorted), or all when n <= 0 or n >= len."""
    if n <= 0 or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / counts.sum() * n).astype(int)
    for i in np.argsort(-(counts / counts.sum() * n - quota))[: n - quota.sum()]:
        quota[i] += 1
    picks = [rng.choice(np.flatnonzero(labels == c), q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picks))


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random flips along (slice, row, col) and axial 90-degree rotations. x: (B, 32, 32, 32)
    on any device; the draws come from the CPU generator ``g`` (the same numbers on every
    device), and the masks are tested on the CPU, so a GPU step waits on nothing."""
    b = x.shape[0]
    flips = torch.rand(b, 3, generator=g) < 0.5  # (B, 3) on the CPU
    turns = torch.randint(0, 4, (b,), generator=g)  # (B,)
    x = x.clone()
    for axis in range(3):
        m = flips[:, axis]
        if m.any():
            m = m.to(x.device, non_blocking=True)
            x[m] = x[m].flip(axis + 1)
    for k in (1, 2, 3):
        m = turns == k
        if m.any():
            m = m.to(x.device, non_blocking=True)
            x[m] = torch.rot90(x[m], k, dims=(2, 3))
    return x


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))


CHECKPOINT_KEYS = ("tag", "epoch", "model", "opt", "sched", "ema", "history", "rng")


def load_checkpoint(path: Path, device) -> dict | None:
    """The epoch checkpoint at ``path``, or None when there is none or it cannot be used.

    Loaded with ``weights_only=True``: a checkpoint holds tensors and plain types
    only, so nothing in the file can run code (a crafted pickle is refused, not
    executed). A truncated, garbled or foreign file is moved aside to
    ``<name>.bad`` with a warning, and the run starts again from epoch 0.
    """
    if not path.exists():
        return None
    try:
        state = load_torch_file(path, map_location=device)
        if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
            raise ValueError("not a checkpoint of this suite")
        return state
    except Exception as e:  # noqa: BLE001  truncated zip, refused pickle, wrong content: all mean "start again"
        why = " ".join(str(e).split())[:200] or type(e).__name__  # one line, never PyTorch's advice on weights_only
        try:
            bad = move_aside(path)  # beside earlier damaged copies, never over them
            log.warning("cannot use the checkpoint %s (%s); moved it to %s and starting from epoch 0", path, why, bad)
        except OSError:
            log.warning("cannot use the checkpoint %s (%s); starting from epoch 0", path, why)
        return None


def _ema_update(ema: dict, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                ema[k].copy_(v)


def _batch(images, labels, attrs, idx, device, g=None, augment_on=False) -> dict:
    """The crops ``idx`` (CPU indices) of a split held on the CPU or, in training, on ``device``."""
    idx = idx.to(images.device, non_blocking=True)
    x = images[idx]
    if augment_on:
        x = augment(x, g)
    return {
        "image": x.to(device, non_blocking=True),
        "label": labels[idx].to(device, non_blocking=True),
        "attributes": attrs[idx].to(device, non_blocking=True),
    }


@torch.no_grad()
def predict(model, split, device, batch_size: int = 128, amp: bool = False, return_features: bool = False):
    """Class probabilities (N, K) float64 numpy of a split (and pooled features (N, 512) if asked)."""
    model.eval()
    images = torch.as_tensor(np.require(split.images, requirements="W"))
    labels = torch.tensor(split.labels)
    attrs = torch.tensor(split.attributes)
    probs, feats = [], []
    for s in range(0, len(split), batch_size):
        idx = torch.arange(s, min(s + batch_size, len(split)))
        batch = _batch(images, labels, attrs, idx, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            out = model(batch)
            p = model.predict(out)
        probs.append(p.float().cpu())
        if return_features:
            feats.append(out["features"].float().cpu())
    probs = torch.cat(probs).double().numpy() if probs else np.zeros((0, 0))
    if return_features:
        return probs, torch.cat(feats).numpy()
    return probs


def fit(model, data, cfg: TrainConfig, seed: int, device: torch.device, checkpoint: Path | None = None,
        checkpoint_tag: str = "", progress: bool = True, stop_after_epoch: int | None = None, on_epoch=None) -> dict:
    """Train ``model`` on ``data.train`` and predict ``data.test``.

    Returns {"probs": (N_test, K) numpy, "history": [per-epoch dict], "seconds_per_epoch": [...],
    "state_dict": final (EMA) weights on the CPU}. ``stop_after_epoch`` ends the
    call early after that many epochs (tests of the resume path). ``on_epoch(epoch, metrics)``,
    when given, is called after every epoch with the metrics of ``data.test`` under the model
    as it stands, and their ``log_loss`` (a tuning trial's validation split: its pruner's input,
    and the log loss its ties' tie-break); it may raise to stop.
    """
    steps = fit_steps(model, data, cfg, seed, device, checkpoint, checkpoint_tag, progress, stop_after_epoch, on_epoch)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def fit_steps(model, data, cfg: TrainConfig, seed: int, device: torch.device, checkpoint: Path | None = None,
              checkpoint_tag: str = "", progress: bool = True, stop_after_epoch: int | None = None, on_epoch=None):
    """:func:`fit` as a generator that yields after every optimiser step and returns fit's
    result: several runs can then be stepped in turn in one process (``benchmarks.pack``),
    each computing exactly what it computes alone.

    The training split is moved to ``device`` once (1,503 crops of 32^3 are ~200 MB);
    batches are indexed and augmented there, from the run's CPU generator. Loss terms
    are summed on the device and read once an epoch (no host sync per step, apart from
    the progress bar's running loss every 10 steps when it is shown).
    """
    from tqdm import tqdm  # noqa: PLC0415

    model.to(device)
    keep = stratified_subset(data.train.labels, cfg.train_limit, seed)
    images = torch.from_numpy(np.ascontiguousarray(data.train.images[keep])).to(device)  # (N, 32, 32, 32)
    labels = torch.tensor(data.train.labels[keep]).to(device)
    attrs = torch.tensor(data.train.attributes[keep]).to(device)
    n = len(labels)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if cfg.ema_decay > 0 else None
    history: list[dict] = []
    start = 0
    state = load_checkpoint(checkpoint, device) if checkpoint is not None else None
    if state is not None:
        if state.get("tag") == checkpoint_tag:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            ema = state["ema"]
            history = state["history"]
            start = state["epoch"]
            torch.set_rng_state(state["rng"])
            log.info("resuming from %s at epoch %d of %d", checkpoint, start + 1, cfg.epochs)
        else:
            log.warning("ignoring checkpoint %s of another configuration", checkpoint)
    amp = cfg.amp and device.type == "cuda"
    steps = math.ceil(n / cfg.batch_size)
    scored = None  # (N_test, K): on_epoch's prediction after the last epoch, which is also the result's
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        g = _epoch_generator(seed, epoch)
        order = torch.randperm(n, generator=g)
        sums: dict[str, torch.Tensor] = {}  # float64 on the device: the same sums as Python floats
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress)
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            batch = _batch(images, labels, attrs, idx, device, g, cfg.augment)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(batch)
                terms = model.loss(out, batch)
            loss = terms["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                _ema_update(ema, model, cfg.ema_decay)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach().double() * len(idx)
            if progress and (step % 10 == 9 or step == steps - 1):
                bar.set_postfix(loss=f"{float(sums['loss']) / min(n, (step + 1) * cfg.batch_size):.4f}")
            yield
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize()
        entry = {"epoch": epoch + 1, "seconds": time.perf_counter() - t0, "lr": opt.param_groups[0]["lr"]}
        entry.update({k: float(v) / n for k, v in sums.items()})
        if not math.isfinite(entry["loss"]):
            raise Diverged(f"non-finite loss ({entry['loss']}) in epoch {epoch + 1} of {cfg.epochs} (lr {cfg.lr}); "
                           f"no record written; {Diverged.advice}")
        sched.step()
        if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs:
            probs = _predict_with(model, ema, data.test, device, cfg)
            m = evaluate(probs, data.test.labels, data.class_names, data.test_class_names, getattr(model, "decision_rule", "argmax"))
            entry["test"] = {k: m[k] for k in ("accuracy", "macro_f1")}
        bad = _first_non_finite(model, ema)
        if bad is not None:
            raise Diverged(f"the weights are not finite after epoch {epoch + 1} of {cfg.epochs} ({bad}, lr {cfg.lr}); "
                           f"no record written; {Diverged.advice}")
        history.append(entry)
        log.info("epoch %d/%d  loss %.4f  %.1f s", epoch + 1, cfg.epochs, entry["loss"], entry["seconds"])
        # Not after the last epoch: the record and weights written moments later supersede it, and the
        # checkpoint (weights and optimiser state: ~90 MB for the default ResNet-18, 11.2 M parameters, with
        # SGD's momentum) costs a write and an fsync a run for nothing; a kill in between redoes the last epoch.
        if checkpoint is not None and epoch + 1 < cfg.epochs:
            buf = io.BytesIO()
            torch.save({"tag": checkpoint_tag, "epoch": epoch + 1, "model": model.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "ema": ema, "history": history, "rng": torch.get_rng_state()}, buf)
            atomic_write_bytes(checkpoint, buf.getvalue())
        if on_epoch is not None:  # a tuning trial: score the validation split now (the pruner decides)
            probs = _predict_with(model, ema, data.test, device, cfg)
            scored = probs if epoch + 1 == cfg.epochs else None  # the final weights: predicting again would repeat it
            on_epoch(epoch + 1, {**evaluate(probs, data.test.labels, data.class_names, data.test_class_names,
                                            getattr(model, "decision_rule", "argmax")), "log_loss": log_loss(probs, data.test.labels)})
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < cfg.epochs:
            return {"stopped": True, "history": history}
    t_eval = time.perf_counter()
    probs = scored if scored is not None else _predict_with(model, ema, data.test, device, cfg)
    final = ema if ema is not None else model.state_dict()
    return {
        "probs": probs,
        "history": history,
        "seconds_per_epoch": [h["seconds"] for h in history],
        "eval_seconds": time.perf_counter() - t_eval,
        "n_train_used": n,
        "state_dict": {k: v.detach().cpu() for k, v in final.items()},
    }


def _predict_with(model, ema, split, device, cfg: TrainConfig):
    if ema is None:
        return predict(model, split, device, cfg.eval_batch_size, cfg.amp)
    current = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(ema)
    try:
        return predict(model, split, device, cfg.eval_batch_size, cfg.amp)
    finally:
        model.load_state_dict(current)
