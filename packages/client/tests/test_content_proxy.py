"""RemoteContentStore passes the content conformance suite against real daemons.

The suite runs through our proxy against our daemon and against containerd's
Go daemon, each test in a namespace of its own and under a lease of its own:
blobs the suite commits are referenced by nothing else, and the daemon shares
its garbage collector across the module's tests, so one test's delete would
otherwise let the next tick collect another test's blobs between its commit
and its reads (as a real client that writes content holds a lease).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import pytest

from pycontainerd.client.client import Client, generate_lease_id
from pycontainerd.content.testing import ContentStoreSuite
from pycontainerd.core.errdefs import InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from pycontainerd.client.proxies.content import RemoteContentStore
    from pycontainerd.client.testing import RealContainerd
    from pycontainerd.core.content import Store
    from pycontainerd.daemon.testing import Daemon


@contextlib.asynccontextmanager
async def leased_store(address: str, namespace: str) -> AsyncIterator[RemoteContentStore]:
    """The content store of a client whose every call carries a new lease."""
    async with Client(address, namespace) as client:
        leases = client.lease_manager()
        lease = await leases.create(generate_lease_id())
        client.lease = lease.id
        try:
            yield client.content_store()
        finally:
            await leases.delete(lease.id)


class RemoteSuite(ContentStoreSuite):
    # The suite matches the local store's wording ("invalid digest"); the
    # Content service answers in containerd's words ('"sha256:zz" failed
    # validation'), which is what a remote client sees. Check the kind.
    @pytest.mark.parametrize("bad", ["sha256:zz", "", "md5:abc", "sha256:" + "A" * 64])
    async def test_invalid_digest_is_invalid_argument(self, store: Store, bad: str) -> None:
        with pytest.raises(InvalidArgumentError):
            await store.info(bad)


class TestRemoteContentStoreOurs(RemoteSuite):
    @pytest.fixture
    async def store(self, ours: Daemon, namespace: str) -> AsyncIterator[RemoteContentStore]:
        async with leased_store(ours.address, namespace) as store:
            yield store


@pytest.mark.system
class TestRemoteContentStoreContainerd(RemoteSuite):
    @pytest.fixture
    async def store(
        self, containerd: RealContainerd, namespace: str
    ) -> AsyncIterator[RemoteContentStore]:
        async with leased_store(containerd.address, namespace) as store:
            yield store

    # Where containerd 1.6.20 itself differs from the suite (not the proxy):
    @pytest.mark.xfail(reason="containerd 1.6 resumes an ingest whatever total is given")
    async def test_resume_with_different_total_fails(self, store: Store) -> None:
        await super().test_resume_with_different_total_fails(store)

    @pytest.mark.xfail(reason="containerd 1.6 has no 'size' field in content filters")
    async def test_walk_with_filters(self, store: Store) -> None:
        await super().test_walk_with_filters(store)
