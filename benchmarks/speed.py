"""python -m benchmarks.speed: training-step and inference cost of every method, as ratios to ``ce``.

In one process, on the same seeded batch (default 32 crops of 32^3, K = 3), for
every registered method: one SGD training step (forward, loss, backward,
update) and one inference pass (eval mode, no gradient, forward + predict).
Methods are timed in interleaved rounds (the order rotating each round) after
a warm-up step, and the median over rounds is reported, so a noisy neighbour
affects every method alike.

``--pack N`` also times each method's training step alone and packed (N runs
of it, built from seeds 0..N-1, stepped in turn in one process as
``benchmarks.pack`` does), as seconds per run and step, and projects the full
sweep of Tables 1-3 (180 runs, 100 epochs, the steps of each dataset's
training split) from the measured per-step times: alone, and packed.

``--backbones`` times the methods (default ``ce`` and ``clip_lung``) on each named
image encoder (``all``: every registered one), as ``method@backbone``, with ratios
to ``ce`` on the paper's backbone.
"""
from __future__ import annotations

import json
import statistics
import time

import numpy as np

from benchmarks.cli import ArgumentParser, add_plugin_flag, int_in, load_plugins
from benchmarks.errors import UserError, cli_main


def time_text_encoder(name: str, n_prompts: int = 96, rounds: int = 3, device: str = "auto") -> dict:
    """Forward + backward of the frozen text tower on ``n_prompts`` learnable-context prompts,
    with the context cut after the EOT token and (CLIP encoders) at the full 77 tokens."""
    import torch  # noqa: PLC0415

    from benchmarks.train import resolve_device  # noqa: PLC0415
    from clip_lung.text import CLIPText, load_text_encoder  # noqa: PLC0415

    dev = resolve_device(device)
    enc = load_text_encoder(name).to(dev)
    out = {"text_encoder": name, "prompts": n_prompts}
    variants = {"cut": True, "full": False} if isinstance(enc, CLIPText) else {"cut": True}
    for label, cut in variants.items():
        kw = {"cut": cut} if isinstance(enc, CLIPText) else {}
        p = enc.tokenize(["benign.", "unsure.", "malignant."], n_ctx=4, **kw)
        emb = enc.embed(p).detach()  # (3, L, width)
        x = emb.repeat(n_prompts // 3, 1, 1).requires_grad_(True)  # (96, L, width): gradients to the prompts
        times = []
        for _ in range(rounds + 1):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            enc.encode(x, p).sum().backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        out[f"tokens_{label}"] = int(p.ids.shape[1])
        out[f"fwd_bwd_{label}_s"] = round(statistics.median(times[1:]), 4)
    if enc.shares_prefix:  # what the methods run: [SOS] + 4 context tokens once per sample
        p = enc.tokenize(["benign.", "unsure.", "malignant."], n_ctx=4)
        emb = enc.embed(p).detach()
        b = n_prompts // 3
        head = emb[:1, :5].repeat(b, 1, 1).requires_grad_(True)  # (B, 5, width)
        tail = emb[None, :, 5:].expand(b, -1, -1, -1)
        times = []
        for _ in range(rounds + 1):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            enc.encode_shared(head, tail, p).sum().backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        out["fwd_bwd_cut_shared_prefix_s"] = round(statistics.median(times[1:]), 4)
    return out


def _setup(batch_size: int, device: str, source: str | None = None):
    """(device, DataInfo of a 3-class protocol, a seeded batch of crops on the device): what every timing uses.
    ``source``: the batch holds that source's crops (LIDC-A fold 0's first training nodules, with their
    labels and attributes) instead of random ones; a step's cost does not depend on its pixels, but a
    user can check that it is so on the data they run."""
    import torch  # noqa: PLC0415

    import methods  # noqa: PLC0415
    from benchmarks.train import resolve_device  # noqa: PLC0415

    dev = resolve_device(device)
    g = torch.Generator().manual_seed(0)
    info = methods.DataInfo(3, ("benign", "unsure", "malignant"),
                            ("subtlety", "internalStructure", "calcification", "sphericity", "margin", "lobulation", "spiculation", "texture"),
                            (411, 827, 265))
    batch = {
        "image": torch.rand(batch_size, 32, 32, 32, generator=g).to(dev),
        "label": torch.randint(0, 3, (batch_size,), generator=g).to(dev),
        "attributes": (1 + 4 * torch.rand(batch_size, 8, generator=g)).to(dev),
    }
    if source is not None:
        from benchmarks.data import load_fold  # noqa: PLC0415

        tr = load_fold("LIDC-A", 0, source=source, progress=False).train
        pick = [i % len(tr) for i in range(batch_size)]  # (B,) rows, repeated when the split is smaller than a batch
        batch = {"image": torch.from_numpy(np.asarray(tr.images[pick])).to(dev), "label": torch.from_numpy(tr.labels[pick]).to(dev),
                 "attributes": torch.from_numpy(tr.attributes[pick]).to(dev)}
    return dev, info, batch


def _config(name: str, sets: dict | None):
    """The registered method of "method" or "method@backbone" and its config for timing."""
    import dataclasses  # noqa: PLC0415

    import methods  # noqa: PLC0415

    method, _, backbone = name.partition("@")
    m = methods.get_method(method)
    return m, dataclasses.replace(m.config, **(sets or {}).get(name, {}), **({"backbone": backbone} if backbone else {}))


def time_methods(names: list[str], batch_size: int = 32, rounds: int = 5, device: str = "auto", sets: dict | None = None,
                 source: str | None = None) -> dict:
    """Per name ("method" or "method@backbone"): median training-step and inference time."""
    import torch  # noqa: PLC0415

    dev, info, batch = _setup(batch_size, device, source)
    models, opts = {}, {}
    for n in names:
        torch.manual_seed(0)
        m, cfg = _config(n, sets)
        models[n] = m.cls(cfg, info).to(dev)
        opts[n] = torch.optim.SGD([p for p in models[n].parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def train_step(n):
        model, opt = models[n], opts[n]
        model.train()
        sync()
        t = time.perf_counter()
        loss = model.loss(model(batch), batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        return time.perf_counter() - t

    def infer(n):
        model = models[n]
        model.eval()
        sync()
        t = time.perf_counter()
        with torch.no_grad():
            model.predict(model(batch))
        sync()
        return time.perf_counter() - t

    for n in names:  # warm-up (allocations, caches, lazy text features)
        train_step(n)
        infer(n)
    times = {n: {"train": [], "infer": []} for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[: r % len(names)]:  # rotate who goes first
            times[n]["train"].append(train_step(n))
            times[n]["infer"].append(infer(n))
    out = {"device": dev.type, "batch_size": batch_size, "rounds": rounds, "threads": torch.get_num_threads(), "methods": {}}
    base = names[0]  # the caller puts ce first when it is timed
    t_ce = statistics.median(times[base]["train"])
    i_ce = statistics.median(times[base]["infer"])
    for n in names:
        tr = statistics.median(times[n]["train"])
        inf = statistics.median(times[n]["infer"])
        out["methods"][n] = {"train_step_s": round(tr, 4), "infer_s": round(inf, 4),
                             "train_ratio_to_ce": round(tr / t_ce, 3), "infer_ratio_to_ce": round(inf / i_ce, 3)}
    return out


def time_packs(names: list[str], pack: int, batch_size: int = 32, rounds: int = 5, device: str = "auto", sets: dict | None = None,
               source: str | None = None) -> dict:
    """Per method: median seconds of one training step alone, and per run of a round of ``pack``
    runs stepped in turn (each its own model, optimiser and seed), measured in alternation."""
    import torch  # noqa: PLC0415

    dev, info, batch = _setup(batch_size, device, source)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step(model, opt):
        loss = model.loss(model(batch), batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out = {}
    for n in names:
        m, cfg = _config(n, sets)
        runs = []
        for seed in range(pack):
            torch.manual_seed(seed)
            model = m.cls(cfg, info).to(dev).train()
            runs.append((model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)))
        for r in runs:  # warm-up
            step(*r)
        alone, packed = [], []
        for _ in range(rounds):
            sync()
            t = time.perf_counter()
            step(*runs[0])
            sync()
            alone.append(time.perf_counter() - t)
            t = time.perf_counter()
            for r in runs:
                step(*r)
            sync()
            packed.append((time.perf_counter() - t) / pack)
        a, b = statistics.median(alone), statistics.median(packed)
        out[n] = {"alone_step_s": round(a, 4), "packed_step_s_per_run": round(b, 4), "packed_over_alone": round(b / a, 3)}
        del runs
    return {"device": dev.type, "batch_size": batch_size, "rounds": rounds, "pack": pack, "methods": out}


def project_sweep(step_s: dict[str, float], tables=(1, 2, 3), epochs: int = 100, batch_size: int = 32, seeds: int = 1,
                  source: str | None = None) -> dict:
    """Training time of the whole sweep from per-step times: sum over its runs of epochs x
    steps an epoch (each dataset's mean training-fold size) x the method's step time.
    Evaluation and start-up are not included. ``source`` lidc or slices: only the nodules
    with a prepared crop train (the slices release covers 1,855 of the 1,880)."""
    import math  # noqa: PLC0415

    from benchmarks.data.protocols import CLASS_NAMES, DEFAULT_MIN_READERS, N_FOLDS, get_protocol, labelled_folds  # noqa: PLC0415
    from benchmarks.grid import cells  # noqa: PLC0415

    table = labelled_folds(DEFAULT_MIN_READERS)
    if source in ("lidc", "slices"):
        from benchmarks.data.cache import cache_dir, load_memo  # noqa: PLC0415
        from benchmarks.data.protocols import protocol_hash  # noqa: PLC0415

        table = table[table["nodule_id"].isin(set(load_memo(cache_dir(source, protocol_hash(DEFAULT_MIN_READERS)))[0]))]
    steps = {}
    for _, ds in cells(tables):
        if ds not in steps:
            train = [CLASS_NAMES.index(c) for c in get_protocol(ds).train_classes]
            rows = table[table["label"].isin(train)]
            steps[ds] = math.ceil(len(rows) * (N_FOLDS - 1) / N_FOLDS / batch_size)
    total, missing = 0.0, set()
    for method, ds in cells(tables):
        if method not in step_s:
            missing.add(method)
            continue
        total += seeds * N_FOLDS * epochs * steps[ds] * step_s[method]
    return {"hours": round(total / 3600, 3), "minutes": round(total / 60, 1), "steps_per_epoch": steps, "runs": seeds * N_FOLDS * len(cells(tables)),
            "methods_not_timed": sorted(missing)}


@cli_main
def main(argv=None):
    ap = ArgumentParser(prog="python -m benchmarks.speed", description=__doc__)
    ap.add_argument("--methods", nargs="*", default=None, help="default: every registered method")
    ap.add_argument("--batch-size", type=int_in(1, 4096), default=32, help="crops per training step")
    ap.add_argument("--rounds", type=int_in(1, 1000), default=5, help="timed rounds (one step of every method each, after a warm-up step; the median is reported)")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    ap.add_argument("--text-encoder", default="clip-vit-b16-random",
                    help="text encoder of the text-guided methods (default: the paper's ViT-B/16 architecture, random weights: timing only)")
    ap.add_argument("--backbones", nargs="+", metavar="NAME", help="time the methods (default ce, clip_lung) on these backbones, or all")
    ap.add_argument("--pack", type=int_in(2, 64), help="also time N runs packed in one process and project the full sweep")
    ap.add_argument("--source", default=None, help="time on this source's crops (phantom, lidc, slices; prepared) instead of "
                    "random ones, and project the sweep on its nodules (default: random crops, every nodule)")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    add_plugin_flag(ap)
    args = ap.parse_args(argv)
    if args.source is not None:
        from benchmarks.data.cache import check_source  # noqa: PLC0415

        check_source(args.source)
    import methods  # noqa: PLC0415  (torch: after the arguments are read)

    load_plugins(args)
    from methods.backbones import BACKBONES, DEFAULT_BACKBONE  # noqa: PLC0415

    names = args.methods or (["ce", "clip_lung"] if args.backbones else sorted(methods.REGISTRY))
    for n in names:
        methods.get_method(n)
    if args.backbones:
        bbs = sorted(BACKBONES) if args.backbones == ["all"] else args.backbones
        for b in bbs:
            if b not in BACKBONES:
                raise UserError(f"unknown backbone {b!r}; known backbones: {', '.join(sorted(BACKBONES))}")
        bbs = [DEFAULT_BACKBONE] + [b for b in bbs if b != DEFAULT_BACKBONE]  # ratios to the paper's backbone
        names = [f"{n}@{b}" for b in bbs for n in names]
    first = "ce@" + DEFAULT_BACKBONE if args.backbones else "ce"
    if first in names:
        names = [first] + [n for n in names if n != first]
    sets = {n: {"text_encoder": args.text_encoder} for n in names if hasattr(methods.get_method(n.partition("@")[0]).config, "text_encoder")}
    if args.pack:
        res = time_packs(names, args.pack, args.batch_size, args.rounds, args.device, sets, args.source)
        res["projected_sweep"] = {
            "alone": project_sweep({n: v["alone_step_s"] for n, v in res["methods"].items()}, source=args.source),
            "packed": project_sweep({n: v["packed_step_s_per_run"] for n, v in res["methods"].items()}, source=args.source),
        }
        if args.json:
            print(json.dumps(res, indent=1))
            return
        from tabulate import tabulate  # noqa: PLC0415

        print(f"device {res['device']}, batch {res['batch_size']}, median of {res['rounds']} rounds, packs of {res['pack']}")
        print(tabulate([[n, v["alone_step_s"], v["packed_step_s_per_run"], v["packed_over_alone"]] for n, v in res["methods"].items()],
                       headers=["method", "step alone (s)", "step packed, per run (s)", "packed / alone"]))
        for k, v in res["projected_sweep"].items():
            print(f"full sweep of Tables 1-3 ({v['runs']} runs, training only), {k}: {v['hours']} h"
                  + (f" (not timed: {', '.join(v['methods_not_timed'])})" if v["methods_not_timed"] else ""))
        return
    res = time_methods(names, args.batch_size, args.rounds, args.device, sets, args.source)
    res["text_encoder"] = args.text_encoder
    res["source"] = args.source or "random crops"
    if sets:
        res["text_encoder_timing"] = time_text_encoder(args.text_encoder, 3 * args.batch_size, 3, args.device)
    if args.json:
        print(json.dumps(res, indent=1))
        return
    from tabulate import tabulate  # noqa: PLC0415

    rows = [[n, v["train_step_s"], v["train_ratio_to_ce"], v["infer_s"], v["infer_ratio_to_ce"]] for n, v in res["methods"].items()]
    print(f"device {res['device']}, batch {res['batch_size']}, median of {res['rounds']} rounds, {res['threads']} threads, "
          f"text encoder {res['text_encoder']}, source {res['source']}")
    print(tabulate(rows, headers=["method", "train step (s)", "x ce", "inference (s)", "x ce"]))
    if "text_encoder_timing" in res:
        t = res["text_encoder_timing"]
        line = f"text encoder, {t['prompts']} prompts, forward + backward: {t['fwd_bwd_cut_s']} s at {t['tokens_cut']} tokens"
        if "fwd_bwd_full_s" in t:
            line += f", {t['fwd_bwd_full_s']} s at {t['tokens_full']} tokens"
        if "fwd_bwd_cut_shared_prefix_s" in t:
            line += f"; {t['fwd_bwd_cut_shared_prefix_s']} s cut with the shared prefix (what the methods run)"
        print(line)


if __name__ == "__main__":
    main()
