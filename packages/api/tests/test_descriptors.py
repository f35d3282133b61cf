"""Compare our generated descriptors with independent statements of containerd's API.

Two independent sources are used:

* siemens' ``containerd`` package (1.5.x), an independent generation of
  upstream's protos. Its generated modules are too old to import under the
  current protobuf runtime, so the serialized ``FileDescriptorProto`` bytes
  are read out of the module source with ``ast`` instead.
* a table of facts written by hand below, for everything added upstream
  after 1.5.

For every message both define, field names, numbers, types (with type
names) and labels must be identical; every field we define must be covered
by one of the two sources. Services must have the same methods, types and
streaming kinds.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import pkgutil
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

FDP = descriptor_pb2.FieldDescriptorProto

SCALARS: dict[str, descriptor_pb2.FieldDescriptorProto.Type.ValueType] = {
    "double": FDP.TYPE_DOUBLE,
    "float": FDP.TYPE_FLOAT,
    "int64": FDP.TYPE_INT64,
    "uint64": FDP.TYPE_UINT64,
    "int32": FDP.TYPE_INT32,
    "uint32": FDP.TYPE_UINT32,
    "bool": FDP.TYPE_BOOL,
    "string": FDP.TYPE_STRING,
    "bytes": FDP.TYPE_BYTES,
}


@dataclass
class Api:
    """Messages, enums and services of a set of files, by full name."""

    messages: dict[str, descriptor_pb2.DescriptorProto] = field(default_factory=dict)
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = field(default_factory=dict)
    services: dict[str, descriptor_pb2.ServiceDescriptorProto] = field(default_factory=dict)
    files: dict[str, descriptor_pb2.FileDescriptorProto] = field(default_factory=dict)

    def add_file(self, fdp: descriptor_pb2.FileDescriptorProto) -> None:
        self.files[fdp.name] = fdp
        prefix = f"{fdp.package}." if fdp.package else ""
        for enum in fdp.enum_type:
            self.enums[prefix + enum.name] = enum
        for msg in fdp.message_type:
            self._add_message(prefix + msg.name, msg)
        for svc in fdp.service:
            self.services[prefix + svc.name] = svc

    def _add_message(self, name: str, msg: descriptor_pb2.DescriptorProto) -> None:
        self.messages[name] = msg
        for enum in msg.enum_type:
            self.enums[f"{name}.{enum.name}"] = enum
        for nested in msg.nested_type:
            self._add_message(f"{name}.{nested.name}", nested)


def serialized_files_from_source(source: str) -> list[bytes]:
    """Extract serialized FileDescriptorProtos from generated ``_pb2.py`` text.

    Handles both generator styles: ``FileDescriptor(serialized_pb=b"...")``
    (old protoc) and ``AddSerializedFile(b"...")`` (newer protoc).
    """
    found: list[bytes] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.keyword) and node.arg == "serialized_pb":
            value = ast.literal_eval(node.value)
            if isinstance(value, bytes):
                found.append(value)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
            and node.args
        ):
            value = ast.literal_eval(node.args[0])
            if isinstance(value, bytes):
                found.append(value)
    return found


def load_siemens() -> Api:
    """Descriptors embedded in siemens' ``containerd`` distribution."""
    dist = importlib.metadata.distribution("containerd")
    api = Api()
    for entry in dist.files or []:
        if not entry.name.endswith("_pb2.py"):
            continue
        source = Path(str(entry.locate())).read_text(encoding="utf-8")
        for blob in serialized_files_from_source(source):
            api.add_file(descriptor_pb2.FileDescriptorProto.FromString(blob))
    return api


def load_ours(*, skip_packages: frozenset[str] = frozenset()) -> Api:
    """Descriptors of every generated module under ``pycontainerd.api``."""
    root = importlib.import_module("pycontainerd.api")
    api = Api()
    for info in pkgutil.walk_packages(root.__path__, prefix="pycontainerd.api."):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(info.name)
        fdp = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(fdp)
        if fdp.package not in skip_packages:
            api.add_file(fdp)
    return api


def generated_modules() -> list[str]:
    """Names of all generated modules (``_pb2`` and ``_pb2_grpc``)."""
    root = importlib.import_module("pycontainerd.api")
    return sorted(
        info.name
        for info in pkgutil.walk_packages(root.__path__, prefix="pycontainerd.api.")
        if info.name.endswith(("_pb2", "_pb2_grpc"))
    )


def _type_of(field_proto: descriptor_pb2.FieldDescriptorProto) -> str:
    if field_proto.type in (FDP.TYPE_MESSAGE, FDP.TYPE_ENUM):
        kind = "enum" if field_proto.type == FDP.TYPE_ENUM else "message"
        return f"{kind} {field_proto.type_name}"
    return FDP.Type.Name(field_proto.type)


def _label_of(field_proto: descriptor_pb2.FieldDescriptorProto) -> str:
    label = FDP.Label.Name(field_proto.label)
    return f"{label}+proto3_optional" if field_proto.proto3_optional else label


def compare_messages(ours: Api, theirs: Api, renamed: dict[str, str], *, name: str) -> list[str]:
    """Compare one message present in both; fields theirs has must match ours.

    ``renamed`` maps type names that moved upstream (old → new).
    """
    problems: list[str] = []
    mine = {f.number: f for f in ours.messages[name].field}
    for other in theirs.messages[name].field:
        got = mine.get(other.number)
        where = f"{name} field {other.number} ({other.name})"
        if got is None:
            problems.append(f"{where}: missing")
            continue
        expected_type = _type_of(other)
        for old, new in renamed.items():
            expected_type = expected_type.replace(f" {old}", f" {new}")
        checks = (
            ("name", got.name, other.name),
            ("type", _type_of(got), expected_type),
            ("label", _label_of(got), _label_of(other)),
        )
        problems.extend(
            f"{where}: {what} {actual!r} != upstream {wanted!r}"
            for what, actual, wanted in checks
            if actual != wanted
        )
    return problems


def method_signature(
    method: descriptor_pb2.MethodDescriptorProto, renamed: dict[str, str] | None = None
) -> str:
    """Render a method the way the fact tables write it (full type names)."""
    renamed = renamed or {}
    inp = renamed.get(method.input_type, method.input_type)
    out = renamed.get(method.output_type, method.output_type)
    cs = "stream " if method.client_streaming else ""
    ss = "stream " if method.server_streaming else ""
    return f"{method.name}({cs}{inp}) returns ({ss}{out})"


_FIELD_RE = re.compile(
    r"^(?:(?P<label>repeated|optional) )?"
    r"(?:map<(?P<key>[\w.]+), ?(?P<value>[\w.]+)>|(?P<type>[\w.]+)) "
    r"(?P<name>\w+) = (?P<number>\d+)$"
)
_METHOD_RE = re.compile(
    r"^(?P<name>\w+)\((?P<cs>stream )?(?P<inp>[\w.]+)\) "
    r"returns \((?P<ss>stream )?(?P<out>[\w.]+)\)$"
)


def _qualify(type_name: str, package: str) -> str:
    if type_name in SCALARS or type_name.startswith("."):
        return type_name
    return f".{package}.{type_name}"


def _expected_type(type_name: str, enums: set[str]) -> str:
    if type_name in SCALARS:
        return FDP.Type.Name(SCALARS[type_name])
    kind = "enum" if type_name.lstrip(".") in enums else "message"
    return f"{kind} {type_name}"


def check_fact_fields(
    ours: Api, message: str, package: str, lines: list[str], enums: set[str]
) -> tuple[list[str], set[int], set[str]]:
    """Check ``message`` of ``ours`` against proto-like fact lines.

    Returns problems, the field numbers covered, and the full names of the
    map-entry messages the facts covered.
    """
    problems: list[str] = []
    covered: set[int] = set()
    entries: set[str] = set()
    msg = ours.messages.get(message)
    if msg is None:
        return [f"{message}: missing"], covered, entries
    by_number = {f.number: f for f in msg.field}
    for line in lines:
        match = _FIELD_RE.match(line)
        if match is None:
            raise ValueError(f"bad fact line for {message}: {line!r}")
        number = int(match["number"])
        covered.add(number)
        where = f"{message} field {number} ({match['name']})"
        got = by_number.get(number)
        if got is None:
            problems.append(f"{where}: missing")
            continue
        if got.name != match["name"]:
            problems.append(f"{where}: name {got.name!r} != fact {match['name']!r}")
        if match["key"]:
            entry = f"{message}.{''.join(p.title() for p in match['name'].split('_'))}Entry"
            entries.add(entry)
            want = (f"message .{entry}", "LABEL_REPEATED")
            if (_type_of(got), _label_of(got)) != want:
                problems.append(f"{where}: {_type_of(got)} {_label_of(got)} is not map {want}")
                continue
            entry_msg = ours.messages.get(entry)
            if entry_msg is None or not entry_msg.options.map_entry:
                problems.append(f"{where}: {entry} is not a map entry")
                continue
            kv = {f.number: _type_of(f) for f in entry_msg.field}
            want_kv = {
                1: _expected_type(_qualify(match["key"], package), enums),
                2: _expected_type(_qualify(match["value"], package), enums),
            }
            if kv != want_kv:
                problems.append(f"{where}: map types {kv} != fact {want_kv}")
            continue
        want_type = _expected_type(_qualify(match["type"], package), enums)
        if _type_of(got) != want_type:
            problems.append(f"{where}: type {_type_of(got)!r} != fact {want_type!r}")
        want_label = {
            None: "LABEL_OPTIONAL",
            "repeated": "LABEL_REPEATED",
            "optional": "LABEL_OPTIONAL+proto3_optional",
        }[match["label"]]
        if _label_of(got) != want_label:
            problems.append(f"{where}: label {_label_of(got)!r} != fact {want_label!r}")
    return problems, covered, entries


def parse_method_fact(line: str, package: str) -> str:
    """Normalise a method fact line (relative names resolved in ``package``)."""
    match = _METHOD_RE.match(line)
    if match is None:
        raise ValueError(f"bad method fact: {line!r}")
    cs = "stream " if match["cs"] else ""
    ss = "stream " if match["ss"] else ""
    inp = _qualify(match["inp"], package)
    out = _qualify(match["out"], package)
    return f"{match['name']}({cs}{inp}) returns ({ss}{out})"


# ---------------------------------------------------------------------------
# Facts for what upstream added after 1.5 (read from containerd's api/ at its
# development head: next.pb.txt and the .proto sources). Lines use proto
# syntax; relative type names resolve in the section's package. A message
# that exists in siemens' 1.5 package only needs its newer fields here.
# ---------------------------------------------------------------------------

SHIM_TASK_MESSAGES: dict[str, list[str]] = {
    "CreateTaskRequest": [
        "string id = 1",
        "string bundle = 2",
        "repeated .containerd.types.Mount rootfs = 3",
        "bool terminal = 4",
        "string stdin = 5",
        "string stdout = 6",
        "string stderr = 7",
        "string checkpoint = 8",
        "string parent_checkpoint = 9",
        ".google.protobuf.Any options = 10",
    ],
    "CreateTaskResponse": ["uint32 pid = 1"],
    "DeleteRequest": ["string id = 1", "string exec_id = 2"],
    "DeleteResponse": [
        "uint32 pid = 1",
        "uint32 exit_status = 2",
        ".google.protobuf.Timestamp exited_at = 3",
    ],
    "ExecProcessRequest": [
        "string id = 1",
        "string exec_id = 2",
        "bool terminal = 3",
        "string stdin = 4",
        "string stdout = 5",
        "string stderr = 6",
        ".google.protobuf.Any spec = 7",
    ],
    "ExecProcessResponse": [],
    "ResizePtyRequest": [
        "string id = 1",
        "string exec_id = 2",
        "uint32 width = 3",
        "uint32 height = 4",
    ],
    "StateRequest": ["string id = 1", "string exec_id = 2"],
    "StateResponse": [
        "string id = 1",
        "string bundle = 2",
        "uint32 pid = 3",
        ".containerd.v1.types.Status status = 4",
        "string stdin = 5",
        "string stdout = 6",
        "string stderr = 7",
        "bool terminal = 8",
        "uint32 exit_status = 9",
        ".google.protobuf.Timestamp exited_at = 10",
        "string exec_id = 11",
    ],
    "KillRequest": ["string id = 1", "string exec_id = 2", "uint32 signal = 3", "bool all = 4"],
    "CloseIORequest": ["string id = 1", "string exec_id = 2", "bool stdin = 3"],
    "PidsRequest": ["string id = 1"],
    "PidsResponse": ["repeated .containerd.v1.types.ProcessInfo processes = 1"],
    "CheckpointTaskRequest": [
        "string id = 1",
        "string path = 2",
        ".google.protobuf.Any options = 3",
    ],
    "UpdateTaskRequest": [
        "string id = 1",
        ".google.protobuf.Any resources = 2",
        "map<string, string> annotations = 3",
    ],
    "StartRequest": ["string id = 1", "string exec_id = 2"],
    "StartResponse": ["uint32 pid = 1"],
    "WaitRequest": ["string id = 1", "string exec_id = 2"],
    "WaitResponse": ["uint32 exit_status = 1", ".google.protobuf.Timestamp exited_at = 2"],
    "StatsRequest": ["string id = 1"],
    "StatsResponse": [".google.protobuf.Any stats = 1"],
    "ConnectRequest": ["string id = 1"],
    "ConnectResponse": ["uint32 shim_pid = 1", "uint32 task_pid = 2", "string version = 3"],
    "ShutdownRequest": ["string id = 1", "bool now = 2"],
    "PauseRequest": ["string id = 1"],
    "ResumeRequest": ["string id = 1"],
}

SHIM_TASK_METHODS = [
    "State(StateRequest) returns (StateResponse)",
    "Create(CreateTaskRequest) returns (CreateTaskResponse)",
    "Start(StartRequest) returns (StartResponse)",
    "Delete(DeleteRequest) returns (DeleteResponse)",
    "Pids(PidsRequest) returns (PidsResponse)",
    "Pause(PauseRequest) returns (.google.protobuf.Empty)",
    "Resume(ResumeRequest) returns (.google.protobuf.Empty)",
    "Checkpoint(CheckpointTaskRequest) returns (.google.protobuf.Empty)",
    "Kill(KillRequest) returns (.google.protobuf.Empty)",
    "Exec(ExecProcessRequest) returns (.google.protobuf.Empty)",
    "ResizePty(ResizePtyRequest) returns (.google.protobuf.Empty)",
    "CloseIO(CloseIORequest) returns (.google.protobuf.Empty)",
    "Update(UpdateTaskRequest) returns (.google.protobuf.Empty)",
    "Wait(WaitRequest) returns (WaitResponse)",
    "Stats(StatsRequest) returns (StatsResponse)",
    "Connect(ConnectRequest) returns (ConnectResponse)",
    "Shutdown(ShutdownRequest) returns (.google.protobuf.Empty)",
]

FACT_ENUMS: dict[str, dict[str, int]] = {
    "containerd.v1.types.Status": {
        "UNKNOWN": 0,
        "CREATED": 1,
        "RUNNING": 2,
        "STOPPED": 3,
        "PAUSED": 4,
        "PAUSING": 5,
    },
    "containerd.v1.types.ExitReason": {"NONE": 0, "OOMKILLED": 1, "SIGNALED": 2},
    "containerd.types.transfer.HTTPDebug": {"DISABLED": 0, "DEBUG": 1, "TRACE": 2, "BOTH": 3},
    "containerd.types.transfer.AuthType": {"NONE": 0, "CREDENTIALS": 1, "REFRESH": 2, "HEADER": 3},
}

FACT_MESSAGES: dict[str, dict[str, list[str]]] = {
    "containerd.types": {
        "Platform": ["string os_version = 4"],
        "Envelope": [
            ".google.protobuf.Timestamp timestamp = 1",
            "string namespace = 2",
            "string topic = 3",
            ".google.protobuf.Any event = 4",
        ],
        "Sandbox": [
            "string sandbox_id = 1",
            "Sandbox.Runtime runtime = 2",
            ".google.protobuf.Any spec = 3",
            "map<string, string> labels = 4",
            ".google.protobuf.Timestamp created_at = 5",
            ".google.protobuf.Timestamp updated_at = 6",
            "map<string, .google.protobuf.Any> extensions = 7",
            "string sandboxer = 10",
        ],
        "Sandbox.Runtime": ["string name = 1", ".google.protobuf.Any options = 2"],
        "RuntimeRequest": ["string runtime_path = 1", ".google.protobuf.Any options = 2"],
        "RuntimeVersion": ["string version = 1", "string revision = 2"],
        "RuntimeInfo": [
            "string name = 1",
            "RuntimeVersion version = 2",
            ".google.protobuf.Any options = 3",
            ".google.protobuf.Any features = 4",
            "map<string, string> annotations = 5",
        ],
    },
    "containerd.v1.types": {"Process": ["ExitReason exit_reason = 11"]},
    "containerd.runc.v1": {
        "Options": [
            "bool no_pivot_root = 1",
            "bool no_new_keyring = 2",
            "string shim_cgroup = 3",
            "uint32 io_uid = 4",
            "uint32 io_gid = 5",
            "string binary_name = 6",
            "string root = 7",
            "bool systemd_cgroup = 9",
            "string criu_image_path = 10",
            "string criu_work_path = 11",
            "string task_api_address = 12",
            "uint32 task_api_version = 13",
        ],
        "CheckpointOptions": [
            "bool exit = 1",
            "bool open_tcp = 2",
            "bool external_unix_sockets = 3",
            "bool terminal = 4",
            "bool file_locks = 5",
            "repeated string empty_namespaces = 6",
            "string cgroups_mode = 7",
            "string image_path = 8",
            "string work_path = 9",
        ],
        "ProcessDetails": ["string exec_id = 1"],
    },
    "runtimeoptions.v1": {
        "Options": ["string type_url = 1", "string config_path = 2", "bytes config_body = 3"],
    },
    "containerd.types.transfer": {
        "ImageStore": [
            "string name = 1",
            "map<string, string> labels = 2",
            "repeated .containerd.types.Platform platforms = 3",
            "bool all_metadata = 4",
            "uint32 manifest_limit = 5",
            "repeated ImageReference extra_references = 6",
            "repeated UnpackConfiguration unpacks = 10",
        ],
        "UnpackConfiguration": [
            ".containerd.types.Platform platform = 1",
            "string snapshotter = 2",
        ],
        "ImageReference": [
            "string name = 1",
            "bool is_prefix = 2",
            "bool allow_overwrite = 3",
            "bool add_digest = 4",
            "bool skip_named_digest = 5",
        ],
        "ImageImportStream": [
            "string stream = 1",
            "string media_type = 2",
            "bool force_compress = 3",
        ],
        "ImageExportStream": [
            "string stream = 1",
            "string media_type = 2",
            "repeated .containerd.types.Platform platforms = 3",
            "bool all_platforms = 4",
            "bool skip_compatibility_manifest = 5",
            "bool skip_non_distributable = 6",
        ],
        "Progress": [
            "string event = 1",
            "string name = 2",
            "repeated string parents = 3",
            "int64 progress = 4",
            "int64 total = 5",
            ".containerd.types.Descriptor desc = 6",
        ],
        "OCIRegistry": ["string reference = 1", "RegistryResolver resolver = 2"],
        "RegistryResolver": [
            "string auth_stream = 1",
            "map<string, string> headers = 2",
            "string host_dir = 3",
            "string default_scheme = 4",
            "HTTPDebug http_debug = 5",
            "string logs_stream = 6",
        ],
        "AuthRequest": [
            "string host = 1",
            "string reference = 2",
            "repeated string wwwauthenticate = 3",
        ],
        "AuthResponse": [
            "AuthType authType = 1",
            "string secret = 2",
            "string username = 3",
            ".google.protobuf.Timestamp expire_at = 4",
        ],
        "Data": ["bytes data = 1"],
        "WindowUpdate": ["int32 update = 1"],
    },
    "containerd.services.containers.v1": {"Container": ["string sandbox = 11"]},
    "containerd.services.diff.v1": {
        "ApplyRequest": ["bool sync_fs = 4"],
        "DiffRequest": [".google.protobuf.Timestamp source_date_epoch = 6"],
    },
    "containerd.services.images.v1": {
        "CreateImageRequest": [".google.protobuf.Timestamp source_date_epoch = 2"],
        "UpdateImageRequest": [".google.protobuf.Timestamp source_date_epoch = 3"],
        "DeleteImageRequest": ["optional .containerd.types.Descriptor target = 3"],
    },
    "containerd.services.introspection.v1": {
        "ServerResponse": [
            "uint64 pid = 2",
            "uint64 pidns = 3",
            "repeated DeprecationWarning deprecations = 4",
        ],
        "DeprecationWarning": [
            "string id = 1",
            "string message = 2",
            ".google.protobuf.Timestamp last_occurrence = 3",
        ],
        "PluginInfoRequest": [
            "string type = 1",
            "string id = 2",
            ".google.protobuf.Any options = 3",
        ],
        "PluginInfoResponse": ["Plugin plugin = 1", ".google.protobuf.Any extra = 2"],
    },
    "containerd.services.tasks.v1": {
        "CreateTaskRequest": ["string runtime_path = 10"],
        "DeleteResponse": [".containerd.v1.types.ExitReason exit_reason = 5"],
        "WaitResponse": [".containerd.v1.types.ExitReason exit_reason = 5"],
    },
    "containerd.events": {
        "ContentCreate": ["string digest = 1", "int64 size = 2"],
        "SnapshotPrepare": ["string snapshotter = 5"],
        "SnapshotCommit": ["string snapshotter = 5"],
        "SnapshotRemove": ["string snapshotter = 5"],
        "TaskExit": [".containerd.v1.types.ExitReason exit_reason = 6"],
        "SandboxCreate": ["string sandbox_id = 1"],
        "SandboxStart": ["string sandbox_id = 1"],
        "SandboxExit": [
            "string sandbox_id = 1",
            "uint32 exit_status = 2",
            ".google.protobuf.Timestamp exited_at = 3",
        ],
    },
    "containerd.services.events.v1": {
        "ForwardRequest": [".containerd.types.Envelope envelope = 1"],
    },
    "containerd.services.events.ttrpc.v1": {
        "ForwardRequest": [".containerd.types.Envelope envelope = 1"],
    },
    "containerd.services.transfer.v1": {
        "TransferRequest": [
            ".google.protobuf.Any source = 1",
            ".google.protobuf.Any destination = 2",
            "TransferOptions options = 3",
        ],
        "TransferOptions": ["string progress_stream = 1"],
    },
    "containerd.services.streaming.v1": {"StreamInit": ["string id = 1"]},
    "containerd.services.sandbox.v1": {
        "StoreCreateRequest": [".containerd.types.Sandbox sandbox = 1"],
        "StoreCreateResponse": [".containerd.types.Sandbox sandbox = 1"],
        "StoreUpdateRequest": [
            ".containerd.types.Sandbox sandbox = 1",
            "repeated string fields = 2",
        ],
        "StoreUpdateResponse": [".containerd.types.Sandbox sandbox = 1"],
        "StoreDeleteRequest": ["string sandbox_id = 1"],
        "StoreDeleteResponse": [],
        "StoreListRequest": ["repeated string filters = 1"],
        "StoreListResponse": ["repeated .containerd.types.Sandbox list = 1"],
        "StoreGetRequest": ["string sandbox_id = 1"],
        "StoreGetResponse": [".containerd.types.Sandbox sandbox = 1"],
        "ControllerCreateRequest": [
            "string sandbox_id = 1",
            "repeated .containerd.types.Mount rootfs = 2",
            ".google.protobuf.Any options = 3",
            "string netns_path = 4",
            "map<string, string> annotations = 5",
            ".containerd.types.Sandbox sandbox = 6",
            "string sandboxer = 10",
        ],
        "ControllerCreateResponse": ["string sandbox_id = 1"],
        "ControllerStartRequest": ["string sandbox_id = 1", "string sandboxer = 10"],
        "ControllerStartResponse": [
            "string sandbox_id = 1",
            "uint32 pid = 2",
            ".google.protobuf.Timestamp created_at = 3",
            "map<string, string> labels = 4",
            "string address = 5",
            "uint32 version = 6",
        ],
        "ControllerPlatformRequest": ["string sandbox_id = 1", "string sandboxer = 10"],
        "ControllerPlatformResponse": [".containerd.types.Platform platform = 1"],
        "ControllerStopRequest": [
            "string sandbox_id = 1",
            "uint32 timeout_secs = 2",
            "string sandboxer = 10",
        ],
        "ControllerStopResponse": [],
        "ControllerWaitRequest": ["string sandbox_id = 1", "string sandboxer = 10"],
        "ControllerWaitResponse": [
            "uint32 exit_status = 1",
            ".google.protobuf.Timestamp exited_at = 2",
        ],
        "ControllerStatusRequest": [
            "string sandbox_id = 1",
            "bool verbose = 2",
            "string sandboxer = 10",
        ],
        "ControllerStatusResponse": [
            "string sandbox_id = 1",
            "uint32 pid = 2",
            "string state = 3",
            "map<string, string> info = 4",
            ".google.protobuf.Timestamp created_at = 5",
            ".google.protobuf.Timestamp exited_at = 6",
            ".google.protobuf.Any extra = 7",
            "string address = 8",
            "uint32 version = 9",
        ],
        "ControllerShutdownRequest": ["string sandbox_id = 1", "string sandboxer = 10"],
        "ControllerShutdownResponse": [],
        "ControllerMetricsRequest": ["string sandbox_id = 1", "string sandboxer = 10"],
        "ControllerMetricsResponse": [".containerd.types.Metric metrics = 1"],
        "ControllerUpdateRequest": [
            "string sandbox_id = 1",
            "string sandboxer = 2",
            ".containerd.types.Sandbox sandbox = 3",
            "repeated string fields = 4",
        ],
        "ControllerUpdateResponse": [],
    },
    "containerd.task.v2": SHIM_TASK_MESSAGES,
    "containerd.task.v3": {
        **SHIM_TASK_MESSAGES,
        "StateResponse": [
            *SHIM_TASK_MESSAGES["StateResponse"],
            ".containerd.v1.types.ExitReason exit_reason = 12",
        ],
    },
    "containerd.runtime.sandbox.v1": {
        "CreateSandboxRequest": [
            "string sandbox_id = 1",
            "string bundle_path = 2",
            "repeated .containerd.types.Mount rootfs = 3",
            ".google.protobuf.Any options = 4",
            "string netns_path = 5",
            "map<string, string> annotations = 6",
        ],
        "CreateSandboxResponse": [],
        "StartSandboxRequest": ["string sandbox_id = 1"],
        "StartSandboxResponse": ["uint32 pid = 1", ".google.protobuf.Timestamp created_at = 2"],
        "PlatformRequest": ["string sandbox_id = 1"],
        "PlatformResponse": [".containerd.types.Platform platform = 1"],
        "StopSandboxRequest": ["string sandbox_id = 1", "uint32 timeout_secs = 2"],
        "StopSandboxResponse": [],
        "UpdateSandboxRequest": [
            "string sandbox_id = 1",
            ".google.protobuf.Any resources = 2",
            "map<string, string> annotations = 3",
        ],
        "UpdateSandboxResponse": [],
        "WaitSandboxRequest": ["string sandbox_id = 1"],
        "WaitSandboxResponse": [
            "uint32 exit_status = 1",
            ".google.protobuf.Timestamp exited_at = 2",
        ],
        "SandboxStatusRequest": ["string sandbox_id = 1", "bool verbose = 2"],
        "SandboxStatusResponse": [
            "string sandbox_id = 1",
            "uint32 pid = 2",
            "string state = 3",
            "map<string, string> info = 4",
            ".google.protobuf.Timestamp created_at = 5",
            ".google.protobuf.Timestamp exited_at = 6",
            ".google.protobuf.Any extra = 7",
        ],
        "PingRequest": ["string sandbox_id = 1"],
        "PingResponse": [],
        "ShutdownSandboxRequest": ["string sandbox_id = 1"],
        "ShutdownSandboxResponse": [],
        "SandboxMetricsRequest": ["string sandbox_id = 1"],
        "SandboxMetricsResponse": [".containerd.types.Metric metrics = 1"],
    },
    "io.containerd.cgroups.v1": {
        "Metrics": [
            "repeated HugetlbStat hugetlb = 1",
            "PidsStat pids = 2",
            "CPUStat cpu = 3",
            "MemoryStat memory = 4",
            "BlkIOStat blkio = 5",
            "RdmaStat rdma = 6",
            "repeated NetworkStat network = 7",
            "CgroupStats cgroup_stats = 8",
            "MemoryOomControl memory_oom_control = 9",
        ],
        "HugetlbStat": [
            "uint64 usage = 1",
            "uint64 max = 2",
            "uint64 failcnt = 3",
            "string pagesize = 4",
        ],
        "PidsStat": [
            "uint64 current = 1",
            "uint64 limit = 2",
        ],
        "CPUStat": [
            "CPUUsage usage = 1",
            "Throttle throttling = 2",
        ],
        "CPUUsage": [
            "uint64 total = 1",
            "uint64 kernel = 2",
            "uint64 user = 3",
            "repeated uint64 per_cpu = 4",
        ],
        "Throttle": [
            "uint64 periods = 1",
            "uint64 throttled_periods = 2",
            "uint64 throttled_time = 3",
        ],
        "MemoryStat": [
            "uint64 cache = 1",
            "uint64 rss = 2",
            "uint64 rss_huge = 3",
            "uint64 mapped_file = 4",
            "uint64 dirty = 5",
            "uint64 writeback = 6",
            "uint64 pg_pg_in = 7",
            "uint64 pg_pg_out = 8",
            "uint64 pg_fault = 9",
            "uint64 pg_maj_fault = 10",
            "uint64 inactive_anon = 11",
            "uint64 active_anon = 12",
            "uint64 inactive_file = 13",
            "uint64 active_file = 14",
            "uint64 unevictable = 15",
            "uint64 hierarchical_memory_limit = 16",
            "uint64 hierarchical_swap_limit = 17",
            "uint64 total_cache = 18",
            "uint64 total_rss = 19",
            "uint64 total_rss_huge = 20",
            "uint64 total_mapped_file = 21",
            "uint64 total_dirty = 22",
            "uint64 total_writeback = 23",
            "uint64 total_pg_pg_in = 24",
            "uint64 total_pg_pg_out = 25",
            "uint64 total_pg_fault = 26",
            "uint64 total_pg_maj_fault = 27",
            "uint64 total_inactive_anon = 28",
            "uint64 total_active_anon = 29",
            "uint64 total_inactive_file = 30",
            "uint64 total_active_file = 31",
            "uint64 total_unevictable = 32",
            "MemoryEntry usage = 33",
            "MemoryEntry swap = 34",
            "MemoryEntry kernel = 35",
            "MemoryEntry kernel_tcp = 36",
        ],
        "MemoryEntry": [
            "uint64 limit = 1",
            "uint64 usage = 2",
            "uint64 max = 3",
            "uint64 failcnt = 4",
        ],
        "MemoryOomControl": [
            "uint64 oom_kill_disable = 1",
            "uint64 under_oom = 2",
            "uint64 oom_kill = 3",
        ],
        "BlkIOStat": [
            "repeated BlkIOEntry io_service_bytes_recursive = 1",
            "repeated BlkIOEntry io_serviced_recursive = 2",
            "repeated BlkIOEntry io_queued_recursive = 3",
            "repeated BlkIOEntry io_service_time_recursive = 4",
            "repeated BlkIOEntry io_wait_time_recursive = 5",
            "repeated BlkIOEntry io_merged_recursive = 6",
            "repeated BlkIOEntry io_time_recursive = 7",
            "repeated BlkIOEntry sectors_recursive = 8",
        ],
        "BlkIOEntry": [
            "string op = 1",
            "string device = 2",
            "uint64 major = 3",
            "uint64 minor = 4",
            "uint64 value = 5",
        ],
        "RdmaStat": [
            "repeated RdmaEntry current = 1",
            "repeated RdmaEntry limit = 2",
        ],
        "RdmaEntry": [
            "string device = 1",
            "uint32 hca_handles = 2",
            "uint32 hca_objects = 3",
        ],
        "NetworkStat": [
            "string name = 1",
            "uint64 rx_bytes = 2",
            "uint64 rx_packets = 3",
            "uint64 rx_errors = 4",
            "uint64 rx_dropped = 5",
            "uint64 tx_bytes = 6",
            "uint64 tx_packets = 7",
            "uint64 tx_errors = 8",
            "uint64 tx_dropped = 9",
        ],
        "CgroupStats": [
            "uint64 nr_sleeping = 1",
            "uint64 nr_running = 2",
            "uint64 nr_stopped = 3",
            "uint64 nr_uninterruptible = 4",
            "uint64 nr_io_wait = 5",
        ],
    },
    "io.containerd.cgroups.v2": {
        "Metrics": [
            "PidsStat pids = 1",
            "CPUStat cpu = 2",
            "MemoryStat memory = 4",
            "RdmaStat rdma = 5",
            "IOStat io = 6",
            "repeated HugeTlbStat hugetlb = 7",
            "MemoryEvents memory_events = 8",
            "repeated NetworkStat network = 9",
        ],
        "PSIData": [
            "double avg10 = 1",
            "double avg60 = 2",
            "double avg300 = 3",
            "uint64 total = 4",
        ],
        "PSIStats": [
            "PSIData some = 1",
            "PSIData full = 2",
        ],
        "PidsStat": [
            "uint64 current = 1",
            "uint64 limit = 2",
        ],
        "CPUStat": [
            "uint64 usage_usec = 1",
            "uint64 user_usec = 2",
            "uint64 system_usec = 3",
            "uint64 nr_periods = 4",
            "uint64 nr_throttled = 5",
            "uint64 throttled_usec = 6",
            "PSIStats psi = 7",
            "uint64 nr_bursts = 8",
            "uint64 burst_usec = 9",
        ],
        "MemoryStat": [
            "uint64 anon = 1",
            "uint64 file = 2",
            "uint64 kernel_stack = 3",
            "uint64 slab = 4",
            "uint64 sock = 5",
            "uint64 shmem = 6",
            "uint64 file_mapped = 7",
            "uint64 file_dirty = 8",
            "uint64 file_writeback = 9",
            "uint64 anon_thp = 10",
            "uint64 inactive_anon = 11",
            "uint64 active_anon = 12",
            "uint64 inactive_file = 13",
            "uint64 active_file = 14",
            "uint64 unevictable = 15",
            "uint64 slab_reclaimable = 16",
            "uint64 slab_unreclaimable = 17",
            "uint64 pgfault = 18",
            "uint64 pgmajfault = 19",
            "uint64 workingset_refault = 20",
            "uint64 workingset_activate = 21",
            "uint64 workingset_nodereclaim = 22",
            "uint64 pgrefill = 23",
            "uint64 pgscan = 24",
            "uint64 pgsteal = 25",
            "uint64 pgactivate = 26",
            "uint64 pgdeactivate = 27",
            "uint64 pglazyfree = 28",
            "uint64 pglazyfreed = 29",
            "uint64 thp_fault_alloc = 30",
            "uint64 thp_collapse_alloc = 31",
            "uint64 usage = 32",
            "uint64 usage_limit = 33",
            "uint64 swap_usage = 34",
            "uint64 swap_limit = 35",
            "uint64 max_usage = 36",
            "uint64 swap_max_usage = 37",
            "PSIStats psi = 38",
            "uint64 workingset_refault_anon = 39",
            "uint64 workingset_refault_file = 40",
            "uint64 workingset_activate_anon = 41",
            "uint64 workingset_activate_file = 42",
        ],
        "MemoryEvents": [
            "uint64 low = 1",
            "uint64 high = 2",
            "uint64 max = 3",
            "uint64 oom = 4",
            "uint64 oom_kill = 5",
            "uint64 oom_group_kill = 6",
        ],
        "RdmaStat": [
            "repeated RdmaEntry current = 1",
            "repeated RdmaEntry limit = 2",
        ],
        "RdmaEntry": [
            "string device = 1",
            "uint32 hca_handles = 2",
            "uint32 hca_objects = 3",
        ],
        "IOStat": [
            "repeated IOEntry usage = 1",
            "PSIStats psi = 2",
        ],
        "IOEntry": [
            "uint64 major = 1",
            "uint64 minor = 2",
            "uint64 rbytes = 3",
            "uint64 wbytes = 4",
            "uint64 rios = 5",
            "uint64 wios = 6",
        ],
        "HugeTlbStat": [
            "uint64 current = 1",
            "uint64 max = 2",
            "string pagesize = 3",
            "uint64 failcnt = 4",
        ],
        "NetworkStat": [
            "string name = 1",
            "uint64 rx_bytes = 2",
            "uint64 rx_packets = 3",
            "uint64 rx_errors = 4",
            "uint64 rx_dropped = 5",
            "uint64 tx_bytes = 6",
            "uint64 tx_packets = 7",
            "uint64 tx_errors = 8",
            "uint64 tx_dropped = 9",
        ],
    },
}

FACT_METHODS: dict[str, list[str]] = {
    "containerd.services.introspection.v1.Introspection": [
        "PluginInfo(PluginInfoRequest) returns (PluginInfoResponse)",
    ],
    "containerd.services.transfer.v1.Transfer": [
        "Transfer(TransferRequest) returns (.google.protobuf.Empty)",
    ],
    "containerd.services.streaming.v1.Streaming": [
        "Stream(stream .google.protobuf.Any) returns (stream .google.protobuf.Any)",
    ],
    "containerd.services.sandbox.v1.Store": [
        "Create(StoreCreateRequest) returns (StoreCreateResponse)",
        "Update(StoreUpdateRequest) returns (StoreUpdateResponse)",
        "Delete(StoreDeleteRequest) returns (StoreDeleteResponse)",
        "List(StoreListRequest) returns (StoreListResponse)",
        "Get(StoreGetRequest) returns (StoreGetResponse)",
    ],
    "containerd.services.sandbox.v1.Controller": [
        "Create(ControllerCreateRequest) returns (ControllerCreateResponse)",
        "Start(ControllerStartRequest) returns (ControllerStartResponse)",
        "Platform(ControllerPlatformRequest) returns (ControllerPlatformResponse)",
        "Stop(ControllerStopRequest) returns (ControllerStopResponse)",
        "Wait(ControllerWaitRequest) returns (ControllerWaitResponse)",
        "Status(ControllerStatusRequest) returns (ControllerStatusResponse)",
        "Shutdown(ControllerShutdownRequest) returns (ControllerShutdownResponse)",
        "Metrics(ControllerMetricsRequest) returns (ControllerMetricsResponse)",
        "Update(ControllerUpdateRequest) returns (ControllerUpdateResponse)",
    ],
    "containerd.task.v2.Task": SHIM_TASK_METHODS,
    "containerd.task.v3.Task": SHIM_TASK_METHODS,
    "containerd.runtime.sandbox.v1.Sandbox": [
        "CreateSandbox(CreateSandboxRequest) returns (CreateSandboxResponse)",
        "StartSandbox(StartSandboxRequest) returns (StartSandboxResponse)",
        "Platform(PlatformRequest) returns (PlatformResponse)",
        "StopSandbox(StopSandboxRequest) returns (StopSandboxResponse)",
        "WaitSandbox(WaitSandboxRequest) returns (WaitSandboxResponse)",
        "SandboxStatus(SandboxStatusRequest) returns (SandboxStatusResponse)",
        "PingSandbox(PingRequest) returns (PingResponse)",
        "ShutdownSandbox(ShutdownSandboxRequest) returns (ShutdownSandboxResponse)",
        "SandboxMetrics(SandboxMetricsRequest) returns (SandboxMetricsResponse)",
    ],
}

# Types that moved upstream after 1.5 (old full name -> new full name); the
# old messages are gone from the API, so only their new home is compared.
RENAMED = {
    ".containerd.services.events.v1.Envelope": ".containerd.types.Envelope",
    ".containerd.services.events.ttrpc.v1.Envelope": ".containerd.types.Envelope",
}
SIEMENS_ONLY_MESSAGES = {
    "containerd.services.events.v1.Envelope",
    "containerd.services.events.ttrpc.v1.Envelope",
}
# The field-path options moved from package containerd.plugin to
# containerd.types (same extension numbers).
FIELDPATH_EXTENSIONS = {
    "fieldpath_all": (63300, ".google.protobuf.FileOptions"),
    "fieldpath": (64400, ".google.protobuf.MessageOptions"),
}
# The ttrpc envelope messages are owned and tested with the ttrpc client.
SKIP_PACKAGES = frozenset({"ttrpc"})


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def siemens() -> Api:
    return load_siemens()


@pytest.fixture(scope="module")
def ours() -> Api:
    return load_ours(skip_packages=SKIP_PACKAGES)


def _fact_enum_names() -> set[str]:
    return set(FACT_ENUMS)


def _all_fact_checks(ours: Api) -> tuple[list[str], dict[str, set[int]], set[str]]:
    problems: list[str] = []
    covered: dict[str, set[int]] = {}
    entries: set[str] = set()
    enums = _fact_enum_names() | set(ours.enums)
    for package, messages in FACT_MESSAGES.items():
        for rel, lines in messages.items():
            name = f"{package}.{rel}"
            found, numbers, maps = check_fact_fields(ours, name, package, lines, enums)
            problems.extend(found)
            covered.setdefault(name, set()).update(numbers)
            entries |= maps
    return problems, covered, entries


def test_siemens_descriptors_are_read(siemens: Api) -> None:
    # Guards the ast extraction: an empty result would make the comparisons vacuous.
    assert len(siemens.messages) > 100
    assert "containerd.services.content.v1.WriteContentRequest" in siemens.messages
    assert "containerd.services.tasks.v1.Tasks" in siemens.services


def test_messages_match_siemens(ours: Api, siemens: Api) -> None:
    problems = [
        problem
        for name in sorted(set(ours.messages) & set(siemens.messages))
        for problem in compare_messages(ours, siemens, RENAMED, name=name)
    ]
    assert problems == []


def test_no_siemens_message_is_missing(ours: Api, siemens: Api) -> None:
    assert set(siemens.messages) - set(ours.messages) == SIEMENS_ONLY_MESSAGES


def test_newer_messages_match_facts(ours: Api) -> None:
    problems, _, _ = _all_fact_checks(ours)
    assert problems == []


def test_every_field_is_checked(ours: Api, siemens: Api) -> None:
    _, covered, entries = _all_fact_checks(ours)
    unchecked: list[str] = []
    for name, msg in sorted(ours.messages.items()):
        in_siemens = (
            {f.number for f in siemens.messages[name].field} if name in siemens.messages else set()
        )
        if msg.options.map_entry and (name in entries or name in siemens.messages):
            continue
        if name not in siemens.messages and name not in covered:
            unchecked.append(f"{name}: message not in siemens' package nor in the facts")
            continue
        known = in_siemens | covered.get(name, set())
        unchecked.extend(
            f"{name} field {f.number} ({f.name})" for f in msg.field if f.number not in known
        )
    assert unchecked == []


def test_enums_match(ours: Api, siemens: Api) -> None:
    problems: list[str] = []
    for name, enum in sorted(ours.enums.items()):
        values = {v.name: v.number for v in enum.value}
        if name in FACT_ENUMS:
            if values != FACT_ENUMS[name]:
                problems.append(f"{name}: {values} != fact {FACT_ENUMS[name]}")
        elif name in siemens.enums:
            theirs = {v.name: v.number for v in siemens.enums[name].value}
            if values != theirs:
                problems.append(f"{name}: {values} != upstream 1.5 {theirs}")
        else:
            problems.append(f"{name}: enum not in siemens' package nor in the facts")
    for name, enum in siemens.enums.items():
        if name in FACT_ENUMS:
            theirs = {v.name: v.number for v in enum.value}
            # The facts extend 1.5's values, never contradict them.
            assert theirs.items() <= FACT_ENUMS[name].items(), name
    assert problems == []


def test_services_match(ours: Api, siemens: Api) -> None:
    problems: list[str] = []
    for name, svc in sorted(ours.services.items()):
        package = name.rsplit(".", 1)[0]
        mine = [method_signature(m) for m in svc.method]
        expected: list[str] = []
        if name in siemens.services:
            expected += [method_signature(m, RENAMED) for m in siemens.services[name].method]
        expected += [parse_method_fact(line, package) for line in FACT_METHODS.get(name, [])]
        if not expected:
            problems.append(f"{name}: service not in siemens' package nor in the facts")
        elif sorted(mine) != sorted(expected):
            problems.append(f"{name}: {sorted(set(mine) ^ set(expected))}")
    missing = (set(siemens.services) | set(FACT_METHODS)) - set(ours.services)
    assert problems == []
    assert missing == set()


def test_fieldpath_extensions(ours: Api, siemens: Api) -> None:
    theirs = {
        ext.name: (ext.number, ext.extendee)
        for fdp in siemens.files.values()
        if fdp.package == "containerd.plugin"
        for ext in fdp.extension
    }
    mine = {
        ext.name: (ext.number, ext.extendee)
        for fdp in ours.files.values()
        if fdp.package == "containerd.types"
        for ext in fdp.extension
    }
    assert theirs == FIELDPATH_EXTENSIONS
    assert mine == FIELDPATH_EXTENSIONS


def test_image_events_keep_the_images_package(ours: Api) -> None:
    # Upstream's type URLs for image events are containerd.services.images.v1.*.
    for event in ("ImageCreate", "ImageUpdate", "ImageDelete"):
        assert f"containerd.services.images.v1.{event}" in ours.messages
        assert f"containerd.events.{event}" not in ours.messages


def _mutated(api: Api, message: str, field_number: int, /, **changes: object) -> Api:
    copy = Api()
    for fdp in api.files.values():
        clone = descriptor_pb2.FileDescriptorProto()
        clone.CopyFrom(fdp)
        copy.add_file(clone)
    for f in copy.messages[message].field:
        if f.number == field_number:
            for attr, value in changes.items():
                setattr(f, attr, value)
    return copy


def test_comparison_detects_a_wrong_field_number(ours: Api, siemens: Api) -> None:
    name = "containerd.services.content.v1.WriteContentRequest"
    broken = _mutated(ours, name, 5, number=15)  # offset = 15 instead of 5
    assert compare_messages(broken, siemens, RENAMED, name=name) != []
    assert compare_messages(ours, siemens, RENAMED, name=name) == []


def test_comparison_detects_a_wrong_type_or_label(ours: Api, siemens: Api) -> None:
    name = "containerd.services.tasks.v1.KillRequest"
    assert compare_messages(
        _mutated(ours, name, 3, type=FDP.TYPE_INT32), siemens, RENAMED, name=name
    )
    assert compare_messages(
        _mutated(ours, name, 3, label=FDP.LABEL_REPEATED), siemens, RENAMED, name=name
    )


def test_fact_check_detects_a_wrong_field_number(ours: Api) -> None:
    enums = _fact_enum_names() | set(ours.enums)
    name = "containerd.services.sandbox.v1.ControllerStartRequest"
    lines = FACT_MESSAGES["containerd.services.sandbox.v1"]["ControllerStartRequest"]
    broken = _mutated(ours, name, 10, number=9)
    problems, _, _ = check_fact_fields(broken, name, "containerd.services.sandbox.v1", lines, enums)
    assert problems != []
    problems, _, _ = check_fact_fields(ours, name, "containerd.services.sandbox.v1", lines, enums)
    assert problems == []


def test_source_extraction_handles_both_generator_styles() -> None:
    fdp = descriptor_pb2.FileDescriptorProto(name="x.proto", package="p")
    blob = fdp.SerializeToString()
    old_style = f"D = _descriptor.FileDescriptor(name='x', serialized_pb={blob!r})\n"
    new_style = f"D = _descriptor_pool.Default().AddSerializedFile({blob!r})\n"
    assert serialized_files_from_source(old_style) == [blob]
    assert serialized_files_from_source(new_style) == [blob]
