"""TLS and client-certificate verification, with certificates made for the test."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import gateway_config
from zapgate.gateway.config import TlsConfig
from zapgate.gateway.server import Gateway


@dataclass
class Pem:
    cert: bytes
    key: bytes


def issue(name: str, issuer: Pem | None = None, *, ca: bool = False) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    signer_key = key if issuer is None else serialization.load_pem_private_key(issuer.key, None)
    signer_name = subject if issuer is None else x509.load_pem_x509_certificate(issuer.cert).subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(signer_key, hashes.SHA256())  # type: ignore[arg-type]
    return Pem(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


@dataclass
class Pki:
    ca: Pem
    server: Pem
    client: Pem
    stranger: Pem


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = issue("zapgate test CA", ca=True)
    return Pki(ca, issue("server", ca), issue("client", ca), issue("stranger"))


def write(tmp_path: Path, pem: Pem, name: str) -> tuple[Path, Path]:
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert.write_bytes(pem.cert)
    key.write_bytes(pem.key)
    return cert, key


async def start(tmp_path: Path, tls: TlsConfig) -> Gateway:
    gateway = Gateway(gateway_config(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", tls=tls))
    await gateway.start()
    return gateway


async def health_status(gateway: Gateway, credentials: grpc.ChannelCredentials) -> int:
    async with grpc.aio.secure_channel(f"127.0.0.1:{gateway.port}", credentials) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        return int(reply.status)


@pytest.fixture
async def tls_gateway(tmp_path: Path, pki: Pki) -> AsyncIterator[Gateway]:
    cert, key = write(tmp_path, pki.server, "server")
    gateway = await start(tmp_path, TlsConfig(cert, key))
    yield gateway
    await gateway.stop(grace=0)


@pytest.fixture
async def mtls_gateway(tmp_path: Path, pki: Pki) -> AsyncIterator[Gateway]:
    cert, key = write(tmp_path, pki.server, "server")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(pki.ca.cert)
    gateway = await start(tmp_path, TlsConfig(cert, key, ca_file))
    yield gateway
    await gateway.stop(grace=0)


async def test_tls_server_answers_a_client_that_trusts_its_ca(
    tls_gateway: Gateway, pki: Pki
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert)
    assert await health_status(tls_gateway, credentials) == health_pb2.HealthCheckResponse.SERVING


async def test_tls_server_refuses_plaintext(tls_gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tls_gateway.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_client_certificate_required_and_verified(mtls_gateway: Gateway, pki: Pki) -> None:
    trusted = grpc.ssl_channel_credentials(pki.ca.cert, pki.client.key, pki.client.cert)
    assert await health_status(mtls_gateway, trusted) == health_pb2.HealthCheckResponse.SERVING
    for credentials in (
        grpc.ssl_channel_credentials(pki.ca.cert),
        grpc.ssl_channel_credentials(pki.ca.cert, pki.stranger.key, pki.stranger.cert),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_status(mtls_gateway, credentials)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
