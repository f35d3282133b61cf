"""The registry client's own HTTP: URLs, decoding, redirects, and the httpx path for uploads."""

from __future__ import annotations

import contextlib
import gzip
import os
import socket
import zlib
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.errdefs import OutOfRangeError
from pycontainerd.remotes import _client, _http
from pycontainerd.remotes.hosts import HostsConfig
from pycontainerd.remotes.resolver import Resolver
from pycontainerd.remotes.testing import FaultyBlobServer, Scripted, build_image

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path


def response(status: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@contextlib.contextmanager
def serving(answer: Callable[[bytes, bytes], bytes]) -> Iterator[Scripted]:
    """A server answering each request, on its own connection, with ``answer(head, body)``."""
    server = Scripted(lambda n, head: [answer(head, server.bodies[n])])
    try:
        yield server
    finally:
        server.close()


def client(**hooks: object) -> _client.Client:
    def no_tls() -> object:
        raise AssertionError("no TLS here")

    return _client.Client(
        no_tls,  # type: ignore[arg-type]
        connect_timeout=5,
        read_timeout=5,
        user_agent="test/1",
        **hooks,  # type: ignore[arg-type]
    )


def header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.lower() == name.lower():
            return value.strip()
    return None


# -- URLs ----------------------------------------------------------------------------------------


def test_url_parts_and_derivations() -> None:
    url = _http.URL("HTTP://[::1]:80/v2/x/blobs/uploads/?a=1")
    assert (url.scheme, url.host, url.port, url.netloc) == ("http", "::1", None, "[::1]")
    assert url.raw_path == b"/v2/x/blobs/uploads/?a=1"
    merged = url.copy_merge_params({"a": "2", "digest": "sha256:ab"})
    assert str(merged) == "http://[::1]/v2/x/blobs/uploads/?a=2&digest=sha256%3Aab"
    secure = _http.URL("http://reg:5000/v2/").copy_with(scheme="https")
    assert str(secure) == "https://reg:5000/v2/"
    assert str(secure.join("/v2/y?state=1")) == "https://reg:5000/v2/y?state=1"
    assert str(secure.join("http://other/z")) == "http://other/z"
    assert _http.URL("https://reg:443/").origin == ("https", "reg", 443)
    assert _http.URL("http://reg/a b").raw_path == b"/a%20b"
    assert _http.URL("http://reg/a?x=\u00e9 b&y=%2F").raw_path == b"/a?x=%C3%A9%20b&y=%2F"


@pytest.mark.parametrize("bad", ["http://reg:port/", "http://reg:99999/"])
def test_a_bad_port_is_an_invalid_url(bad: str) -> None:
    with pytest.raises(_http.InvalidURL, match="invalid URL"):
        _http.URL(bad)


def test_headers_match_names_in_any_case() -> None:
    headers = _http.Headers([("WWW-Authenticate", "Basic"), ("www-authenticate", "Bearer")])
    assert headers.get_list("www-authenticate") == ["Basic", "Bearer"]
    assert headers.get("WWW-AUTHENTICATE") == "Basic, Bearer"
    assert "Www-Authenticate" in headers
    assert headers.get("location") is None
    assert headers.get("location", "") == ""
    with pytest.raises(KeyError):
        headers["location"]
    assert headers.without("www-authenticate").multi_items() == []


# -- bodies --------------------------------------------------------------------------------------


class Pieces:
    def __init__(self, data: bytes, size: int = 7) -> None:
        self.pieces = [data[i : i + size] for i in range(0, len(data), size)]
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece

    async def aclose(self) -> None:
        self.closed = True


def answer_of(data: bytes, encoding: str) -> _http.Response:
    request = _http.Request("GET", _http.URL("http://reg/"), _http.Headers())
    headers = _http.Headers([("Content-Encoding", encoding)] if encoding else [])
    return _http.Response(200, request=request, headers=headers, body=Pieces(data))


def deflate_raw(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


PLAIN = b"the quick brown fox " * 200


@pytest.mark.parametrize(
    ("encoding", "packed"),
    [
        ("", PLAIN),
        ("identity", PLAIN),
        ("gzip", gzip.compress(PLAIN)),
        ("deflate", zlib.compress(PLAIN)),
        ("deflate", deflate_raw(PLAIN)),
        ("deflate, gzip", gzip.compress(zlib.compress(PLAIN))),
    ],
    ids=["none", "identity", "gzip", "deflate", "raw-deflate", "two-stages"],
)
async def test_a_body_is_decoded(encoding: str, packed: bytes) -> None:
    resp = answer_of(packed, encoding)
    assert await resp.aread() == PLAIN
    assert resp.content == PLAIN
    assert [c async for c in resp.aiter_bytes()] == [PLAIN]  # the kept content, again
    once = answer_of(packed, encoding)
    assert b"".join([c async for c in once.aiter_bytes()]) == PLAIN
    with pytest.raises(RuntimeError, match="read already"):
        await anext(aiter(once.aiter_bytes()))


@pytest.mark.parametrize(
    ("encoding", "packed", "message"),
    [
        ("br", b"\x0b\x02\x80", "unsupported Content-Encoding 'br'"),
        ("gzip", b"not gzip at all", "does not decode"),
    ],
)
async def test_a_body_that_does_not_decode_is_an_error(
    encoding: str, packed: bytes, message: str
) -> None:
    with pytest.raises(_http.DecodingError, match=message):
        await answer_of(packed, encoding).aread()


def test_a_compression_bomb_inflates_a_piece_at_a_time() -> None:
    bomb = gzip.compress(bytes(64 << 20), compresslevel=9)  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < 128 << 10
    stages = _http._decoders("gzip")
    sizes = [len(piece) for piece in _http._through(stages, bomb)]
    assert max(sizes) <= _http.PIECE
    assert sum(sizes) == 64 << 20


async def test_a_body_read_whole_has_a_limit() -> None:
    resp = answer_of(gzip.compress(bytes(64 << 20)), "gzip")
    with pytest.raises(_http.TooLarge, match="larger than 4194304 bytes"):
        await resp.aread()


async def test_a_cut_compressed_body_is_an_error_and_an_empty_one_is_not() -> None:
    with pytest.raises(_http.DecodingError, match="cut short"):
        await answer_of(gzip.compress(PLAIN)[:-20], "gzip").aread()
    request = _http.Request("HEAD", _http.URL("http://reg/"), _http.Headers())
    head = _http.Response(
        200,
        request=request,
        headers=_http.Headers([("Content-Encoding", "gzip")]),
        body=Pieces(b""),
    )
    assert await head.aread() == b""


async def test_a_manifest_bomb_is_refused_at_the_manifest_limit() -> None:
    bomb = gzip.compress(bytes(64 << 20), compresslevel=9)

    def answer(head: bytes, _body: bytes) -> bytes:
        if head.startswith(b"HEAD "):
            return response("200 OK")  # uninformative: the manifest is read instead
        media = "Content-Type: application/vnd.oci.image.manifest.v1+json"
        return response("200 OK", media, "Content-Encoding: gzip", body=bomb)

    with serving(answer) as reg:
        async with Resolver(HostsConfig(default_scheme="http")) as resolver:
            with pytest.raises(OutOfRangeError, match="exceeds the limit"):
                await resolver.resolve(f"127.0.0.1:{reg.port}/x/y:v1")


async def test_endless_chunk_trailers_are_refused() -> None:
    trailers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 100) for i in range(2000))
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    with serving(lambda _h, _b: head + b"2\r\nok\r\n0\r\n" + trailers + b"\r\n") as reg:
        http = client()
        resp = await http.send("GET", _http.URL(f"{reg.origin}/blob"))
        with pytest.raises(_http.RemoteProtocolError, match="trailers too large"):
            await resp.aread()
        await resp.aclose()
        await http.aclose()


# -- redirects -----------------------------------------------------------------------------------


async def test_a_redirect_keeps_credentials_only_on_their_server() -> None:
    with serving(lambda _h, _b: response("200 OK", body=b"blob")) as storage:

        def registry(head: bytes, _body: bytes) -> bytes:
            if head.startswith(b"GET /one "):
                return response("302 Found", "Location: /two")
            return response("307 Temporary Redirect", f"Location: {storage.origin}/blob")

        with serving(registry) as reg:
            http = client()
            resp = await http.send(
                "GET", _http.URL(f"{reg.origin}/one"), headers=[("Authorization", "Basic eA==")]
            )
            assert await resp.aread() == b"blob"
            await resp.aclose()
            await http.aclose()
            assert [h.split(b" ", 2)[1] for h, _ in reg.requests] == [b"/one", b"/two"]
            assert [header(h, b"authorization") for h, _ in reg.requests] == [b"Basic eA=="] * 2
            ((head, _),) = storage.requests
            assert header(head, b"authorization") is None
            assert header(head, b"host") == f"127.0.0.1:{storage.port}".encode()
            assert header(head, b"user-agent") == b"test/1"
            assert str(resp.url) == f"{storage.origin}/blob"


async def test_a_head_redirected_with_303_stays_a_head() -> None:
    def answer(head: bytes, _body: bytes) -> bytes:
        if b" /first " in head:
            return response("303 See Other", "Location: /second")
        return response("200 OK", "Docker-Content-Digest: sha256:ab")

    with serving(answer) as reg:
        http = client()
        resp = await http.send("HEAD", _http.URL(f"{reg.origin}/first"))
        await resp.aclose()
        await http.aclose()
        assert [h.split(b" ", 1)[0] for h, _ in reg.requests] == [b"HEAD", b"HEAD"]
        assert resp.headers.get("docker-content-digest") == "sha256:ab"


async def test_endless_redirects_end() -> None:
    with serving(lambda _h, _b: response("302 Found", "Location: /again")) as reg:
        http = client()
        with pytest.raises(_http.TooManyRedirects, match="more than 20 redirects"):
            await http.send("GET", _http.URL(f"{reg.origin}/start"))
        await http.aclose()
        assert len(reg.requests) == _client.MAX_REDIRECTS + 1


async def test_a_redirect_to_another_scheme_is_refused() -> None:
    with serving(lambda _h, _b: response("302 Found", "Location: ftp://files/blob")) as reg:
        http = client()
        with pytest.raises(_http.UnsupportedProtocol, match="not http or https"):
            await http.send("GET", _http.URL(f"{reg.origin}/blob"))
        await http.aclose()


async def test_a_mirror_is_asked_with_the_registrys_name(tmp_path: Path) -> None:
    # hosts.toml names a mirror for a registry that cannot be reached: every read goes
    # there, with ?ns=<registry> as containerd adds it
    image = build_image([{"etc/motd": b"mirrored\n"}])
    content = {b.digest: b for b in [*image.blobs, image.root]}
    mirror = FaultyBlobServer(content, {"v1": image.root}).start()
    try:
        conf = tmp_path / "registry.invalid"
        conf.mkdir()
        (conf / "hosts.toml").write_text(
            'server = "http://registry.invalid"\n'
            f'[host."http://{mirror.host}"]\n'
            'capabilities = ["pull", "resolve"]\n'
        )
        async with Resolver(HostsConfig(hosts_dir=tmp_path)) as resolver:
            name, desc = await resolver.resolve("registry.invalid/x/y:v1")
            assert desc.digest == image.root.digest
            data = await resolver.fetcher(name).fetch_bytes(desc)
        assert data == image.root.data
        assert mirror.requests == [
            "HEAD /v2/x/y/manifests/v1?ns=registry.invalid",
            f"GET /v2/x/y/manifests/{image.root.digest}?ns=registry.invalid",
        ]
    finally:
        mirror.stop()


# -- the httpx path ------------------------------------------------------------------------------


async def test_an_upload_goes_through_httpx_with_the_same_hooks() -> None:
    seen: list[tuple[str, str, bytes]] = []
    answers: list[int] = []

    async def on_request(request: _http.Request, body: bytes) -> None:
        seen.append((request.method, str(request.url), body))

    async def on_response(resp: _http.Response) -> None:
        answers.append(resp.status_code)

    with serving(lambda _h, body: response("201 Created", body=body.upper())) as reg:
        http = client(on_request=on_request, on_response=on_response)
        resp = await http.send("PUT", _http.URL(f"{reg.origin}/v2/x/manifests/v1"), content=b"doc")
        assert await resp.aread() == b"DOC"
        await resp.aclose()
        await http.aclose()
    assert seen == [("PUT", f"{reg.origin}/v2/x/manifests/v1", b"doc")]
    assert answers == [201]
    assert resp.request.headers.get("user-agent") == "test/1"


@pytest.mark.parametrize(
    ("env", "proxied"),
    [({}, False), ({"NO_PROXY": "localhost"}, False), ({"https_proxy": "http://p:3128"}, True)],
)
def test_only_a_named_proxy_sends_reads_through_httpx(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], proxied: bool
) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert client().proxied is proxied


async def test_httpx_errors_arrive_as_ours() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    http = client()
    for method, content in (("POST", b"x"), ("GET", None)):
        with pytest.raises(_http.ConnectError):
            await http.send(method, _http.URL(f"http://127.0.0.1:{port}/v2/"), content=content)
    await http.aclose()
