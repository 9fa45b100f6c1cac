"""python -m benchmarks.device_check: the GPU measurements of the README in one command.

  python -m benchmarks.device_check --device cuda --pack 4 --out results/device_check.json

Two parts, sized for under 8 minutes of one H100/H200, not yet timed on one (the ViT-B/16 text tower with random
weights, as the timing needs no trained weights and the MiniLM files need not
travel):
  1. steps: every method's training step alone and packed (``benchmarks.speed
     --pack``), batch 32, and the full sweep projected from them;
  2. a short packed sweep: ``--epochs`` epochs of the paper profile (whole
     training folds, phantom source) of every method on fold 0 of LIDC-A and
     LIDC-C, run alone and then in packs of ``--pack``; the measured seconds per
     epoch give a second projection of the full sweep (180 runs x 100 epochs).
Prints one JSON object (also written to ``--out``): device, PyTorch version,
date, per-method times, and both projections in minutes.

``--device cpu --quick`` runs the same code path in a few minutes on a CPU (tiny
text tower, 1 epoch on a 96-nodule subset): a check that the script works, not
a measurement.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from benchmarks.cli import ArgumentParser, int_in
from benchmarks.errors import UserError, cli_main
from benchmarks.io import atomic_write_text, writable_dir


def short_sweep(methods: list[str], pack: int, epochs: int, device: str, text_encoder: str, quick: bool, runs_root: Path) -> dict:
    """Seconds per epoch of every method on fold 0 of LIDC-A and LIDC-C, alone and packed."""
    import os  # noqa: PLC0415

    import methods as registry  # noqa: PLC0415
    from benchmarks.lifecycle import make_spec  # noqa: PLC0415
    from benchmarks.pack import run_pack  # noqa: PLC0415

    sets = [f"epochs={epochs}"] + (["train_limit=96"] if quick else [])

    def specs():
        out = []
        for ds in ("LIDC-A", "LIDC-C"):
            for m in methods:
                extra = [f"text_encoder={text_encoder!r}"] if hasattr(registry.get_method(m).config, "text_encoder") else []
                out.append(make_spec(m, ds, 0, profile="paper", sets=sets + extra))
        return out

    res = {}
    for mode in ("alone", "packed"):
        os.environ["CLIPLUNG_RUNS"] = str(runs_root / mode)  # a folder each: nothing is reused
        todo = specs()
        t0 = time.perf_counter()
        groups = [[s] for s in todo] if mode == "alone" else [todo[i:i + pack] for i in range(0, len(todo), pack)]
        recs = [r for g in groups for r in run_pack(g, device=device)]
        wall = time.perf_counter() - t0
        per = {}
        for s, r in zip(todo, recs):
            if isinstance(r, BaseException):
                per[f"{s.method}/{s.dataset}"] = {"error": str(r)}
                continue
            secs = r["timing"]["seconds_per_epoch"]
            # A packed run's epoch lasts as long as the pack's: its share is that over the pack size.
            share = len(r["timing"].get("packed_with", [])) + 1
            per[f"{s.method}/{s.dataset}"] = {"s_per_epoch": round(statistics.median(secs[1:] or secs), 3), "share": share,
                                              "s_per_run_epoch": round(statistics.median(secs[1:] or secs) / share, 3)}
        res[mode] = {"runs": per, "wall_s": round(wall, 1)}
    return res


def project(per_run_epoch: dict[str, float], epochs: int = 100) -> float:
    """Minutes of the 180-run sweep from seconds per run-epoch on LIDC-A (also LIDC-B's training
    set) and LIDC-C."""
    from benchmarks.grid import cells  # noqa: PLC0415

    total = 0.0
    for m, ds in cells((1, 2, 3)):
        key = f"{m}/{'LIDC-C' if ds == 'LIDC-C' else 'LIDC-A'}"
        if key in per_run_epoch:
            total += 5 * epochs * per_run_epoch[key]
    return round(total / 60, 1)


@cli_main
def main(argv=None):
    ap = ArgumentParser(prog="python -m benchmarks.device_check", description=__doc__)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --quick: a check of the script)")
    ap.add_argument("--pack", type=int_in(2, 64), default=4, help="runs per pack (default 4)")
    ap.add_argument("--epochs", type=int_in(1, 100), default=3, help="epochs of the short sweep (default 3; the first is warm-up)")
    ap.add_argument("--quick", action="store_true", help="tiny text tower, 1 epoch on 96 nodules, 2 rounds: check the script")
    ap.add_argument("--methods", nargs="+", help="only these methods (default: every method of Tables 1-3)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    # torch and the registry after parsing: --help stays fast.
    import tempfile  # noqa: PLC0415

    import torch  # noqa: PLC0415

    import methods as registry  # noqa: PLC0415
    from benchmarks.grid import TABLES  # noqa: PLC0415
    from benchmarks.speed import project_sweep, time_packs  # noqa: PLC0415

    if args.out:  # checked before minutes of measurement, not after
        out_path = Path(args.out)
        if out_path.is_dir():
            raise UserError(f"--out {out_path} is a folder; name the JSON file to write")
        writable_dir(out_path.parent, "folder of --out", "pick another --out")
    names = args.methods or sorted({m for t in TABLES.values() for m in t["methods"]})
    for n in names:
        registry.get_method(n)
    text = "tiny-random" if args.quick else "clip-vit-b16-random"
    sets = {n: {"text_encoder": text} for n in names if hasattr(registry.get_method(n).config, "text_encoder")}
    t0 = time.perf_counter()
    steps = time_packs(["ce"] + [n for n in names if n != "ce"], args.pack, 32, 2 if args.quick else 5, args.device, sets)
    out = {
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "text_encoder": text, "pack": args.pack,
        "steps": steps["methods"],
        "projected_from_steps_min": {
            "alone": project_sweep({n: v["alone_step_s"] for n, v in steps["methods"].items()})["minutes"],
            "packed": project_sweep({n: v["packed_step_s_per_run"] for n, v in steps["methods"].items()})["minutes"],
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        sweep = short_sweep(names, args.pack, 1 if args.quick else args.epochs, args.device, text, args.quick, Path(tmp))
    out["short_sweep"] = sweep
    out["projected_from_epochs_min"] = {mode: project({k: v["s_per_run_epoch"] for k, v in sweep[mode]["runs"].items() if "error" not in v})
                                        for mode in ("alone", "packed")}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    text_out = json.dumps(out, indent=1)
    if args.out:
        atomic_write_text(args.out, text_out)
    print(text_out)


if __name__ == "__main__":
    main()
