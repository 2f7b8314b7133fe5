"""/v1/datasets/{name} (upload) and /v1/datasets/{ref}/check: new dataset versions over HTTP, and their data checks.

An upload is one multipart/form-data part named `file` (plus an optional text part `note`). The body is
parsed as it arrives, not by FastAPI's form support: that would spool the whole body to the system temp
folder before the route could refuse it, so a client could fill the disk with one request. Here the
client's filename is checked before a byte is written, the file's bytes go to a private folder under
the workspace's artifacts (same disk as the stored copy, not a small /tmp), the request is refused
with 413 as soon as it passes `app.state.max_upload_bytes`, and the folder is removed whatever happens.
The file is then registered like `tunelab data add NAME FILE` (always copied into the workspace).
"""

import json
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from fastapi import APIRouter, HTTPException, Request, Response
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from tunelab.recipes.data_check import check_target
from tunelab.server.auth import Engineer, Viewer
from tunelab.workspace import Workspace
from tunelab.workspace.datasets import Added, add_version, check_name, count_rows, get_version, version_dict
from tunelab.workspace.orm import DataCheck

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

DEFAULT_MAX_UPLOAD_BYTES = 1 << 30
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the note, on top of the file itself
MAX_NOTE_BYTES = 4096
FILE_FIELD, NOTE_FIELD = "file", "note"
SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt", ".conll")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [FILE_FIELD], "properties": {
        FILE_FIELD: {"type": "string", "format": "binary",
                     "description": f"One data file ({', '.join(SUFFIXES)})."},
        NOTE_FIELD: {"type": "string", "maxLength": MAX_NOTE_BYTES, "description": "Why this version exists."}}}}}}}


class UploadRefused(Exception):
    """Stop reading the upload: raised from the parser's callbacks, turned into an HTTP error."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code, self.detail = status_code, detail


def safe_filename(raw: str) -> str:
    """The basename to keep the upload under, or UploadRefused (422).

    The name is the client's, so it is checked, not trusted: a name that climbs (`..`) or is absolute
    is refused outright (the client is confused or hostile; either way the caller should know), folders
    in a relative name are dropped (a browser uploading a folder sends `dir/file.jsonl`), and what is
    left must be a plain name with a data-file suffix, since the suffix decides how the file is read."""
    if not raw or any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise UploadRefused(422, "the file's name is empty or holds control characters")
    parts = re.split(r"[/\\]", raw)
    if raw.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", raw) or ".." in parts:
        raise UploadRefused(422, f"the file's name {raw!r} is a path, not a file name: send a plain name "
                                 "such as train.jsonl")
    name = parts[-1]
    if not SAFE_NAME.fullmatch(name) or not name.lower().endswith(SUFFIXES):
        raise UploadRefused(422, f"the file's name {name!r} is not allowed: use letters, digits, '.', '_' and '-' "
                                 f"(not starting with '.'), ending in one of {', '.join(SUFFIXES)}")
    return name


class UploadReader:
    """Callbacks for python-multipart's parser: takes the `file` part (to `folder`) and the `note` part.

    Callbacks run inside `parser.write`, so they only check and collect; `flush` writes the collected
    bytes off the event loop."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder, self.limit = folder, limit
        self.path: Path | None = None
        self.size = 0
        self.note: str | None = None
        self._pending: list[bytes] = []
        self._handle: IO[bytes] | None = None
        self._part: str | None = None  # FILE_FIELD or NOTE_FIELD while inside that part
        self._note = bytearray()
        self._header, self._value, self._disposition = b"", b"", b""

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {"on_part_begin": self._begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_done, "on_part_data": self._data, "on_part_end": self._end}

    def _begin(self) -> None:
        self._part, self._disposition = None, b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._header.strip().lower() == b"content-disposition":
            self._disposition = self._value
        self._header, self._value = b"", b""

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._disposition)
        field = options.get(b"name", b"").decode("latin-1")
        if field == FILE_FIELD and b"filename" in options:
            if self.path is not None:
                raise UploadRefused(422, "send one data file per upload")
            self.path = self._inside(safe_filename(options[b"filename"].decode("utf-8", errors="replace")))
            self._part = FILE_FIELD
        elif field == NOTE_FIELD and b"filename" not in options and self.note is None:
            self._part = NOTE_FIELD
        else:
            raise UploadRefused(422, f"unexpected form part {field!r}: send the data file as '{FILE_FIELD}' "
                                     f"(with its file name) and at most one '{NOTE_FIELD}'")

    def _inside(self, name: str) -> Path:
        """folder/name, checked to be in the folder (safe_filename already ensures it; this is the last line)."""
        path = self.folder / name
        if path.resolve().parent != self.folder.resolve():
            raise UploadRefused(422, f"the file's name {name!r} is not allowed")
        return path

    def _data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._part == FILE_FIELD:
            self.size += len(chunk)
            if self.size > self.limit:
                raise UploadRefused(413, f"the file is larger than this server's upload limit of {self.limit} bytes")
            self._pending.append(chunk)
        elif self._part == NOTE_FIELD:
            if len(self._note) + len(chunk) > MAX_NOTE_BYTES:
                raise UploadRefused(422, f"the note is longer than {MAX_NOTE_BYTES} bytes")
            self._note += chunk

    def _end(self) -> None:
        if self._part == NOTE_FIELD:
            self.note = self._note.decode("utf-8", errors="replace").strip()
        self._part = None

    async def flush(self) -> None:
        if self._pending:
            data, self._pending = b"".join(self._pending), []
            await run_in_threadpool(self._write, data)

    def _write(self, data: bytes) -> None:
        if self._handle is None:
            assert self.path is not None
            self._handle = open(self.path, "xb")  # noqa: SIM115 - stays open across chunks, closed by close()
        self._handle.write(data)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


# ---- upload -----------------------------------------------------------------------------------
@router.post("/{name}", status_code=201, openapi_extra=UPLOAD_BODY)
async def upload(name: str, request: Request, response: Response, who: Engineer) -> dict[str, Any]:
    """Register one uploaded data file as the next version of NAME (201), or return the version that
    already holds these bytes (200, `unchanged: true`; the note is then not applied)."""
    check_name(name)
    ws: Workspace = request.app.state.workspace
    limit = int(getattr(request.app.state, "max_upload_bytes", DEFAULT_MAX_UPLOAD_BYTES))
    boundary = _boundary(request)
    _check_declared_length(request, limit)
    folder = await run_in_threadpool(_private_folder, ws)
    try:
        reader = await _receive(request, boundary, folder, limit)
        added, described = await run_in_threadpool(_register, ws, name, reader)
    finally:
        await run_in_threadpool(shutil.rmtree, folder, True)
    if not added.created:
        response.status_code = 200
    return described | {"unchanged": not added.created}


def _boundary(request: Request) -> bytes:
    kind, options = parse_options_header(request.headers.get("content-type"))
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise HTTPException(415, f"send the data file as multipart/form-data, in a part named '{FILE_FIELD}'")
    return options[b"boundary"]


def _check_declared_length(request: Request, limit: int) -> None:
    """Refuse before reading when the client already says the body is too large."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise HTTPException(400, "the Content-Length header is not a number") from None
    if length > limit + MULTIPART_OVERHEAD:
        raise HTTPException(413, f"the upload ({length} bytes) is larger than this server's limit of {limit} bytes")


def _private_folder(ws: Workspace) -> Path:
    """A new folder only this process's user can enter, next to where the bytes will be stored."""
    home = ws.artifacts / "uploads"
    home.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=home, prefix=".upload-"))


async def _receive(request: Request, boundary: bytes, folder: Path, limit: int) -> UploadReader:
    """Stream the body through the parser into `folder`; HTTPException on anything refused."""
    reader = UploadReader(folder, limit)
    parser = MultipartParser(boundary, reader.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit + MULTIPART_OVERHEAD:
                raise UploadRefused(413, f"the upload is larger than this server's limit of {limit} bytes")
            parser.write(chunk)
            await reader.flush()
    except UploadRefused as refused:
        raise HTTPException(refused.status_code, refused.detail) from None
    except MultipartParseError as err:
        raise HTTPException(422, f"the body is not valid multipart/form-data ({err})") from None
    finally:
        reader.close()
    if parser.state != MultipartState.END:
        raise HTTPException(422, "the multipart body ended early (no closing boundary)")
    if reader.path is None:
        raise HTTPException(422, f"no data file: send it in a multipart part named '{FILE_FIELD}', with its file name")
    if reader.size == 0:
        raise HTTPException(422, f"{reader.path.name} is empty")
    return reader


def _register(ws: Workspace, name: str, reader: UploadReader) -> tuple[Added, dict[str, Any]]:
    """add_version (audited as the caller: the thread runs under a copy of the request's context).
    Always a copy: a `reference` to the upload folder would point at nothing once it is removed."""
    assert reader.path is not None
    added = add_version(ws, name, reader.path, storage="copy", note=reader.note or None,
                        rows=count_rows(reader.path), source=f"upload:{reader.path.name}")
    return added, version_dict(added.version)


# ---- data checks ------------------------------------------------------------------------------
@router.post("/{ref}/check")
def run_check(ref: str, request: Request, who: Engineer, label_column: str | None = None) -> dict[str, Any]:
    """Run the data checks on a dataset version (as `tunelab data check NAME@vN`), record them, and return
    the report; `passed` false is a finding, not an error, so the status is 200 either way."""
    return check_version(request.app.state.workspace, ref, label_column)


def check_version(ws: Workspace, ref: str, label_column: str | None = None) -> dict[str, Any]:
    """Check a dataset version, record the check, and return it as the API shows it (MCP's check_data too)."""
    version_ref = _version_ref(ws, ref)
    check_target(version_ref, [], out_dir=_check_folder(ws, version_ref), label_column=label_column,
                 use_tokenizer=False, workspace=ws)
    found = _latest_check(ws, ref)
    assert found is not None  # check_target has just recorded one
    return found


@router.get("/{ref}/check")
def latest_check(ref: str, request: Request, _who: Viewer) -> dict[str, Any]:
    """The latest recorded data check of a dataset version itself (not of configs that used it)."""
    found = _latest_check(request.app.state.workspace, ref)
    if found is None:
        raise HTTPException(404, f"{ref} has not been checked yet: POST /v1/datasets/{ref}/check runs the check")
    return found


def _version_ref(ws: Workspace, ref: str) -> str:
    with ws.read() as session:
        return get_version(session, ref).ref


def _check_folder(ws: Workspace, version_ref: str) -> Path:
    """A folder of its own for this check's report (two checks in the same second must not share one)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in version_ref)
    return ws.artifacts / "checks" / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _latest_check(ws: Workspace, ref: str) -> dict[str, Any] | None:
    with ws.read() as session:
        version = get_version(session, ref)
        row = session.execute(select(DataCheck).where(DataCheck.dataset_version_id == version.id,
                                                      DataCheck.target == version.ref)
                              .order_by(DataCheck.id.desc()).limit(1)).scalar_one_or_none()
        if row is None:
            return None
        return _check_dict(ws, version.ref, row)


def _check_dict(ws: Workspace, version_ref: str, row: DataCheck) -> dict[str, Any]:
    path = Path(row.report_path) if row.report_path else None
    report = _read_report(path) if path else None
    shown = path.relative_to(ws.root).as_posix() if path and path.is_relative_to(ws.root) else row.report_path
    return {"ref": version_ref, "passed": row.passed, "pii_count": row.pii_count, "summary": row.summary,
            "report_sha256": row.report_sha256, "report_path": shown, "created_at": row.created_at,
            "created_by": row.created_by, "report": report}


def _read_report(path: Path) -> dict[str, Any] | None:
    """The stored report, or None when its file is gone (the summary in the database still says the outcome)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
