"""The audit trail: an append-only, hash-chained log of every action.

Each entry's hash is the sha256 of its own fields (sequence number, time, actor, action, object,
details as stored) and the previous entry's hash, so editing an entry breaks its own hash, deleting
one breaks the next entry's link or the sequence, and deleting entries from the end disagrees with
the head row. This makes tampering *evident*; someone with write access to the database can still
rewrite the whole chain, which is why `audit verify --expect HASH` can compare the head with a hash
kept elsewhere (printed by `tunelab audit verify`).
"""

from __future__ import annotations

import contextvars
import getpass
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tunelab.hashing import canonical_json
from tunelab.runs.folder import now_iso
from tunelab.workspace.orm import AuditEntry, AuditHead

GENESIS = "0" * 64
HEAD_ID = 1

# Who is acting: the OS user on the command line; the server sets the API token's identity per request.
ACTOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("tunelab_actor", default=None)


def current_actor() -> str:
    """The request's token identity (server), else TUNELAB_ACTOR (a job's process acts for its submitter),
    else the OS user."""
    actor = ACTOR.get() or os.environ.get("TUNELAB_ACTOR")
    if actor:
        return actor
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (containers)
        return "os:unknown"


def entry_hash(seq: int, ts: str, actor: str, action: str, object_type: str, object_id: str, details: str,
               prev_hash: str) -> str:
    payload = canonical_json([seq, ts, actor, action, object_type, object_id, details, prev_hash])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def lock_head(session: Session) -> AuditHead:
    """The head row, locked for this transaction (PostgreSQL: FOR UPDATE; SQLite holds the write lock)."""
    head = session.execute(select(AuditHead).where(AuditHead.id == HEAD_ID).with_for_update()).scalar_one_or_none()
    if head is None:
        head = AuditHead(id=HEAD_ID, seq=0, hash=GENESIS)
        session.add(head)
        session.flush()
    return head


def append(session: Session, head: AuditHead, action: str, object_type: str, object_id: str,
           details: dict[str, Any] | None = None, *, actor: str | None = None) -> AuditEntry:
    """Add one entry after `head` (already locked by this transaction) and move the head."""
    seq, ts, who = head.seq + 1, now_iso(), actor or current_actor()
    text = canonical_json(details or {})
    digest = entry_hash(seq, ts, who, action, object_type, object_id, text, head.hash)
    entry = AuditEntry(seq=seq, ts=ts, actor=who, action=action, object_type=object_type, object_id=object_id,
                       details=text, prev_hash=head.hash, hash=digest)
    session.add(entry)
    head.seq, head.hash = seq, digest
    return entry


@dataclass
class Verification:
    ok: bool
    entries: int
    head: str
    problems: list[str]


def verify(session: Session, *, expect_head: str | None = None) -> Verification:
    """Walk the chain from the first entry; report every break (edited, deleted, reordered, truncated)."""
    problems: list[str] = []
    prev_hash, expected_seq = GENESIS, 1
    count = 0
    for entry in session.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars():
        count += 1
        if entry.seq != expected_seq:
            problems.append(f"entry {expected_seq}" + (f"..{entry.seq - 1}" if entry.seq - 1 > expected_seq else "")
                            + " is missing (deleted)")
        if entry.prev_hash != prev_hash:
            problems.append(f"entry {entry.seq} does not link to the entry before it")
        recomputed = entry_hash(entry.seq, entry.ts, entry.actor, entry.action, entry.object_type, entry.object_id,
                                entry.details, entry.prev_hash)
        if recomputed != entry.hash:
            problems.append(f"entry {entry.seq} ({entry.action} {entry.object_id}) was edited: its hash does not match")
        prev_hash, expected_seq = entry.hash, entry.seq + 1
    head = session.get(AuditHead, HEAD_ID)
    head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS)
    if head_seq != expected_seq - 1 or head_hash != prev_hash:
        problems.append(f"the log ends at entry {expected_seq - 1} but its head says {head_seq}: "
                        "entries were deleted from the end or the head was changed")
    if expect_head is not None and head_hash != expect_head:
        problems.append(f"the head hash {head_hash[:12]}… differs from the expected {expect_head[:12]}…")
    return Verification(ok=not problems, entries=count, head=head_hash, problems=problems)


def query(session: Session, *, action: str | None = None, actor: str | None = None, object_id: str | None = None,
          since: str | None = None, until: str | None = None, limit: int | None = None) -> list[AuditEntry]:
    """Entries matching every given filter, oldest first (`action` may end in '*' as a prefix match)."""
    stmt = select(AuditEntry)
    if action:
        stmt = stmt.where(AuditEntry.action.startswith(action[:-1]) if action.endswith("*")
                          else AuditEntry.action == action)
    if actor:
        stmt = stmt.where(AuditEntry.actor == actor)
    if object_id:
        stmt = stmt.where(AuditEntry.object_id.contains(object_id))
    if since:
        stmt = stmt.where(AuditEntry.ts >= since)
    if until:
        stmt = stmt.where(AuditEntry.ts <= until)
    stmt = stmt.order_by(AuditEntry.seq.desc() if limit else AuditEntry.seq)
    if limit:
        stmt = stmt.limit(limit)
    rows = list(session.execute(stmt).scalars())
    return sorted(rows, key=lambda e: e.seq)


def entry_dict(entry: AuditEntry) -> dict[str, Any]:
    return {"seq": entry.seq, "ts": entry.ts, "actor": entry.actor, "action": entry.action,
            "object_type": entry.object_type, "object_id": entry.object_id, "details": json.loads(entry.details),
            "hash": entry.hash}
