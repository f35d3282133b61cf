"""TLS for the streaming server (``enable_tls_streaming``).

As containerd's CRI: with configured ``x509_key_pair_streaming`` files the
server uses them; otherwise it makes a self-signed certificate at start (RSA
2048, one year, organization "containerd", the host name and the listen
address as subject alternative names). Clients of a self-signed server skip
verification, as kubelet's streaming proxy and critest do.

Needs ``cryptography`` only for the self-signed case (imported then).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import tempfile
from pathlib import Path


def context_from_files(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context from PEM files (TLS 1.2 or later)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def self_signed_pem(address: str, hostname: str | None = None) -> tuple[bytes, bytes]:
    """A new self-signed certificate and its key, PEM encoded: (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    host = hostname or socket.gethostname()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "containerd")])
    sans: list[x509.GeneralName] = [x509.DNSName(host)]
    for text in {address, "127.0.0.1"}:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            if text:
                sans.append(x509.DNSName(text))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def self_signed_context(address: str, hostname: str | None = None) -> tuple[ssl.SSLContext, bytes]:
    """A server context with a fresh self-signed certificate; also returns the cert PEM."""
    cert_pem, key_pem = self_signed_pem(address, hostname)
    # ssl loads chains from files only: a private temporary directory, removed at once.
    with tempfile.TemporaryDirectory(prefix="cri-tls-") as tmp:
        cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_file.write_bytes(cert_pem)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        return context_from_files(str(cert_file), str(key_file)), cert_pem
