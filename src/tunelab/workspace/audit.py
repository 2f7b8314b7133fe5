"""The audit trail: an append-only, hash-chained log of every action.

Each entry's hash is the sha256 of its own fields (sequence number, time, actor, action, object,
details as stored) and the previous entry's hash, so editing an entry breaks its own hash, deleting
one breaks the next entry's link or the sequence, and deleting entries from the end disagrees with
the head row. This makes tampering *evident*; someone with write access to the database could still
rewrite the whole chain consistently, so every committed head is also appended to an anchor file
outside the database (`audit_anchor` in workspace.yaml: put it on another volume), HMAC-signed with
TUNELAB_AUDIT_KEY when that is set. `audit verify` checks the chain against every anchored head: a
rewritten, truncated or re-hashed chain disagrees with the heads it had. A crash between the commit
and the append leaves the newest entries unanchored (reported, not an error); `--expect HASH` still
compares the head with a hash kept elsewhere by hand.
"""

from __future__ import annotations

import contextvars
import getpass
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path
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


KEY_ENV = "TUNELAB_AUDIT_KEY"


def _mac(seq: int, digest: str) -> str | None:
    key = os.environ.get(KEY_ENV)
    if not key:
        return None
    return hmac.new(key.encode(), f"{seq}:{digest}".encode(), hashlib.sha256).hexdigest()


def anchor(path: Path, seq: int, digest: str) -> None:
    """Append one committed head to the anchor file: one short line, one O_APPEND write, so lines from
    concurrent processes never interleave. A failed append is not fatal (the chain itself is intact);
    verify reports the unanchored tail."""
    line = {"seq": seq, "hash": digest, "ts": now_iso()}
    mac = _mac(seq, digest)
    if mac:
        line["mac"] = mac
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def check_anchor(session: Session, path: Path) -> tuple[list[str], int]:
    """Problems between the chain in the database and the heads anchored in `path`, and how many
    newest entries are not anchored yet."""
    hashes = dict(session.execute(select(AuditEntry.seq, AuditEntry.hash)).all())
    if not path.is_file():  # deleted, or a workspace from before anchoring: the next write starts it again
        return [], len(hashes)
    problems: list[str] = []
    keyed = bool(os.environ.get(KEY_ENV))
    last = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        try:
            line = json.loads(raw)
            seq, digest = int(line["seq"]), str(line["hash"])
        except (ValueError, KeyError, TypeError):
            problems.append(f"anchor line {number} is unreadable")
            continue
        if keyed and not hmac.compare_digest(str(line.get("mac", "")), _mac(seq, digest) or ""):
            problems.append(f"anchor line {number} (entry {seq}) has no valid signature: the anchor file was edited")
            continue
        last = max(last, seq)
        if seq not in hashes:
            problems.append(f"entry {seq} was anchored but is not in the database: the chain was cut or rewritten")
        elif hashes[seq] != digest:
            problems.append(f"entry {seq} differs from its anchored hash {digest[:12]}…: the chain was rewritten")
    return problems, max(max(hashes, default=0) - last, 0)


@dataclass
class Verification:
    ok: bool
    entries: int
    head: str
    problems: list[str]
    unanchored: int = 0  # newest entries not covered by an anchored head yet


def verify(session: Session, *, expect_head: str | None = None, anchor_path: Path | None = None) -> Verification:
    """Walk the chain from the first entry; report every break (edited, deleted, reordered, truncated),
    and with `anchor_path` every disagreement with the heads anchored outside the database."""
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
    unanchored = 0
    if anchor_path is not None:
        found, unanchored = check_anchor(session, anchor_path)
        problems += found
    return Verification(ok=not problems, entries=count, head=head_hash, problems=problems, unanchored=unanchored)


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
