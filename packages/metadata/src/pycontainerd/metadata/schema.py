"""The metadata schema as a list of forward migrations.

Append a new :class:`~pycontainerd.metadata.migration.Migration` to change the
schema; never edit a released step. Every object table is keyed by namespace
first, mirroring containerd's ``v1/<namespace>/<object>`` bucket layout, and
references ``namespaces`` so a namespace cannot vanish under its objects.

Conventions: timestamps are UTC nanoseconds since the epoch (``INTEGER``);
label and annotation maps are JSON objects with sorted keys (``TEXT``);
protobuf ``Any`` values are stored as a type URL and the raw bytes.

Importing this module must not import grpc.
"""

from __future__ import annotations

from typing import Final

from pycontainerd.metadata.migration import Migration

_V1: Final = (
    # Named counters (containerd's bucket sequences): snapshot and ingest keys.
    "CREATE TABLE sequences (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE namespaces ("
    " name TEXT PRIMARY KEY,"
    " labels TEXT NOT NULL DEFAULT '{}',"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL"
    ") WITHOUT ROWID",
    "CREATE TABLE images ("
    " namespace TEXT NOT NULL REFERENCES namespaces (name) ON DELETE CASCADE,"
    " name TEXT NOT NULL,"
    " media_type TEXT NOT NULL,"
    " digest TEXT NOT NULL,"
    " size INTEGER NOT NULL,"
    " annotations TEXT NOT NULL DEFAULT '{}',"
    " labels TEXT NOT NULL DEFAULT '{}',"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " PRIMARY KEY (namespace, name)"
    ") WITHOUT ROWID",
    "CREATE INDEX images_by_digest ON images (digest)",
    "CREATE TABLE containers ("
    " namespace TEXT NOT NULL REFERENCES namespaces (name) ON DELETE CASCADE,"
    " id TEXT NOT NULL,"
    " labels TEXT NOT NULL DEFAULT '{}',"
    " image TEXT NOT NULL DEFAULT '',"
    " runtime_name TEXT NOT NULL,"
    " runtime_options_type_url TEXT,"
    " runtime_options_value BLOB,"
    " spec_type_url TEXT,"
    " spec_value BLOB,"
    " snapshotter TEXT NOT NULL DEFAULT '',"
    " snapshot_key TEXT NOT NULL DEFAULT '',"
    " sandbox_id TEXT NOT NULL DEFAULT '',"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " UNIQUE (namespace, id)"
    ")",
    "CREATE TABLE container_extensions ("
    " namespace TEXT NOT NULL,"
    " container_id TEXT NOT NULL,"
    " name TEXT NOT NULL,"
    " type_url TEXT NOT NULL,"
    " value BLOB NOT NULL,"
    " PRIMARY KEY (namespace, container_id, name),"
    " FOREIGN KEY (namespace, container_id) REFERENCES containers (namespace, id)"
    "  ON DELETE CASCADE"
    ") WITHOUT ROWID",
    # Content visible in a namespace; the bytes live once in the backend store.
    "CREATE TABLE blobs ("
    " namespace TEXT NOT NULL REFERENCES namespaces (name) ON DELETE CASCADE,"
    " digest TEXT NOT NULL,"
    " size INTEGER NOT NULL,"
    " labels TEXT NOT NULL DEFAULT '{}',"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " PRIMARY KEY (namespace, digest)"
    ") WITHOUT ROWID",
    "CREATE INDEX blobs_by_digest ON blobs (digest)",
    # Ingests in progress: the namespace's ref -> the backend store's ref.
    "CREATE TABLE ingests ("
    " namespace TEXT NOT NULL REFERENCES namespaces (name) ON DELETE CASCADE,"
    " ref TEXT NOT NULL,"
    " backend_ref TEXT NOT NULL UNIQUE,"
    " expected TEXT NOT NULL DEFAULT '',"
    " expire_at INTEGER,"
    " created_at INTEGER NOT NULL,"
    " PRIMARY KEY (namespace, ref)"
    ") WITHOUT ROWID",
    # Snapshot keys of a namespace -> keys in the backend snapshotter.
    "CREATE TABLE snapshots ("
    " namespace TEXT NOT NULL REFERENCES namespaces (name) ON DELETE CASCADE,"
    " snapshotter TEXT NOT NULL,"
    " key TEXT NOT NULL,"
    " backend_key TEXT NOT NULL,"
    " parent TEXT NOT NULL DEFAULT '',"
    " kind TEXT NOT NULL,"
    " labels TEXT NOT NULL DEFAULT '{}',"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " PRIMARY KEY (namespace, snapshotter, key)"
    ") WITHOUT ROWID",
    "CREATE UNIQUE INDEX snapshots_by_backend_key ON snapshots (snapshotter, backend_key)",
    "CREATE INDEX snapshots_by_parent ON snapshots (namespace, snapshotter, parent)",
    "CREATE TABLE leases ("
    " namespace TEXT NOT NULL REFERENCES namespaces (name) ON DELETE CASCADE,"
    " id TEXT NOT NULL,"
    " labels TEXT NOT NULL DEFAULT '{}',"
    " created_at INTEGER NOT NULL,"
    " PRIMARY KEY (namespace, id)"
    ") WITHOUT ROWID",
    # type is containerd's resource type: content, ingests, snapshots/<snapshotter>.
    "CREATE TABLE lease_resources ("
    " namespace TEXT NOT NULL,"
    " lease_id TEXT NOT NULL,"
    " type TEXT NOT NULL,"
    " id TEXT NOT NULL,"
    " PRIMARY KEY (namespace, lease_id, type, id),"
    " FOREIGN KEY (namespace, lease_id) REFERENCES leases (namespace, id) ON DELETE CASCADE"
    ") WITHOUT ROWID",
    "CREATE INDEX lease_resources_by_resource ON lease_resources (namespace, type, id)",
)

# Sandboxes (containerd 2.x's sandbox store): the record, its extensions.
_V2: Final = (
    "CREATE TABLE sandboxes ("
    " namespace TEXT NOT NULL REFERENCES namespaces (name) ON DELETE CASCADE,"
    " id TEXT NOT NULL,"
    " runtime_name TEXT NOT NULL DEFAULT '',"
    " runtime_options_type_url TEXT,"
    " runtime_options_value BLOB,"
    " spec_type_url TEXT,"
    " spec_value BLOB,"
    " labels TEXT NOT NULL DEFAULT '{}',"
    " sandboxer TEXT NOT NULL DEFAULT '',"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " PRIMARY KEY (namespace, id)"
    ") WITHOUT ROWID",
    "CREATE TABLE sandbox_extensions ("
    " namespace TEXT NOT NULL,"
    " sandbox_id TEXT NOT NULL,"
    " name TEXT NOT NULL,"
    " type_url TEXT NOT NULL,"
    " value BLOB NOT NULL,"
    " PRIMARY KEY (namespace, sandbox_id, name),"
    " FOREIGN KEY (namespace, sandbox_id) REFERENCES sandboxes (namespace, id)"
    "  ON DELETE CASCADE"
    ") WITHOUT ROWID",
)

#: The schema, oldest step first.
MIGRATIONS: Final = (
    Migration(
        version=1,
        description="namespaces, images, containers, content, ingests, snapshots, leases",
        statements=_V1,
    ),
    Migration(version=2, description="sandboxes", statements=_V2),
)
