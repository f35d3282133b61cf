"""Digest parsing, validation and hashing."""

from __future__ import annotations

import hashlib

import pytest

from pycontainerd.core import digests
from pycontainerd.core.digests import Digest
from pycontainerd.core.errdefs import InvalidArgumentError

EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_parse_valid() -> None:
    d = Digest.parse(EMPTY_SHA256)
    assert d == EMPTY_SHA256
    assert isinstance(d, str)
    assert d.algorithm == "sha256"
    assert d.encoded == EMPTY_SHA256[7:]
    assert d.short() == "e3b0c44298fc"
    assert digests.parse(d) is d


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
def test_known_algorithms(algorithm: str) -> None:
    encoded = hashlib.new(algorithm, b"x").hexdigest()
    assert digests.is_valid(f"{algorithm}:{encoded}")
    assert Digest.from_parts(algorithm, encoded).encoded == encoded


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "invalid checksum digest format"),
        ("sha256", "invalid checksum digest format"),
        ("sha256:", "invalid checksum digest format"),
        (":abc", "invalid checksum digest format"),
        ("sha256:" + "0" * 63, "invalid checksum digest length"),
        ("sha256:" + "0" * 65, "invalid checksum digest length"),
        ("sha512:" + "0" * 64, "invalid checksum digest length"),
        ("sha256:" + "A" * 64, "invalid checksum digest format"),
        ("sha256:" + "g" * 64, "invalid checksum digest format"),
        ("md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported digest algorithm"),
        ("MD5:abc", "invalid checksum digest format"),
        ("sha256 :abc", "invalid checksum digest format"),
    ],
)
def test_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        Digest.parse(text)
    quoted = '"' + text + '"'
    assert str(excinfo.value) == f"invalid digest {quoted}: {reason}: invalid argument"
    assert not digests.is_valid(text)


def test_digest_of() -> None:
    assert digests.digest_of(b"") == EMPTY_SHA256
    assert digests.digest_of(b"abc", "sha512") == "sha512:" + hashlib.sha512(b"abc").hexdigest()
    assert digests.is_valid(digests.digest_of(b"abc", "sha384"))


def test_incremental_hasher() -> None:
    h = digests.hasher()
    h.update(b"hello ")
    snapshot = h.copy()
    h.update(memoryview(b"world"))
    assert h.size == 11
    assert h.digest() == digests.digest_of(b"hello world")
    assert snapshot.digest() == digests.digest_of(b"hello ")
    assert snapshot.size == 6
    assert digests.digest_of_chunks([b"hello", b" ", b"world"]) == h.digest()


def test_unknown_algorithm_for_hashing() -> None:
    with pytest.raises(InvalidArgumentError, match='digest algorithm "md5": unsupported'):
        digests.hasher("md5")
    with pytest.raises(InvalidArgumentError):
        digests.digest_of(b"", "sha1")
