"""The event types load without protobuf's own ``descriptor.proto``.

upstream's event protos set field-path options, which pull
``google.protobuf.descriptor_pb2`` (about 4 MiB resident) into every process
that loads an event type: the daemon, every client, every shim that publishes.
Ours leave the options out (they have no wire effect).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

EVENT_MODULES = [
    "pycontainerd.api.types.event_pb2",
    *(
        f"pycontainerd.api.events.{name}_pb2"
        for name in ("container", "content", "image", "namespace", "snapshot", "task")
    ),
]


def _loads_descriptor_proto(*modules: str) -> bool:
    probe = (
        f"import sys\nfor m in {list(modules)!r}: __import__(m)\n"
        "print('google.protobuf.descriptor_pb2' in sys.modules)"
    )
    # The child sees this process's sys.path (under Pants the sources are reachable only so).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    ).stdout
    return out.strip() == "True"


@pytest.mark.parametrize("module", EVENT_MODULES)
def test_event_types_do_not_load_descriptor_proto(module: str) -> None:
    assert not _loads_descriptor_proto(module)


def test_probe_sees_descriptor_proto() -> None:
    # The declarations of the options themselves still need it.
    assert _loads_descriptor_proto("pycontainerd.api.types.fieldpath_pb2")
