"""Pack and unpack ``google.protobuf.Any`` the way containerd does (``typeurl``).

containerd names a protobuf payload by the message's full name alone, without
the ``type.googleapis.com/`` prefix: events travel as
``containerd.events.TaskExit``, image events as
``containerd.services.images.v1.ImageCreate``. Go types that are not protobuf
messages are registered under ``types.containerd.io/...`` and travel as JSON:
the OCI runtime spec is ``types.containerd.io/opencontainers/runtime-spec/1/Spec``.

The registry maps a type URL to how its bytes are read: a protobuf message
class, JSON, or raw bytes (a type whose schema this package does not carry,
passed through untouched). Other packages add entries with :func:`register`,
:func:`register_json` and :func:`register_raw`. Protobuf messages that are not
registered resolve through the default descriptor pool, so any generated
module that has been imported can be unpacked by its full name.

Importing this module must not import grpc.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from google.protobuf import any_pb2, descriptor_pool, message, message_factory

from pycontainerd.core.errdefs import AlreadyExistsError, InvalidArgumentError, NotFoundError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "OCI_LINUX_RESOURCES",
    "OCI_PROCESS",
    "OCI_SPEC",
    "OCI_WINDOWS_RESOURCES",
    "RUNC_OPTIONS",
    "RUNC_OPTIONS_V1",
    "is_type",
    "pack",
    "pack_json",
    "register",
    "register_json",
    "register_raw",
    "type_url_of",
    "unpack",
    "unpack_as",
]

M = TypeVar("M", bound=message.Message)

_OCI = "types.containerd.io/opencontainers/runtime-spec/1/"
OCI_SPEC = _OCI + "Spec"
"""Type URL of the OCI runtime spec (``config.json``), carried as JSON."""
OCI_PROCESS = _OCI + "Process"
"""Type URL of an OCI process (``Tasks.Exec``), carried as JSON."""
OCI_LINUX_RESOURCES = _OCI + "LinuxResources"
"""Type URL of OCI Linux resources (``Tasks.Update``), carried as JSON."""
OCI_WINDOWS_RESOURCES = _OCI + "WindowsResources"
"""Type URL of OCI Windows resources, carried as JSON."""
RUNC_OPTIONS = "containerd.runc.v1.Options"
"""Type URL of the runc shim options (``io.containerd.runc.v2`` runtime options)."""
RUNC_OPTIONS_V1 = "containerd.linux.runc.RuncOptions"
"""Type URL of the legacy ``io.containerd.runtime.v1.linux`` runc options."""

_PREFIX = "type.googleapis.com/"


@dataclass(frozen=True, slots=True)
class _Entry:
    kind: Literal["proto", "json", "raw"]
    cls: type[message.Message] | None = None


_lock = threading.Lock()
_by_url: dict[str, _Entry] = {}
_url_by_cls: dict[type[message.Message], str] = {}


def _add(type_url: str, entry: _Entry) -> None:
    if not type_url:
        msg = "type url must not be empty"
        raise InvalidArgumentError(msg)
    with _lock:
        existing = _by_url.get(type_url)
        # A raw passthrough may be upgraded once a package brings the schema.
        upgrade = existing is not None and existing.kind == "raw" and entry.kind == "proto"
        if existing is not None and existing != entry and not upgrade:
            msg = f"type url {type_url!r} is registered already"
            raise AlreadyExistsError(msg)
        _by_url[type_url] = entry
        if entry.cls is not None:
            _url_by_cls.setdefault(entry.cls, type_url)


def register(type_url: str, cls: type[message.Message]) -> None:
    """Carry ``cls`` under ``type_url`` (instead of its full name).

    Only needed for messages whose wire URL differs from their full name;
    registering the same pair twice is a no-op.

    Raises:
        AlreadyExistsError: ``type_url`` is registered with something else.
        InvalidArgumentError: ``type_url`` is empty.
    """
    _add(type_url, _Entry("proto", cls))


def register_json(type_url: str) -> None:
    """Carry values of ``type_url`` as JSON (Go structs that are not protobuf).

    Raises:
        AlreadyExistsError: ``type_url`` is registered with something else.
        InvalidArgumentError: ``type_url`` is empty.
    """
    _add(type_url, _Entry("json"))


def register_raw(type_url: str) -> None:
    """Pass values of ``type_url`` through as bytes (a schema this package lacks).

    Raises:
        AlreadyExistsError: ``type_url`` is registered with something else.
        InvalidArgumentError: ``type_url`` is empty.
    """
    _add(type_url, _Entry("raw"))


def type_url_of(msg: message.Message | type[message.Message]) -> str:
    """The type URL containerd uses for a message (or message class)."""
    cls = msg if isinstance(msg, type) else type(msg)
    url = _url_by_cls.get(cls)
    if url is not None:
        return url
    return str(cls.DESCRIPTOR.full_name)


def pack(msg: message.Message) -> any_pb2.Any:
    """``msg`` in an ``Any`` under containerd's type URL (its full name)."""
    return any_pb2.Any(type_url=type_url_of(msg), value=msg.SerializeToString())


def pack_json(type_url: str, value: Any) -> any_pb2.Any:
    """``value`` as JSON in an ``Any`` of the JSON-registered ``type_url``.

    ``value`` may be a JSON-able object (a dict for the OCI spec) or JSON text
    or bytes already encoded.

    Raises:
        NotFoundError: ``type_url`` is not registered as JSON.
        InvalidArgumentError: ``value`` cannot be encoded as JSON.
    """
    entry = _by_url.get(type_url)
    if entry is None or entry.kind != "json":
        msg = f"type with url {type_url} is not registered as JSON: not found"
        raise NotFoundError(msg)
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
    elif isinstance(value, str):
        data = value.encode()
    else:
        try:
            data = json.dumps(value, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            msg = f"cannot encode value for {type_url} as JSON: {exc}"
            raise InvalidArgumentError(msg) from exc
    return any_pb2.Any(type_url=type_url, value=data)


# Proto packages whose generated modules are imported on first use, so that an
# event or runtime option can be unpacked without importing its module first.
_LAZY_MODULES: dict[str, tuple[str, ...]] = {
    "containerd.events.": tuple(
        f"pycontainerd.api.events.{name}_pb2"
        for name in ("container", "content", "namespace", "sandbox", "snapshot", "task")
    ),
    "containerd.services.images.v1.": ("pycontainerd.api.events.image_pb2",),
    "containerd.runc.v1.": ("pycontainerd.api.types.runc.options.oci_pb2",),
    "containerd.types.": ("pycontainerd.api.types.event_pb2",),
}


def _find_in_pool(name: str) -> type[message.Message] | None:
    try:
        desc = descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        return None
    return message_factory.GetMessageClass(desc)


def _proto_class(type_url: str) -> type[message.Message] | None:
    entry = _by_url.get(type_url)
    if entry is not None:
        return entry.cls
    name = type_url.rsplit("/", 1)[-1]
    found = _find_in_pool(name)
    if found is not None:
        return found
    for prefix, modules in _LAZY_MODULES.items():
        if name.startswith(prefix):
            for module in modules:
                with contextlib.suppress(ImportError):
                    importlib.import_module(module)
            return _find_in_pool(name)
    return None


@overload
def unpack(any_msg: any_pb2.Any) -> Any: ...
@overload
def unpack(any_msg: any_pb2.Any, cls: type[M]) -> M: ...
def unpack(any_msg: any_pb2.Any, cls: type[message.Message] | None = None) -> Any:
    """The value inside ``any_msg``.

    A protobuf type comes back as a message, a JSON type as the decoded JSON
    (a dict for the OCI spec), a raw type as bytes. With ``cls``, the Any must
    hold exactly that message type.

    Raises:
        NotFoundError: the type URL is not known (neither registered nor in the
            descriptor pool, i.e. its generated module was never imported).
        InvalidArgumentError: the bytes do not decode as the type, or ``cls``
            is given and does not match.
    """
    url = any_msg.type_url
    if cls is not None:
        if not is_type(any_msg, cls):
            msg = f"any holds {url!r}, not {type_url_of(cls)!r}"
            raise InvalidArgumentError(msg)
        return _parse(cls, any_msg.value, url)
    entry = _by_url.get(url)
    if entry is not None and entry.kind == "json":
        try:
            return json.loads(any_msg.value)
        except ValueError as exc:
            msg = f"invalid JSON in any of type {url}: {exc}"
            raise InvalidArgumentError(msg) from exc
    if entry is not None and entry.kind == "raw":
        return bytes(any_msg.value)
    found = _proto_class(url)
    if found is None:
        msg = f"type with url {url}"
        raise NotFoundError(msg)
    return _parse(found, any_msg.value, url)


def unpack_as(any_msg: any_pb2.Any, cls: type[M]) -> M:
    """``unpack(any_msg, cls)``: the message of type ``cls`` inside ``any_msg``.

    Raises:
        InvalidArgumentError: the Any holds another type or bad bytes.
    """
    return unpack(any_msg, cls)


def is_type(any_msg: any_pb2.Any, cls_or_url: type[message.Message] | str) -> bool:
    """Whether ``any_msg`` holds ``cls_or_url`` (a message class or a type URL)."""
    want = cls_or_url if isinstance(cls_or_url, str) else type_url_of(cls_or_url)
    got = any_msg.type_url
    if got == want:
        return True
    # Go's typeurl also accepts the type.googleapis.com/ spelling of a name.
    return got.removeprefix(_PREFIX) == want.removeprefix(_PREFIX)


def _parse(cls: type[M], data: bytes, url: str) -> M:
    out = cls()
    try:
        out.ParseFromString(data)
    except message.DecodeError as exc:
        msg = f"cannot decode any of type {url}: {exc}"
        raise InvalidArgumentError(msg) from exc
    return out


def registered() -> Mapping[str, str]:
    """Registered type URLs and how each is carried (``proto``, ``json``, ``raw``)."""
    return {url: entry.kind for url, entry in sorted(_by_url.items())}


for _url in (OCI_SPEC, OCI_PROCESS, OCI_LINUX_RESOURCES, OCI_WINDOWS_RESOURCES):
    register_json(_url)
# The legacy v1 runtime's options have no schema in this package: bytes pass through.
register_raw(RUNC_OPTIONS_V1)
