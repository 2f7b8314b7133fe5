"""Who is calling: bearer-token authentication and role checks, as FastAPI dependencies.

    @app.post("/api/jobs")
    def submit(job: JobIn, principal: Annotated[Principal, Depends(require("engineer"))]) -> ...

The app keeps its settings on `app.state`: `workspace` (a Workspace) and `allow_anonymous` (bool,
set by `tunelab serve --no-auth`). A request without a token is then the local anonymous admin,
but only from a loopback address; otherwise it is refused (401).

Audit identity. Every change made while serving a request must be audited as `token:<name>`, so
`require` sets `audit.ACTOR`. It is an *async* dependency on purpose: FastAPI runs sync
dependencies in a worker thread under a copy of the request's context, so a contextvar set there is
lost when the dependency returns and the endpoint would audit as the server's OS user. An async
dependency runs in the request's own task, and FastAPI runs a sync endpoint (and Starlette's
`run_in_threadpool`) under a copy of *that* context, so the value reaches async and sync endpoints
alike; each request is its own task, so it never leaks into another request. Work that leaves the
request's context (a thread the endpoint starts, the job runner) must carry the principal itself:
`with acting_as(principal): ...`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from tunelab.workspace import Workspace
from tunelab.workspace.audit import ACTOR
from tunelab.workspace.tokens import ROLES, Principal, role_allows, verify_token

ANONYMOUS = Principal("anonymous", "admin")  # `serve --no-auth` on localhost; no token can take this name
# TestClient's made-up client host; it only ever counts as loopback for anonymous mode.
TEST_CLIENT_HOST = "testclient"

bearer = HTTPBearer(auto_error=False, description="An API token from `tunelab tokens create NAME --role ROLE`.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def actor_of(principal: Principal) -> str:
    """The audit actor of a principal: `token:<name>`, or `local:anonymous` without a token."""
    return "local:anonymous" if principal == ANONYMOUS else f"token:{principal.name}"


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    """Audit what runs inside as `principal`: for work outside the request's context (threads, jobs)."""
    reset = ACTOR.set(actor_of(principal))
    try:
        yield
    finally:
        ACTOR.reset(reset)


@cache
def require(role: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting callers with at least `role`; it returns their Principal and sets the
    audit actor for the rest of the request. Cached, so `require("admin")` is one dependency (FastAPI
    resolves it once per request, and tests can override it)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")

    async def dependency(request: Request, credentials: Credentials) -> Principal:
        principal = await authenticate(request, credentials)
        if not role_allows(principal.role, role):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"this needs the {role} role; {actor_of(principal)} has the {principal.role} role")
        ACTOR.set(actor_of(principal))  # async: set in the request's task, seen by the endpoint (module docstring)
        return principal

    dependency.__name__ = dependency.__qualname__ = f"require_{role}"
    return dependency


async def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """The caller's principal, or 401. A presented token is always checked, even in anonymous mode, so a
    wrong token fails loudly instead of silently becoming the anonymous admin."""
    if request.headers.get("authorization") is not None:
        if credentials is None:
            raise _unauthorized("the Authorization header must be 'Bearer <token>'")
        # verify_token does database I/O: keep it off the event loop.
        principal = await run_in_threadpool(verify_token, _workspace(request), credentials.credentials)
        if principal is None:
            raise _unauthorized("invalid or revoked token")
        return principal
    if getattr(request.app.state, "allow_anonymous", False) and _from_loopback(request):
        return ANONYMOUS
    raise _unauthorized("missing token: send 'Authorization: Bearer <token>' (`tunelab tokens create` makes one)")


def _workspace(request: Request) -> Workspace:
    ws = getattr(request.app.state, "workspace", None)
    if ws is None:
        raise RuntimeError("app.state.workspace is not set: the server app must be given its workspace")
    return ws


def _from_loopback(request: Request) -> bool:
    """Whether the TCP peer is this machine. Behind a reverse proxy on the same host every client looks
    local, which is why anonymous mode is for a server bound to localhost with no proxy in front."""
    host = request.client.host if request.client else None
    return host == TEST_CLIENT_HOST or (host is not None and is_loopback(host))


def is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8, ::1 and IPv4-mapped loopback (a bind address or a peer address)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


# Route parameters: `who: Engineer` authorizes the route for engineers and admins and gives the Principal.
Viewer = Annotated[Principal, Depends(require("viewer"))]
Engineer = Annotated[Principal, Depends(require("engineer"))]
Admin = Annotated[Principal, Depends(require("admin"))]
