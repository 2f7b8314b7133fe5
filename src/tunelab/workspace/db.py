"""Engines and transactions for the workspace database (SQLite file by default, PostgreSQL by URL).

Write transactions are serialised: on SQLite every write transaction starts with BEGIN IMMEDIATE (the
write lock is taken up front, so two processes never both read and then fail to upgrade their lock),
in WAL mode with a busy timeout, while read transactions start deferred and never wait for a writer; on PostgreSQL the writer locks the audit head row. CLI actions are
short, so a queue of writers is the right trade for never seeing a half-applied action.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from tunelab.errors import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 60_000
READ_ONLY = "tunelab_read_only"  # execution option of the engine `Workspace.read()` uses


def parse_url(url: str) -> URL:
    """The URL parsed; the error does not echo it (it may hold a password)."""
    try:
        return make_url(url)
    except ArgumentError:
        raise ConfigError("the database URL is not a SQLAlchemy URL",
                          fix="use sqlite:///path/to/workspace.db or postgresql+psycopg://user@host/db") from None


def make_engine(url: str) -> Engine:
    parsed = parse_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed)
        return create_engine(parsed, pool_pre_ping=True)
    except (NoSuchModuleError, ModuleNotFoundError) as err:
        raise ConfigError(f"no database driver for {safe_url(url)}: {err}",
                          fix="pip install 'psycopg[binary]' for PostgreSQL") from None


def _sqlite_engine(url: Any) -> Engine:
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would defer it until the first write).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Readers start deferred (WAL lets them read while a writer writes); writers take the lock up front.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (creates it on an empty database)."""
    cfg = _alembic_config()
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


def schema_revision(engine: Engine) -> tuple[str | None, str]:
    """(the database's revision, the newest revision this tunelab knows)."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, head
