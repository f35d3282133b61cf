"""Namespace and lease context helpers."""

from __future__ import annotations

import asyncio

import pytest

from pycontainerd.core import namespaces
from pycontainerd.core.errdefs import FailedPreconditionError, InvalidArgumentError


def test_constants() -> None:
    assert namespaces.DEFAULT_NAMESPACE == "default"
    assert namespaces.GRPC_HEADER == "containerd-namespace"
    assert namespaces.TTRPC_HEADER == "containerd-namespace-ttrpc"
    assert namespaces.LEASE_HEADER == "containerd-lease"


def test_unset_by_default() -> None:
    assert namespaces.namespace() is None
    with pytest.raises(FailedPreconditionError) as excinfo:
        namespaces.namespace_required()
    assert str(excinfo.value) == "namespace is required: failed precondition"


def test_set_and_restored() -> None:
    with namespaces.with_namespace("outer"):
        assert namespaces.namespace_required() == "outer"
        with namespaces.with_namespace("inner"):
            assert namespaces.namespace() == "inner"
        assert namespaces.namespace() == "outer"
    assert namespaces.namespace() is None


def test_empty_clears() -> None:
    with namespaces.with_namespace("a"), namespaces.with_namespace(""):
        assert namespaces.namespace() is None
        with pytest.raises(FailedPreconditionError):
            namespaces.namespace_required()


def test_invalid_namespace_prefixed() -> None:
    with namespaces.with_namespace("bad ns"), pytest.raises(InvalidArgumentError) as excinfo:
        namespaces.namespace_required()
    assert str(excinfo.value) == (
        'namespace validation: identifier "bad ns" must match '
        "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument"
    )


async def test_tasks_see_their_own_namespace() -> None:
    async def worker(ns: str) -> str | None:
        with namespaces.with_namespace(ns):
            await asyncio.sleep(0)
            return namespaces.namespace()

    got = await asyncio.gather(worker("a"), worker("b"), worker("c"))
    assert list(got) == ["a", "b", "c"]
    assert namespaces.namespace() is None


def test_lease() -> None:
    assert namespaces.lease() is None
    with namespaces.with_lease("l1"):
        assert namespaces.lease() == "l1"
        with namespaces.with_lease(None):
            assert namespaces.lease() is None
        assert namespaces.lease() == "l1"
    assert namespaces.lease() is None
