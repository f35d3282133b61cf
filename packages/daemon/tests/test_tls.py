from __future__ import annotations

import datetime
import ipaddress
import socket
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import empty_pb2

from pycontainerd.api.services.version.v1 import version_pb2_grpc
from pycontainerd.daemon.version import server_version

if TYPE_CHECKING:
    from pathlib import Path

    from pycontainerd.daemon.testing import MakeDaemon

pytestmark = pytest.mark.system


class Issuer:
    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, cn: str, *, server: bool) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return key_pem, cert.public_bytes(serialization.Encoding.PEM)

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def call_version(port: int, ca: bytes, key: bytes | None, cert: bytes | None) -> str:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        stub = version_pb2_grpc.VersionStub(channel)
        resp = await stub.Version(empty_pb2.Empty(), timeout=5)
    return str(resp.version)


async def test_tcp_tls_requires_client_cert_from_ca(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    ca = Issuer("test ca")
    other = Issuer("someone else")
    server_key, server_cert = ca.issue("localhost", server=True)
    client_key, client_cert = ca.issue("client", server=False)
    rogue_key, rogue_cert = other.issue("rogue", server=False)
    files = {}
    for name, data in {
        "ca.pem": ca.pem(),
        "server.key": server_key,
        "server.pem": server_cert,
    }.items():
        (tmp_path / name).write_bytes(data)
        files[name] = str(tmp_path / name)
    port = free_port()
    config = (
        "version = 2\n[grpc]\n"
        f'tcp_address = "127.0.0.1:{port}"\n'
        f'tcp_tls_ca = "{files["ca.pem"]}"\n'
        f'tcp_tls_cert = "{files["server.pem"]}"\n'
        f'tcp_tls_key = "{files["server.key"]}"\n'
    )
    d = make_daemon(config=config).start()
    assert f'address="127.0.0.1:{port}"' in d.log()

    assert await call_version(port, ca.pem(), client_key, client_cert) == server_version()
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await call_version(port, ca.pem(), None, None)
    assert excinfo.value.code() is grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await call_version(port, ca.pem(), rogue_key, rogue_cert)
    assert excinfo.value.code() is grpc.StatusCode.UNAVAILABLE
    assert d.stop() == 0
