"""The web UI: a single-page app (plain HTML, CSS and ES-module JavaScript in `server/static/`, no build
step, nothing loaded from elsewhere) served by the same app as the API.

`GET /` is the app shell and `GET /ui/<file>` its static files. Neither needs a token: they hold no
data. The page calls the API under /v1 with the token pasted into it (kept in the tab's
sessionStorage, sent as `Authorization: Bearer`); with `tunelab serve --no-auth` a local browser
needs none. The responses carry a Content-Security-Policy that allows only this origin, so the page
can neither load nor send anything elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

STATIC = Path(__file__).resolve().parent.parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# Only this origin: scripts, styles and API calls (`connect-src`); `data:` for the empty favicon.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}  # revalidate (ETag): an upgraded server serves its own UI at once

router = APIRouter(include_in_schema=False)


def _file(path: Path) -> FileResponse:
    return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"), headers=HEADERS)


@router.api_route("/", methods=["GET", "HEAD"])
def shell() -> FileResponse:
    """The app shell; every page of the UI is a `#/...` route inside it."""
    return _file(STATIC / "index.html")


@router.get("/ui")
def ui_root() -> RedirectResponse:
    return RedirectResponse("/")


@router.api_route("/ui/{name:path}", methods=["GET", "HEAD"])
def static_file(name: str) -> FileResponse:
    """A file of the UI (only files under static/, with a known type)."""
    path = (STATIC / name).resolve()
    if not path.is_relative_to(STATIC) or not path.is_file() or path.suffix not in MEDIA_TYPES:
        raise HTTPException(404, detail=f"no UI file {name!r}")
    return _file(path)
