"""Image verifiers (``io.containerd.image-verifier.v1.bindir``): real executables judging pulls."""

from __future__ import annotations

import json
import stat
from typing import TYPE_CHECKING

import pytest

from pycontainerd.client.client import Client
from pycontainerd.client.transfer import ImageStore, OCIRegistry
from pycontainerd.core.errdefs import NotFoundError, UnknownError
from pycontainerd.core.testing import wait_for
from pycontainerd.core.types import Descriptor
from pycontainerd.remotes.testing import Registry, build_image, seeded_registry
from pycontainerd.transfer.verifier import BinDirVerifier, VerifierError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from pycontainerd.daemon.testing import Daemon

IMAGE = build_image([{"etc/verified": b"yes\n"}])
DESC = Descriptor(
    media_type="application/vnd.oci.image.manifest.v1+json",
    digest="sha256:" + "ab" * 32,
    size=1234,
    annotations={"org.example": "v"},
)


def verifier(directory: Path, name: str, body: str) -> Path:
    """An executable shell script ``name`` in ``directory``."""
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def recording(directory: Path, name: str, status: int, say: str) -> Path:
    """A verifier that records its arguments and stdin in ``<directory>-<name>.args|.stdin``."""
    record = directory.parent / f"{directory.name}-{name}"
    body = f'printf "%s\\n" "$@" > {record}.args\ncat > {record}.stdin\n'
    return verifier(directory, name, f"{body}echo '{say}'\nexit {status}\n")


def record(directory: Path, name: str, kind: str) -> Path:
    return directory.parent / f"{directory.name}-{name}.{kind}"


def gone_or_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_missing_and_empty_directories_allow_every_pull(tmp_path: Path) -> None:
    missing = await BinDirVerifier(str(tmp_path / "none")).verify_image("r", DESC)
    assert missing.ok
    assert missing.reason == f"image verifier directory {tmp_path / 'none'} does not exist"
    (tmp_path / "empty").mkdir()
    empty = await BinDirVerifier(str(tmp_path / "empty")).verify_image("r", DESC)
    assert empty.ok
    assert empty.reason == f"no image verifier binaries found in {tmp_path / 'empty'}"


async def test_every_verifier_sees_the_name_digest_and_descriptor(tmp_path: Path) -> None:
    bins = tmp_path / "bin"
    recording(bins, "a-first", 0, "looks fine")
    recording(bins, "b-second", 0, "signed")
    judgement = await BinDirVerifier(str(bins)).verify_image("example.test/app:v1", DESC)
    assert judgement.ok
    assert judgement.reason == "a-first => looks fine, b-second => signed"
    for name in ("a-first", "b-second"):
        args = record(bins, name, "args").read_text().splitlines()
        assert args == [
            "-name",
            "example.test/app:v1",
            "-digest",
            DESC.digest,
            "-stdin-media-type",
            "application/vnd.oci.descriptor.v1+json",
        ]
        sent = json.loads(record(bins, name, "stdin").read_text())
        assert sent == {
            "mediaType": DESC.media_type,
            "digest": DESC.digest,
            "size": 1234,
            "annotations": {"org.example": "v"},
        }


async def test_one_refusal_blocks_and_names_the_verifier(tmp_path: Path) -> None:
    bins = tmp_path / "bin"
    recording(bins, "a-allows", 0, "ok")
    recording(bins, "b-refuses", 3, "unsigned image")
    judgement = await BinDirVerifier(str(bins)).verify_image("r", DESC)
    assert not judgement.ok
    assert judgement.reason == "verifier b-refuses rejected image (exit code 3): unsigned image"


async def test_only_the_first_max_verifiers_run(tmp_path: Path) -> None:
    bins = tmp_path / "bin"
    recording(bins, "a-allows", 0, "ok")
    recording(bins, "b-refuses", 1, "no")
    assert (await BinDirVerifier(str(bins), max_verifiers=1).verify_image("r", DESC)).ok
    assert not record(bins, "b-refuses", "args").exists()
    assert not (await BinDirVerifier(str(bins), max_verifiers=-1).verify_image("r", DESC)).ok


async def test_long_output_is_cut_at_32_kib(tmp_path: Path) -> None:
    verifier(tmp_path, "chatty", "head -c 40000 /dev/zero | tr '\\0' x\nexit 0\n")
    judgement = await BinDirVerifier(str(tmp_path)).verify_image("r", DESC)
    assert judgement.reason == "chatty => " + "x" * 32768 + "(stdout truncated)"


async def test_a_verifier_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    verifier(tmp_path / "bin", "slow", f"sleep 300 &\necho $! > {pidfile}\nwait\n")
    with pytest.raises(
        VerifierError,
        match=r"^failed to call verifier slow \(runtime .*s\): .*signal: killed$",
    ):
        await BinDirVerifier(str(tmp_path / "bin"), timeout=0.5).verify_image("r", DESC)
    # the background sleep was in the verifier's process group: killed too
    child = int(pidfile.read_text())
    wait_for(lambda: gone_or_zombie(child), what=f"verifier's child {child} to be killed")


async def test_a_verifier_that_cannot_run_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "not-executable").write_text("#!/bin/sh\nexit 0\n")  # mode 0644
    with pytest.raises(VerifierError, match="failed to call verifier not-executable"):
        await BinDirVerifier(str(tmp_path)).verify_image("r", DESC)


# -- through the daemon's Transfer service ----------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with seeded_registry(tmp_path_factory.mktemp("reg"), {"test/verified:v1": IMAGE}) as reg:
        yield reg


@pytest.mark.system
async def test_a_blocked_pull_fetches_and_records_nothing(
    verified_daemon: Daemon, registry: Registry, bin_dir: Path, namespace: str
) -> None:
    ref = f"{registry.host}/test/verified:v1"
    gate = recording(bin_dir, "gate", 7, "not on the allow list")
    async with Client(verified_daemon.address, namespace) as client:
        plugins = await client.introspection().plugins()
        uris = {f"{p.type}.{p.id}" for p in plugins}
        assert "io.containerd.image-verifier.v1.bindir" in uris
        with pytest.raises(UnknownError) as info:
            await client.transfer(OCIRegistry(ref, default_scheme="http"), ImageStore(ref))
        assert info.value.message == (
            f"image verifier bindir blocked pull of {ref} with digest {IMAGE.root.digest} "
            "for reason: verifier gate rejected image (exit code 7): not on the allow list"
        )
        args = record(bin_dir, "gate", "args").read_text().splitlines()
        assert args[:4] == ["-name", ref, "-digest", IMAGE.root.digest]
        with pytest.raises(NotFoundError):
            await client.image_store().get(ref)
        for blob in IMAGE.blobs:  # the config and layers were never fetched
            with pytest.raises(NotFoundError):
                await client.content_store().info(blob.digest)
        assert await client.lease_manager().list() == []

        gate.write_text("#!/bin/sh\ncat > /dev/null\necho allowed\n")
        await client.transfer(OCIRegistry(ref, default_scheme="http"), ImageStore(ref))
        assert (await client.image_store().get(ref)).target.digest == IMAGE.root.digest
