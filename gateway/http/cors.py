"""CORS for browsers on other origins (a front end of the operator's own on another port or
host): only the origins the operator allowed may call, and only with the headers Connect and
gRPC-Web use. Same-origin pages (the console at `/`) need none of it. Preflights from origins
not allowed get 403, other requests pass without CORS headers (the browser then hides the
answer from the page)."""

from __future__ import annotations

from zapgate.gateway.http.asgi import App, Message, Receive, Scope, Send, header, respond

ALLOW_METHODS = b"GET, POST"
# Connect's and gRPC-Web's request headers, and zapgate's `authorization: Bearer <key>`.
ALLOW_HEADERS = (
    b"Authorization, Content-Type, Connect-Protocol-Version, Connect-Timeout-Ms, "
    b"Connect-Accept-Encoding, Connect-Content-Encoding, Grpc-Timeout, X-Grpc-Web, X-User-Agent"
)
# What a page may read from answers: gRPC-Web's status headers, zapgate's stream header.
EXPOSE_HEADERS = (
    b"Grpc-Status, Grpc-Message, Grpc-Status-Details-Bin, Connect-Content-Encoding, "
    b"Content-Encoding, Zapgate-Start-Cursor"
)
PREFLIGHT_MAX_AGE = b"7200"


class Cors:
    def __init__(self, app: App, allowed_origins: tuple[str, ...]) -> None:
        self._app = app
        self._any = "*" in allowed_origins
        self._origins = frozenset(o.rstrip("/") for o in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None:
            await self._app(scope, receive, send)
            return
        allowed = self._any or origin in self._origins
        preflight = scope["method"] == "OPTIONS" and header(scope, b"access-control-request-method")
        if preflight:
            await self._preflight(send, origin if allowed else None)
        elif allowed:
            await self._app(scope, receive, _with_cors(send, origin))
        else:
            await self._app(scope, receive, send)

    async def _preflight(self, send: Send, origin: str | None) -> None:
        if origin is None:
            await respond(send, 403, [(b"vary", b"Origin")], b"")
            return
        headers = [
            (b"access-control-allow-origin", origin.encode()),
            (b"access-control-allow-methods", ALLOW_METHODS),
            (b"access-control-allow-headers", ALLOW_HEADERS),
            (b"access-control-max-age", PREFLIGHT_MAX_AGE),
            (b"vary", b"Origin"),
        ]
        await respond(send, 204, headers, b"")


def _with_cors(send: Send, origin: str) -> Send:
    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {
                **message,
                "headers": [
                    *message.get("headers", ()),
                    (b"access-control-allow-origin", origin.encode()),
                    (b"access-control-expose-headers", EXPOSE_HEADERS),
                    (b"vary", b"Origin"),
                ],
            }
        await send(message)

    return send_with_cors
