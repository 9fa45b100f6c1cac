"""Several runs in one process, stepped in turn: a pack.

A run is the unit of meaning (one spec, one record, one checkpoint); a pack is
only how runs are scheduled. ``run_pack(specs)`` prepares every run that has no
record (its fold, its model built from its own seed), then advances their
training loops (``benchmarks.train.fit_steps``) one optimiser step at a time,
run after run. Before a run's step the global random state (CPU, and CUDA when
used) is set to that run's own, and saved again after, so no run draws from
another's stream: each computes exactly what it computes alone (same initial
weights, same batches and augmentation, same losses, same record), with its
own checkpoint at each of its epoch ends (but the last) and its own resume after a kill.

What a pack shares: the process (one start-up, one CUDA context, one copy of a
frozen text encoder, which is loaded once per process and per name), and on a
GPU the time the device would otherwise wait between one small run's kernel
launches. A run that fails (diverges, or any error) ends alone with its error;
the others go on. The records say which runs shared a pack
(``timing.packed_with``).
"""
from __future__ import annotations

import logging
import time

from benchmarks.lifecycle import existing_record, finish_run, machine_share, prepare_run
from benchmarks.records import RunSpec

log = logging.getLogger(__name__)


class _RandomState:
    """The global RNG state of one run (CPU generator, every CUDA device's, NumPy's)."""

    def __init__(self, device):
        import numpy as np  # noqa: PLC0415
        import torch  # noqa: PLC0415

        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
        self.np = np.random.get_state()

    def restore(self) -> None:
        import numpy as np  # noqa: PLC0415
        import torch  # noqa: PLC0415

        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        np.random.set_state(self.np)


def run_pack(specs: list[RunSpec], device: str = "auto", force: bool = False, progress: bool = False,
             keep_weights: bool = True, machine: dict | None = None) -> list[dict | BaseException]:
    """Run (or reuse) every spec, packed in this process; per spec its record or the exception
    that ended it. ``machine``: how the pack shared its machine, for the records
    (:func:`benchmarks.lifecycle.machine_share`; default: this pack alone)."""
    from tqdm import tqdm  # noqa: PLC0415  (deferred for --help speed, as torch)

    from benchmarks.train import Diverged, fit_steps  # noqa: PLC0415

    out: list[dict | BaseException | None] = [None] * len(specs)
    live = []  # (index, prepared, step generator, random state)
    stems = [s.stem for s in specs]
    for i, spec in enumerate(specs):
        rec = None if force else existing_record(spec)
        if rec is not None:
            out[i] = rec
            continue
        try:
            p = prepare_run(spec, device, force, progress=False)
        except Exception as e:  # noqa: BLE001  one run's failure is that run's
            out[i] = e
            continue
        gen = fit_steps(p.model, p.data, p.train, spec.seed, p.device, checkpoint=p.ckpt, checkpoint_tag=spec.key, progress=False)
        live.append((i, p, gen, _RandomState(p.device)))
    machine = machine or machine_share(1, len(specs))
    if live:
        log.info("pack of %d runs: %s", len(live), ", ".join(specs[i].stem for i, *_ in live))
    bar = tqdm(desc=f"pack of {len(live)} runs", unit="round", disable=not progress or not live)
    t_start = time.perf_counter()
    while live:
        still = []
        for i, p, gen, rng in live:
            rng.restore()
            try:
                next(gen)
            except StopIteration as done:
                result = done.value
                result["packed_with"] = [s for j, s in enumerate(stems) if j != i]
                try:
                    out[i] = finish_run(p, result, keep_weights, machine)
                except Exception as e:  # noqa: BLE001
                    out[i] = e
                continue
            except Exception as e:  # noqa: BLE001  (Diverged included): this run ends, the others go on
                if isinstance(e, Diverged):
                    p.ckpt.unlink(missing_ok=True)
                out[i] = e
                log.error("%s: %s", specs[i].stem, e)
                continue
            still.append((i, p, gen, _RandomState(p.device)))  # where this run's stream now stands
        live = still
        bar.update(1)
    bar.close()
    log.info("pack done in %.1f s", time.perf_counter() - t_start)
    return out

