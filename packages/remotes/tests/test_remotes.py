"""The resolver and fetcher against a real docker-registry (plain, basic auth, TLS, tokens)
and against a misbehaving server."""

from __future__ import annotations

import json
import os
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
from pycontainerd.remotes import mediatypes as mt
from pycontainerd.remotes import reference
from pycontainerd.remotes.auth import parse_challenges
from pycontainerd.remotes.hosts import HostsConfig, TLSOptions
from pycontainerd.remotes.resolver import Resolver
from pycontainerd.remotes.testing import (
    Blob,
    FaultyBlobServer,
    Registry,
    TokenServer,
    build_image,
    build_index,
    make_ca,
    require_registry,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


IMAGE = build_image([{"bin/hello": b"hello\n"}, {"etc/motd": b"hi\n" * 1000}])


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
