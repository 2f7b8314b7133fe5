"""A workspace: a database (SQLite file or PostgreSQL) and an artifact folder, found from the working directory.

    <root>/.tunelab/
      workspace.yaml   settings: database URL (never with a password), dataset storage
      workspace.db     the SQLite database (default)
      artifacts/       datasets/<sha256>/... (copied versions), registry/<name>/v<N>/ (model cards)

`tunelab init` creates one; every command run inside `<root>` (or with TUNELAB_WORKSPACE=<root>)
records into it. TUNELAB_DATABASE_URL overrides the stored URL, which is how a password reaches
PostgreSQL without being written to a file (PGPASSWORD and ~/.pgpass work too).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from tunelab import faults
from tunelab.errors import TunelabError
from tunelab.runs.folder import atomic_write_text
from tunelab.workspace import audit
from tunelab.workspace.db import READ_ONLY, make_engine, migrate, parse_url, safe_url, schema_revision
from tunelab.workspace.orm import AuditEntry, AuditHead

MARKER = ".tunelab"
SETTINGS = "workspace.yaml"
SQLITE_NAME = "workspace.db"


class WorkspaceError(TunelabError):
    """No workspace, or the workspace's database cannot be used."""


class WorkspaceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database_url: str = Field(f"sqlite:///{SQLITE_NAME}", description="SQLAlchemy URL; a relative SQLite path "
                              "is relative to .tunelab/.")
    datasets: Literal["copy", "reference"] = Field(
        "copy", description="copy: `data add` copies the bytes into the workspace (immutable); reference: keeps "
        "the path and refuses to use the version if its bytes change.",
    )
    audit_anchor: str = Field(
        "audit-anchor.log", description="File the audit head is appended to after every write (relative: "
        "inside .tunelab/); put it on another volume so a rewritten database chain is caught. Lines are "
        "HMAC-signed when TUNELAB_AUDIT_KEY is set.",
    )


@dataclass
class Txn:
    """One write transaction: the session, plus `audit(...)` to log the action inside it."""

    session: Session
    head: AuditHead

    def audit(self, action: str, object_type: str, object_id: str, details: dict[str, Any] | None = None,
              ) -> AuditEntry:
        return audit.append(self.session, self.head, action, object_type, object_id, details)


class Workspace:
    def __init__(self, root: Path, settings: WorkspaceSettings) -> None:
        self.root = root
        self.settings = settings
        self._engine: Engine | None = None

    # ---- finding and creating -------------------------------------------------------------
    @property
    def folder(self) -> Path:
        return self.root / MARKER

    @property
    def artifacts(self) -> Path:
        return self.folder / "artifacts"

    @property
    def anchor_path(self) -> Path:
        path = Path(self.settings.audit_anchor).expanduser()
        return path if path.is_absolute() else self.folder / path

    @classmethod
    def init(cls, root: Path, *, database_url: str | None = None,
             datasets: Literal["copy", "reference"] = "copy") -> Workspace:
        """Create (or upgrade) the workspace at `root`: settings, artifact folder, migrated database."""
        root = root.resolve()
        folder = root / MARKER
        existing = folder / SETTINGS
        if existing.is_file():
            ws = cls.open(root)
        else:
            stored = _without_password(database_url) if database_url else None
            settings = WorkspaceSettings(**({"database_url": stored} if stored else {}), datasets=datasets)
            ws = cls(root, settings)
            ws._connect_url = database_url  # the given URL (with its password) for this process only
        (ws.artifacts / "datasets").mkdir(parents=True, exist_ok=True)
        migrate(ws.engine)
        if not existing.is_file():
            atomic_write_text(existing, yaml.safe_dump(ws.settings.model_dump(), sort_keys=False))
            ws.anchor_path.parent.mkdir(parents=True, exist_ok=True)
            ws.anchor_path.touch()  # from now on a missing anchor file is a deleted one
        return ws

    @classmethod
    def open(cls, root: Path) -> Workspace:
        path = root / MARKER / SETTINGS
        try:
            raw = yaml.safe_load(path.read_text()) or {}
            settings = WorkspaceSettings(**raw)
        except (OSError, yaml.YAMLError, ValidationError, TypeError) as err:
            first = str(err).splitlines()[0]
            raise WorkspaceError(f"{path}: not a valid workspace settings file ({first})",
                                 fix="fix the file or run `tunelab init` again") from None
        return cls(root.resolve(), settings)

    @classmethod
    def find(cls, start: Path | None = None) -> Workspace | None:
        """The workspace named by TUNELAB_WORKSPACE, else the nearest one above `start` (the cwd)."""
        named = os.environ.get("TUNELAB_WORKSPACE")
        if named:
            root = Path(named)
            if not (root / MARKER / SETTINGS).is_file():
                raise WorkspaceError(f"TUNELAB_WORKSPACE={named} is not a workspace",
                                     fix=f"run `tunelab init {named}` or unset TUNELAB_WORKSPACE")
            return cls.open(root)
        here = (start or Path.cwd()).resolve()
        for folder in (here, *here.parents):
            if (folder / MARKER / SETTINGS).is_file():
                return cls.open(folder)
        return None

    @classmethod
    def require(cls, start: Path | None = None) -> Workspace:
        ws = cls.find(start)
        if ws is None:
            raise WorkspaceError("not inside a tunelab workspace",
                                 fix="run `tunelab init` in your project folder, or set TUNELAB_WORKSPACE")
        return ws

    # ---- database -------------------------------------------------------------------------
    _connect_url: str | None = None

    @property
    def database_url(self) -> str:
        url = os.environ.get("TUNELAB_DATABASE_URL") or self._connect_url or self.settings.database_url
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).is_absolute():
            return str(parsed.set(database=str(self.folder / parsed.database)))
        return url

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.database_url)
        return self._engine

    def check_schema(self) -> None:
        try:
            current, head = schema_revision(self.engine)
        except OperationalError as err:
            raise WorkspaceError(f"cannot reach the workspace database {safe_url(self.database_url)}: "
                                 f"{str(err.orig).strip().splitlines()[0]}",
                                 fix="check the URL and that the server is running") from None
        if current != head:
            raise WorkspaceError(f"the workspace database is at schema {current or 'none'}, this tunelab needs {head}",
                                 fix="run `tunelab init` to migrate it")

    @contextmanager
    def write(self) -> Iterator[Txn]:
        """A write transaction: committed whole at the end, rolled back whole on any error."""
        with Session(self.engine, expire_on_commit=False) as session:
            with session.begin():
                txn = Txn(session, audit.lock_head(session))
                before = txn.head.seq
                yield txn
                head = (txn.head.seq, txn.head.hash)
                faults.point("db.commit")
            if head[0] != before:  # committed: anchor the new head outside the database
                faults.point("audit.anchor")
                audit.anchor(self.anchor_path, *head)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read transaction: a consistent snapshot that does not wait for (or block) writers."""
        reader = self.engine.execution_options(**{READ_ONLY: True})
        with Session(reader, expire_on_commit=False) as session, session.begin():
            yield session

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _without_password(url: str) -> str:
    parsed = parse_url(url)
    return parsed._replace(password=None).render_as_string(hide_password=False) if parsed.password else url


def record_action(action: str, object_type: str, object_id: str, details: dict[str, Any] | None = None) -> bool:
    """Append an audit entry when a workspace is active (actions such as export work without one too)."""
    ws = Workspace.find()
    if ws is None:
        return False
    with ws.write() as txn:
        txn.audit(action, object_type, object_id, details)
    ws.close()
    return True
