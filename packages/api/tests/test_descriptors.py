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

# ---------------------------------------------------------------------------
# The Kubernetes CRI (package runtime.v1), read from k8s.io/cri-api v0.36.3
# (pkg/apis/runtime/v1/api.proto). Not in siemens' package at all.
# ---------------------------------------------------------------------------

CRI_ENUMS: dict[str, dict[str, int]] = {
    "runtime.v1.Protocol": {"TCP": 0, "UDP": 1, "SCTP": 2},
    "runtime.v1.MountPropagation": {
        "PROPAGATION_PRIVATE": 0,
        "PROPAGATION_HOST_TO_CONTAINER": 1,
        "PROPAGATION_BIDIRECTIONAL": 2,
    },
    "runtime.v1.NamespaceMode": {"POD": 0, "CONTAINER": 1, "NODE": 2, "TARGET": 3},
    "runtime.v1.SupplementalGroupsPolicy": {"Merge": 0, "Strict": 1},
    "runtime.v1.SecurityProfile.ProfileType": {
        "RuntimeDefault": 0,
        "Unconfined": 1,
        "Localhost": 2,
    },
    "runtime.v1.PodSandboxState": {"SANDBOX_READY": 0, "SANDBOX_NOTREADY": 1},
    "runtime.v1.Signal": {
        "RUNTIME_DEFAULT": 0,
        "SIGABRT": 1,
        "SIGALRM": 2,
        "SIGBUS": 3,
        "SIGCHLD": 4,
        "SIGCLD": 5,
        "SIGCONT": 6,
        "SIGFPE": 7,
        "SIGHUP": 8,
        "SIGILL": 9,
        "SIGINT": 10,
        "SIGIO": 11,
        "SIGIOT": 12,
        "SIGKILL": 13,
        "SIGPIPE": 14,
        "SIGPOLL": 15,
        "SIGPROF": 16,
        "SIGPWR": 17,
        "SIGQUIT": 18,
        "SIGSEGV": 19,
        "SIGSTKFLT": 20,
        "SIGSTOP": 21,
        "SIGSYS": 22,
        "SIGTERM": 23,
        "SIGTRAP": 24,
        "SIGTSTP": 25,
        "SIGTTIN": 26,
        "SIGTTOU": 27,
        "SIGURG": 28,
        "SIGUSR1": 29,
        "SIGUSR2": 30,
        "SIGVTALRM": 31,
        "SIGWINCH": 32,
        "SIGXCPU": 33,
        "SIGXFSZ": 34,
        "SIGRTMIN": 35,
        "SIGRTMINPLUS1": 36,
        "SIGRTMINPLUS2": 37,
        "SIGRTMINPLUS3": 38,
        "SIGRTMINPLUS4": 39,
        "SIGRTMINPLUS5": 40,
        "SIGRTMINPLUS6": 41,
        "SIGRTMINPLUS7": 42,
        "SIGRTMINPLUS8": 43,
        "SIGRTMINPLUS9": 44,
        "SIGRTMINPLUS10": 45,
        "SIGRTMINPLUS11": 46,
        "SIGRTMINPLUS12": 47,
        "SIGRTMINPLUS13": 48,
        "SIGRTMINPLUS14": 49,
        "SIGRTMINPLUS15": 50,
        "SIGRTMAXMINUS14": 51,
        "SIGRTMAXMINUS13": 52,
        "SIGRTMAXMINUS12": 53,
        "SIGRTMAXMINUS11": 54,
        "SIGRTMAXMINUS10": 55,
        "SIGRTMAXMINUS9": 56,
        "SIGRTMAXMINUS8": 57,
        "SIGRTMAXMINUS7": 58,
        "SIGRTMAXMINUS6": 59,
        "SIGRTMAXMINUS5": 60,
        "SIGRTMAXMINUS4": 61,
        "SIGRTMAXMINUS3": 62,
        "SIGRTMAXMINUS2": 63,
        "SIGRTMAXMINUS1": 64,
        "SIGRTMAX": 65,
    },
    "runtime.v1.ContainerState": {
        "CONTAINER_CREATED": 0,
        "CONTAINER_RUNNING": 1,
        "CONTAINER_EXITED": 2,
        "CONTAINER_UNKNOWN": 3,
    },
    "runtime.v1.ContainerEventType": {
        "CONTAINER_CREATED_EVENT": 0,
        "CONTAINER_STARTED_EVENT": 1,
        "CONTAINER_STOPPED_EVENT": 2,
        "CONTAINER_DELETED_EVENT": 3,
    },
    "runtime.v1.MetricType": {"COUNTER": 0, "GAUGE": 1},
    "runtime.v1.CgroupDriver": {"SYSTEMD": 0, "CGROUPFS": 1},
}

CRI_MESSAGES: dict[str, list[str]] = {
    "VersionRequest": [
        "string version = 1",
    ],
    "VersionResponse": [
        "string version = 1",
        "string runtime_name = 2",
        "string runtime_version = 3",
        "string runtime_api_version = 4",
    ],
    "DNSConfig": [
        "repeated string servers = 1",
        "repeated string searches = 2",
        "repeated string options = 3",
    ],
    "PortMapping": [
        ".runtime.v1.Protocol protocol = 1",
        "int32 container_port = 2",
        "int32 host_port = 3",
        "string host_ip = 4",
    ],
    "Mount": [
        "string container_path = 1",
        "string host_path = 2",
        "bool readonly = 3",
        "bool selinux_relabel = 4",
        ".runtime.v1.MountPropagation propagation = 5",
        "repeated .runtime.v1.IDMapping uidMappings = 6",
        "repeated .runtime.v1.IDMapping gidMappings = 7",
        "bool recursive_read_only = 8",
        ".runtime.v1.ImageSpec image = 9",
        "string image_sub_path = 10",
    ],
    "IDMapping": [
        "uint32 host_id = 1",
        "uint32 container_id = 2",
        "uint32 length = 3",
    ],
    "UserNamespace": [
        ".runtime.v1.NamespaceMode mode = 1",
        "repeated .runtime.v1.IDMapping uids = 2",
        "repeated .runtime.v1.IDMapping gids = 3",
    ],
    "NamespaceOption": [
        ".runtime.v1.NamespaceMode network = 1",
        ".runtime.v1.NamespaceMode pid = 2",
        ".runtime.v1.NamespaceMode ipc = 3",
        "string target_id = 4",
        ".runtime.v1.UserNamespace userns_options = 5",
    ],
    "Int64Value": [
        "int64 value = 1",
    ],
    "LinuxSandboxSecurityContext": [
        ".runtime.v1.NamespaceOption namespace_options = 1",
        ".runtime.v1.SELinuxOption selinux_options = 2",
        ".runtime.v1.Int64Value run_as_user = 3",
        ".runtime.v1.Int64Value run_as_group = 8",
        "bool readonly_rootfs = 4",
        "repeated int64 supplemental_groups = 5",
        ".runtime.v1.SupplementalGroupsPolicy supplemental_groups_policy = 11",
        "bool privileged = 6",
        ".runtime.v1.SecurityProfile seccomp = 9",
        ".runtime.v1.SecurityProfile apparmor = 10",
        "string seccomp_profile_path = 7",
    ],
    "SecurityProfile": [
        ".runtime.v1.SecurityProfile.ProfileType profile_type = 1",
        "string localhost_ref = 2",
    ],
    "LinuxPodSandboxConfig": [
        "string cgroup_parent = 1",
        ".runtime.v1.LinuxSandboxSecurityContext security_context = 2",
        "map<string, string> sysctls = 3",
        ".runtime.v1.LinuxContainerResources overhead = 4",
        ".runtime.v1.LinuxContainerResources resources = 5",
    ],
    "PodSandboxMetadata": [
        "string name = 1",
        "string uid = 2",
        "string namespace = 3",
        "uint32 attempt = 4",
    ],
    "PodSandboxConfig": [
        ".runtime.v1.PodSandboxMetadata metadata = 1",
        "string hostname = 2",
        "string log_directory = 3",
        ".runtime.v1.DNSConfig dns_config = 4",
        "repeated .runtime.v1.PortMapping port_mappings = 5",
        "map<string, string> labels = 6",
        "map<string, string> annotations = 7",
        ".runtime.v1.LinuxPodSandboxConfig linux = 8",
        ".runtime.v1.WindowsPodSandboxConfig windows = 9",
    ],
    "RunPodSandboxRequest": [
        ".runtime.v1.PodSandboxConfig config = 1",
        "string runtime_handler = 2",
    ],
    "RunPodSandboxResponse": [
        "string pod_sandbox_id = 1",
    ],
    "StopPodSandboxRequest": [
        "string pod_sandbox_id = 1",
    ],
    "StopPodSandboxResponse": [],
    "RemovePodSandboxRequest": [
        "string pod_sandbox_id = 1",
    ],
    "RemovePodSandboxResponse": [],
    "PodSandboxStatusRequest": [
        "string pod_sandbox_id = 1",
        "bool verbose = 2",
    ],
    "PodIP": [
        "string ip = 1",
    ],
    "PodSandboxNetworkStatus": [
        "string ip = 1",
        "repeated .runtime.v1.PodIP additional_ips = 2",
    ],
    "Namespace": [
        ".runtime.v1.NamespaceOption options = 2",
    ],
    "LinuxPodSandboxStatus": [
        ".runtime.v1.Namespace namespaces = 1",
    ],
    "PodSandboxStatus": [
        "string id = 1",
        ".runtime.v1.PodSandboxMetadata metadata = 2",
        ".runtime.v1.PodSandboxState state = 3",
        "int64 created_at = 4",
        ".runtime.v1.PodSandboxNetworkStatus network = 5",
        ".runtime.v1.LinuxPodSandboxStatus linux = 6",
        "map<string, string> labels = 7",
        "map<string, string> annotations = 8",
        "string runtime_handler = 9",
    ],
    "PodSandboxStatusResponse": [
        ".runtime.v1.PodSandboxStatus status = 1",
        "map<string, string> info = 2",
        "repeated .runtime.v1.ContainerStatus containers_statuses = 3",
        "int64 timestamp = 4",
    ],
    "PodSandboxStateValue": [
        ".runtime.v1.PodSandboxState state = 1",
    ],
    "PodSandboxFilter": [
        "string id = 1",
        ".runtime.v1.PodSandboxStateValue state = 2",
        "map<string, string> label_selector = 3",
    ],
    "ListPodSandboxRequest": [
        ".runtime.v1.PodSandboxFilter filter = 1",
    ],
    "PodSandbox": [
        "string id = 1",
        ".runtime.v1.PodSandboxMetadata metadata = 2",
        ".runtime.v1.PodSandboxState state = 3",
        "int64 created_at = 4",
        "map<string, string> labels = 5",
        "map<string, string> annotations = 6",
        "string runtime_handler = 7",
    ],
    "ListPodSandboxResponse": [
        "repeated .runtime.v1.PodSandbox items = 1",
    ],
    "StreamPodSandboxesRequest": [
        ".runtime.v1.PodSandboxFilter filter = 1",
    ],
    "StreamPodSandboxesResponse": [
        "repeated .runtime.v1.PodSandbox pod_sandboxes = 1",
    ],
    "PodSandboxStatsRequest": [
        "string pod_sandbox_id = 1",
    ],
    "PodSandboxStatsResponse": [
        ".runtime.v1.PodSandboxStats stats = 1",
    ],
    "PodSandboxStatsFilter": [
        "string id = 1",
        "map<string, string> label_selector = 2",
    ],
    "ListPodSandboxStatsRequest": [
        ".runtime.v1.PodSandboxStatsFilter filter = 1",
    ],
    "ListPodSandboxStatsResponse": [
        "repeated .runtime.v1.PodSandboxStats stats = 1",
    ],
    "StreamPodSandboxStatsRequest": [
        ".runtime.v1.PodSandboxStatsFilter filter = 1",
    ],
    "StreamPodSandboxStatsResponse": [
        "repeated .runtime.v1.PodSandboxStats pod_sandbox_stats = 1",
    ],
    "PodSandboxAttributes": [
        "string id = 1",
        ".runtime.v1.PodSandboxMetadata metadata = 2",
        "map<string, string> labels = 3",
        "map<string, string> annotations = 4",
    ],
    "PodSandboxStats": [
        ".runtime.v1.PodSandboxAttributes attributes = 1",
        ".runtime.v1.LinuxPodSandboxStats linux = 2",
        ".runtime.v1.WindowsPodSandboxStats windows = 3",
    ],
    "LinuxPodSandboxStats": [
        ".runtime.v1.CpuUsage cpu = 1",
        ".runtime.v1.MemoryUsage memory = 2",
        ".runtime.v1.NetworkUsage network = 3",
        ".runtime.v1.ProcessUsage process = 4",
        "repeated .runtime.v1.ContainerStats containers = 5",
        ".runtime.v1.IoUsage io = 6",
    ],
    "WindowsPodSandboxStats": [
        ".runtime.v1.WindowsCpuUsage cpu = 1",
        ".runtime.v1.WindowsMemoryUsage memory = 2",
        ".runtime.v1.WindowsNetworkUsage network = 3",
        ".runtime.v1.WindowsProcessUsage process = 4",
        "repeated .runtime.v1.WindowsContainerStats containers = 5",
    ],
    "NetworkUsage": [
        "int64 timestamp = 1",
        ".runtime.v1.NetworkInterfaceUsage default_interface = 2",
        "repeated .runtime.v1.NetworkInterfaceUsage interfaces = 3",
    ],
    "WindowsNetworkUsage": [
        "int64 timestamp = 1",
        ".runtime.v1.WindowsNetworkInterfaceUsage default_interface = 2",
        "repeated .runtime.v1.WindowsNetworkInterfaceUsage interfaces = 3",
    ],
    "NetworkInterfaceUsage": [
        "string name = 1",
        ".runtime.v1.UInt64Value rx_bytes = 2",
        ".runtime.v1.UInt64Value rx_errors = 3",
        ".runtime.v1.UInt64Value tx_bytes = 4",
        ".runtime.v1.UInt64Value tx_errors = 5",
    ],
    "WindowsNetworkInterfaceUsage": [
        "string name = 1",
        ".runtime.v1.UInt64Value rx_bytes = 2",
        ".runtime.v1.UInt64Value rx_packets_dropped = 3",
        ".runtime.v1.UInt64Value tx_bytes = 4",
        ".runtime.v1.UInt64Value tx_packets_dropped = 5",
    ],
    "ProcessUsage": [
        "int64 timestamp = 1",
        ".runtime.v1.UInt64Value process_count = 2",
    ],
    "WindowsProcessUsage": [
        "int64 timestamp = 1",
        ".runtime.v1.UInt64Value process_count = 2",
    ],
    "ImageSpec": [
        "string image = 1",
        "map<string, string> annotations = 2",
        "string user_specified_image = 18",
        "string runtime_handler = 19",
        "string image_ref = 20",
    ],
    "KeyValue": [
        "string key = 1",
        "bytes value = 2",
    ],
    "LinuxContainerResources": [
        "int64 cpu_period = 1",
        "int64 cpu_quota = 2",
        "int64 cpu_shares = 3",
        "int64 memory_limit_in_bytes = 4",
        "int64 oom_score_adj = 5",
        "string cpuset_cpus = 6",
        "string cpuset_mems = 7",
        "repeated .runtime.v1.HugepageLimit hugepage_limits = 8",
        "map<string, string> unified = 9",
        "int64 memory_swap_limit_in_bytes = 10",
    ],
    "HugepageLimit": [
        "string page_size = 1",
        "uint64 limit = 2",
    ],
    "SELinuxOption": [
        "string user = 1",
        "string role = 2",
        "string type = 3",
        "string level = 4",
    ],
    "Capability": [
        "repeated string add_capabilities = 1",
        "repeated string drop_capabilities = 2",
        "repeated string add_ambient_capabilities = 3",
    ],
    "LinuxContainerSecurityContext": [
        ".runtime.v1.Capability capabilities = 1",
        "bool privileged = 2",
        ".runtime.v1.NamespaceOption namespace_options = 3",
        ".runtime.v1.SELinuxOption selinux_options = 4",
        ".runtime.v1.Int64Value run_as_user = 5",
        ".runtime.v1.Int64Value run_as_group = 12",
        "string run_as_username = 6",
        "bool readonly_rootfs = 7",
        "repeated int64 supplemental_groups = 8",
        ".runtime.v1.SupplementalGroupsPolicy supplemental_groups_policy = 17",
        "bool no_new_privs = 11",
        "repeated string masked_paths = 13",
        "repeated string readonly_paths = 14",
        ".runtime.v1.SecurityProfile seccomp = 15",
        ".runtime.v1.SecurityProfile apparmor = 16",
        "string apparmor_profile = 9",
        "string seccomp_profile_path = 10",
    ],
    "LinuxContainerConfig": [
        ".runtime.v1.LinuxContainerResources resources = 1",
        ".runtime.v1.LinuxContainerSecurityContext security_context = 2",
    ],
    "LinuxContainerUser": [
        "int64 uid = 1",
        "int64 gid = 2",
        "repeated int64 supplemental_groups = 3",
    ],
    "WindowsNamespaceOption": [
        ".runtime.v1.NamespaceMode network = 1",
    ],
    "WindowsSandboxSecurityContext": [
        "string run_as_username = 1",
        "string credential_spec = 2",
        "bool host_process = 3",
        ".runtime.v1.WindowsNamespaceOption namespace_options = 4",
    ],
    "WindowsPodSandboxConfig": [
        ".runtime.v1.WindowsSandboxSecurityContext security_context = 1",
    ],
    "WindowsContainerSecurityContext": [
        "string run_as_username = 1",
        "string credential_spec = 2",
        "bool host_process = 3",
    ],
    "WindowsContainerConfig": [
        ".runtime.v1.WindowsContainerResources resources = 1",
        ".runtime.v1.WindowsContainerSecurityContext security_context = 2",
    ],
    "WindowsContainerResources": [
        "int64 cpu_shares = 1",
        "int64 cpu_count = 2",
        "int64 cpu_maximum = 3",
        "int64 memory_limit_in_bytes = 4",
        "int64 rootfs_size_in_bytes = 5",
        "repeated .runtime.v1.WindowsCpuGroupAffinity affinity_cpus = 6",
    ],
    "WindowsCpuGroupAffinity": [
        "uint64 cpu_mask = 1",
        "uint32 cpu_group = 2",
    ],
    "ContainerMetadata": [
        "string name = 1",
        "uint32 attempt = 2",
    ],
    "Device": [
        "string container_path = 1",
        "string host_path = 2",
        "string permissions = 3",
    ],
    "CDIDevice": [
        "string name = 1",
    ],
    "ContainerConfig": [
        ".runtime.v1.ContainerMetadata metadata = 1",
        ".runtime.v1.ImageSpec image = 2",
        "repeated string command = 3",
        "repeated string args = 4",
        "string working_dir = 5",
        "repeated .runtime.v1.KeyValue envs = 6",
        "repeated .runtime.v1.Mount mounts = 7",
        "repeated .runtime.v1.Device devices = 8",
        "map<string, string> labels = 9",
        "map<string, string> annotations = 10",
        "string log_path = 11",
        "bool stdin = 12",
        "bool stdin_once = 13",
        "bool tty = 14",
        ".runtime.v1.LinuxContainerConfig linux = 15",
        ".runtime.v1.WindowsContainerConfig windows = 16",
        "repeated .runtime.v1.CDIDevice CDI_devices = 17",
        ".runtime.v1.Signal stop_signal = 18",
    ],
    "CreateContainerRequest": [
        "string pod_sandbox_id = 1",
        ".runtime.v1.ContainerConfig config = 2",
        ".runtime.v1.PodSandboxConfig sandbox_config = 3",
    ],
    "CreateContainerResponse": [
        "string container_id = 1",
    ],
    "StartContainerRequest": [
        "string container_id = 1",
    ],
    "StartContainerResponse": [],
    "StopContainerRequest": [
        "string container_id = 1",
        "int64 timeout = 2",
    ],
    "StopContainerResponse": [],
    "RemoveContainerRequest": [
        "string container_id = 1",
    ],
    "RemoveContainerResponse": [],
    "ContainerStateValue": [
        ".runtime.v1.ContainerState state = 1",
    ],
    "ContainerFilter": [
        "string id = 1",
        ".runtime.v1.ContainerStateValue state = 2",
        "string pod_sandbox_id = 3",
        "map<string, string> label_selector = 4",
    ],
    "ListContainersRequest": [
        ".runtime.v1.ContainerFilter filter = 1",
    ],
    "Container": [
        "string id = 1",
        "string pod_sandbox_id = 2",
        ".runtime.v1.ContainerMetadata metadata = 3",
        ".runtime.v1.ImageSpec image = 4",
        "string image_ref = 5",
        ".runtime.v1.ContainerState state = 6",
        "int64 created_at = 7",
        "map<string, string> labels = 8",
        "map<string, string> annotations = 9",
        "string image_id = 10",
    ],
    "ListContainersResponse": [
        "repeated .runtime.v1.Container containers = 1",
    ],
    "StreamContainersRequest": [
        ".runtime.v1.ContainerFilter filter = 1",
    ],
    "StreamContainersResponse": [
        "repeated .runtime.v1.Container containers = 1",
    ],
    "ContainerStatusRequest": [
        "string container_id = 1",
        "bool verbose = 2",
    ],
    "ContainerStatus": [
        "string id = 1",
        ".runtime.v1.ContainerMetadata metadata = 2",
        ".runtime.v1.ContainerState state = 3",
        "int64 created_at = 4",
        "int64 started_at = 5",
        "int64 finished_at = 6",
        "int32 exit_code = 7",
        ".runtime.v1.ImageSpec image = 8",
        "string image_ref = 9",
        "string reason = 10",
        "string message = 11",
        "map<string, string> labels = 12",
        "map<string, string> annotations = 13",
        "repeated .runtime.v1.Mount mounts = 14",
        "string log_path = 15",
        ".runtime.v1.ContainerResources resources = 16",
        "string image_id = 17",
        ".runtime.v1.ContainerUser user = 18",
        ".runtime.v1.Signal stop_signal = 19",
    ],
    "ContainerStatusResponse": [
        ".runtime.v1.ContainerStatus status = 1",
        "map<string, string> info = 2",
    ],
    "ContainerResources": [
        ".runtime.v1.LinuxContainerResources linux = 1",
        ".runtime.v1.WindowsContainerResources windows = 2",
    ],
    "ContainerUser": [
        ".runtime.v1.LinuxContainerUser linux = 1",
    ],
    "UpdateContainerResourcesRequest": [
        "string container_id = 1",
        ".runtime.v1.LinuxContainerResources linux = 2",
        ".runtime.v1.WindowsContainerResources windows = 3",
        "map<string, string> annotations = 4",
    ],
    "UpdateContainerResourcesResponse": [],
    "ExecSyncRequest": [
        "string container_id = 1",
        "repeated string cmd = 2",
        "int64 timeout = 3",
    ],
    "ExecSyncResponse": [
        "bytes stdout = 1",
        "bytes stderr = 2",
        "int32 exit_code = 3",
    ],
    "ExecRequest": [
        "string container_id = 1",
        "repeated string cmd = 2",
        "bool tty = 3",
        "bool stdin = 4",
        "bool stdout = 5",
        "bool stderr = 6",
    ],
    "ExecResponse": [
        "string url = 1",
    ],
    "AttachRequest": [
        "string container_id = 1",
        "bool stdin = 2",
        "bool tty = 3",
        "bool stdout = 4",
        "bool stderr = 5",
    ],
    "AttachResponse": [
        "string url = 1",
    ],
    "PortForwardRequest": [
        "string pod_sandbox_id = 1",
        "repeated int32 port = 2",
    ],
    "PortForwardResponse": [
        "string url = 1",
    ],
    "ImageFilter": [
        ".runtime.v1.ImageSpec image = 1",
    ],
    "ListImagesRequest": [
        ".runtime.v1.ImageFilter filter = 1",
    ],
    "Image": [
        "string id = 1",
        "repeated string repo_tags = 2",
        "repeated string repo_digests = 3",
        "uint64 size = 4",
        ".runtime.v1.Int64Value uid = 5",
        "string username = 6",
        ".runtime.v1.ImageSpec spec = 7",
        "bool pinned = 8",
    ],
    "ListImagesResponse": [
        "repeated .runtime.v1.Image images = 1",
    ],
    "StreamImagesRequest": [
        ".runtime.v1.ImageFilter filter = 1",
    ],
    "StreamImagesResponse": [
        "repeated .runtime.v1.Image images = 1",
    ],
    "ImageStatusRequest": [
        ".runtime.v1.ImageSpec image = 1",
        "bool verbose = 2",
    ],
    "ImageStatusResponse": [
        ".runtime.v1.Image image = 1",
        "map<string, string> info = 2",
    ],
    "AuthConfig": [
        "string username = 1",
        "string password = 2",
        "string auth = 3",
        "string server_address = 4",
        "string identity_token = 5",
        "string registry_token = 6",
    ],
    "PullImageRequest": [
        ".runtime.v1.ImageSpec image = 1",
        ".runtime.v1.AuthConfig auth = 2",
        ".runtime.v1.PodSandboxConfig sandbox_config = 3",
    ],
    "PullImageResponse": [
        "string image_ref = 1",
    ],
    "RemoveImageRequest": [
        ".runtime.v1.ImageSpec image = 1",
    ],
    "RemoveImageResponse": [],
    "NetworkConfig": [
        "string pod_cidr = 1",
    ],
    "RuntimeConfig": [
        ".runtime.v1.NetworkConfig network_config = 1",
    ],
    "UpdateRuntimeConfigRequest": [
        ".runtime.v1.RuntimeConfig runtime_config = 1",
    ],
    "UpdateRuntimeConfigResponse": [],
    "RuntimeCondition": [
        "string type = 1",
        "bool status = 2",
        "string reason = 3",
        "string message = 4",
    ],
    "RuntimeStatus": [
        "repeated .runtime.v1.RuntimeCondition conditions = 1",
    ],
    "StatusRequest": [
        "bool verbose = 1",
    ],
    "RuntimeHandlerFeatures": [
        "bool recursive_read_only_mounts = 1",
        "bool user_namespaces = 2",
    ],
    "RuntimeHandler": [
        "string name = 1",
        ".runtime.v1.RuntimeHandlerFeatures features = 2",
    ],
    "RuntimeFeatures": [
        "bool supplemental_groups_policy = 1",
        "bool user_namespaces_host_network = 2",
    ],
    "StatusResponse": [
        ".runtime.v1.RuntimeStatus status = 1",
        "map<string, string> info = 2",
        "repeated .runtime.v1.RuntimeHandler runtime_handlers = 3",
        ".runtime.v1.RuntimeFeatures features = 4",
    ],
    "ImageFsInfoRequest": [],
    "UInt64Value": [
        "uint64 value = 1",
    ],
    "FilesystemIdentifier": [
        "string mountpoint = 1",
    ],
    "FilesystemUsage": [
        "int64 timestamp = 1",
        ".runtime.v1.FilesystemIdentifier fs_id = 2",
        ".runtime.v1.UInt64Value used_bytes = 3",
        ".runtime.v1.UInt64Value inodes_used = 4",
    ],
    "WindowsFilesystemUsage": [
        "int64 timestamp = 1",
        ".runtime.v1.FilesystemIdentifier fs_id = 2",
        ".runtime.v1.UInt64Value used_bytes = 3",
    ],
    "ImageFsInfoResponse": [
        "repeated .runtime.v1.FilesystemUsage image_filesystems = 1",
        "repeated .runtime.v1.FilesystemUsage container_filesystems = 2",
    ],
    "ContainerStatsRequest": [
        "string container_id = 1",
    ],
    "ContainerStatsResponse": [
        ".runtime.v1.ContainerStats stats = 1",
    ],
    "ListContainerStatsRequest": [
        ".runtime.v1.ContainerStatsFilter filter = 1",
    ],
    "ContainerStatsFilter": [
        "string id = 1",
        "string pod_sandbox_id = 2",
        "map<string, string> label_selector = 3",
    ],
    "ListContainerStatsResponse": [
        "repeated .runtime.v1.ContainerStats stats = 1",
    ],
    "StreamContainerStatsRequest": [
        ".runtime.v1.ContainerStatsFilter filter = 1",
    ],
    "StreamContainerStatsResponse": [
        "repeated .runtime.v1.ContainerStats container_stats = 1",
    ],
    "ContainerAttributes": [
        "string id = 1",
        ".runtime.v1.ContainerMetadata metadata = 2",
        "map<string, string> labels = 3",
        "map<string, string> annotations = 4",
    ],
    "ContainerStats": [
        ".runtime.v1.ContainerAttributes attributes = 1",
        ".runtime.v1.CpuUsage cpu = 2",
        ".runtime.v1.MemoryUsage memory = 3",
        ".runtime.v1.FilesystemUsage writable_layer = 4",
        ".runtime.v1.SwapUsage swap = 5",
        ".runtime.v1.IoUsage io = 6",
    ],
    "WindowsContainerStats": [
        ".runtime.v1.ContainerAttributes attributes = 1",
        ".runtime.v1.WindowsCpuUsage cpu = 2",
        ".runtime.v1.WindowsMemoryUsage memory = 3",
        ".runtime.v1.WindowsFilesystemUsage writable_layer = 4",
    ],
    "PsiStats": [
        ".runtime.v1.PsiData Full = 1",
        ".runtime.v1.PsiData Some = 2",
    ],
    "PsiData": [
        "uint64 Total = 1",
        "double Avg10 = 2",
        "double Avg60 = 3",
        "double Avg300 = 4",
    ],
    "CpuUsage": [
        "int64 timestamp = 1",
        ".runtime.v1.UInt64Value usage_core_nano_seconds = 2",
        ".runtime.v1.UInt64Value usage_nano_cores = 3",
        ".runtime.v1.PsiStats psi = 4",
    ],
    "WindowsCpuUsage": [
        "int64 timestamp = 1",
        ".runtime.v1.UInt64Value usage_core_nano_seconds = 2",
        ".runtime.v1.UInt64Value usage_nano_cores = 3",
    ],
    "MemoryUsage": [
        "int64 timestamp = 1",
        ".runtime.v1.UInt64Value working_set_bytes = 2",
        ".runtime.v1.UInt64Value available_bytes = 3",
        ".runtime.v1.UInt64Value usage_bytes = 4",
        ".runtime.v1.UInt64Value rss_bytes = 5",
        ".runtime.v1.UInt64Value page_faults = 6",
        ".runtime.v1.UInt64Value major_page_faults = 7",
        ".runtime.v1.PsiStats psi = 8",
    ],
    "IoUsage": [
        "int64 timestamp = 1",
        ".runtime.v1.PsiStats psi = 2",
    ],
    "SwapUsage": [
        "int64 timestamp = 1",
        ".runtime.v1.UInt64Value swap_available_bytes = 2",
        ".runtime.v1.UInt64Value swap_usage_bytes = 3",
    ],
    "WindowsMemoryUsage": [
        "int64 timestamp = 1",
        ".runtime.v1.UInt64Value working_set_bytes = 2",
        ".runtime.v1.UInt64Value available_bytes = 3",
        ".runtime.v1.UInt64Value page_faults = 4",
        ".runtime.v1.UInt64Value commit_memory_bytes = 5",
    ],
    "ReopenContainerLogRequest": [
        "string container_id = 1",
    ],
    "ReopenContainerLogResponse": [],
    "CheckpointContainerRequest": [
        "string container_id = 1",
        "string location = 2",
        "int64 timeout = 3",
    ],
    "CheckpointContainerResponse": [],
    "GetEventsRequest": [],
    "ContainerEventResponse": [
        "string container_id = 1",
        ".runtime.v1.ContainerEventType container_event_type = 2",
        "int64 created_at = 3",
        ".runtime.v1.PodSandboxStatus pod_sandbox_status = 4",
        "repeated .runtime.v1.ContainerStatus containers_statuses = 5",
    ],
    "ListMetricDescriptorsRequest": [],
    "ListMetricDescriptorsResponse": [
        "repeated .runtime.v1.MetricDescriptor descriptors = 1",
    ],
    "MetricDescriptor": [
        "string name = 1",
        "string help = 2",
        "repeated string label_keys = 3",
    ],
    "ListPodSandboxMetricsRequest": [],
    "ListPodSandboxMetricsResponse": [
        "repeated .runtime.v1.PodSandboxMetrics pod_metrics = 1",
    ],
    "StreamPodSandboxMetricsRequest": [],
    "StreamPodSandboxMetricsResponse": [
        "repeated .runtime.v1.PodSandboxMetrics pod_sandbox_metrics = 1",
    ],
    "PodSandboxMetrics": [
        "string pod_sandbox_id = 1",
        "repeated .runtime.v1.Metric metrics = 2",
        "repeated .runtime.v1.ContainerMetrics container_metrics = 3",
    ],
    "ContainerMetrics": [
        "string container_id = 1",
        "repeated .runtime.v1.Metric metrics = 2",
    ],
    "Metric": [
        "string name = 1",
        "int64 timestamp = 2",
        ".runtime.v1.MetricType metric_type = 3",
        "repeated string label_values = 4",
        ".runtime.v1.UInt64Value value = 5",
    ],
    "RuntimeConfigRequest": [],
    "RuntimeConfigResponse": [
        ".runtime.v1.LinuxRuntimeConfiguration linux = 1",
    ],
    "LinuxRuntimeConfiguration": [
        ".runtime.v1.CgroupDriver cgroup_driver = 1",
    ],
    "UpdatePodSandboxResourcesRequest": [
        "string pod_sandbox_id = 1",
        ".runtime.v1.LinuxContainerResources overhead = 2",
        ".runtime.v1.LinuxContainerResources resources = 3",
    ],
    "UpdatePodSandboxResourcesResponse": [],
}

CRI_METHODS: dict[str, list[str]] = {
    "runtime.v1.RuntimeService": [
        "Version(VersionRequest) returns (VersionResponse)",
        "RunPodSandbox(RunPodSandboxRequest) returns (RunPodSandboxResponse)",
        "StopPodSandbox(StopPodSandboxRequest) returns (StopPodSandboxResponse)",
        "RemovePodSandbox(RemovePodSandboxRequest) returns (RemovePodSandboxResponse)",
        "PodSandboxStatus(PodSandboxStatusRequest) returns (PodSandboxStatusResponse)",
        "ListPodSandbox(ListPodSandboxRequest) returns (ListPodSandboxResponse)",
        "StreamPodSandboxes(StreamPodSandboxesRequest) returns (stream StreamPodSandboxesResponse)",
        "CreateContainer(CreateContainerRequest) returns (CreateContainerResponse)",
        "StartContainer(StartContainerRequest) returns (StartContainerResponse)",
        "StopContainer(StopContainerRequest) returns (StopContainerResponse)",
        "RemoveContainer(RemoveContainerRequest) returns (RemoveContainerResponse)",
        "ListContainers(ListContainersRequest) returns (ListContainersResponse)",
        "StreamContainers(StreamContainersRequest) returns (stream StreamContainersResponse)",
        "ContainerStatus(ContainerStatusRequest) returns (ContainerStatusResponse)",
        "UpdateContainerResources(UpdateContainerResourcesRequest) "
        "returns (UpdateContainerResourcesResponse)",
        "ReopenContainerLog(ReopenContainerLogRequest) returns (ReopenContainerLogResponse)",
        "ExecSync(ExecSyncRequest) returns (ExecSyncResponse)",
        "Exec(ExecRequest) returns (ExecResponse)",
        "Attach(AttachRequest) returns (AttachResponse)",
        "PortForward(PortForwardRequest) returns (PortForwardResponse)",
        "ContainerStats(ContainerStatsRequest) returns (ContainerStatsResponse)",
        "ListContainerStats(ListContainerStatsRequest) returns (ListContainerStatsResponse)",
        "StreamContainerStats(StreamContainerStatsRequest) "
        "returns (stream StreamContainerStatsResponse)",
        "PodSandboxStats(PodSandboxStatsRequest) returns (PodSandboxStatsResponse)",
        "ListPodSandboxStats(ListPodSandboxStatsRequest) returns (ListPodSandboxStatsResponse)",
        "StreamPodSandboxStats(StreamPodSandboxStatsRequest) "
        "returns (stream StreamPodSandboxStatsResponse)",
        "UpdateRuntimeConfig(UpdateRuntimeConfigRequest) returns (UpdateRuntimeConfigResponse)",
        "Status(StatusRequest) returns (StatusResponse)",
        "CheckpointContainer(CheckpointContainerRequest) returns (CheckpointContainerResponse)",
        "GetContainerEvents(GetEventsRequest) returns (stream ContainerEventResponse)",
        "ListMetricDescriptors(ListMetricDescriptorsRequest) "
        "returns (ListMetricDescriptorsResponse)",
        "ListPodSandboxMetrics(ListPodSandboxMetricsRequest) "
        "returns (ListPodSandboxMetricsResponse)",
        "StreamPodSandboxMetrics(StreamPodSandboxMetricsRequest) "
        "returns (stream StreamPodSandboxMetricsResponse)",
        "RuntimeConfig(RuntimeConfigRequest) returns (RuntimeConfigResponse)",
        "UpdatePodSandboxResources(UpdatePodSandboxResourcesRequest) "
        "returns (UpdatePodSandboxResourcesResponse)",
    ],
    "runtime.v1.ImageService": [
        "ListImages(ListImagesRequest) returns (ListImagesResponse)",
        "StreamImages(StreamImagesRequest) returns (stream StreamImagesResponse)",
        "ImageStatus(ImageStatusRequest) returns (ImageStatusResponse)",
        "PullImage(PullImageRequest) returns (PullImageResponse)",
        "RemoveImage(RemoveImageRequest) returns (RemoveImageResponse)",
        "ImageFsInfo(ImageFsInfoRequest) returns (ImageFsInfoResponse)",
    ],
}

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
    **CRI_ENUMS,
}

# Messages that cgroups v1 and v2 metrics declare alike (same fields, same numbers).
CGROUP_SHARED_MESSAGES: dict[str, list[str]] = {
    "PidsStat": [
        "uint64 current = 1",
        "uint64 limit = 2",
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
}

FACT_MESSAGES: dict[str, dict[str, list[str]]] = {
    "runtime.v1": CRI_MESSAGES,
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
        **CGROUP_SHARED_MESSAGES,
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
        "CgroupStats": [
            "uint64 nr_sleeping = 1",
            "uint64 nr_running = 2",
            "uint64 nr_stopped = 3",
            "uint64 nr_uninterruptible = 4",
            "uint64 nr_io_wait = 5",
        ],
    },
    "io.containerd.cgroups.v2": {
        **CGROUP_SHARED_MESSAGES,
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
    },
}

FACT_METHODS: dict[str, list[str]] = {
    **CRI_METHODS,
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
