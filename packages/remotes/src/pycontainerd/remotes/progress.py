"""Progress of a pull or push: one status per blob, as containerd's ``ctr`` shows it.

The transfer code updates a :class:`Tracker`; a renderer (``ctr``'s
progress table) reads ``Tracker.jobs`` whenever it likes. No I/O here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TransferProgress:
    """One progress event of a transfer (``containerd.types.transfer.Progress``).

    Its descriptor is flattened to ``digest`` and ``media_type``. The daemon's
    Transfer service streams these; the client's transfer hands them to its caller.
    """

    event: str
    name: str = ""
    parents: tuple[str, ...] = ()
    progress: int = 0
    total: int = 0
    digest: str = ""
    media_type: str = ""


@dataclass(slots=True)
class Job:
    """One blob's state.

    Attributes:
        ref: ``<kind>-<digest>`` (``layer-sha256:...``) or the image reference.
        status: ``resolving``, ``resolved``, ``waiting``, ``downloading``,
            ``uploading``, ``done``, ``exists``, ``mounted`` or ``error``.
        offset: bytes transferred.
        total: expected bytes (0 when unknown).
        media_type: the blob's media type, when the caller gave it.
        started: monotonic start time.
        updated: monotonic time of the last change.
    """

    ref: str
    status: str = "waiting"
    offset: int = 0
    total: int = 0
    media_type: str = ""
    started: float = field(default_factory=time.monotonic)
    updated: float = field(default_factory=time.monotonic)


class Tracker:
    """Blob statuses in the order they first appeared."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.started = time.monotonic()
        #: child ref -> the refs of the blobs that reference it (an index, a manifest)
        self.parents: dict[str, list[str]] = {}

    def add_children(self, parent: str, children: list[str]) -> None:
        """Record that the blob ``parent`` references ``children`` (for a tree view)."""
        for child in children:
            known = self.parents.setdefault(child, [])
            if parent not in known:
                known.append(parent)

    def set(
        self,
        ref: str,
        status: str,
        *,
        offset: int | None = None,
        total: int = 0,
        media_type: str = "",
    ) -> Job:
        """Create or update the job ``ref``."""
        job = self.jobs.get(ref)
        if job is None:
            job = self.jobs[ref] = Job(ref=ref, status=status, total=total)
        if media_type:
            job.media_type = media_type
        job.status = status
        if total:
            job.total = total
        if offset is not None:
            job.offset = offset
        if status in ("done", "exists", "mounted") and job.total:
            job.offset = job.total
        job.updated = time.monotonic()
        return job

    @property
    def transferred(self) -> int:
        """Bytes moved so far (blobs that existed already do not count)."""
        return sum(j.offset for j in self.jobs.values() if j.status != "exists")

    @property
    def elapsed(self) -> float:
        """Seconds since the tracker was made."""
        return time.monotonic() - self.started
