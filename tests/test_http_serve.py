"""The HTTP port as `zapgate serve` runs it: its flags, shutdown with the gRPC server, TLS,
and the console's files under a strict Content-Security-Policy."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import gateway_config
from tests.connect_http import (
    END_STREAM,
    bearer,
    json_envelope,
    stream_envelopes,
    unary_json,
)
from tests.server_process import ServerProcess
from tests.test_tls import Pki, pki, write  # noqa: F401 (pki is a fixture)
from zapgate.gateway.cli.main import build_parser, http_allowed_origins, http_listen
from zapgate.gateway.config import DEFAULT_HTTP_LISTEN, TlsConfig
from zapgate.gateway.http.app import Router
from zapgate.gateway.http.server import HttpServer
from zapgate.gateway.http.static import CONTENT_SECURITY_POLICY, StaticFiles, console_files
from zapgate.gateway.server import Gateway


def serve_args(*flags: str) -> object:
    return build_parser().parse_args(["serve", *flags])


def test_the_http_port_is_on_by_default_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZAPGATE_HTTP_LISTEN", raising=False)
    monkeypatch.delenv("ZAPGATE_HTTP_ALLOWED_ORIGINS", raising=False)
    assert DEFAULT_HTTP_LISTEN.startswith("127.0.0.1:")
    assert http_listen(serve_args()) == DEFAULT_HTTP_LISTEN  # type: ignore[arg-type]
    assert http_listen(serve_args("--http-listen", "off")) is None  # type: ignore[arg-type]
    assert http_listen(serve_args("--http-listen", "9000")) == "9000"  # type: ignore[arg-type]
    monkeypatch.setenv("ZAPGATE_HTTP_LISTEN", "off")
    assert http_listen(serve_args()) is None  # type: ignore[arg-type]
    with pytest.raises(SystemExit, match="--http-listen"):
        http_listen(serve_args("--http-listen", "host:port"))  # type: ignore[arg-type]
    # CORS: no origin unless named, by flag or environment.
    assert http_allowed_origins(serve_args()) == ()  # type: ignore[arg-type]
    monkeypatch.setenv("ZAPGATE_HTTP_ALLOWED_ORIGINS", "https://a.example, https://b.example")
    assert http_allowed_origins(serve_args()) == (  # type: ignore[arg-type]
        "https://a.example",
        "https://b.example",
    )
    flagged = serve_args("--http-allow-origin", "https://c.example")
    assert http_allowed_origins(flagged) == ("https://c.example",)  # type: ignore[arg-type]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data")
    yield process
    process.close()


async def test_zapgate_serve_answers_over_http_and_stops_with_open_streams(
    server: ServerProcess, tmp_path: Path
) -> None:
    """`zapgate serve` with the HTTP port: a call, an open Subscribe stream, then SIGTERM:
    the stream ends and the process exits cleanly."""
    key = (tmp_path / "data" / "initial-api-key").read_text().strip()
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.http_port}", http1=False, http2=True, timeout=30
    ) as client:
        status, answer = await unary_json(
            client, "/zapgate.v1.InstanceService/CreateInstance", {"instanceId": "shop"}, key
        )
        assert (status, answer["instance"]["id"]) == (200, "shop")
        paused = await unary_json(
            client, "/zapgate.v1.InstanceService/PauseSending", {"instanceId": "shop"}, key
        )
        assert paused[0] == 200
        async with client.stream(
            "POST",
            "/zapgate.v1.EventService/Subscribe",
            content=json_envelope({}),
            headers={"content-type": "application/connect+json", **bearer(key)},
        ) as response:
            envelopes = stream_envelopes(response)
            flags, _ = await anext(envelopes)  # the pause: the stream is open
            assert flags == 0
            server.terminate()
            rest = [flags async for flags, _ in envelopes]
    assert rest in ([], [END_STREAM])  # ended by the server, never left hanging
    assert await asyncio.to_thread(server.wait) == 0
    server.wait_for("zapgate stopped")


@pytest.fixture
async def files(tmp_path: Path) -> AsyncIterator[str]:
    """The console's files served by a real HTTP server on loopback."""
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><script src=/assets/app.js></script>")
    (dist / "assets" / "app.js").write_text("console.log('hi')")
    (tmp_path / "secret.txt").write_text("not for the web")
    console = console_files(dist)
    assert console is not None
    http = HttpServer("127.0.0.1:0", Router({}, console))
    http.start()
    try:
        yield f"http://127.0.0.1:{http.port}"
    finally:
        await http.stop(grace=1)


async def test_the_console_is_served_at_the_root_under_a_strict_csp(files: str) -> None:
    async with httpx.AsyncClient(base_url=files) as client:
        index = await client.get("/")
        assert index.status_code == 200
        assert index.text.startswith("<!doctype html>")
        assert index.headers["content-type"].startswith("text/html")
        csp = index.headers["content-security-policy"]
        assert csp == CONTENT_SECURITY_POLICY
        assert "default-src 'self'" in csp
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert index.headers["x-content-type-options"] == "nosniff"
        script = await client.get("/assets/app.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert (await client.get("/assets/missing.js")).status_code == 404
        assert (await client.post("/", content=b"x")).status_code == 405
        # Nothing outside the bundle's folder, however the path is spelled.
        for path in ("/%2e%2e/secret.txt", "/assets/%2e%2e/%2e%2e/secret.txt"):
            assert (await client.get(path)).status_code == 404


def test_no_console_without_a_bundle(tmp_path: Path) -> None:
    assert console_files(tmp_path) is None
    (tmp_path / "index.html").write_text("<!doctype html>")
    assert isinstance(console_files(tmp_path), StaticFiles)


async def test_the_http_port_uses_the_grpc_ports_tls(tmp_path: Path, pki: Pki) -> None:  # noqa: F811
    """With --tls-cert the HTTP port serves HTTPS with the same certificate."""
    cert, key_file = write(tmp_path, pki.server, "server")
    config = gateway_config(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'state.db'}",
        tls=TlsConfig(cert, key_file),
        http_listen="127.0.0.1:0",
    )
    gateway = Gateway(config)
    await gateway.start()
    try:
        assert gateway.http_server is not None
        port = gateway.http_server.port
        trust = ssl.create_default_context(cadata=pki.ca.cert.decode())
        async with httpx.AsyncClient(verify=trust, http2=True) as client:
            answer = await client.post(
                f"https://127.0.0.1:{port}/zapgate.v1.InstanceService/ListInstances",
                content="{}",
                headers={"content-type": "application/json"},
            )
        assert answer.status_code == 401  # reached the API, over TLS
        assert answer.http_version == "HTTP/2"  # negotiated by ALPN
        assert answer.json()["code"] == "unauthenticated"
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.post(
                    f"http://127.0.0.1:{port}/zapgate.v1.InstanceService/ListInstances"
                )
    finally:
        await gateway.stop(grace=0)
