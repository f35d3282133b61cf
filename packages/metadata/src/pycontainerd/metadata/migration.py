"""One forward step of the metadata schema (the value :mod:`~pycontainerd.metadata.schema` lists).

Its own module so that the schema (the list of steps) and the database (which
applies them) both import it and neither imports the other.

Importing this module must not import grpc.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable


@dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    """One forward step of the schema.

    Attributes:
        version: the schema version this step produces; versions are 1, 2, 3, ...
        description: what changes, for humans and the ``schema_version`` table.
        statements: SQL run in order inside one transaction.
        apply: optional Python step run after ``statements`` in the same
            transaction (data rewrites).
    """

    version: int
    description: str
    statements: tuple[str, ...] = ()
    apply: Callable[[sqlite3.Connection], object] | None = None
