"""gRPC edges of the metadata stores: Namespaces, Images, Containers and Leases.

Each module holds one servicer that translates protobuf to store calls and
back, maps errors with ``aborting_on_error`` and publishes upstream's events.
Importing any of them imports grpc; ``pycontainerd.metadata.plugin`` imports
them only inside init functions.
"""

from __future__ import annotations
