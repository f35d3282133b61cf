"""Images, containers and leases stores: validation, masks, filters, namespacing."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.containers import Container, RuntimeInfo
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
)
from pycontainerd.core.images import Image
from pycontainerd.core.leases import Resource
from pycontainerd.core.namespaces import with_lease, with_namespace
from pycontainerd.core.types import UNSET_TIME, AnyValue, Descriptor
from pycontainerd.metadata.containers import ContainerStore
from pycontainerd.metadata.images import ImageStore
from pycontainerd.metadata.leases import LeaseStore, attach
from pycontainerd.metadata.namespaces import NamespaceStore

if TYPE_CHECKING:
    from pycontainerd.metadata.db import MetadataDB, Tx

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
MT = "application/vnd.oci.image.manifest.v1+json"


pytestmark = pytest.mark.usefixtures("default_namespace")


def img(name: str, digest: str = D1, **labels: str) -> Image:
    return Image(name=name, target=Descriptor(media_type=MT, digest=digest, size=10), labels=labels)


def ctr(cid: str, **kw: object) -> Container:
    base: dict[str, object] = {
        "id": cid,
        "runtime": RuntimeInfo(name="io.containerd.runc.v2"),
        "spec": AnyValue(
            type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec", value=b"{}"
        ),
    }
    base.update(kw)
    return Container(**base)  # type: ignore[arg-type]


def names(images: list[Image]) -> list[str]:
    return [i.name for i in images]


def ids(containers: list[Container]) -> list[str]:
    return [c.id for c in containers]


# -- images --------------------------------------------------------------------------------


async def test_image_round_trip_and_timestamps(db: MetadataDB) -> None:
    store = ImageStore(db)
    created = await store.create(img("docker.io/library/busybox:latest", a="1"))
    assert created.created_at > UNSET_TIME
    assert created.created_at == created.updated_at
    got = await store.get("docker.io/library/busybox:latest")
    assert got == created
    updated = await store.update(img("docker.io/library/busybox:latest", b="2"), "labels.b")
    assert dict(updated.labels) == {"a": "1", "b": "2"}
    assert updated.created_at == created.created_at
    assert updated.updated_at >= created.updated_at
    # The namespace was created implicitly by the first write.
    assert [n.name for n in await NamespaceStore(db).list()] == ["default"]


async def test_image_create_duplicate_and_missing(db: MetadataDB) -> None:
    store = ImageStore(db)
    await store.create(img("x"))
    with pytest.raises(AlreadyExistsError, match=r'^image "x": already exists$'):
        await store.create(img("x"))
    with pytest.raises(NotFoundError, match=r'^image "y": not found$'):
        await store.get("y")
    with pytest.raises(NotFoundError):
        await store.delete("y")
    with pytest.raises(NotFoundError):
        await store.update(img("y"))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (
            Image(name="", target=Descriptor(media_type=MT, digest=D1, size=1)),
            "image name must not be empty",
        ),
        (
            Image(name="n", target=Descriptor(media_type=MT, digest="sha256:abc", size=1)),
            'Target.Digest "sha256:abc" invalid: invalid checksum digest length',
        ),
        (
            Image(name="n", target=Descriptor(media_type=MT, digest=D1, size=0)),
            "Target.Size must be greater than zero",
        ),
        (Image(name="n", target=Descriptor(digest=D1, size=1)), "Target.MediaType must be set"),
        (
            Image(
                name="n",
                target=Descriptor(media_type=MT, digest=D1, size=1),
                labels={"k": "v" * 5000},
            ),
            "image.Labels: label key and value length (5001 bytes) greater than maximum size",
        ),
    ],
)
async def test_image_validation(db: MetadataDB, image: Image, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        await ImageStore(db).create(image)
    assert str(info.value).startswith(message)
    assert str(info.value).endswith(": invalid argument")


async def test_image_update_masks(db: MetadataDB) -> None:
    store = ImageStore(db)
    await store.create(img("i", a="1", b="2"))
    got = await store.update(img("i", D2, c="3"), "labels.a", "labels.c")
    assert dict(got.labels) == {"b": "2", "c": "3"}
    assert got.target.digest == D1  # target not in the mask
    got = await store.update(img("i", D2), "target")
    assert got.target.digest == D2
    ann = Image(
        name="i", target=Descriptor(media_type=MT, digest=D2, size=10, annotations={"x": "y"})
    )
    got = await store.update(ann, "annotations.x")
    assert dict(got.target.annotations) == {"x": "y"}
    got = await store.update(img("i", D1, z="9"))  # no mask: replace all
    assert dict(got.labels) == {"z": "9"}
    assert got.target.digest == D1
    assert dict(got.target.annotations) == {}
    with pytest.raises(InvalidArgumentError, match=r'^cannot update "name" field on image "i"'):
        await store.update(img("i"), "name")
    bad = Image(name="i", target=Descriptor(media_type=MT, digest="nope", size=10))
    with pytest.raises(InvalidArgumentError, match=r"Target.Digest"):
        await store.update(bad, "target")
    assert (await store.get("i")).target.digest == D1  # failed update changed nothing


async def test_image_list_filters(db: MetadataDB) -> None:
    store = ImageStore(db)
    await store.create(img("docker.io/library/a:1", D1, env="prod"))
    await store.create(img("docker.io/library/b:1", D2, env="dev"))
    await store.create(img("quay.io/c:1", D1))
    assert names(await store.list()) == [
        "docker.io/library/a:1",
        "docker.io/library/b:1",
        "quay.io/c:1",
    ]
    assert names(await store.list("name~=^docker")) == [
        "docker.io/library/a:1",
        "docker.io/library/b:1",
    ]
    assert names(await store.list(f"target.digest=={D1},labels.env==prod")) == [
        "docker.io/library/a:1"
    ]
    assert names(await store.list("labels.env==dev", "name==quay.io/c:1")) == [
        "docker.io/library/b:1",
        "quay.io/c:1",
    ]
    assert names(await store.list(f"target.mediatype=={MT}")) == names(await store.list())
    assert names(await store.list("labels.env")) == [
        "docker.io/library/a:1",
        "docker.io/library/b:1",
    ]
    with pytest.raises(InvalidArgumentError, match=r"parse error"):
        await store.list("name=x")


async def test_images_are_per_namespace(db: MetadataDB) -> None:
    store = ImageStore(db)
    await store.create(img("shared-name"))
    with with_namespace("foo"):
        assert await store.list() == []
        await store.create(img("shared-name", D2))
        assert (await store.get("shared-name")).target.digest == D2
    assert (await store.get("shared-name")).target.digest == D1


async def test_image_delete_marks_dirty_and_checks_target(db: MetadataDB) -> None:
    store = ImageStore(db)
    await store.create(img("i"))
    with pytest.raises(FailedPreconditionError):
        await store.delete("i", target=D2)
    before = db.deletions
    await store.delete("i", target=D1)
    assert db.deletions == before + 1
    assert await store.list() == []


async def test_namespace_required(db: MetadataDB) -> None:
    with with_namespace(None), pytest.raises(FailedPreconditionError, match=r"^namespace is requ"):
        await ImageStore(db).list()
    with with_namespace("bad ns"), pytest.raises(InvalidArgumentError, match=r"^namespace valid"):
        await ContainerStore(db).list()


async def test_list_ten_thousand_images_in_one_query(db: MetadataDB) -> None:
    def fill(tx: Tx) -> None:
        tx.execute("INSERT INTO namespaces VALUES ('default', '{}', 0, 0)")
        tx.executemany(
            "INSERT INTO images VALUES ('default', ?, ?, ?, 10, '{}', '{\"k\":\"v\"}', 1, 1)",
            [(f"img-{i:05d}", MT, D1) for i in range(10_000)],
        )

    db.update(fill)
    images = await ImageStore(db).list("labels.k==v")
    assert len(images) == 10_000
    assert images[0].name == "img-00000"


# -- containers ------------------------------------------------------------------------------


async def test_container_round_trip(db: MetadataDB) -> None:
    store = ContainerStore(db)
    c = ctr(
        "c1",
        labels={"a": "1"},
        image="docker.io/library/busybox:latest",
        snapshotter="overlayfs",
        snapshot_key="c1",
        runtime=RuntimeInfo(
            name="io.containerd.runc.v2", options=AnyValue(type_url="t/opts", value=b"\x08\x01")
        ),
        extensions={"ext": AnyValue(type_url="t/ext", value=b"\x00\x01")},
        sandbox_id="sb",
    )
    created = await store.create(c)
    assert created.created_at > UNSET_TIME
    got = await store.get("c1")
    assert got == created
    assert got.runtime.options == AnyValue(type_url="t/opts", value=b"\x08\x01")
    assert got.extensions == {"ext": AnyValue(type_url="t/ext", value=b"\x00\x01")}
    with pytest.raises(AlreadyExistsError, match=r'^container "c1": already exists$'):
        await store.create(c)
    with pytest.raises(NotFoundError, match=r'^container "zz" in namespace "default": not found$'):
        await store.get("zz")
    await store.delete("c1")
    with pytest.raises(NotFoundError, match=r"^container c1: not found$"):
        await store.delete("c1")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (
            {"id": "bad id"},
            'create container failed validation: container.ID: identifier "bad id" must match',
        ),
        (
            {"id": ""},
            "create container failed validation: container.ID: identifier must not be empty",
        ),
        ({"runtime": RuntimeInfo(name="")}, "container.Runtime.Name must be set"),
        ({"spec": None}, "container.Spec must be set"),
        (
            {"snapshot_key": "k"},
            "container.Snapshotter must be set if container.SnapshotKey is set",
        ),
        (
            {"extensions": {"": AnyValue(type_url="t")}},
            "container.Extension keys must not be zero-length",
        ),
        ({"labels": {"k" * 4097: ""}}, None),  # an empty value is dropped, so no error
        (
            {"labels": {"k": "v" * 4096}},
            "containers.Labels: label key and value length (4097 bytes)",
        ),
    ],
)
async def test_container_validation(
    db: MetadataDB, kw: dict[str, object], message: str | None
) -> None:
    c = ctr(str(kw.pop("id", "c1")), **kw)
    store = ContainerStore(db)
    if message is None:
        await store.create(c)
        return
    with pytest.raises(InvalidArgumentError) as info:
        await store.create(c)
    assert message in str(info.value)
    assert await store.list() == []


async def test_container_update_masks(db: MetadataDB) -> None:
    store = ContainerStore(db)
    created = await store.create(
        ctr(
            "c1",
            labels={"a": "1", "b": "2"},
            snapshotter="overlayfs",
            snapshot_key="k1",
            image="img1",
        )
    )
    req = ctr(
        "c1",
        labels={"a": "10", "c": "3"},
        image="img2",
        snapshotter="native",
        snapshot_key="k2",
        spec=AnyValue(type_url="s", value=b"new"),
        extensions={"e": AnyValue(type_url="t", value=b"1")},
    )
    got = await store.update(req, "labels.a", "labels.b", "image", "extensions.e")
    assert dict(got.labels) == {"a": "10"}
    assert got.image == "img2"
    assert got.snapshotter == "overlayfs"  # not in the mask
    assert got.snapshot_key == "k1"
    assert got.extensions == {"e": AnyValue(type_url="t", value=b"1")}
    assert got.created_at == created.created_at
    assert got.updated_at >= created.updated_at
    got = await store.update(req, "snapshotkey", "spec")
    assert got.snapshot_key == "k2"
    assert got.spec == AnyValue(type_url="s", value=b"new")
    assert await store.get("c1") == got

    with pytest.raises(InvalidArgumentError, match=r'cannot update "runtime" field on "c1"'):
        await store.update(req, "runtime")
    with pytest.raises(InvalidArgumentError, match=r"container.Snapshotter field is immutable"):
        await store.update(req)
    same_snapshotter = ctr("c1", snapshotter="overlayfs", labels={"z": "1"})
    got = await store.update(same_snapshotter)
    assert dict(got.labels) == {"z": "1"}
    assert got.snapshot_key == ""  # full replace
    assert got.extensions == {}
    with pytest.raises(InvalidArgumentError, match=r"container.Runtime.Name field is immutable"):
        await store.update(ctr("c1", snapshotter="overlayfs", runtime=RuntimeInfo(name="other")))
    with pytest.raises(
        InvalidArgumentError, match=r"update failed validation: container.Spec must be set"
    ):
        await store.update(ctr("c1", spec=None), "spec")
    with pytest.raises(InvalidArgumentError, match=r"must specify a container id"):
        await store.update(ctr(""))
    with pytest.raises(NotFoundError):
        await store.update(ctr("nope"), "labels")


async def test_container_list_filters(db: MetadataDB) -> None:
    store = ContainerStore(db)
    await store.create(ctr("a", image="busybox", labels={"role": "web"}))
    await store.create(ctr("b", image="alpine", labels={"role": "db"}))
    await store.create(
        ctr("c", image="busybox", runtime=RuntimeInfo(name="io.containerd.runsc.v1"))
    )
    assert ids(await store.list()) == ["a", "b", "c"]
    assert ids(await store.list("image==busybox")) == ["a", "c"]
    assert ids(await store.list("image==busybox,labels.role==web")) == ["a"]
    assert ids(await store.list("runtime.name==io.containerd.runsc.v1", "id==b")) == ["b", "c"]
    assert ids(await store.list('labels.role~="^d"')) == ["b"]
    with pytest.raises(InvalidArgumentError):
        await store.list("labels.=")


# -- leases --------------------------------------------------------------------------------


async def test_lease_lifecycle(db: MetadataDB) -> None:
    store = LeaseStore(db)
    lease = await store.create("l1", labels={"containerd.io/gc.expire": "2030-01-01T00:00:00Z"})
    assert lease.created_at > UNSET_TIME
    rand = await store.create()
    assert re.fullmatch(r"\d{1,9}-[A-Za-z0-9_-]{4}", rand.id)
    with pytest.raises(AlreadyExistsError, match=r'^lease "l1": already exists$'):
        await store.create("l1")
    assert [le.id for le in await store.list("id==l1")] == ["l1"]
    assert [le.id for le in await store.list('labels."containerd.io/gc.expire"')] == ["l1"]
    assert len(await store.list()) == 2

    await store.add_resource("l1", Resource(id=D1, type="content"))
    await store.add_resource("l1", Resource(id=D1, type="content"))  # idempotent
    await store.add_resource("l1", Resource(id="k", type="snapshots/overlayfs"))
    await store.add_resource("l1", Resource(id="ref", type="ingests"))
    assert await store.list_resources("l1") == [
        Resource(id=D1, type="content"),
        Resource(id="ref", type="ingests"),
        Resource(id="k", type="snapshots/overlayfs"),
    ]
    before = db.deletions
    await store.delete_resource("l1", Resource(id="ref", type="ingests"))
    assert db.deletions == before + 1
    assert len(await store.list_resources("l1")) == 2

    await store.delete("l1")
    with pytest.raises(NotFoundError, match=r'^lease "l1": not found$'):
        await store.delete("l1")
    with pytest.raises(NotFoundError, match=r'^lease "l1": not found$'):
        await store.list_resources("l1")
    assert db.view(lambda tx: tx.execute("SELECT COUNT(*) FROM lease_resources").fetchone()[0]) == 0


@pytest.mark.parametrize(
    ("resource", "kind", "message"),
    [
        (
            Resource(id="nope", type="content"),
            InvalidArgumentError,
            "invalid content resource id nope",
        ),
        (
            Resource(id="k", type="snapshots"),
            InvalidArgumentError,
            "invalid snapshot resource type snapshots",
        ),
        (
            Resource(id="k", type="snapshots/a/b"),
            InvalidArgumentError,
            "invalid snapshot resource type",
        ),
        (
            Resource(id="k", type="ingests/x"),
            InvalidArgumentError,
            "invalid resource type ingests/x",
        ),
        (
            Resource(id="k", type="volumes"),
            UnimplementedError,
            "resource type volumes not supported yet",
        ),
    ],
)
async def test_lease_bad_resources(
    db: MetadataDB, resource: Resource, kind: type[Exception], message: str
) -> None:
    store = LeaseStore(db)
    await store.create("l1")
    with pytest.raises(kind, match=re.escape(message)):
        await store.add_resource("l1", resource)


async def test_lease_resource_on_missing_lease(db: MetadataDB) -> None:
    with pytest.raises(NotFoundError, match=r'lease "zz"'):
        await LeaseStore(db).add_resource("zz", Resource(id=D1, type="content"))


async def test_attach_uses_the_lease_or_fails(db: MetadataDB) -> None:
    store = LeaseStore(db)
    await store.create("l1")
    db.update(lambda tx: attach(tx, "default", "l1", "content", D1))
    db.update(lambda tx: attach(tx, "default", None, "content", D2))  # no lease: nothing
    with with_lease("l1"):
        assert await store.list_resources("l1") == [Resource(id=D1, type="content")]
    with pytest.raises(NotFoundError, match=r"lease does not exist"):
        db.update(lambda tx: attach(tx, "default", "ghost", "content", D1))
