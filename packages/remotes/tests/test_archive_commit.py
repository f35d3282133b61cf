"""The importer's ways to rely on a blob the store may have already (on a real local store).

``commit_holding`` commits without naming the digest on COMMIT; ``hold``
asks for a blob by opening a writer with its digest. Leases are the
metadata store's part: test_archive.py checks them on both daemons.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import pytest

from pycontainerd.content.local import LocalStore, LocalWriter
from pycontainerd.core.errdefs import DataLossError
from pycontainerd.core.types import Descriptor
from pycontainerd.remotes.archive.importer import commit_holding, hold

if TYPE_CHECKING:
    from pathlib import Path

DATA = b"index.json of an archive"
DGST = "sha256:" + hashlib.sha256(DATA).hexdigest()


async def _written(store: LocalStore, ref: str) -> LocalWriter:
    writer = await store.writer(ref)
    await writer.write(DATA)
    return writer


async def test_commits_and_takes_a_present_blob_as_done(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await commit_holding(await _written(store, "tar-index.json"), len(DATA), DGST)
    assert (await store.info(DGST)).size == len(DATA)
    # the same bytes again: AlreadyExists from the store is success, the ingest is gone
    await commit_holding(await _written(store, "again"), len(DATA), DGST)
    assert await store.list_statuses() == []


async def test_a_different_digest_is_data_loss(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(DataLossError, match=f"committed content is {DGST}, expected {wrong}"):
        await commit_holding(await _written(store, "r"), len(DATA), wrong)


async def test_hold_answers_whether_the_blob_is_there_and_leaves_no_ingest(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path)
    desc = Descriptor(digest=DGST, size=len(DATA))
    assert not await hold(store, desc)  # gone (collected since it was found): not used
    assert await store.list_statuses() == []
    await commit_holding(await _written(store, "r"), len(DATA), DGST)
    assert await hold(store, desc)
    assert await store.list_statuses() == []
