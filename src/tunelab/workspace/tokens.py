"""API tokens of the workspace server: created once, stored hashed, checked per request.

A token reads `tl_<prefix>_<secret>`. The prefix (8 hex characters) is public: it is stored in clear
so a presented token's row is found by an index lookup, and it is what `tokens list` shows so people
can tell tokens apart. The database holds only the sha256 of the whole token string, so a copy of the
database (or a backup) does not let anyone act as a token; the full string is returned once, by
`create_token`, and never again. A random 256-bit secret needs no slow password hash: sha256 of
it cannot be brute-forced, and a fast hash keeps per-request checks cheap.

Names are never reused, even after a revoke: the audit trail records actors as `token:<name>`, and
that must keep meaning one token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update

from tunelab.errors import TunelabError
from tunelab.runs.folder import now_iso
from tunelab.workspace.audit import current_actor
from tunelab.workspace.orm import ApiToken
from tunelab.workspace.workspace import Workspace

ROLES = ("viewer", "engineer", "admin")  # ordered by power: each role may do what the ones before it may
TOKEN_PREFIX = "tl"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
TOKEN_RE = re.compile(rf"{TOKEN_PREFIX}_([0-9a-f]{{8}})_([A-Za-z0-9_-]{{32,}})")
LAST_USED_EVERY = timedelta(minutes=1)  # write last_used_at at most this often per token
RESERVED_NAMES = ("anonymous",)  # the server's --no-auth principal; a token of that name would blur the audit trail


class TokenError(TunelabError):
    """A token cannot be created or revoked as asked."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a token's name and role (or the local anonymous user)."""

    name: str
    role: str


def role_allows(role: str, needed: str) -> bool:
    """Whether `role` may do what `needed` may (an unknown role may do nothing)."""
    if needed not in ROLES:
        raise ValueError(f"unknown role {needed!r}; roles are {', '.join(ROLES)}")
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    # The format of tunelab.runs.folder.now_iso, so stored times compare as strings.
    return moment.isoformat(timespec="seconds")


# ---- create / list / revoke -------------------------------------------------------------------
def _check_new(name: str, role: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise TokenError(f"token name {name!r} is not allowed",
                         fix="use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if name.lower() in RESERVED_NAMES:
        raise TokenError(f"token name {name!r} is reserved", fix="pick another name")
    if role not in ROLES:
        raise TokenError(f"role {role!r} is not known", fix=f"use one of: {', '.join(ROLES)}")


def create_token(ws: Workspace, name: str, role: str) -> str:
    """Create a token and return its full string: the only time it is ever available."""
    _check_new(name, role)
    with ws.write() as txn:
        existing = txn.session.execute(select(ApiToken).where(ApiToken.name == name)).scalar_one_or_none()
        if existing is not None:
            raise TokenError(f"a token named {name!r} already exists" + (" (revoked)" if existing.revoked_at else ""),
                             fix="pick another name: names are not reused, so audit entries keep naming one token")
        prefix = _unused_prefix(txn.session)
        token = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        txn.session.add(ApiToken(name=name, role=role, prefix=prefix, secret_sha256=token_sha256(token),
                                 created_at=now_iso(), created_by=current_actor()))
        txn.audit("token.create", "token", name, {"role": role, "prefix": prefix})
    return token


def _unused_prefix(session: Any) -> str:
    # Prefixes need not be unique (verify checks every match), but distinct ones keep `tokens list` readable.
    for _ in range(10):
        prefix = secrets.token_hex(4)
        if session.execute(select(ApiToken.id).where(ApiToken.prefix == prefix)).first() is None:
            return prefix
    return prefix


def list_tokens(ws: Workspace) -> list[dict[str, Any]]:
    """Every token, oldest first, without its hash (the prefix identifies it)."""
    with ws.read() as session:
        rows = session.execute(select(ApiToken).order_by(ApiToken.id)).scalars().all()
        return [{"name": t.name, "role": t.role, "prefix": t.prefix, "created_at": t.created_at,
                 "created_by": t.created_by, "last_used_at": t.last_used_at, "revoked_at": t.revoked_at}
                for t in rows]


def revoke_token(ws: Workspace, name: str) -> None:
    """Revoke a token: it stops working at once; its row stays, so the audit trail still resolves it."""
    with ws.write() as txn:
        token = txn.session.execute(select(ApiToken).where(ApiToken.name == name)).scalar_one_or_none()
        if token is None:
            raise TokenError(f"no token named {name!r}", fix="see `tunelab tokens list`")
        if token.revoked_at is not None:
            raise TokenError(f"token {name!r} was already revoked at {token.revoked_at}")
        token.revoked_at = now_iso()
        txn.audit("token.revoke", "token", name, {"role": token.role, "prefix": token.prefix})


# ---- verify -----------------------------------------------------------------------------------
def verify_token(ws: Workspace, presented: str) -> Principal | None:
    """The principal of a valid, unrevoked token; None for anything else (malformed, unknown, wrong, revoked)."""
    match = TOKEN_RE.fullmatch(presented.strip())
    if match is None:
        return None
    digest = token_sha256(presented.strip())
    with ws.read() as session:
        candidates = session.execute(select(ApiToken).where(ApiToken.prefix == match.group(1))).scalars().all()
        found = next((t for t in candidates if hmac.compare_digest(t.secret_sha256, digest)), None)
        if found is None or found.revoked_at is not None or found.role not in ROLES:
            return None
        principal, token_id, last_used = Principal(found.name, found.role), found.id, found.last_used_at
    _touch(ws, token_id, last_used)
    return principal


def _touch(ws: Workspace, token_id: int, last_used: str | None) -> None:
    """Record the use, at most once a minute: a write per request would queue every request behind the
    workspace's single writer. The conditional UPDATE makes concurrent requests write it once; it is
    bookkeeping, not an action, so it takes no audit entry (and no audit-head lock)."""
    now = _now()
    cutoff = _iso(now - LAST_USED_EVERY)
    if last_used is not None and last_used > cutoff:
        return
    with ws.engine.begin() as conn:
        conn.execute(update(ApiToken).where(ApiToken.id == token_id)
                     .where(or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= cutoff))
                     .values(last_used_at=_iso(now)))
