"""The public LIDC-IDRI slices release: its pinned identity, a verified copy of it, and where it comes from.

The release (Kaggle dataset ``zhangweiled/lidcidri``, ~150 MB, derived from
LIDC-IDRI, TCIA, CC BY 3.0) holds ``LIDC-IDRI-slices/<patient>/nodule-<k>/`` folders
of 128 x 128 real-CT images and readers' masks, plus TCIA's diagnosis sheet
``tcia-diagnosis-data-2012-04-20.xls`` and ``LIDC-IDRI_MetaData.csv``. A public git
mirror holds it byte for byte: :data:`MIRROR` at :data:`COMMIT`.

Its identity is pinned by :data:`MANIFEST_PATH`, committed: every file's path, size
and git blob id (the sha1 of ``blob <size>\\0`` followed by its bytes, the id git
gives it, so the manifest can be checked against the mirror with ``git ls-tree``).
A copy is *verified* when every file of the manifest is there with its size and
blob id and no other file is (macOS's ``.DS_Store`` folder files, which the mirror
holds, are ignored); a missing, extra or damaged file is named. ``--partial``
accepts a copy that holds only some patients' folders, each complete (the test
fixture): the crops and every record made from it say so.

Where a copy comes from (:func:`obtain`): a folder holding ``LIDC-IDRI-slices/``
(verified where it is, nothing copied), a zip or tar archive of one (the Kaggle
zip, the mirror's archive; unpacked into the data folder), or, with nothing given,
the mirror's zip archive of the pinned commit over HTTPS (``slices_fetch.py``:
resumable, with a progress bar). An archive is unpacked into a temporary folder
beside the target, verified, and only then renamed into place, with a mark file
written last; a copy without the mark is never used.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from benchmarks.errors import UserError
from benchmarks.io import atomic_write_text, exclusive_lock, sha256_file, writable_dir

DATA_DIR = Path(__file__).resolve().parent
MANIFEST_PATH = DATA_DIR / "slices_manifest.csv.gz"
MIRROR = "kyulee-jeon/LIDC-IDRI"
COMMIT = "3ffa27ab64e32493baf53dff7f9bb230e5c6498e"
TOP = "LIDC-IDRI-slices"
SHEETS = ("tcia-diagnosis-data-2012-04-20.xls", "LIDC-IDRI_MetaData.csv")
IGNORED = frozenset({".DS_Store"})
URL = f"https://codeload.github.com/{MIRROR}/zip/{COMMIT}"  # GitHub's zip of the pinned commit
URL_ENV = "CLIPLUNG_SLICES_URL"  # another address (a local copy, a test server)
FOLDER_NAME = "lidc-idri-slices"
MARK = "cliplung-slices.json"
LICENCE = ("the LIDC-IDRI slices release is derived from LIDC-IDRI, licensed CC BY 3.0 by The Cancer Imaging Archive "
           "(doi:10.7937/K9/TCIA.2015.LO9QL9SX); cite Armato et al., Med. Phys. 38(2):915-931, 2011 (benchmarks/data/NOTICE.md)")


def manifest() -> dict[str, tuple[int, str]]:
    """{path relative to the release root: (size, git blob id)} of every file of the pinned release."""
    with gzip.open(MANIFEST_PATH, "rt") as f:
        lines = [ln for ln in f.read().splitlines() if ln and not ln.startswith("#")]
    out = {}
    for ln in lines[1:]:  # the header: path,size,git_blob
        path, size, blob = ln.rsplit(",", 2)
        out[path] = (int(size), blob)
    return out


def manifest_sha256() -> str:
    """The release's identity in one value: the sha256 of the committed manifest."""
    return sha256_file(MANIFEST_PATH)


def blob_id(data: bytes) -> str:
    """git's id of a file's bytes: sha1 of ``blob <size>\\0`` + bytes."""
    h = hashlib.sha1(f"blob {len(data)}\0".encode())  # noqa: S324  (git's object id, not a security hash)
    h.update(data)
    return h.hexdigest()


def patient_folder(path: str) -> str | None:
    """The patient folder a release path lies in (``LIDC-IDRI-slices/<patient>/...``), else None."""
    parts = path.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == TOP else None


@dataclass
class Verdict:
    """What a copy of the release holds against the manifest."""

    files: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    patients: set[str] = field(default_factory=set)  # patient folders present
    partial: bool = False

    def problems(self) -> list[str]:
        return ([f"{p}: missing" for p in self.missing] + [f"{p}: not a file of the release" for p in self.extra]
                + [f"{p}: {why}" for p, why in self.damaged])

    def line(self, where: Path) -> str:
        """One line naming what is wrong (the first few of each kind, with counts)."""
        parts = []
        for what, items in (("missing", self.missing), ("extra", self.extra), ("damaged", [f"{p} ({w})" for p, w in self.damaged])):
            if items:
                shown = ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
                parts.append(f"{len(items)} {what}: {shown}")
        return f"the copy of the LIDC-IDRI slices release in {where} does not match its manifest: " + "; ".join(parts)


def _walk(root: Path):
    """Relative POSIX paths of every file under ``root`` (``.DS_Store`` left out), with their lstat."""
    for dpath, dnames, fnames in os.walk(root):
        dnames.sort()
        for n in sorted(fnames):
            if n in IGNORED:
                continue
            p = Path(dpath) / n
            yield p.relative_to(root).as_posix(), p, p.lstat()


def verify_folder(root: Path, partial: bool = False, progress: bool = True) -> Verdict:
    """Check every file under ``root`` (the folder that holds ``LIDC-IDRI-slices/``) against the manifest.

    partial: patients absent altogether (and the two sheets at the root) are not missing."""
    from tqdm import tqdm  # noqa: PLC0415

    want = manifest()
    v = Verdict(partial=partial)
    seen = set()
    total = sum(s for s, _ in want.values())
    with tqdm(total=None if partial else total, desc="verifying the slices release", unit="B", unit_scale=True, disable=not progress) as bar:
        for rel, p, st in _walk(root):
            if rel == MARK:
                continue
            if rel not in want:
                v.extra.append(rel)
                continue
            seen.add(rel)
            size, blob = want[rel]
            if not stat.S_ISREG(st.st_mode):
                v.damaged.append((rel, "not a regular file"))
                continue
            if patient_folder(rel):
                v.patients.add(patient_folder(rel))
            if st.st_size != size:
                v.damaged.append((rel, f"{st.st_size} bytes, expected {size}"))
                bar.update(size)
                continue
            data = p.read_bytes()
            if blob_id(data) != blob:
                v.damaged.append((rel, "its content differs from the release's (git blob id)"))
            v.files += 1
            v.bytes += len(data)
            bar.update(size)
    for rel in sorted(set(want) - seen):
        pat = patient_folder(rel)
        if partial and (pat is None and rel in SHEETS or pat is not None and pat not in v.patients):
            continue
        v.missing.append(rel)
    return v


def find_root(folder: Path) -> Path | None:
    """The folder that holds ``LIDC-IDRI-slices/``: ``folder`` itself or one of its subfolders, two levels
    down at most (an archive's top folder, e.g. ``LIDC-IDRI-<commit>/``)."""
    if (folder / TOP).is_dir():
        return folder
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        for cand in (sub, *sorted(q for q in sub.iterdir() if q.is_dir())):
            if (cand / TOP).is_dir():
                return cand
    return None


def archive_kind(path: Path) -> str | None:
    """'zip', 'tar' (plain, gzip, bzip2 or xz) or None, from the file's first bytes, not its name."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00" or head[257:262] == b"ustar":
        return "tar"
    return None


def _members(archive: Path, kind: str):
    """(name, not a folder, a regular file, read()) of each member of a zip or tar archive."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                kind = stat.S_IFMT(info.external_attr >> 16)  # the Unix file type, where the archiver kept one (0 otherwise)
                yield info.filename, not info.is_dir(), kind in (0, stat.S_IFREG), (lambda i=info: zf.read(i))
    else:
        with tarfile.open(archive) as tf:
            for m in tf:
                regular = m.isfile()
                yield m.name, not m.isdir(), regular, (lambda m=m: tf.extractfile(m).read())


def _relative(name: str) -> str | None:
    """A member's path made relative and checked: None for an absolute or '..' path."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts:
        return None
    return p.as_posix().lstrip("./") if p.parts else None


def unpack(archive: Path, dest: Path, progress: bool = True) -> Path:
    """Unpack ``archive`` into ``dest`` (made); returns the folder in it that holds ``LIDC-IDRI-slices/``.

    Only regular files are written, each at a path checked to stay inside ``dest``; a link, a
    special file or an absolute or '..' path is refused, naming it. A UserError for a file that is
    not an archive, a damaged or truncated one, or one that holds no release."""
    from tqdm import tqdm  # noqa: PLC0415

    kind = archive_kind(archive)
    if kind is None:
        raise UserError(f"{archive} is neither a zip nor a tar archive (from its first bytes); give the Kaggle zip, "
                        f"the mirror's archive or a folder holding {TOP}/")
    dest.mkdir(parents=True, exist_ok=True)
    inside = dest.resolve()
    n = 0
    try:
        with tqdm(desc="unpacking the slices release", unit=" files", disable=not progress) as bar:
            for name, is_file, regular, read in _members(archive, kind):
                rel = _relative(name)
                target = (inside / rel).resolve() if rel else None
                if target is None or inside not in target.parents:
                    raise UserError(f"{archive} holds a member with an unsafe path ({name!r}); nothing of it is used")
                if not is_file or PurePosixPath(rel).name in IGNORED:
                    continue
                if not regular:
                    raise UserError(f"{archive} holds a link or special file ({name!r}); nothing of it is used")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(read())
                n += 1
                bar.update()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
        raise UserError(f"{archive} is damaged or truncated ({type(e).__name__}: {str(e)[:120]}); fetch it again") from None
    except OSError as e:
        raise UserError(f"cannot unpack {archive} into {dest}: {e.strerror or e}") from None
    root = find_root(dest)
    if root is None:
        raise UserError(f"{archive} holds no {TOP}/ folder ({n} files): it is not the LIDC-IDRI slices release")
    return root


@dataclass
class Copy:
    """A verified copy of the release: where its root is, how it was verified, and whether it is partial."""

    root: Path
    partial: bool
    files: int
    bytes: int
    patients: int
    seconds: float
    origin: str

    def info(self) -> dict:
        """What the cache's manifest and the records keep of the release."""
        return {"mirror": MIRROR, "commit": COMMIT, "manifest_sha256": manifest_sha256(), "root": str(self.root),
                "origin": self.origin, "partial": self.partial, "files": self.files, "patients": self.patients}


def read_mark(root: Path) -> dict | None:
    """The mark of a verified, installed copy (None when absent, unreadable, or of another manifest)."""
    try:
        mark = json.loads((root / MARK).read_text())
    except (OSError, ValueError):
        return None
    return mark if isinstance(mark, dict) and mark.get("manifest_sha256") == manifest_sha256() else None


def check(root: Path, partial: bool, origin: str, progress: bool = True) -> Copy:
    """Verify a copy where it is; a UserError naming what is wrong."""
    t0 = time.perf_counter()
    v = verify_folder(root, partial=partial, progress=progress)
    if v.problems():
        raise UserError(v.line(root))
    if not v.patients:
        raise UserError(f"{root / TOP} holds no patient folder")
    return Copy(root, partial, v.files, v.bytes, len(v.patients), time.perf_counter() - t0, origin)


def install_from_archive(archive: Path, target: Path, partial: bool, origin: str, progress: bool = True) -> Copy:
    """Unpack ``archive`` beside ``target``, verify it, and move it into place as ``target`` (with its mark)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        root = unpack(archive, tmp, progress)
        copy = check(root, partial, origin, progress)
        if target.exists():
            shutil.rmtree(target)
        root.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    copy.root = target
    atomic_write_text(target / MARK, json.dumps({**copy.info(), "verified": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1))
    return copy


def default_target() -> Path:
    """Where an unpacked or downloaded copy goes: ``$CLIPLUNG_DATA/lidc-idri-slices``."""
    from benchmarks.data.idc import data_root  # noqa: PLC0415  (the data folder of every download)

    return data_root() / FOLDER_NAME


def obtain(source: str | None, target: Path, partial: bool = False, progress: bool = True) -> Copy:
    """A verified copy of the release: ``source`` when it is a folder (checked where it is); else unpacked into
    ``target`` from ``source``, a zip or tar archive, or, when None, the copy already verified in ``target``,
    else downloaded (:mod:`benchmarks.data.slices_fetch`). One command at a time writes a target (a lock)."""
    src = Path(source).expanduser() if source is not None else None
    if src is not None and not src.exists():
        raise UserError(f"--from {src}: no such file or folder")
    if src is not None and src.is_dir():
        root = find_root(src)
        if root is None:
            raise UserError(f"--from {src}: no {TOP}/ folder in it (nor one or two levels down)")
        return check(root, partial, f"folder {root}", progress)
    writable_dir(target.parent, "data folder", "pick another with --to, or set $CLIPLUNG_DATA")
    target.parent.mkdir(parents=True, exist_ok=True)  # the check leaves no folder behind; the copy needs one
    busy = f"another command is preparing the slices release in {target} (its lock: {target}.lock); wait for it to end"
    with exclusive_lock(target.with_name(f"{target.name}.lock"), 5, busy):
        if src is not None:
            return install_from_archive(src, target, partial, f"archive {src}", progress)
        mark = read_mark(target)
        if mark is not None and (partial or not mark.get("partial")):
            return check(target, bool(mark.get("partial")), mark.get("origin", str(target)), progress)
        from benchmarks.data.slices_fetch import download  # noqa: PLC0415  (urllib: only when fetching)

        retry = "python -m benchmarks.prepare slices" + (" --partial" if partial else "")
        archive = download(os.environ.get(URL_ENV) or URL, target.with_name(f"{target.name}.zip"), retry, "slices release", progress)
        try:
            return install_from_archive(archive, target, partial, f"download {archive.name}", progress)
        except UserError as e:  # a wrong or damaged archive: fetched again by the next run, not kept
            raise UserError(f"{e}; the downloaded archive was deleted, and the same command fetches it again: {retry}") from None
        finally:
            archive.unlink(missing_ok=True)


def write_manifest(root: Path, out: Path) -> int:
    """Write a manifest of the copy under ``root`` (how :data:`MANIFEST_PATH` can be remade from a copy
    checked against the mirror; ``tests/test_slices.py`` compares our blob ids with git's)."""
    buf = io.StringIO()
    n = 0
    for rel, p, _ in _walk(root):
        if rel == MARK:
            continue
        data = p.read_bytes()
        buf.write(f"{rel},{len(data)},{blob_id(data)}\n")
        n += 1
    head = (f"# The LIDC-IDRI slices release (Kaggle zhangweiled/lidcidri; git mirror {MIRROR} at {COMMIT}): every file, its size "
            "in bytes and its git blob id (sha1 of 'blob <size>\\0' + bytes). Derived from LIDC-IDRI (TCIA, CC BY 3.0): see "
            "benchmarks/data/NOTICE.md\npath,size,git_blob\n")
    with gzip.GzipFile(out, "wb", mtime=0) as f:
        f.write((head + buf.getvalue()).encode())
    return n
