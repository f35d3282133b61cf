"""Converters between generated messages and core values: round trips and wire form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from pycontainerd.api import convert
from pycontainerd.api.services.containers.v1 import containers_pb2
from pycontainerd.api.services.images.v1 import images_pb2
from pycontainerd.api.types import descriptor_pb2, event_pb2
from pycontainerd.core import snapshots
from pycontainerd.core.containers import Container, RuntimeInfo
from pycontainerd.core.events import Envelope
from pycontainerd.core.images import Image
from pycontainerd.core.leases import Lease, Resource
from pycontainerd.core.types import UNSET_TIME, AnyValue, Descriptor, Mount

WHEN = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "when",
    [
        WHEN,
        datetime(2024, 5, 6, 9, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2))),
        datetime(2024, 5, 6, 7, 8, 9, 123456),  # naive: taken as UTC
        datetime(1, 1, 1, tzinfo=UTC),  # Go's zero time
    ],
)
def test_time_to_proto_matches_from_datetime(when: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(when if when.tzinfo else when.replace(tzinfo=UTC))
    assert convert.time_to_proto(when) == expected


def test_unset_time_round_trips_as_zero() -> None:
    ts = convert.time_to_proto(UNSET_TIME)
    assert (ts.seconds, ts.nanos) == (0, 0)
    assert convert.time_from_proto(timestamp_pb2.Timestamp()) is UNSET_TIME
    assert convert.time_from_proto(convert.time_to_proto(WHEN)) == WHEN


def test_container_round_trip_and_wire_form() -> None:
    full = Container(
        id="c1",
        runtime=RuntimeInfo(
            name="io.containerd.runc.v2", options=AnyValue(type_url="o", value=b"\x01")
        ),
        labels={"a": "b"},
        image="docker.io/library/busybox:latest",
        spec=AnyValue(type_url="s", value=b"{}"),
        snapshotter="overlayfs",
        snapshot_key="c1",
        created_at=WHEN,
        updated_at=UNSET_TIME,
        extensions={"x": AnyValue(type_url="t", value=b"2")},
        sandbox_id="sb",
    )
    bare = Container(id="c2", runtime=RuntimeInfo(name="r"))
    for c in (full, bare):
        msg = convert.container_to_proto(c)
        assert convert.container_from_proto(msg) == c
        # built in place, yet the same bytes as through nested constructors
        built = containers_pb2.Container(
            id=c.id,
            labels=c.labels,
            image=c.image,
            snapshotter=c.snapshotter,
            snapshot_key=c.snapshot_key,
            sandbox=c.sandbox_id,
            runtime=containers_pb2.Container.Runtime(
                name=c.runtime.name,
                options=None
                if c.runtime.options is None
                else convert.any_to_proto(c.runtime.options),
            ),
            spec=None if c.spec is None else convert.any_to_proto(c.spec),
            created_at=convert.time_to_proto(c.created_at),
            updated_at=convert.time_to_proto(c.updated_at),
            extensions={k: convert.any_to_proto(v) for k, v in c.extensions.items()},
        )
        assert msg.SerializeToString(deterministic=True) == built.SerializeToString(
            deterministic=True
        )
    assert not convert.container_to_proto(bare).HasField("spec")
    assert convert.container_from_proto(containers_pb2.Container(id="x")).spec is None


def test_image_round_trip_and_wire_form() -> None:
    image = Image(
        name="example.com/a:b",
        target=Descriptor(media_type="m", digest=DIGEST, size=7, annotations={"k": "v"}),
        labels={"l": "1"},
        created_at=WHEN,
        updated_at=WHEN,
    )
    msg = convert.image_to_proto(image)
    assert convert.image_from_proto(msg) == image
    built = images_pb2.Image(
        name=image.name,
        labels=image.labels,
        target=convert.descriptor_to_proto(image.target),
        created_at=convert.time_to_proto(WHEN),
        updated_at=convert.time_to_proto(WHEN),
    )
    assert msg.SerializeToString(deterministic=True) == built.SerializeToString(deterministic=True)


def test_descriptor_drops_what_the_wire_type_lacks() -> None:
    d = Descriptor(media_type="m", digest=DIGEST, size=3, urls=("u",), annotations={"a": "b"})
    msg = convert.descriptor_to_proto(d)
    assert msg == descriptor_pb2.Descriptor(
        media_type="m", digest=DIGEST, size=3, annotations={"a": "b"}
    )
    assert convert.descriptor_from_proto(msg) == Descriptor(
        media_type="m", digest=DIGEST, size=3, annotations={"a": "b"}
    )


def test_mount_lease_resource_round_trips() -> None:
    m = Mount(type="overlay", source="overlay", target="t", options=("ro", "lowerdir=/a"))
    assert convert.mount_from_proto(convert.mount_to_proto(m)) == m
    lease = Lease(id="l", created_at=WHEN, labels={"a": "b"})
    assert convert.lease_from_proto(convert.lease_to_proto(lease)) == lease
    r = Resource(id="sha256:x", type="content")
    assert convert.resource_from_proto(convert.resource_to_proto(r)) == r


def test_snapshot_info_round_trip() -> None:
    info = snapshots.Info(
        kind=snapshots.Kind.ACTIVE,
        name="n",
        parent="p",
        labels={"a": "b"},
        created_at=WHEN,
        updated_at=UNSET_TIME,
    )
    msg = convert.snapshot_info_to_proto(info)
    assert msg.kind == int(snapshots.Kind.ACTIVE)
    assert convert.snapshot_info_from_proto(msg) == info


def test_envelope_round_trip_and_unset_timestamp() -> None:
    env = Envelope(
        timestamp=WHEN, namespace="ns", topic="/x", event=AnyValue(type_url="t", value=b"1")
    )
    assert convert.envelope_from_proto(convert.envelope_to_proto(env)) == env
    bare = convert.envelope_from_proto(event_pb2.Envelope(topic="/y"))
    assert bare.timestamp == UNSET_TIME
    assert bare.timestamp.timestamp() == 0


def test_field_mask_is_none_without_paths_and_lists_them_otherwise() -> None:
    assert convert.field_mask(()) is None
    mask = convert.field_mask(iter(["labels.a", "target"]))
    assert mask is not None
    assert list(mask.paths) == ["labels.a", "target"]
