"""typeurl: Any packing with containerd's type URLs, JSON types and the registry."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from google.protobuf import any_pb2, timestamp_pb2, wrappers_pb2

from pycontainerd.api import typeurl
from pycontainerd.api.ttrpc import ttrpc_pb2
from pycontainerd.core.errdefs import AlreadyExistsError, InvalidArgumentError, NotFoundError


def unique(prefix: str = "types.example.test/") -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def test_message_url_is_full_name_without_prefix() -> None:
    kv = ttrpc_pb2.KeyValue(key="a", value="b")
    packed = typeurl.pack(kv)
    assert packed.type_url == "ttrpc.KeyValue"
    assert packed.value == kv.SerializeToString()
    assert typeurl.unpack(packed) == kv
    assert typeurl.type_url_of(ttrpc_pb2.KeyValue) == "ttrpc.KeyValue"


def test_well_known_type_round_trip() -> None:
    ts = timestamp_pb2.Timestamp(seconds=1700000000, nanos=5)
    packed = typeurl.pack(ts)
    assert packed.type_url == "google.protobuf.Timestamp"
    assert typeurl.unpack(packed) == ts


def test_google_prefixed_url_still_unpacks() -> None:
    packed = any_pb2.Any(
        type_url="type.googleapis.com/ttrpc.KeyValue",
        value=ttrpc_pb2.KeyValue(key="k").SerializeToString(),
    )
    assert typeurl.unpack(packed) == ttrpc_pb2.KeyValue(key="k")
    assert typeurl.is_type(packed, ttrpc_pb2.KeyValue)
    assert typeurl.unpack(packed, ttrpc_pb2.KeyValue).key == "k"


def test_task_exit_event_url_and_lazy_import() -> None:
    # A fresh interpreter that never imported the events module still unpacks
    # containerd.events.TaskExit (and image events under their odd package).
    probe = """
import sys
from google.protobuf import any_pb2
from pycontainerd.api import typeurl
ev = typeurl.unpack(
    any_pb2.Any(type_url="containerd.events.TaskExit", value=b"\\x0a\\x02c1\\x18\\x07")
)
print(type(ev).DESCRIPTOR.full_name, ev.container_id, ev.pid)
img = typeurl.unpack(
    any_pb2.Any(type_url="containerd.services.images.v1.ImageCreate", value=b"\\x0a\\x03img")
)
print(type(img).DESCRIPTOR.full_name, img.name)
print("grpc" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "containerd.events.TaskExit c1 7"
    assert out[1] == "containerd.services.images.v1.ImageCreate img"
    assert out[2] == "False"


def test_event_pack_uses_containerd_names() -> None:
    from pycontainerd.api.events import image_pb2, task_pb2

    assert typeurl.pack(task_pb2.TaskExit(container_id="c")).type_url == (
        "containerd.events.TaskExit"
    )
    assert typeurl.pack(image_pb2.ImageCreate(name="x")).type_url == (
        "containerd.services.images.v1.ImageCreate"
    )


def test_runc_options_unpack_to_their_message() -> None:
    from pycontainerd.api.types.runc.options import oci_pb2

    opts = oci_pb2.Options(binary_name="runc", systemd_cgroup=True)
    packed = typeurl.pack(opts)
    assert packed.type_url == typeurl.RUNC_OPTIONS
    assert typeurl.unpack(packed) == opts


def test_oci_spec_travels_as_json() -> None:
    spec = {"ociVersion": "1.0.2-dev", "process": {"args": ["sleep", "1"]}}
    packed = typeurl.pack_json(typeurl.OCI_SPEC, spec)
    assert packed.type_url == "types.containerd.io/opencontainers/runtime-spec/1/Spec"
    assert json.loads(packed.value) == spec
    assert b" " not in packed.value  # compact, like Go's json.Marshal
    assert typeurl.unpack(packed) == spec


@pytest.mark.parametrize(
    "url",
    [typeurl.OCI_PROCESS, typeurl.OCI_LINUX_RESOURCES, typeurl.OCI_WINDOWS_RESOURCES],
)
def test_other_oci_types_are_json(url: str) -> None:
    assert typeurl.registered()[url] == "json"
    assert typeurl.unpack(typeurl.pack_json(url, b'{"a":1}')) == {"a": 1}
    assert typeurl.unpack(typeurl.pack_json(url, '{"b":2}')) == {"b": 2}


def test_pack_json_of_unregistered_url_is_not_found() -> None:
    with pytest.raises(NotFoundError, match="not registered as JSON"):
        typeurl.pack_json(unique(), {"a": 1})


def test_pack_json_of_unencodable_value_is_invalid() -> None:
    with pytest.raises(InvalidArgumentError, match="as JSON"):
        typeurl.pack_json(typeurl.OCI_SPEC, {"a": object()})


def test_bad_json_payload_is_invalid() -> None:
    packed = any_pb2.Any(type_url=typeurl.OCI_SPEC, value=b"{nope")
    with pytest.raises(InvalidArgumentError, match="invalid JSON"):
        typeurl.unpack(packed)


def test_unknown_url_is_not_found() -> None:
    url = unique()
    with pytest.raises(NotFoundError) as excinfo:
        typeurl.unpack(any_pb2.Any(type_url=url, value=b""))
    assert str(excinfo.value) == f"type with url {url}: not found"
    with pytest.raises(NotFoundError):
        typeurl.unpack(any_pb2.Any(type_url="containerd.events.NoSuchEvent", value=b""))


def test_bad_bytes_are_invalid() -> None:
    packed = any_pb2.Any(type_url="ttrpc.KeyValue", value=b"\xff\xff\xff")
    with pytest.raises(InvalidArgumentError, match="cannot decode"):
        typeurl.unpack(packed)


def test_unpack_with_the_wrong_class_is_invalid() -> None:
    packed = typeurl.pack(ttrpc_pb2.KeyValue(key="a"))
    with pytest.raises(InvalidArgumentError, match=r"not 'ttrpc\.StringList'"):
        typeurl.unpack_as(packed, ttrpc_pb2.StringList)
    assert not typeurl.is_type(packed, ttrpc_pb2.StringList)
    assert typeurl.is_type(packed, "ttrpc.KeyValue")


def test_register_custom_url() -> None:
    url = unique()
    typeurl.register(url, wrappers_pb2.BytesValue)
    typeurl.register(url, wrappers_pb2.BytesValue)  # same pair again: fine
    packed = typeurl.pack(wrappers_pb2.BytesValue(value=b"x"))
    assert packed.type_url == url
    assert typeurl.unpack(packed) == wrappers_pb2.BytesValue(value=b"x")
    assert typeurl.registered()[url] == "proto"


def test_register_conflicting_url_is_already_exists() -> None:
    url = unique()
    typeurl.register_json(url)
    with pytest.raises(AlreadyExistsError, match="registered already"):
        typeurl.register(url, wrappers_pb2.StringValue)


def test_register_empty_url_is_invalid() -> None:
    with pytest.raises(InvalidArgumentError):
        typeurl.register("", wrappers_pb2.StringValue)
    with pytest.raises(InvalidArgumentError):
        typeurl.register_json("")


def test_raw_passthrough_and_upgrade_to_a_message() -> None:
    url = unique("containerd.test.raw.")
    typeurl.register_raw(url)
    packed = any_pb2.Any(type_url=url, value=b"\x0a\x01z")
    assert typeurl.unpack(packed) == b"\x0a\x01z"
    # A package that brings the schema later may register the message class.
    typeurl.register(url, wrappers_pb2.StringValue)
    assert typeurl.unpack(packed) == wrappers_pb2.StringValue(value="z")
    assert typeurl.registered()[url] == "proto"


def test_legacy_runc_options_pass_through_as_bytes() -> None:
    packed = any_pb2.Any(type_url=typeurl.RUNC_OPTIONS_V1, value=b"\x01\x02")
    assert typeurl.unpack(packed) == b"\x01\x02"
