"""The workspace database, as SQLAlchemy tables.

Every table here is created by an Alembic migration in `migrations/versions/`; a test checks that the
migrations and these classes agree. JSON is stored as canonical text (sorted keys, fixed layout), so
what is hashed (the audit chain) and what is read back are the same bytes on SQLite and PostgreSQL.
Times are ISO-8601 UTC strings for the same reason.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from tunelab.hashing import canonical_json

# Named constraints, so migrations can alter them on SQLite (batch mode) and PostgreSQL alike.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class JSONText(TypeDecorator):
    """A JSON value stored as canonical text."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else canonical_json(value)

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        return None if value is None else json.loads(value)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[str] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(200))
    versions: Mapped[list[DatasetVersion]] = relationship(back_populates="dataset", order_by="DatasetVersion.version")


class DatasetVersion(Base):
    """One immutable version: the sha256 of its bytes, where they are kept, and how it was made."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    storage: Mapped[str] = mapped_column(String(20))  # copy | reference
    location: Mapped[str] = mapped_column(Text)  # copy: relative to the workspace; reference: absolute
    source: Mapped[str] = mapped_column(Text)  # the path as added
    kind: Mapped[str] = mapped_column(String(20))  # file | folder
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSONText)  # [{path, sha256, bytes}]
    bytes: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[str] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(200))
    # A deleted version is a tombstone: its bytes are gone, its number is never given again.
    deleted_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    deleted_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    dataset: Mapped[Dataset] = relationship(back_populates="versions")

    @property
    def ref(self) -> str:
        return f"{self.dataset.name}@v{self.version}"

    @property
    def live(self) -> bool:
        return self.deleted_at is None


class DataCheck(Base):
    """The outcome of one `data check` (of a dataset version, a config, or a run's inputs)."""

    __tablename__ = "data_checks"
    id: Mapped[int] = mapped_column(primary_key=True)
    target: Mapped[str] = mapped_column(Text)
    dataset_version_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"), nullable=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), nullable=True, index=True)
    passed: Mapped[bool] = mapped_column(Boolean)
    pii_count: Mapped[int] = mapped_column(Integer)
    report_sha256: Mapped[str] = mapped_column(String(64))
    report_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONText)
    created_at: Mapped[str] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(200))


class Run(Base):
    """Lineage of one training run: inputs, config, code, environment, outcome."""

    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    task: Mapped[str] = mapped_column(String(50))
    config_sha256: Mapped[str] = mapped_column(String(64))
    config_yaml: Mapped[str] = mapped_column(Text)
    tunelab_version: Mapped[str] = mapped_column(String(50))
    git_commit: Mapped[str | None] = mapped_column(String(60), nullable=True)
    seed: Mapped[int] = mapped_column(Integer)
    environment: Mapped[dict[str, Any]] = mapped_column(JSONText)  # hardware, threads, packages
    started_at: Mapped[str] = mapped_column(String(40))
    ended_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONText, nullable=True)
    gates: Mapped[dict[str, Any] | None] = mapped_column(JSONText, nullable=True)
    data_check_passed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    pii_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reproduces: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: why a run was started when a person did not start it: {autopilot, step, parent, reason}
    origin: Mapped[dict[str, Any] | None] = mapped_column(JSONText, nullable=True)
    created_by: Mapped[str] = mapped_column(String(200))
    inputs: Mapped[list[RunInput]] = relationship(order_by="RunInput.id")
    artifacts: Mapped[list[Artifact]] = relationship(order_by="Artifact.path")


class RunInput(Base):
    """One data split a run read: its bytes' sha256, and the dataset version when it came from one."""

    __tablename__ = "run_inputs"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    split: Mapped[str] = mapped_column(String(40))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    dataset_version_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"), nullable=True,
                                                            index=True)
    dataset_version: Mapped[DatasetVersion | None] = relationship()


class Artifact(Base):
    __tablename__ = "artifacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    path: Mapped[str] = mapped_column(Text)  # relative to the run folder
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(Integer)


class RegisteredModel(Base):
    __tablename__ = "registered_models"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[str] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(200))
    versions: Mapped[list[ModelVersion]] = relationship(back_populates="model", order_by="ModelVersion.version")


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    stage: Mapped[str] = mapped_column(String(20))  # candidate | staging | production | archived
    card_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[str] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(200))
    model: Mapped[RegisteredModel] = relationship(back_populates="versions")
    run: Mapped[Run] = relationship()
    changes: Mapped[list[StageChange]] = relationship(order_by="StageChange.id")

    @property
    def ref(self) -> str:
        return f"{self.model.name}@v{self.version}"


class StageChange(Base):
    """A promotion attempt: the gates checked, their values, and whether it passed."""

    __tablename__ = "stage_changes"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    from_stage: Mapped[str] = mapped_column(String(20))
    to_stage: Mapped[str] = mapped_column(String(20))
    passed: Mapped[bool] = mapped_column(Boolean)
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSONText)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[str] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(200))


class AuditEntry(Base):
    """One action. `hash` covers every other field and the previous entry's hash."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(200), index=True)
    action: Mapped[str] = mapped_column(String(60), index=True)
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[str] = mapped_column(String(400))
    details: Mapped[str] = mapped_column(Text)  # canonical JSON text, hashed as stored
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The last entry's sequence number and hash (one row). Every write transaction locks it first,
    which serialises writers on PostgreSQL (SELECT ... FOR UPDATE) as BEGIN IMMEDIATE does on SQLite,
    and lets `audit verify` notice entries deleted from the end of the log."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class ApiToken(Base):
    """An API token of the server: only the sha256 of its secret is stored; the secret is shown once."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))  # viewer | engineer | admin
    prefix: Mapped[str] = mapped_column(String(20), index=True)  # the public part, to find the row
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[str] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(200))
    last_used_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    revoked_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


class Job(Base):
    """A submitted training job: queued → running → succeeded | failed | cancelled."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    config_yaml: Mapped[str] = mapped_column(Text)  # as submitted (validated on submit)
    overrides: Mapped[list[str]] = mapped_column(JSONText)
    submitted_at: Mapped[str] = mapped_column(String(40))
    submitted_by: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    ended_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)  # host:pid of the claiming server
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the training process (group leader)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    run_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: what the job was granted when submitted: extra read-only roots and whether user code may run
    #: (workspace/confine.py); None for jobs queued before the policy existed (treated as the default)
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSONText, nullable=True)
    #: how many training processes the job asked for (run under `accelerate launch` when more than 1)
    processes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    #: train (config_yaml + overrides) or autopilot (the approved autopilot folder in `target`)
    kind: Mapped[str] = mapped_column(String(20), default="train", server_default="train")
    target: Mapped[str | None] = mapped_column(Text, nullable=True)


class ServerSetting(Base):
    """A setting of `tunelab serve` that an admin changes at run time (extra read-only roots of jobs);
    each change is audited."""

    __tablename__ = "server_settings"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONText)
    updated_at: Mapped[str] = mapped_column(String(40))
    updated_by: Mapped[str] = mapped_column(String(200))
