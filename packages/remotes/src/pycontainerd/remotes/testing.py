"""Test helpers: a real ``docker-registry`` on 127.0.0.1, test images, a CA, raw HTTP servers.

For this package's registry tests and for ``pycontainerd-ctr``'s. Nothing
here talks to anything but 127.0.0.1. :class:`Registry` runs Debian's
``docker-registry`` (distribution 2.x) with its storage under a directory
the test owns, optionally behind htpasswd basic auth, TLS or Bearer tokens
from :class:`TokenServer`. :func:`build_image` makes small images in memory
and :func:`seed` uploads them with plain HTTP requests that do not use the
resolver under test. ``cryptography`` (a dev dependency) is imported only by
the TLS and token helpers.

Importing this module does not import pytest.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import gzip
import hashlib
import io
import json
import os
import secrets
import socket
import ssl
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

import httpx

from pycontainerd.remotes import mediatypes as mt

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

REGISTRY_BIN: Final = "/usr/bin/docker-registry"


def require_registry() -> None:
    """Skip the test (fail it when ``CI=true``) when ``docker-registry`` is missing."""
    import pytest

    if not os.access(REGISTRY_BIN, os.X_OK):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{REGISTRY_BIN} is required under CI")
        pytest.skip(f"{REGISTRY_BIN} not installed")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- images ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """Bytes with a media type."""

    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        """Its digest."""
        return sha256(self.data)

    def descriptor(self, **extra: object) -> dict[str, object]:
        """Its OCI descriptor as JSON-ready dict."""
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
            **extra,
        }


@dataclass
class Image:
    """A built image: the root (manifest or index) and every blob under it."""

    root: Blob
    blobs: list[Blob] = field(default_factory=list)
    diff_ids: list[str] = field(default_factory=list)

    @property
    def manifests(self) -> list[Blob]:
        """The manifests and indexes, children before parents, the root last."""
        kinds = mt.INDEXES | mt.MANIFESTS
        return [b for b in self.blobs if b.media_type in kinds] + [self.root]


def layer_tar(files: Mapping[str, bytes], *, modes: Mapping[str, int] | None = None) -> bytes:
    """An uncompressed tar with ``files`` (parent directories added)."""
    buf = io.BytesIO()
    dirs: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            info.mode = (modes or {}).get(name, 0o755)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_image(
    layers: list[Mapping[str, bytes]],
    *,
    architecture: str = "amd64",
    variant: str = "",
    docker: bool = False,
) -> Image:
    """A single-platform image with one gzip layer per mapping in ``layers``."""
    layer_type = mt.DOCKER_LAYER_GZIP if docker else mt.OCI_LAYER_GZIP
    blobs: list[Blob] = []
    diff_ids: list[str] = []
    for files in layers:
        tar = layer_tar(files)
        diff_ids.append(sha256(tar))
        blobs.append(Blob(layer_type, gzip.compress(tar, mtime=0)))
    platform: dict[str, object] = {"os": "linux", "architecture": architecture}
    if variant:
        platform["variant"] = variant
    config = Blob(
        mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG,
        json.dumps(
            {
                **platform,
                "config": {"Cmd": ["/bin/sh"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            },
            sort_keys=True,
        ).encode(),
    )
    manifest = Blob(
        mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST,
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST,
                "config": config.descriptor(),
                "layers": [b.descriptor() for b in blobs],
            },
            sort_keys=True,
        ).encode(),
    )
    return Image(root=manifest, blobs=[*blobs, config], diff_ids=diff_ids)


def build_index(images: Mapping[str, Image], *, docker: bool = False) -> Image:
    """An index over ``images`` keyed by ``os/arch[/variant]``."""
    entries = []
    blobs: list[Blob] = []
    for spec, image in images.items():
        os_name, arch, *variant = spec.split("/")
        plat: dict[str, str] = {"os": os_name, "architecture": arch}
        if variant:
            plat["variant"] = variant[0]
        entries.append(image.root.descriptor(platform=plat))
        blobs += [b for b in image.blobs if b not in blobs] + [image.root]
    kind = mt.DOCKER_MANIFEST_LIST if docker else mt.OCI_INDEX
    root = Blob(
        kind,
        json.dumps(
            {"schemaVersion": 2, "mediaType": kind, "manifests": entries}, sort_keys=True
        ).encode(),
    )
    return Image(root=root, blobs=blobs)


# -- auth material -----------------------------------------------------------------------


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for an htpasswd file (libcrypt's ``$2b$``, or the ``bcrypt`` package)."""
    with contextlib.suppress(ImportError):
        import bcrypt  # type: ignore[import-not-found,unused-ignore]

        return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode())
    name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
    lib = ctypes.CDLL(name)
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    salt = "".join(secrets.choice(alphabet) for _ in range(21)) + "e"
    out = lib.crypt(password.encode(), f"$2b$05${salt}".encode())
    if not out or not out.startswith(b"$2"):
        msg = "libcrypt cannot make bcrypt hashes"
        raise RuntimeError(msg)
    return str(out.decode())


@dataclass(frozen=True)
class CA:
    """A test certificate authority: its cert and key files."""

    cert: Path
    key: Path

    def issue(self, directory: Path, name: str, *, client: bool = False) -> tuple[Path, Path]:
        """A certificate for ``127.0.0.1``/``localhost`` (or a client) signed by the CA."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        ca_cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        ca_key = serialization.load_pem_private_key(self.key.read_bytes(), None)
        assert isinstance(ca_key, rsa.RSAPrivateKey)  # noqa: S101 - made by make_ca
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now.replace(year=now.year + 1))
        )
        if client:
            usage = ExtendedKeyUsageOID.CLIENT_AUTH
        else:
            import ipaddress

            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            usage = ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path, key_path = directory / f"{name}.cert", directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


def _now() -> Any:
    import datetime

    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)


def make_ca(directory: Path) -> CA:
    """A new CA (RSA 2048) with files ``ca.crt`` and ``ca.key`` in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pycontainerd test CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now.replace(year=now.year + 1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca = CA(cert=directory / "ca.crt", key=directory / "ca.key")
    ca.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ca.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return ca


# -- token server -------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A Docker token server on 127.0.0.1 that signs JWTs with the CA's key.

    With ``users``, a token is only issued to a request with matching Basic
    credentials; anonymous requests get tokens only when ``anonymous``.
    ``requests`` records ``(user, scopes)`` of every token request.
    """

    SERVICE: Final = "pycontainerd-test-registry"
    ISSUER: Final = "pycontainerd-test-issuer"

    def __init__(
        self, ca: CA, *, users: Mapping[str, str] | None = None, anonymous: bool = False
    ) -> None:
        self.ca = ca
        self.users = dict(users or {})
        self.anonymous = anonymous
        self.requests: list[tuple[str, list[str]]] = []
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        """The token endpoint URL."""
        return f"http://127.0.0.1:{self.port}/token"

    def _sign(self, subject: str, scopes: list[str]) -> str:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        cert = x509.load_pem_x509_certificate(self.ca.cert.read_bytes())
        key = serialization.load_pem_private_key(self.ca.key.read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)  # noqa: S101 - made by make_ca
        access = []
        for s in scopes:
            kind, _, rest = s.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": self.ISSUER, "sub": subject, "aud": self.SERVICE, "exp": now + 300,
            "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access,
        }  # fmt: skip
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(sig)

    def start(self) -> TokenServer:
        """Serve in a thread."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                scopes = query.get("scope", [])
                user = ""
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if outer.users.get(user) != password:
                        self.send_response(401)
                        self.end_headers()
                        return
                elif not outer.anonymous:
                    self.send_response(401)
                    self.end_headers()
                    return
                outer.requests.append((user, scopes))
                body = json.dumps(
                    {"token": outer._sign(user or "anonymous", scopes), "expires_in": 300}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# -- the registry ---------------------------------------------------------------------------


class Registry:
    """``docker-registry serve`` on 127.0.0.1 with storage under ``base``.

    Args:
        base: a directory the test owns.
        htpasswd: ``{user: password}`` for basic auth.
        tls: ``(cert, key)`` files to serve HTTPS.
        token: a token server for Bearer auth.
    """

    def __init__(
        self,
        base: Path,
        *,
        htpasswd: Mapping[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
        token: TokenServer | None = None,
    ) -> None:
        self.base = base
        self.port = free_port()
        self.htpasswd = dict(htpasswd or {})
        self.tls = tls
        self.token = token
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = base / "registry.log"

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base URL."""
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def config(self) -> str:
        """The registry's YAML configuration (JSON is valid YAML)."""
        cfg: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.base / "storage")},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if self.tls:
            cfg["http"]["tls"] = {"certificate": str(self.tls[0]), "key": str(self.tls[1])}
        if self.htpasswd:
            path = self.base / "htpasswd"
            path.write_text("".join(f"{u}:{bcrypt_hash(p)}\n" for u, p in self.htpasswd.items()))
            cfg["auth"] = {"htpasswd": {"realm": "pycontainerd-test", "path": str(path)}}
        elif self.token:
            cfg["auth"] = {
                "token": {
                    "realm": self.token.realm,
                    "service": TokenServer.SERVICE,
                    "issuer": TokenServer.ISSUER,
                    "rootcertbundle": str(self.token.ca.cert),
                }
            }
        return json.dumps(cfg)

    def start(self, timeout: float = 15.0) -> Registry:
        """Start it and wait until ``/v2/`` answers."""
        config = self.base / "config.yml"
        self.base.mkdir(parents=True, exist_ok=True)
        config.write_text(self.config())
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        deadline = time.monotonic() + timeout
        verify: Any = ssl.create_default_context(cafile=str(self.tls_ca)) if self.tls_ca else False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                msg = f"docker-registry exited: {self.log_path.read_text()[-2000:]}"
                raise RuntimeError(msg)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/v2/", verify=verify, timeout=1).status_code in (200, 401):
                    return self
            time.sleep(0.05)
        self.stop()
        msg = "docker-registry did not answer in time"
        raise RuntimeError(msg)

    tls_ca: Path | None = None

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    @contextlib.contextmanager
    def running(self) -> Iterator[Registry]:
        """Start, yield, stop."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    # -- seeding with plain HTTP ------------------------------------------------------------

    def _http(self) -> httpx.Client:
        verify: Any = ssl.create_default_context(cafile=str(self.tls_ca)) if self.tls_ca else False
        return httpx.Client(base_url=self.url, verify=verify, timeout=30)

    def _auth(
        self, client: httpx.Client, repo: str, user: tuple[str, str] | None
    ) -> dict[str, str]:
        resp = client.get("/v2/")
        if resp.status_code != 401:
            return {}
        challenge = resp.headers.get("www-authenticate", "")
        if challenge.lower().startswith("basic"):
            assert user is not None  # noqa: S101 - the test must pass credentials
            raw = f"{user[0]}:{user[1]}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        assert self.token is not None  # noqa: S101
        auth = (user[0], user[1]) if user else None
        tok = httpx.get(
            self.token.realm,
            params={"service": TokenServer.SERVICE, "scope": f"repository:{repo}:pull,push"},
            auth=auth,
        ).json()["token"]
        return {"Authorization": f"Bearer {tok}"}

    def put_blob(self, repo: str, blob: Blob, user: tuple[str, str] | None = None) -> None:
        """Upload one blob (monolithic)."""
        with self._http() as client:
            headers = self._auth(client, repo, user)
            resp = client.post(f"/v2/{repo}/blobs/uploads/", headers=headers)
            resp.raise_for_status()
            location = httpx.URL(resp.headers["location"])
            resp = client.put(
                location.copy_merge_params({"digest": blob.digest}),
                content=blob.data,
                headers={**headers, "Content-Type": "application/octet-stream"},
            )
            resp.raise_for_status()

    def put_manifest(
        self, repo: str, ref: str, blob: Blob, user: tuple[str, str] | None = None
    ) -> None:
        """Put a manifest or index under ``ref`` (a tag or its digest)."""
        with self._http() as client:
            headers = self._auth(client, repo, user)
            resp = client.put(
                f"/v2/{repo}/manifests/{ref}",
                content=blob.data,
                headers={**headers, "Content-Type": blob.media_type},
            )
            resp.raise_for_status()

    def seed(self, repo: str, tag: str, image: Image, user: tuple[str, str] | None = None) -> str:
        """Upload ``image`` as ``repo:tag``; return ``<host>/<repo>:<tag>``."""
        kinds = mt.INDEXES | mt.MANIFESTS
        for blob in image.blobs:
            if blob.media_type not in kinds:
                self.put_blob(repo, blob, user)
        for blob in image.manifests[:-1]:
            self.put_manifest(repo, blob.digest, blob, user)
        self.put_manifest(repo, tag, image.root, user)
        return f"{self.host}/{repo}:{tag}"


@contextlib.contextmanager
def seeded_registry(base: Path, images: Mapping[str, Image]) -> Iterator[Registry]:
    """A running :class:`Registry` under ``base`` holding ``images``, then stopped.

    ``images`` maps ``"<repository>:<tag>"`` to the image pushed there. Skips
    (fails under ``CI=true``) without ``docker-registry``, as :func:`require_registry`.
    """
    require_registry()
    with Registry(base).running() as reg:
        for name, image in images.items():
            repository, tag = name.split(":")
            reg.seed(repository, tag, image)
        yield reg


# -- a scripted raw HTTP server ---------------------------------------------------------------

#: What :class:`Scripted` sends for one request: bytes, in order; an ``Event``
#: makes it wait for the event (at most 30 s) before going on.
Answer = list[bytes | threading.Event]


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


class Scripted:
    """A raw HTTP/1.1 server on 127.0.0.1: the n-th request (from 0) gets ``script(n, head)``.

    The request's body (as its ``Content-Length`` says) is read before the
    script runs; ``requests`` holds each ``(head, body)``. The connection is
    then closed, or with ``keep_alive`` serves the next request.
    """

    def __init__(self, script: Callable[[int, bytes], Answer], *, keep_alive: bool = False) -> None:
        self.script = script
        self.keep_alive = keep_alive
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self.origin = f"http://{self.host}"
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def heads(self) -> list[bytes]:
        """The head of each request so far (request line and headers, with the blank line)."""
        return [head for head, _ in self.requests]

    @property
    def bodies(self) -> list[bytes]:
        """The body of each request so far."""
        return [body for _, body in self.requests]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        self.connections += 1
        with conn, contextlib.suppress(OSError):
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                end = buf.index(b"\r\n\r\n") + 4
                head, buf = buf[:end], buf[end:]
                length = _content_length(head)
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                n = len(self.requests)
                self.requests.append((head, buf[:length]))
                buf = buf[length:]
                for part in self.script(n, head):
                    if isinstance(part, threading.Event):
                        part.wait(30)
                    else:
                        conn.sendall(part)
                if not self.keep_alive:
                    return

    def close(self) -> None:
        self._sock.close()


# -- a misbehaving server -------------------------------------------------------------------


class FaultyBlobServer:
    """A tiny HTTP registry that serves fixed manifests and blobs, with faults.

    ``fault(path, attempt)`` returns ``None`` (serve normally), ``"drop"``
    (send half the body, then close), ``"stall"`` (send half, then hang) or
    ``"corrupt"`` (flip a byte). ``Range`` requests are honoured. ``hits``
    counts requests per path; ``requests`` lists ``<method> <path?query>``.
    """

    def __init__(
        self,
        content: Mapping[str, Blob],
        tags: Mapping[str, Blob],
        fault: Callable[[str, int], str | None] | None = None,
    ) -> None:
        self.content = dict(content)
        self.tags = dict(tags)
        self.fault = fault or (lambda _p, _n: None)
        self.hits: dict[str, int] = {}
        self.ranges: list[str] = []
        self.requests: list[str] = []
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._stop = threading.Event()

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> FaultyBlobServer:
        """Serve in a thread."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _find(self) -> Blob | None:
                """The blob or manifest asked for; else ``None``, having answered 404."""
                outer.requests.append(f"{self.command} {self.path}")
                path = urlsplit(self.path).path
                last = path.rsplit("/", 1)[-1]
                if "/manifests/" in path and last in outer.tags:
                    return outer.tags[last]
                blob = outer.content.get(last)
                if blob is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                return blob

            def do_HEAD(self) -> None:
                blob = self._find()
                if blob is None:
                    return
                self.send_response(200)
                self.send_header("Content-Type", blob.media_type)
                self.send_header("Docker-Content-Digest", blob.digest)
                self.send_header("Content-Length", str(len(blob.data)))
                self.end_headers()

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                n = outer.hits[path] = outer.hits.get(path, 0) + 1
                blob = self._find()
                if blob is None:
                    return
                data = blob.data
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    outer.ranges.append(rng)
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                fault = outer.fault(path, n)
                if fault == "corrupt":
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                body = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Type", blob.media_type)
                self.send_header("Docker-Content-Digest", blob.digest)
                self.send_header("Content-Length", str(len(body)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if fault in ("drop", "stall"):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    if fault == "stall":
                        outer._stop.wait(30)
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving (stalled handlers are released)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
