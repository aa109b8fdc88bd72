"""Serves the operator console's built files (gateway/console/dist/, when the package has
them) at `/` of the HTTP port, under a strict Content-Security-Policy: only the console's own
files run, no inline script, no framing."""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path
from urllib.parse import unquote

from zapgate.gateway.http.asgi import Receive, Scope, Send, respond

CONSOLE_DIST = Path(__file__).resolve().parent.parent / "console" / "dist"
# QR codes arrive as PNG bytes and are shown as data: or blob: images.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-cache"),
]


class StaticFiles:
    """GET and HEAD of files under `root`; `/` is `index.html`. Nothing outside `root`."""

    def __init__(self, root: Path) -> None:
        self._root = root.resolve()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await respond(send, 405, [(b"allow", b"GET, HEAD")], b"")
            return
        target = self._file(unquote(scope["path"]))
        if target is None:
            await respond(send, 404, [(b"content-type", b"text/plain")], b"not found\n")
            return
        body = await asyncio.to_thread(target.read_bytes)
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        headers = [(b"content-type", kind.encode()), *SECURITY_HEADERS]
        await respond(send, 200, headers, b"" if scope["method"] == "HEAD" else body)

    def _file(self, path: str) -> Path | None:
        relative = path.lstrip("/") or "index.html"
        target = (self._root / relative).resolve()
        if not target.is_relative_to(self._root) or not target.is_file():
            return None
        return target


def console_files(root: Path = CONSOLE_DIST) -> StaticFiles | None:
    """The console, if this installation ships its bundle."""
    return StaticFiles(root) if (root / "index.html").is_file() else None
