"""Import and export of image archives against a real containerd and our daemon."""

from __future__ import annotations

import io
import json
import tarfile
from typing import TYPE_CHECKING

import pytest

from pycontainerd.client.client import Client
from pycontainerd.client.testing import CTR, require_binary
from pycontainerd.core import content, namespaces, platforms
from pycontainerd.core.errdefs import (
    DataLossError,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
)
from pycontainerd.core.leases import Resource
from pycontainerd.remotes import mediatypes as mt
from pycontainerd.remotes.archive import (
    ExportOptions,
    ImportOptions,
    export_images,
    import_images,
    refs,
)
from pycontainerd.remotes.archive.importer import strict_matcher
from pycontainerd.remotes.testing import Image as Built
from pycontainerd.remotes.testing import build_image, build_index, layer_tar, sha256
from pycontainerd.remotes.unpack import chain_ids, unpack

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from pycontainerd.client.testing import RealContainerd
    from pycontainerd.daemon.testing import Daemon

AMD = build_image([{"bin/hello": b"#!/bin/sh\necho hi\n"}, {"etc/motd": b"welcome\n"}])
ARM = build_image([{"arch": b"arm64\n"}], architecture="arm64", variant="v8")
INDEX = build_index({"linux/amd64": AMD, "linux/arm64/v8": ARM})
NAME = "docker.io/library/test:v1"


def _add(tf: tarfile.TarFile, name: str, data: bytes = b"", **kw: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    tf.addfile(info, io.BytesIO(data) if data else None)


def oci_archive(
    image: Built,
    annotations: dict[str, str] | None = None,
    *,
    extra: Iterable[tuple[str, bytes]] = (),
) -> bytes:
    """An OCI layout tar of ``image`` with one index entry."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        _add(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        entry = (
            image.root.descriptor(annotations=annotations)
            if annotations
            else image.root.descriptor()
        )
        _add(tf, "index.json", json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode())
        for blob in [image.root, *image.blobs]:
            _add(tf, "blobs/sha256/" + blob.digest.split(":")[1], blob.data)
        for name, data in extra:
            _add(tf, name, data)
    return buf.getvalue()


LAYERS = [{"bin/tool": b"#!/bin/sh\necho tool\n"}, {"etc/conf": b"a=1\n"}]


def docker_archive(tags: list[str], *, duplicate_link: bool = True) -> tuple[bytes, list[str]]:
    """A ``docker save`` tar (Docker 1.2 layout); also the layers' diff IDs."""
    tars = [layer_tar(files) for files in LAYERS]
    diff_ids = [sha256(t) for t in tars]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/tool"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    config_name = sha256(config).split(":")[1] + ".json"
    ids = [d.split(":")[1] for d in diff_ids]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for layer_id, data in zip(ids, tars, strict=True):
            _add(tf, f"{layer_id}/", type=tarfile.DIRTYPE, mode=0o755)
            _add(tf, f"{layer_id}/VERSION", b"1.0")
            _add(tf, f"{layer_id}/json", b'{"id":"' + layer_id.encode() + b'"}')
            _add(tf, f"{layer_id}/layer.tar", data)
        layers = [f"{i}/layer.tar" for i in ids]
        if duplicate_link:
            # docker save writes a layer that appears twice once, and links the other
            _add(tf, "dup/", type=tarfile.DIRTYPE, mode=0o755)
            _add(tf, "dup/layer.tar", type=tarfile.SYMTYPE, linkname=f"../{ids[0]}/layer.tar")
        _add(tf, config_name, config)
        manifest = [{"Config": config_name, "RepoTags": tags, "Layers": layers}]
        _add(tf, "manifest.json", json.dumps(manifest).encode())
        _add(tf, "repositories", b"{}")
    return buf.getvalue(), diff_ids


@pytest.fixture(params=["containerd", "ours"])
def daemon(request: pytest.FixtureRequest) -> RealContainerd | Daemon:
    d: RealContainerd | Daemon = request.getfixturevalue(request.param)
    return d


async def _import(address: str, ns: str, data: bytes, **kw: object) -> list[str]:
    async with Client(address, ns) as client:
        found = await import_images(client, io.BytesIO(data), ImportOptions(**kw))  # type: ignore[arg-type]
        return [i.name for i in found]


async def _labels(client: Client, dgst: str) -> dict[str, str]:
    return dict((await client.content_store().info(dgst)).labels)


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "normal", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("foo/bar:v1", "docker.io/foo/bar:v1", "foo/bar:v1"),
        ("localhost:5000/x/y", "localhost:5000/x/y:latest", "localhost:5000/x/y:latest"),
        ("example.com/a@sha256:" + "a" * 64, "example.com/a@sha256:" + "a" * 64, None),
    ],
)
def test_docker_names(ref: str, normal: str, familiar: str | None) -> None:
    assert refs.normalize(ref) == normal
    assert refs.familiarize(normal) == (familiar or normal)


@pytest.mark.parametrize("bad", ["Foo/Bar", "a" * 64, "x:bad tag", "bad@sha256:12"])
def test_bad_docker_names(bad: str) -> None:
    with pytest.raises(InvalidArgumentError):
        refs.normalize(bad)


def test_oci_ref_name_and_translators() -> None:
    assert refs.oci_ref_name("docker.io/library/busybox:latest") == "latest"
    assert refs.oci_ref_name("localhost:5000/x@sha256:ab") == "@sha256:ab"
    assert refs.oci_ref_name("foo:latest") == "foo:latest"
    add, only = refs.add_ref_prefix("foo/bar"), refs.filter_ref_prefix("foo/bar")
    assert add("latest") == only("latest") == "foo/bar:latest"
    assert add("other/x:1") == "other/x:1"
    assert only("other/x:1") == ""
    assert only("foo/bar:2") == "foo/bar:2"
    assert only("foo/barista:2") == ""
    assert refs.digest_ref("foo/bar")("sha256:ab") == "foo/bar@sha256:ab"


# -- import ----------------------------------------------------------------------------------


async def test_oci_import_names_and_gc_labels(
    daemon: RealContainerd | Daemon, namespace: str
) -> None:
    data = oci_archive(INDEX, {refs.OCI_REF_NAME_ANNOTATION: "v1"})
    names = await _import(
        daemon.address,
        namespace,
        data,
        ref_translator=refs.add_ref_prefix("example.com/test"),
        digest_ref=refs.digest_ref("example.com/test"),
        index_name="example.com/whole:index",
    )
    assert names == [
        "example.com/whole:index",
        "example.com/test:v1",
        f"example.com/test@{INDEX.root.digest}",
    ]
    async with Client(daemon.address, namespace) as client:
        image = await client.image_store().get("example.com/test:v1")
        assert image.target.digest == INDEX.root.digest
        assert image.target.media_type == mt.OCI_INDEX
        amd_manifest = AMD.root.digest
        # only the host platform's manifest is followed and labelled
        assert await _labels(client, INDEX.root.digest) == {
            "containerd.io/gc.ref.content.m.0": amd_manifest
        }
        layers = [b.digest for b in AMD.blobs if mt.is_layer(b.media_type)]
        config = next(b.digest for b in AMD.blobs if mt.is_config(b.media_type))
        assert await _labels(client, amd_manifest) == {
            "containerd.io/gc.ref.content.config": config,
            "containerd.io/gc.ref.content.l.0": layers[0],
            "containerd.io/gc.ref.content.l.1": layers[1],
        }
        assert await client.content_store().list_statuses() == []


async def test_oci_import_platform_and_all_platforms(ours: Daemon, namespace: str) -> None:
    data = oci_archive(INDEX, {refs.IMAGE_NAME_ANNOTATION: NAME})
    arm = platforms.parse("linux/arm64/v8")
    await _import(ours.address, namespace, data, platform=strict_matcher(arm))
    async with Client(ours.address, namespace) as client:
        assert await _labels(client, INDEX.root.digest) == {
            "containerd.io/gc.ref.content.m.0": ARM.root.digest
        }
    await _import(ours.address, namespace, data, all_platforms=True)
    async with Client(ours.address, namespace) as client:
        labels = await _labels(client, INDEX.root.digest)
        assert sorted(labels.values()) == sorted([AMD.root.digest, ARM.root.digest])


async def test_reimport_leases_the_blobs_it_finds(
    daemon: RealContainerd | Daemon, namespace: str
) -> None:
    """A blob the namespace has already is held by the import's lease all the same.

    An earlier import of the archive left its ``index.json`` (no image names
    it); the second import writes it, hears AlreadyExists and relies on it.
    Were it not in the second import's lease, a collection between that and
    the import's read of it would remove it (NotFound: the flake this test
    pins). Here a lease of the test's keeps the first copy alive, so the
    outcome does not depend on when the collector runs.
    """
    data = oci_archive(INDEX, {refs.IMAGE_NAME_ANNOTATION: NAME})
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        index_json = sha256(tf.extractfile("index.json").read())  # type: ignore[union-attr]
    async with Client(daemon.address, namespace) as client:
        keep = await client.lease_manager().create("keep-first-import")
        with namespaces.with_lease(keep.id):
            await import_images(client, io.BytesIO(data))
        async with client.with_lease() as lease:
            await import_images(client, io.BytesIO(data))
            held = await client.lease_manager().list_resources(lease)
        await client.lease_manager().delete(keep.id)
    assert Resource(id=index_json, type="content") in held
    # every blob of the archive (the host's platform: what the import walks)
    for blob in [INDEX.root, AMD.root, *AMD.blobs]:
        assert Resource(id=blob.digest, type="content") in held


async def test_docker_save_import_and_unpack(
    daemon: RealContainerd | Daemon, namespace: str
) -> None:
    data, diff_ids = docker_archive(["foo/bar:v1", "baz"])
    names = await _import(daemon.address, namespace, data)
    assert names == ["docker.io/foo/bar:v1", "docker.io/library/baz:latest"]
    async with Client(daemon.address, namespace) as client:
        image = await client.image_store().get("docker.io/foo/bar:v1")
        target = image.target
        assert target.media_type == mt.DOCKER_MANIFEST
        assert target.annotations == {
            refs.IMAGE_NAME_ANNOTATION: "docker.io/foo/bar:v1",
            refs.OCI_REF_NAME_ANNOTATION: "v1",
        }
        doc = json.loads(await content.read_blob(client.content_store(), target.digest))
        assert doc["mediaType"] == mt.DOCKER_MANIFEST
        assert doc["config"]["mediaType"] == mt.DOCKER_CONFIG
        assert [x["mediaType"] for x in doc["layers"]] == [mt.DOCKER_LAYER] * 2
        assert [x["digest"] for x in doc["layers"]] == diff_ids
        # Under a lease, as every caller of unpack (pull, ctr): a layer's
        # committed snapshot is referenced by nothing until the config blob is
        # labelled at the end, and the import's own lease delete (or another
        # test's delete on this shared daemon) lets the next GC tick collect it.
        async with client.with_lease():
            top = await unpack(
                client.content_store(),
                client.snapshot_service("native"),
                client.diff_service(),
                target,
                snapshotter_name="native",
            )
        assert top == chain_ids(diff_ids)[-1]
        assert (await _labels(client, diff_ids[0]))[mt.UNCOMPRESSED_LABEL] == diff_ids[0]


async def test_docker_reimport_leases_the_compressed_layers_it_reuses(
    daemon: RealContainerd | Daemon, namespace: str
) -> None:
    """A layer's compressed blob found by its label is held by the import's lease.

    The first import gzips the ``docker save`` layers (``compress_layers``);
    the second finds those blobs by their ``containerd.io/uncompressed``
    label and names them in its manifest instead of the tars, so it must hold
    them until the manifest's labels do (a lease of the test's keeps the
    first import's blobs, so the outcome does not depend on the collector).
    """
    data, diff_ids = docker_archive(["foo/bar:v1"])
    async with Client(daemon.address, namespace) as client:
        store = client.content_store()
        keep = await client.lease_manager().create("keep-first-import")
        with namespaces.with_lease(keep.id):
            await import_images(client, io.BytesIO(data), ImportOptions(compress_layers=True))
        gz = {
            info.labels[mt.UNCOMPRESSED_LABEL]: info.digest
            async for info in store.walk(
                *(f'labels."{mt.UNCOMPRESSED_LABEL}"=={d}' for d in diff_ids)
            )
        }
        async with client.with_lease() as lease:
            await import_images(client, io.BytesIO(data))
            held = await client.lease_manager().list_resources(lease)
            image = await client.image_store().get("docker.io/foo/bar:v1")
        await client.lease_manager().delete(keep.id)
        doc = json.loads(await content.read_blob(store, image.target.digest))
    assert [x["digest"] for x in doc["layers"]] == [gz[d] for d in diff_ids]
    assert [x["mediaType"] for x in doc["layers"]] == [mt.DOCKER_LAYER_GZIP] * 2
    for d in diff_ids:
        assert Resource(id=gz[d], type="content") in held


async def test_docker_import_matches_go_ctr(
    containerd: RealContainerd, namespace: str, tmp_path: Path
) -> None:
    data, _ = docker_archive(["foo/bar:v1"])
    archive = tmp_path / "docker.tar"
    archive.write_bytes(data)
    go = containerd.ctr("images", "import", "--no-unpack", str(archive), namespace=namespace + "g")
    assert go.returncode == 0, go.stderr
    await _import(containerd.address, namespace, data)
    async with Client(containerd.address, namespace + "g") as client:
        theirs = await client.image_store().get("docker.io/foo/bar:v1")
    async with Client(containerd.address, namespace) as client:
        mine = await client.image_store().get("docker.io/foo/bar:v1")
    assert mine.target == theirs.target


# -- export ----------------------------------------------------------------------------------


def _blob_files(root: Path) -> set[str]:
    blobs = root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    return {p.name for p in blobs.iterdir()} if blobs.exists() else set()


async def test_export_then_import_round_trips(
    daemon: RealContainerd | Daemon, namespace: str
) -> None:
    await _import(daemon.address, namespace, oci_archive(INDEX, {refs.IMAGE_NAME_ANNOTATION: NAME}))
    out = io.BytesIO()
    async with Client(daemon.address, namespace) as client:
        await export_images(client, out, [NAME])
    data = out.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = tf.getnames()
        index_bytes = tf.extractfile("index.json").read()  # type: ignore[union-attr]
        index = json.loads(index_bytes)
        docker = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert names[:3] == ["blobs", "blobs/sha256", f"blobs/sha256/{names[2].rsplit('/', 1)[1]}"]
    assert index["manifests"][0]["annotations"] == {
        refs.IMAGE_NAME_ANNOTATION: NAME,
        refs.OCI_REF_NAME_ANNOTATION: "v1",
    }
    assert docker[0]["RepoTags"] == ["test:v1"]
    # arm64 content is not exported without --all-platforms
    assert f"blobs/sha256/{ARM.root.digest.split(':')[1]}" not in names
    before = _blob_files(daemon.base / "root")
    other = namespace + "b"
    await _import(daemon.address, other, data)
    async with Client(daemon.address, other) as client:
        image = await client.image_store().get(NAME)
    assert image.target.digest == INDEX.root.digest
    # shared content: only the archive's own index.json is new
    assert _blob_files(daemon.base / "root") - before <= {sha256(index_bytes).split(":")[1]}
    out2 = io.BytesIO()
    async with Client(daemon.address, other) as client:
        await export_images(client, out2, [NAME])
    assert out2.getvalue() == data


async def test_export_all_platforms_and_errors(ours: Daemon, namespace: str) -> None:
    await _import(
        ours.address,
        namespace,
        oci_archive(INDEX, {refs.IMAGE_NAME_ANNOTATION: NAME}),
        all_platforms=True,
    )
    async with Client(ours.address, namespace) as client:
        out = io.BytesIO()
        await export_images(client, out, [NAME], ExportOptions(all_platforms=True))
        with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
            assert f"blobs/sha256/{ARM.root.digest.split(':')[1]}" in tf.getnames()
        with pytest.raises(NotFoundError):
            await export_images(client, io.BytesIO(), ["docker.io/library/nope:1"])
        riscv = ExportOptions(platforms=[platforms.parse("linux/riscv64")])
        with pytest.raises(NotFoundError, match="no manifest found for platform"):
            await export_images(client, io.BytesIO(), [NAME], riscv)


async def test_export_is_identical_to_go_ctr(
    containerd: RealContainerd, namespace: str, tmp_path: Path
) -> None:
    require_binary(CTR)
    await _import(
        containerd.address, namespace, oci_archive(INDEX, {refs.IMAGE_NAME_ANNOTATION: NAME})
    )
    go_out = tmp_path / "go.tar"
    res = containerd.ctr("images", "export", str(go_out), NAME, namespace=namespace)
    assert res.returncode == 0, res.stderr
    out = io.BytesIO()
    async with Client(containerd.address, namespace) as client:
        await export_images(client, out, [NAME])
    assert out.getvalue() == go_out.read_bytes()


# -- hostile and broken archives -----------------------------------------------------------


def _hostile(entry: str, *, link: str | None = None, kind: bytes = tarfile.REGTYPE) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        _add(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        if link is None:
            _add(tf, entry, b"evil")
        else:
            _add(tf, entry, type=kind, linkname=link)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_hostile("../../etc/evil"), "path escapes the archive"),
        (_hostile("/etc/evil"), "absolute paths are not allowed"),
        (_hostile("blobs/../../evil"), "path escapes the archive"),
        (_hostile("x/layer.tar", link="../../etc/passwd", kind=tarfile.SYMTYPE), "escapes"),
        (_hostile("x/layer.tar", link="/etc/passwd", kind=tarfile.SYMTYPE), "absolute path"),
        (_hostile("x/layer.tar", link="../../etc/passwd", kind=tarfile.LNKTYPE), "escapes"),
        (b"this is not a tar archive at all" * 32, "tar"),
    ],
)
async def test_hostile_archives_are_refused(
    ours: Daemon, namespace: str, data: bytes, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        await _import(ours.address, namespace, data)
    async with Client(ours.address, namespace) as client:
        assert await client.image_store().list() == []
        assert await client.content_store().list_statuses() == []


async def test_blob_digest_mismatch_commits_nothing(
    daemon: RealContainerd | Daemon, namespace: str
) -> None:
    wrong = "blobs/sha256/" + "0" * 64
    data = oci_archive(AMD, {refs.IMAGE_NAME_ANNOTATION: NAME}, extra=[(wrong, b"tampered")])
    with pytest.raises(DataLossError, match="digest mismatch"):
        await _import(daemon.address, namespace, data)
    async with Client(daemon.address, namespace) as client:
        assert await client.image_store().list() == []
        assert await client.content_store().list_statuses() == []
        with pytest.raises(NotFoundError):
            await client.content_store().info("sha256:" + "0" * 64)


async def test_missing_blob_and_unknown_layouts(ours: Daemon, namespace: str) -> None:
    full = oci_archive(AMD, {refs.IMAGE_NAME_ANNOTATION: NAME})
    buf = io.BytesIO()
    layer = next(b for b in AMD.blobs if mt.is_layer(b.media_type))
    with tarfile.open(fileobj=io.BytesIO(full)) as src, tarfile.open(fileobj=buf, mode="w") as dst:
        for m in src:
            if not m.name.endswith(layer.digest.split(":")[1]):
                dst.addfile(m, src.extractfile(m))
    with pytest.raises(NotFoundError, match="is not in the archive"):
        await _import(ours.address, namespace, buf.getvalue())
    with pytest.raises(InvalidArgumentError, match="unrecognized image format"):
        await _import(ours.address, namespace, _tar({"README": b"hi"}))
    layout = b'{"imageLayoutVersion":"%s"}'
    with pytest.raises(UnimplementedError, match=r"unsupported OCI version 2\.0\.0"):
        await _import(ours.address, namespace, _tar({"oci-layout": layout % b"2.0.0"}))
    with pytest.raises(InvalidArgumentError, match=r"missing index\.json"):
        await _import(ours.address, namespace, _tar({"oci-layout": layout % b"1.0.0"}))
    with pytest.raises(InvalidArgumentError, match="invalid JSON"):
        await _import(ours.address, namespace, _tar({"manifest.json": b"[{"}))
    with pytest.raises(NotFoundError, match=r"image config 'x\.json' not found"):
        await _import(
            ours.address, namespace, _tar({"manifest.json": b'[{"Config":"x.json","Layers":[]}]'})
        )
    async with Client(ours.address, namespace) as client:
        assert await client.image_store().list() == []


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            _add(tf, name, data)
    return buf.getvalue()
