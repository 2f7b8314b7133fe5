"""Dataset versions: immutable, content-addressed registrations of data files or folders.

A version is the sha256 of its bytes (of the file itself; for a folder, of the sorted list of its
files' relative paths and hashes). `copy` storage keeps the bytes under
`.tunelab/artifacts/datasets/<sha256>/` (read-only, shared by every version with the same bytes);
`reference` storage keeps the original path. Both are re-hashed whenever a run reads them (through
the file-hash memo, which skips only files whose size, mtime, ctime, inode and device are unchanged)
and refused once their bytes differ from the registered hash. Configs name versions as `NAME@v2` (or
`NAME@2`, `NAME@latest`), optionally followed by a path inside a folder version: `news@v1/train.jsonl`.

Names are immutable and never re-issued: deleting a version removes its bytes but keeps its row as a
tombstone (number, hash, who deleted it and when), so `news@v3` means one set of bytes forever and the
lineage of every run that read it still names it. A version cannot be deleted while a registered
model was trained on it or a running run reads it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tunelab.errors import DataError
from tunelab.hashing import CHUNK, digest, file_sha256
from tunelab.runs.folder import now_iso
from tunelab.workspace.audit import current_actor
from tunelab.workspace.orm import Dataset, DatasetVersion, ModelVersion, Run, RunInput
from tunelab.workspace.workspace import Workspace

NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}"
REF = re.compile(rf"^(?P<name>{NAME})@(?P<version>v?\d+|latest)(?P<sub>/.+)?$")


@dataclass(frozen=True)
class DatasetRef:
    name: str
    version: int | None  # None: latest
    subpath: str | None = None

    def __str__(self) -> str:
        text = f"{self.name}@{'latest' if self.version is None else f'v{self.version}'}"
        return text + (f"/{self.subpath}" if self.subpath else "")


def parse_ref(text: str) -> DatasetRef | None:
    """`news@v2/train.jsonl` → DatasetRef; None when `text` is not a reference (a plain path)."""
    match = REF.match(text.strip())
    if not match:
        return None
    version = match["version"]
    sub = (match["sub"] or "").strip("/") or None
    return DatasetRef(match["name"], None if version == "latest" else int(version.lstrip("v")), sub)


def check_name(name: str) -> None:
    if not re.fullmatch(NAME, name):
        raise DataError(f"dataset name {name!r} is not allowed",
                        fix="use letters, digits, '.', '_' and '-' (starting with a letter or digit)")


# ---- hashing ------------------------------------------------------------------------------
def content_files(path: Path) -> list[dict[str, Any]]:
    """[{path (relative, posix), sha256, bytes}] of a file, or of every non-hidden file under a folder."""
    if path.is_file():
        return [{"path": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size}]
    return [{"path": rel, "sha256": file_sha256(path / rel), "bytes": (path / rel).stat().st_size}
            for rel in content_files_list(path)]


def content_files_list(folder: Path, *, skip: Collection[str] = ()) -> list[str]:
    """Relative posix paths of every non-hidden file under `folder`, in a fixed order; `skip` names
    top-level entries (files or folders) to leave out, without walking into them."""
    found = []
    for root, dirs, names in os.walk(folder):
        top = Path(root) == folder
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (top and d in skip))
        found += [(Path(root) / n).relative_to(folder).as_posix() for n in sorted(names)
                  if not n.startswith(".") and not (top and n in skip)]
    return found


def content_sha256(path: Path, files: list[dict[str, Any]]) -> str:
    """A file's own sha256 (what `sha256sum` prints); a folder's digest of its file list."""
    if path.is_file():
        return files[0]["sha256"]
    return digest([[f["path"], f["sha256"]] for f in files])


# ---- adding -------------------------------------------------------------------------------
@dataclass
class Added:
    version: DatasetVersion
    created: bool


def add_version(ws: Workspace, name: str, path: Path, *, storage: str | None = None, note: str | None = None,
                parent: DatasetVersion | None = None, rows: int | None = None, source: str | None = None) -> Added:
    """Register the bytes at `path` as the next version of `name` (or return the version that has them).

    `source` is what the version records as its origin when `path` is a temporary file (an upload)."""
    check_name(name)
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist", fix="give a data file or folder")
    files = content_files(path)
    if not files:
        raise DataError(f"{path} holds no files", fix="give a data file or a folder with data files")
    sha = content_sha256(path, files)
    storage = storage or ws.settings.datasets
    stored, created_bytes = (_store_copy(ws, path, sha) if storage == "copy" else (str(path.resolve()), False))
    try:
        with ws.write() as txn:
            dataset = txn.session.execute(select(Dataset).where(Dataset.name == name)).scalar_one_or_none()
            if dataset is None:
                dataset = Dataset(name=name, created_at=now_iso(), created_by=current_actor())
                txn.session.add(dataset)
                txn.session.flush()
            same = txn.session.execute(select(DatasetVersion).where(
                DatasetVersion.dataset_id == dataset.id, DatasetVersion.sha256 == sha,
                DatasetVersion.deleted_at.is_(None))).scalars().first()
            if same is not None:
                _ = same.dataset.name
                return Added(same, created=False)
            # Tombstones count: a deleted number is never given to other bytes.
            number = (txn.session.execute(select(func.max(DatasetVersion.version)).where(
                DatasetVersion.dataset_id == dataset.id)).scalar() or 0) + 1
            version = DatasetVersion(
                dataset=dataset, version=number, sha256=sha, storage=storage, location=stored,
                source=source or str(path), kind="file" if path.is_file() else "folder", files=files,
                bytes=sum(f["bytes"] for f in files), rows=rows, parent_id=parent.id if parent else None,
                note=note, created_at=now_iso(), created_by=current_actor())
            txn.session.add(version)
            txn.session.flush()
            txn.audit("data.add", "dataset", version.ref, {"sha256": sha, "source": source or str(path),
                                                          "storage": storage,
                                                          "bytes": version.bytes, "files": len(files),
                                                          "parent": parent.ref if parent else None, "note": note})
            return Added(version, created=True)
    except BaseException:
        if created_bytes:  # nothing refers to the bytes we just stored
            _remove_stored(ws, sha)
        raise


def _store_copy(ws: Workspace, path: Path, sha: str) -> tuple[str, bool]:
    """Copy into artifacts/datasets/<sha>/<name> through a temp folder (a crash leaves no partial version)."""
    home = ws.artifacts / "datasets"
    target = home / sha
    relative = (target / path.name).relative_to(ws.root).as_posix()
    if target.exists():
        return relative, False
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=home, prefix=".incoming-"))
    try:
        copied = _copy_hashing(path, staging / path.name)
        if content_sha256(path, copied) != sha:
            raise DataError(f"{path} changed while it was being copied", fix="add it again once it is written")
        _read_only(staging)
        os.replace(staging, target)
    except OSError as err:
        if not target.exists():
            raise DataError(f"cannot copy {path} into the workspace: {err}", fix="check disk space and permissions") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, onerror=_force_remove)
    return relative, True


def _copy_hashing(source: Path, target: Path) -> list[dict[str, Any]]:
    """Copy a file or folder (hidden files skipped) and hash what was written in the same pass: the
    bytes are read once, and the stored copy is known to be the hashed one."""
    if source.is_file():
        return [{"path": source.name, "sha256": _copy_file(source, target), "bytes": source.stat().st_size}]
    files = []
    for entry in content_files_list(source):
        dest = target / entry
        dest.parent.mkdir(parents=True, exist_ok=True)
        files.append({"path": entry, "sha256": _copy_file(source / entry, dest), "bytes": (source / entry).stat().st_size})
    return files


def _copy_file(source: Path, target: Path) -> str:
    sha = hashlib.sha256()
    with open(source, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(CHUNK):
            sha.update(chunk)
            dst.write(chunk)
    shutil.copystat(source, target)
    return sha.hexdigest()


def _read_only(folder: Path) -> None:
    for root, _dirs, names in os.walk(folder):
        for name in names:
            os.chmod(Path(root) / name, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


def _force_remove(func: Any, path: str, _exc: Any) -> None:
    os.chmod(Path(path).parent, stat.S_IRWXU)
    os.chmod(path, stat.S_IRWXU)
    func(path)


def _remove_stored(ws: Workspace, sha: str) -> None:
    target = ws.artifacts / "datasets" / sha
    if target.exists():
        for root, dirs, _names in os.walk(target):
            for d in dirs:
                os.chmod(Path(root) / d, stat.S_IRWXU)
        shutil.rmtree(target, onerror=_force_remove)


# ---- finding ------------------------------------------------------------------------------
def get_version(session: Session, ref: DatasetRef | str) -> DatasetVersion:
    if isinstance(ref, str):
        parsed = parse_ref(ref if "@" in ref else f"{ref}@latest")
        if parsed is None:
            raise DataError(f"{ref!r} is not a dataset reference", fix="write NAME@v2 (or NAME@latest)")
        ref = parsed
    dataset = session.execute(select(Dataset).where(Dataset.name == ref.name)).scalar_one_or_none()
    if dataset is None:
        known = session.execute(select(Dataset.name).order_by(Dataset.name)).scalars().all()
        raise DataError(f"no dataset named {ref.name!r} in this workspace",
                        fix=f"known: {', '.join(known)}" if known else "add one with `tunelab data add NAME PATH`")
    live = [v for v in dataset.versions if v.live]
    if ref.version is None:
        if not live:
            raise DataError(f"dataset {ref.name!r} has no versions" + (" left (all were deleted)" if dataset.versions
                                                                       else ""), fix="add one with `tunelab data add`")
        return live[-1]
    for version in dataset.versions:
        if version.version == ref.version:
            if not version.live:
                raise DataError(f"{version.ref} was deleted ({version.deleted_at} by {version.deleted_by}); its "
                                f"bytes are gone", fix=_pick_live(ref.name, live))
            return version
    raise DataError(f"{ref.name} has no version v{ref.version}", fix=_pick_live(ref.name, live))


def _pick_live(name: str, live: list[DatasetVersion]) -> str:
    if not live:
        return f"{name} has no live version: add the data again with `tunelab data add {name} PATH`"
    return f"live versions: {', '.join(f'v{v.version}' for v in live)}"


def version_path(ws: Workspace, version: DatasetVersion, *, verify: bool = True) -> Path:
    """Where the version's bytes are. With `verify` (every read by a run), the bytes are re-hashed — a
    stored copy as much as a referenced file: read-only modes do not stop the owner — and refused with
    both hashes if they are not the registered ones."""
    path = ws.root / version.location if version.storage == "copy" else Path(version.location)
    if not verify:
        return path
    if not path.exists():
        fix = ("the workspace's stored copy is gone: add the data again with `tunelab data add`"
               if version.storage == "copy" else "restore the file, or register the data again with `tunelab data add`")
        raise DataError(f"{version.ref}: {path} no longer exists", fix=fix)
    found = content_sha256(path, content_files(path))
    if found != version.sha256:
        where = "its stored copy" if version.storage == "copy" else "the file it refers to"
        raise DataError(
            f"{version.ref}: {where} ({path}) changed since it was registered: sha256 {found[:16]}… now, "
            f"{version.sha256[:16]}… registered",
            fix=f"restore the original bytes, or register the new ones: tunelab data add {version.dataset.name} PATH")
    return path


def resolve(ws: Workspace, text: str) -> tuple[Path, DatasetVersion]:
    """A config value `NAME@vN[/sub]` → (the path to read, the version)."""
    ref = parse_ref(text)
    if ref is None:
        raise DataError(f"{text!r} is not a dataset reference", fix="write NAME@v2")
    with ws.read() as session:
        version = get_version(session, ref)
        _ = version.dataset.name
    path = version_path(ws, version)
    if ref.subpath:
        if version.kind != "folder":
            raise DataError(f"{text}: {version.ref} is a file, it has no {ref.subpath!r} inside",
                            fix=f"write {version.ref}")
        path = path / ref.subpath
        if not path.exists():
            inside = ", ".join(f["path"] for f in version.files[:8])
            raise DataError(f"{text}: no {ref.subpath!r} in {version.ref}", fix=f"it holds: {inside}")
    return path, version


# ---- listing, deleting --------------------------------------------------------------------
def version_dict(version: DatasetVersion) -> dict[str, Any]:
    return {"ref": version.ref, "sha256": version.sha256, "storage": version.storage, "location": version.location,
            "source": version.source, "kind": version.kind, "files": version.files, "bytes": version.bytes,
            "rows": version.rows, "note": version.note, "created_at": version.created_at,
            "created_by": version.created_by, "deleted_at": version.deleted_at, "deleted_by": version.deleted_by}


def list_versions(ws: Workspace, name: str | None = None) -> list[dict[str, Any]]:
    with ws.read() as session:
        stmt = select(DatasetVersion).join(Dataset).order_by(Dataset.name, DatasetVersion.version)
        if name:
            stmt = stmt.where(Dataset.name == name)
        return [version_dict(v) for v in session.execute(stmt).scalars()]


def delete_version(ws: Workspace, text: str) -> dict[str, Any]:
    """Delete a version's bytes and keep it as a tombstone. Refused while a registered model was trained
    on it or a running run reads it (the error names them). Runs that used it keep it in their lineage."""
    with ws.write() as txn:
        version = get_version(txn.session, text)
        models = txn.session.execute(
            select(ModelVersion).join(RunInput, RunInput.run_id == ModelVersion.run_id)
            .where(RunInput.dataset_version_id == version.id)).scalars().all()
        if models:
            names = ", ".join(sorted({m.ref for m in models}))
            raise DataError(f"cannot delete {version.ref}: registered model(s) {names} were trained on it",
                            fix="delete or archive those model versions first (tunelab registry delete)")
        running = txn.session.execute(
            select(Run.id).join(RunInput, RunInput.run_id == Run.id)
            .where(RunInput.dataset_version_id == version.id, Run.status == "running").distinct()).scalars().all()
        if running:
            raise DataError(f"cannot delete {version.ref}: run(s) {', '.join(sorted(running))} are reading it",
                            fix="wait for them to end (or stop them), then delete")
        ref, sha, storage = version.ref, version.sha256, version.storage
        version.deleted_at, version.deleted_by = now_iso(), current_actor()
        txn.session.flush()
        still_used = txn.session.execute(select(func.count()).select_from(DatasetVersion).where(
            DatasetVersion.sha256 == sha, DatasetVersion.storage == "copy",
            DatasetVersion.deleted_at.is_(None))).scalar()
        txn.audit("data.delete", "dataset", ref, {"sha256": sha, "tombstone": True})
    if storage == "copy" and not still_used:
        _remove_stored(ws, sha)
    return {"ref": ref, "sha256": sha}


def count_rows(path: Path) -> int | None:
    """Rows of a data file or folder of data files, counted by streaming (JSON Lines, CSV/TSV) or from
    metadata (Parquet); None for layouts without a cheap count. Never parses into Arrow: versioning a
    file must not cost a second copy of it."""
    path = Path(path)
    if path.is_dir():
        counts = [count_rows(f) for f in sorted(path.iterdir()) if f.is_file() and not f.name.startswith(".")]
        known = [c for c in counts if c is not None]
        return sum(known) if known else None
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            with open(path, "rb") as handle:
                return sum(1 for line in handle if line.strip())
        if suffix in (".csv", ".tsv"):
            import csv

            with open(path, newline="", encoding="utf-8") as handle:
                return max(sum(1 for _ in csv.reader(handle, delimiter="\t" if suffix == ".tsv" else ",")) - 1, 0)
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
    except (OSError, UnicodeDecodeError, ValueError):  # `data check` says what is wrong with the file
        return None
    return None


def usage(session: Session, version: DatasetVersion) -> dict[str, Any]:
    """Which runs read this version, which registered model versions came from them, and its parent."""
    runs = session.execute(select(RunInput.run_id).where(RunInput.dataset_version_id == version.id)
                           .distinct()).scalars().all()
    models = session.execute(select(ModelVersion).where(ModelVersion.run_id.in_(runs))).scalars().all() if runs else []
    parent = session.get(DatasetVersion, version.parent_id) if version.parent_id else None
    return {"runs": sorted(runs), "models": sorted(m.ref for m in models), "parent": parent.ref if parent else None}
