"""The resolver and fetcher against a real docker-registry (plain, basic auth, TLS, tokens)
and against a misbehaving server."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from pycontainerd.core.errdefs import (
    DataLossError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)
from pycontainerd.core.types import Descriptor
from pycontainerd.remotes import _direct, reference
from pycontainerd.remotes import mediatypes as mt
from pycontainerd.remotes.auth import parse_challenges
from pycontainerd.remotes.hosts import HostsConfig, TLSOptions
from pycontainerd.remotes.resolver import CHUNK, Resolver
from pycontainerd.remotes.testing import (
    Answer,
    Blob,
    FaultyBlobServer,
    Registry,
    Scripted,
    TokenServer,
    build_image,
    build_index,
    make_ca,
    require_registry,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


IMAGE = build_image(
    [{"bin/hello": b"hello\n"}, {"etc/motd": b"hi\n" * 1000}, {"etc/big": os.urandom(3 << 20)}]
)
BIG = IMAGE.blobs[2]


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    require_registry()
    with Registry(tmp_path_factory.mktemp("reg")).running() as reg:
        reg.seed("test/multi", "v1", IMAGE)
        yield reg


def plain_resolver(**kw: object) -> Resolver:
    return Resolver(HostsConfig(default_scheme="http"), **kw)  # type: ignore[arg-type]


def desc_of(blob: Blob) -> Descriptor:
    return Descriptor(media_type=blob.media_type, digest=blob.digest, size=len(blob.data))


# -- references and challenges --------------------------------------------------------------------


def test_reference_parse() -> None:
    r = reference.parse("127.0.0.1:5000/a/b:v1")
    assert (r.host, r.repository, r.tag, r.hostname) == ("127.0.0.1:5000", "a/b", "v1", "127.0.0.1")
    assert reference.parse("example.test/x").tag == "latest"
    d = "sha256:" + "a" * 64
    assert reference.parse(f"example.test/x@{d}").object == d


@pytest.mark.parametrize("bad", ["busybox", "example.test/UPPER", "example.test/x@sha256:zz", ""])
def test_reference_rejects(bad: str) -> None:
    with pytest.raises(InvalidArgumentError):
        reference.parse(bad)


def test_parse_challenges() -> None:
    [c] = parse_challenges(
        ['Bearer realm="https://a/token",service="reg",scope="repository:x:pull"']
    )
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://a/token", "service": "reg", "scope": "repository:x:pull"}
    got = parse_challenges(['Basic realm="r", Bearer realm="t"'])
    assert [x.scheme for x in got] == ["basic", "bearer"]


# -- plain registry -------------------------------------------------------------------------------


async def test_resolve_and_fetch(plain: Registry) -> None:
    async with plain_resolver() as resolver:
        name, desc = await resolver.resolve(f"{plain.host}/test/multi:v1")
        assert name == f"{plain.host}/test/multi:v1"
        assert desc == desc_of(IMAGE.root)
        fetcher = resolver.fetcher(name)
        manifest = json.loads(await fetcher.fetch_bytes(desc))
        layer = IMAGE.blobs[1]
        assert manifest["layers"][1]["digest"] == layer.digest
        assert await fetcher.fetch_bytes(desc_of(layer)) == layer.data
        # by digest, too
        _, by_digest = await resolver.resolve(f"{plain.host}/test/multi@{IMAGE.root.digest}")
        assert by_digest.digest == IMAGE.root.digest


async def test_resolve_missing_tag_is_not_found(plain: Registry) -> None:
    async with plain_resolver() as resolver:
        with pytest.raises(NotFoundError, match="not found"):
            await resolver.resolve(f"{plain.host}/test/multi:nope")
        fetcher = resolver.fetcher(f"{plain.host}/test/multi:v1")
        missing = Descriptor(media_type=mt.OCI_LAYER_GZIP, digest="sha256:" + "0" * 64, size=3)
        with pytest.raises(NotFoundError):
            await fetcher.fetch_bytes(missing)


async def test_localhost_https_falls_back_to_http(plain: Registry) -> None:
    # no --plain-http: a loopback registry that only speaks HTTP is still reached
    async with Resolver() as resolver:
        _, desc = await resolver.resolve(f"{plain.host}/test/multi:v1")
        assert desc.digest == IMAGE.root.digest


async def test_index_resolves(plain: Registry) -> None:
    index = build_index(
        {
            "linux/amd64": build_image([{"a": b"amd"}]),
            "linux/arm64/v8": build_image([{"a": b"arm"}], architecture="arm64", variant="v8"),
        }
    )
    plain.seed("test/index", "v1", index)
    async with plain_resolver() as resolver:
        _, desc = await resolver.resolve(f"{plain.host}/test/index:v1")
        assert desc.media_type == mt.OCI_INDEX
        assert desc.digest == index.root.digest


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        # docker-registry refuses such manifests, so a tiny server of our own serves them
        (
            Blob("application/vnd.example.thing.v1+json", b'{"schemaVersion": 2}'),
            (UnimplementedError, "unsupported media type"),
        ),
        (Blob(mt.OCI_MANIFEST, b" " * ((4 << 20) + 1)), (OutOfRangeError, "exceeds the limit")),
    ],
    ids=["unknown-root-media-type", "oversized-manifest-from-registry"],
)
async def test_resolve_refuses_the_root(root: Blob, expected: tuple[type[Exception], str]) -> None:
    server = FaultyBlobServer({root.digest: root}, {"v1": root}).start()
    try:
        async with plain_resolver() as resolver:
            with pytest.raises(expected[0], match=expected[1]):
                await resolver.resolve(f"{server.host}/test/odd:v1")
    finally:
        server.stop()


async def test_oversized_manifest_is_refused(plain: Registry) -> None:
    big = Descriptor(media_type=mt.OCI_MANIFEST, digest="sha256:" + "1" * 64, size=5 << 20)
    async with plain_resolver() as resolver:
        fetcher = resolver.fetcher(f"{plain.host}/test/multi:v1")
        with pytest.raises(OutOfRangeError, match="exceeds the limit"):
            await fetcher.fetch_bytes(big)


# -- a misbehaving server -------------------------------------------------------------------------


LAYER = Blob(mt.OCI_LAYER_GZIP, os.urandom(300_000))


def faulty(kind: str, times: int) -> FaultyBlobServer:
    def fault(path: str, n: int) -> str | None:
        return kind if "/blobs/" in path and n <= times else None

    return FaultyBlobServer({LAYER.digest: LAYER}, {}, fault).start()


@pytest.mark.parametrize("kind", ["drop", "stall"])
async def test_fetch_resumes_after_break(kind: str) -> None:
    server = faulty(kind, 1)
    try:
        async with plain_resolver(read_timeout=0.5, backoff=0.01) as resolver:
            data = await resolver.fetcher(f"{server.host}/x/y:v1").fetch_bytes(desc_of(LAYER))
        assert data == LAYER.data
        assert server.ranges
        assert server.ranges[0].startswith("bytes=")
        assert server.ranges[0] != "bytes=0-"
    finally:
        server.stop()


WHOLE = len(LAYER.data)


@pytest.mark.parametrize(
    ("fault", "size", "options", "expected"),
    [
        (
            ("drop", 100),
            WHOLE,
            {"retries": 2, "backoff": 0.01},
            (UnavailableError, "after 3 attempts"),
        ),
        (("corrupt", 100), WHOLE, {}, (DataLossError, "digest mismatch")),
        # the server sends more than the descriptor says
        (("none", 0), 1000, {}, (DataLossError, "more than")),
    ],
    ids=["gives-up-cleanly", "detects-digest-mismatch", "detects-oversize-blob"],
)
async def test_fetch_fails_cleanly(
    fault: tuple[str, int],
    size: int,
    options: dict[str, Any],
    expected: tuple[type[Exception], str],
) -> None:
    server = faulty(*fault)
    desc = Descriptor(media_type=LAYER.media_type, digest=LAYER.digest, size=size)
    try:
        async with plain_resolver(**options) as resolver:
            with pytest.raises(expected[0], match=expected[1]):
                await resolver.fetcher(f"{server.host}/x/y:v1").fetch_bytes(desc)
    finally:
        server.stop()


# -- basic auth -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    require_registry()
    reg = Registry(tmp_path_factory.mktemp("basic"), htpasswd={"alice": "s3cret"})
    with reg.running():
        reg.seed("test/private", "v1", IMAGE, user=("alice", "s3cret"))
        yield reg


async def test_basic_auth(basic: Registry) -> None:
    ref = f"{basic.host}/test/private:v1"
    async with plain_resolver(credentials=lambda _h: ("alice", "s3cret")) as resolver:
        _, desc = await resolver.resolve(ref)
        data = await resolver.fetcher(ref).fetch_bytes(desc)
        assert data == IMAGE.root.data
    async with plain_resolver() as resolver:
        with pytest.raises(UnauthenticatedError, match="no credentials"):
            await resolver.resolve(ref)
    async with plain_resolver(credentials=lambda _h: ("alice", "wrong")) as resolver:
        with pytest.raises(UnauthenticatedError, match="authorization failed"):
            await resolver.resolve(ref)


# -- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    require_registry()
    base = tmp_path_factory.mktemp("tls")
    ca = make_ca(base / "ca")
    reg = Registry(base, tls=ca.issue(base, "server"))
    reg.tls_ca = ca.cert
    with reg.running():
        reg.seed("test/secure", "v1", IMAGE)
        yield reg


async def test_tls_with_ca(tls: Registry) -> None:
    ref = f"{tls.host}/test/secure:v1"
    assert tls.tls_ca is not None
    conf = HostsConfig(default_tls=TLSOptions(ca_files=(str(tls.tls_ca),)))
    async with Resolver(conf) as resolver:
        _, desc = await resolver.resolve(ref)
        assert desc.digest == IMAGE.root.digest
    async with Resolver(HostsConfig(default_tls=TLSOptions(skip_verify=True))) as resolver:
        await resolver.resolve(ref)


async def test_tls_unknown_ca_fails(tls: Registry) -> None:
    ref = f"{tls.host}/test/secure:v1"
    async with Resolver(HostsConfig(default_tls=TLSOptions(skip_verify=False))) as resolver:
        with pytest.raises(UnavailableError, match="CERTIFICATE_VERIFY_FAILED") as info:
            await resolver.resolve(ref)
    # Go's %q quoting, as containerd's resolver writes it
    assert str(info.value).startswith(f'failed to resolve reference "{ref}": ')


# -- Bearer tokens --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    require_registry()
    base = tmp_path_factory.mktemp("tok")
    ca = make_ca(base / "ca")
    server = TokenServer(ca, users={"bob": "pw"}, anonymous=True).start()
    reg = Registry(base, token=server)
    try:
        with reg.running():
            reg.seed("test/tok", "v1", IMAGE, user=("bob", "pw"))
            yield reg
    finally:
        server.stop()


async def test_bearer_token_anonymous_and_with_credentials(token_registry: Registry) -> None:
    ref = f"{token_registry.host}/test/tok:v1"
    server = token_registry.token
    assert server is not None
    for creds in (None, ("bob", "pw")):
        server.requests.clear()
        async with plain_resolver(credentials=(lambda _h, c=creds: c)) as resolver:
            _, desc = await resolver.resolve(ref)
            fetcher = resolver.fetcher(ref)
            await fetcher.fetch_bytes(desc)
            await fetcher.fetch_bytes(desc_of(IMAGE.blobs[0]))
        # one token for the repository's pull scope, reused for every request
        assert server.requests == [(creds[0] if creds else "", ["repository:test/tok:pull"])]
    async with plain_resolver(credentials=lambda _h: ("bob", "bad")) as resolver:
        with pytest.raises(UnauthenticatedError, match="refused user 'bob'"):
            await resolver.resolve(ref)


# -- fetch_into: blob bodies read by a thread (remotes._direct) ----------------------------------
# Against the registries above, the misbehaving blob server, and a scripted raw
# HTTP server for what a registry never sends but a server may: other framings,
# lies about the length, broken heads, redirects, stalls.


class Sink:
    """Collects what ``fetch_into`` hands over, and in which threads."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.threads: set[str] = set()
        self.progress: list[int] = []

    def __call__(self, piece: bytes | memoryview) -> None:
        self.threads.add(threading.current_thread().name)
        self.data += piece


async def fetch_into(resolver: Resolver, ref: str, desc: Descriptor) -> Sink:
    sink = Sink()
    await resolver.fetcher(ref).fetch_into(desc, sink, progress=sink.progress.append)
    return sink


def no_download_threads() -> bool:
    return _direct.busy() == 0


async def test_fetch_into_reads_in_a_thread(plain: Registry) -> None:
    async with plain_resolver() as resolver:
        sink = await fetch_into(resolver, f"{plain.host}/test/multi:v1", desc_of(BIG))
    assert bytes(sink.data) == BIG.data
    assert sink.threads == {"blob-download"}
    # each report at least a CHUNK past the one before (pieces are at most a
    # BUFFER, so at most CHUNK + BUFFER past it), and the end
    assert sink.progress[-1] == len(BIG.data)
    steps = [b - a for a, b in zip([0, *sink.progress], sink.progress, strict=False)]
    assert all(CHUNK <= s <= CHUNK + _direct.BUFFER for s in steps[:-1])
    assert 0 < steps[-1] <= CHUNK + _direct.BUFFER
    assert len(BIG.data) > CHUNK + _direct.BUFFER  # so some report before the end
    assert len(sink.progress) >= 2
    assert no_download_threads()


async def test_fetch_into_http_dump(plain: Registry) -> None:
    dumps: list[bytes] = []

    async def dump(data: bytes) -> None:
        dumps.append(data)

    async with plain_resolver(http_dump=dump) as resolver:
        sink = await fetch_into(resolver, f"{plain.host}/test/multi:v1", desc_of(BIG))
    assert bytes(sink.data) == BIG.data
    assert dumps[-2].startswith(f"GET /v2/test/multi/blobs/{BIG.digest} HTTP/1.1\r\n".encode())
    assert dumps[-1].startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"Content-Length: {len(BIG.data)}\r\n".encode() in dumps[-1]


async def test_fetch_into_falls_back_to_http_on_localhost(plain: Registry) -> None:
    # no --plain-http and nothing resolved first: the blob request itself finds out
    async with Resolver() as resolver:
        sink = await fetch_into(resolver, f"{plain.host}/test/multi:v1", desc_of(BIG))
    assert bytes(sink.data) == BIG.data
    assert sink.threads == {"blob-download"}


async def test_fetch_into_from_an_offset() -> None:
    # what a pull does for an ingest it resumes
    server = FaultyBlobServer({LAYER.digest: LAYER}, {}).start()
    try:
        async with plain_resolver() as resolver:
            sink = Sink()
            fetcher = resolver.fetcher(f"{server.host}/x/y:v1")
            await fetcher.fetch_into(desc_of(LAYER), sink, offset=100_000)
        assert server.ranges == ["bytes=100000-"]
        assert bytes(sink.data) == LAYER.data[100_000:]
    finally:
        server.stop()


async def test_fetch_into_basic_auth(basic: Registry) -> None:
    ref = f"{basic.host}/test/private:v1"
    async with plain_resolver(credentials=lambda _h: ("alice", "s3cret")) as resolver:
        sink = await fetch_into(resolver, ref, desc_of(BIG))
        assert bytes(sink.data) == BIG.data
    async with plain_resolver(credentials=lambda _h: ("alice", "wrong")) as resolver:
        with pytest.raises(UnauthenticatedError, match="authorization failed"):
            await fetch_into(resolver, ref, desc_of(BIG))


async def test_fetch_into_bearer_token(token_registry: Registry) -> None:
    server = token_registry.token
    assert server is not None
    server.requests.clear()
    async with plain_resolver(credentials=lambda _h: ("bob", "pw")) as resolver:
        ref = f"{token_registry.host}/test/tok:v1"
        for blob in (BIG, IMAGE.blobs[0]):
            sink = await fetch_into(resolver, ref, desc_of(blob))
            assert bytes(sink.data) == blob.data
    assert server.requests == [("bob", ["repository:test/tok:pull"])]


async def test_fetch_into_tls(tls: Registry) -> None:
    ref = f"{tls.host}/test/secure:v1"
    assert tls.tls_ca is not None
    conf = HostsConfig(default_tls=TLSOptions(ca_files=(str(tls.tls_ca),)))
    async with Resolver(conf) as resolver:
        sink = await fetch_into(resolver, ref, desc_of(BIG))
    assert bytes(sink.data) == BIG.data
    assert sink.threads == {"blob-download"}
    async with Resolver(HostsConfig(default_tls=TLSOptions(skip_verify=True))) as resolver:
        sink = await fetch_into(resolver, ref, desc_of(BIG))
    assert bytes(sink.data) == BIG.data
    async with Resolver(HostsConfig(default_tls=TLSOptions(skip_verify=False))) as resolver:
        with pytest.raises(UnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch_into(resolver, ref, desc_of(BIG))


@pytest.mark.parametrize("kind", ["drop", "stall"])
async def test_fetch_into_resumes_after_break(kind: str) -> None:
    server = faulty(kind, 1)
    try:
        async with plain_resolver(read_timeout=0.5, backoff=0.01) as resolver:
            sink = await fetch_into(resolver, f"{server.host}/x/y:v1", desc_of(LAYER))
        assert bytes(sink.data) == LAYER.data
        assert len(server.ranges) == 1
        assert server.ranges[0] != "bytes=0-"
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("fault", "size", "expected"),
    [
        (("drop", 100), len(LAYER.data), (UnavailableError, "after 3 attempts")),
        (("none", 0), 1000, (DataLossError, "more than")),
    ],
    ids=["gives-up-cleanly", "detects-oversize-blob"],
)
async def test_fetch_into_fails_cleanly(
    fault: tuple[str, int], size: int, expected: tuple[type[Exception], str]
) -> None:
    server = faulty(*fault)
    desc = Descriptor(media_type=LAYER.media_type, digest=LAYER.digest, size=size)
    try:
        async with plain_resolver(retries=2, backoff=0.01) as resolver:
            sink = Sink()
            with pytest.raises(expected[0], match=expected[1]):
                await resolver.fetcher(f"{server.host}/x/y:v1").fetch_into(desc, sink)
        assert len(sink.data) <= size
        assert no_download_threads()
    finally:
        server.stop()


# -- a scripted raw HTTP server (pycontainerd.remotes.testing.Scripted) ---------------------------


def ok_head(length: int | None, *extra: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/octet-stream", *extra]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(data: bytes) -> bytes:
    out = b""
    for i in range(0, len(data), 70_000):
        piece = data[i : i + 70_000]
        out += f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\nX-Trailer: yes\r\n\r\n"


def byte_by_byte(data: bytes) -> Answer:
    return [data[i : i + 1] for i in range(len(data))]


DATA = LAYER.data
HALF = len(DATA) // 2


def rest_from(head: bytes) -> Answer:
    """A 206 with what the request's Range asks for (a 200 without one)."""
    if b"\r\nRange: bytes=" not in head:
        return [ok_head(len(DATA)), DATA]
    start = int(head.split(b"\r\nRange: bytes=", 1)[1].split(b"-", 1)[0])
    rng = f"Content-Range: bytes {start}-{len(DATA) - 1}/{len(DATA)}"
    return [ok_head(len(DATA) - start, rng, status="206 Partial Content"), DATA[start:]]


SCRIPTS: dict[str, Callable[[int, bytes], Answer]] = {
    "chunked": lambda _n, _h: [ok_head(None, "Transfer-Encoding: chunked"), chunked(DATA)],
    "until-close": lambda _n, _h: [ok_head(None), DATA],
    "head-byte-by-byte": lambda _n, _h: [*byte_by_byte(ok_head(len(DATA))), DATA],
    "interim-100": lambda _n, _h: [b"HTTP/1.1 100 Continue\r\n\r\n", ok_head(len(DATA)), DATA],
    # says more than it sends, then closes: resumed from where it stopped
    "length-too-long": lambda n, h: (
        [ok_head(len(DATA) + 10), DATA[:HALF]] if n == 0 else rest_from(h)
    ),
    # says less than the blob: the first answer is short, the rest is asked for
    "length-too-short": lambda n, h: [ok_head(HALF), DATA] if n == 0 else rest_from(h),
    # a broken chunk size: retried
    "bad-chunk": lambda n, h: (
        [ok_head(None, "Transfer-Encoding: chunked"), b"zz\r\n"] if n == 0 else rest_from(h)
    ),
    "bad-status-line": lambda n, h: [b"HTTX 200\r\n\r\n"] if n == 0 else rest_from(h),
    "server-error-first": lambda n, _h: (
        [ok_head(0, status="503 Service Unavailable")] if n == 0 else [ok_head(len(DATA)), DATA]
    ),
}


@pytest.mark.parametrize("name", list(SCRIPTS))
async def test_fetch_into_framings_and_lies(name: str) -> None:
    server = Scripted(SCRIPTS[name])
    try:
        async with plain_resolver(backoff=0.01, read_timeout=5) as resolver:
            sink = await fetch_into(resolver, f"{server.host}/x/y:v1", desc_of(LAYER))
        assert bytes(sink.data) == DATA
        assert sink.progress[-1] == len(DATA)
    finally:
        server.close()


async def test_fetch_into_extra_bytes_are_refused() -> None:
    server = Scripted(lambda _n, _h: [ok_head(len(DATA) + 5), DATA + b"extra"])
    try:
        async with plain_resolver() as resolver:
            with pytest.raises(DataLossError, match="more than"):
                await fetch_into(resolver, f"{server.host}/x/y:v1", desc_of(LAYER))
    finally:
        server.close()


async def test_fetch_into_through_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # the proxy (a scripted server) answers for the registry; the body comes through httpx
    proxy = Scripted(lambda _n, _h: [ok_head(len(DATA)), DATA])
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://{proxy.host}")
    try:
        async with plain_resolver() as resolver:
            sink = await fetch_into(resolver, "registry.invalid/x/y:v1", desc_of(LAYER))
        assert bytes(sink.data) == DATA
        assert "blob-download" not in sink.threads
        assert proxy.heads[0].startswith(
            f"GET http://registry.invalid/v2/x/y/blobs/{LAYER.digest} HTTP/1.1".encode()
        )
    finally:
        proxy.close()


async def test_fetch_into_content_encoding_is_decoded() -> None:
    packed = gzip.compress(DATA)
    server = Scripted(lambda _n, _h: [ok_head(len(packed), "Content-Encoding: gzip"), packed])
    try:
        async with plain_resolver() as resolver:
            sink = await fetch_into(resolver, f"{server.host}/x/y:v1", desc_of(LAYER))
        assert bytes(sink.data) == DATA
        assert b"accept-encoding: identity" in server.heads[0].lower()
    finally:
        server.close()


async def test_fetch_into_follows_a_redirect_after_auth() -> None:
    store = FaultyBlobServer({LAYER.digest: LAYER}, {}).start()
    location = f"http://{store.host}/storage/blobs/{LAYER.digest}"

    def script(_n: int, head: bytes) -> Answer:
        if b"\r\nauthorization: basic " not in head.lower():
            return [ok_head(0, 'WWW-Authenticate: Basic realm="r"', status="401 Unauthorized")]
        return [ok_head(0, f"Location: {location}", status="307 Temporary Redirect")]

    server = Scripted(script)
    try:
        async with plain_resolver(credentials=lambda _h: ("u", "p")) as resolver:
            sink = await fetch_into(resolver, f"{server.host}/x/y:v1", desc_of(LAYER))
        assert bytes(sink.data) == DATA
        assert sink.threads == {"blob-download"}
        assert store.requests == [f"GET /storage/blobs/{LAYER.digest}"]
    finally:
        server.close()
        store.stop()


async def cancel_once(
    ready: asyncio.Future[None], server: Scripted, sink: Callable[[bytes | memoryview], None]
) -> None:
    """Start a ``fetch_into``, cancel it once ``ready``: it ends at once, no thread left."""
    async with plain_resolver(read_timeout=60) as resolver:
        fetcher = resolver.fetcher(f"{server.host}/x/y:v1")
        task = asyncio.create_task(fetcher.fetch_into(desc_of(LAYER), sink))
        await ready
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 5
        assert no_download_threads()


async def test_cancel_stops_the_reading_thread() -> None:
    release = threading.Event()
    server = Scripted(lambda _n, _h: [ok_head(len(DATA)), DATA[:HALF], release])
    loop = asyncio.get_running_loop()
    first: asyncio.Future[None] = loop.create_future()
    sink = Sink()

    def arrived() -> None:
        if not first.done():
            first.set_result(None)

    def sink_first(piece: bytes | memoryview) -> None:
        sink(piece)
        loop.call_soon_threadsafe(arrived)

    try:
        await cancel_once(first, server, sink_first)
        # the thread was waited for: nothing reads or calls the sink any more
        got = len(sink.data)
        assert 0 < got <= HALF
        release.set()
        assert len(sink.data) == got
    finally:
        release.set()
        server.close()


async def test_cancel_while_waiting_for_the_head() -> None:
    release = threading.Event()
    loop = asyncio.get_running_loop()
    asked: asyncio.Future[None] = loop.create_future()

    def script(_n: int, _h: bytes) -> Answer:
        loop.call_soon_threadsafe(asked.set_result, None)
        return [release]

    server = Scripted(script)
    try:
        await cancel_once(asked, server, Sink())
    finally:
        release.set()
        server.close()


@pytest.mark.parametrize("keep_alive", [True, False])
async def test_connections_are_kept_for_the_next_blob(keep_alive: bool) -> None:
    # a server that closes after each answer (without saying so) gets a new connection
    server = Scripted(lambda _n, _h: [ok_head(len(DATA)), DATA], keep_alive=keep_alive)
    try:
        async with plain_resolver() as resolver:
            for _ in range(3):
                sink = await fetch_into(resolver, f"{server.host}/x/y:v1", desc_of(LAYER))
                assert bytes(sink.data) == DATA
        assert len(server.heads) == 3
        assert server.connections == (1 if keep_alive else 3)
    finally:
        server.close()


async def test_a_connection_is_not_kept_after_connection_close_or_a_short_read() -> None:
    answers: dict[int, Answer] = {
        0: [ok_head(len(DATA), "Connection: close"), DATA],
        1: [ok_head(len(DATA)), DATA[:HALF]],  # then waits for the next request
    }
    server = Scripted(lambda n, h: answers.get(n) or rest_from(h), keep_alive=True)
    try:
        async with plain_resolver(read_timeout=0.5, backoff=0.01) as resolver:
            for _ in range(2):
                sink = await fetch_into(resolver, f"{server.host}/x/y:v1", desc_of(LAYER))
                assert bytes(sink.data) == DATA
        # one each for the first answer, the stalled one and its resumption
        assert server.connections == 3
        assert b"\r\nRange: bytes=" in server.heads[2]
    finally:
        server.close()


async def test_a_head_and_the_reads_after_it_share_one_direct_connection() -> None:
    # resolve (HEAD: a Content-Length but no body), the manifest, a layer: one connection
    root = IMAGE.root
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: {root.media_type}\r\n"
        f"Docker-Content-Digest: {root.digest}\r\nContent-Length: {len(root.data)}\r\n\r\n"
    ).encode()

    def script(n: int, request: bytes) -> Answer:
        if n == 0:
            return [head]
        data = root.data if root.digest.encode() in request.split(b"\r\n", 1)[0] else DATA
        return [ok_head(len(data)), data]

    server = Scripted(script, keep_alive=True)
    try:
        async with plain_resolver() as resolver:
            name, desc = await resolver.resolve(f"{server.host}/x/y:v1")
            assert desc == desc_of(root)
            fetcher = resolver.fetcher(name)
            assert await fetcher.fetch_bytes(desc) == root.data
            sink = await fetch_into(resolver, name, desc_of(LAYER))
            assert bytes(sink.data) == DATA
        assert [h.split(b" ", 1)[0] for h in server.heads] == [b"HEAD", b"GET", b"GET"]
        assert server.connections == 1
    finally:
        server.close()


def test_a_resolver_that_only_reads_never_imports_httpx(plain: Registry) -> None:
    # httpx (with urllib.request), httpcore, h11 and anyio's backend cost a fresh daemon's
    # first pull tens of milliseconds; tomllib is for hosts.toml files (none here);
    # stringprep comes with the "idna" codec
    probe = f"""
import asyncio, json, sys
from pycontainerd.remotes.hosts import HostsConfig
from pycontainerd.remotes.resolver import CHUNK, Resolver

async def main():
    async with Resolver(HostsConfig(default_scheme="http")) as resolver:
        name, desc = await resolver.resolve("{plain.host}/test/multi:v1")
        await resolver.fetcher(name).fetch_bytes(desc)

asyncio.run(main())
unused = ("httpx", "httpcore", "h11", "anyio", "tomllib", "stringprep", "urllib.request")
print(json.dumps(sorted(m for m in sys.modules if m in unused or m.split(".")[0] in unused)))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []
