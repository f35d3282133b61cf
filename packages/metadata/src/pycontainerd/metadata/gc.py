"""Garbage collection over the metadata database: mark, sweep, then clean the backends.

A collection has two phases.

1. **Mark and sweep** in one write transaction of the database. Roots are
   images, containers, sandboxes, leases that have not expired (and every
   resource they hold), blobs and snapshots labelled ``containerd.io/gc.root``, and unleased
   ingests that have not expired. From the roots the collector follows edges:
   an image's target, ``containerd.io/gc.ref.content[.<x>|/<x>]`` labels (to a
   blob), ``containerd.io/gc.ref.snapshot.<snapshotter>[/<x>]`` labels (to a
   snapshot), a container's snapshot key, a snapshot's parent and an ingest's
   expected digest. A lease labelled ``containerd.io/gc.flat`` keeps only what
   it lists: its resources are marked but their references are not followed.
   Everything of the collectable kinds (blobs, ingests, snapshots, leases)
   left unmarked is deleted, in the same transaction. Edges never leave their
   namespace.

2. **Backend cleanup**: blobs in the content store that no namespace's row
   names any more are deleted, ingests without a row are aborted, and
   snapshots a snapshotter holds that no row names are removed (children
   first). This phase is driven by "present in the backend but absent from the
   database", never by what phase 1 removed, so a crash between the phases (or
   in the middle of the second) leaves only unreferenced garbage, which the
   next collection removes. The first collection after start always cleans
   the backends for that reason.

Writers that create a backend object and then its row (a content commit, a
shared blob, a snapshot) hold :attr:`MetadataDB.gc_lock` shared across both
steps; the backend cleanup holds it exclusively, so it never sees a backend
object whose row is about to be written.

Importing this module must not import grpc.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from pycontainerd.core.errdefs import ContainerdError, FailedPreconditionError, NotFoundError
from pycontainerd.core.leases import EXPIRE_LABEL, FLAT_LABEL
from pycontainerd.core.snapshots import Cleaner, Snapshotter
from pycontainerd.metadata._rows import load_map
from pycontainerd.metadata.db import now_ns
from pycontainerd.metadata.leases import CONTENT, IMAGES, INGESTS, SNAPSHOTS_PREFIX

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable, Iterator, Mapping

    from pycontainerd.core.content import Store
    from pycontainerd.metadata.db import MetadataDB, Tx

log = logging.getLogger(__name__)

#: A blob or snapshot carrying this label (any non-empty value) is a root.
ROOT_LABEL: Final = "containerd.io/gc.root"
#: ``<REF_CONTENT>``, ``<REF_CONTENT>.<x>`` and ``<REF_CONTENT>/<x>`` name a blob.
REF_CONTENT: Final = "containerd.io/gc.ref.content"
#: ``<REF_SNAPSHOT><snapshotter>[/<x>]`` names a snapshot of that snapshotter.
REF_SNAPSHOT: Final = "containerd.io/gc.ref.snapshot."
_GC_PREFIX: Final = "containerd.io/gc."

# Node kinds. Snapshots are "snapshots/<snapshotter>", as lease resources name them.
_CONTENT: Final = CONTENT
_INGEST: Final = INGESTS
_IMAGE: Final = IMAGES

#: A node of the reference graph: (kind, namespace, key).
Node = tuple[str, str, str]


def label_refs(ns: str, labels: Mapping[str, str]) -> Iterator[Node]:
    """The nodes that GC reference labels in ``labels`` point at (same namespace)."""
    for key, value in labels.items():
        if not value or not key.startswith(_GC_PREFIX):
            continue
        if key.startswith(REF_CONTENT):
            rest = key[len(REF_CONTENT) :]
            if rest == "" or rest[0] in "./":
                yield (_CONTENT, ns, value)
        elif key.startswith(REF_SNAPSHOT):
            snapshotter = key[len(REF_SNAPSHOT) :].split("/", 1)[0]
            if snapshotter:
                yield (SNAPSHOTS_PREFIX + snapshotter, ns, value)


def parse_expiry(value: str) -> int | None:
    """An RFC 3339 ``containerd.io/gc.expire`` value as UTC nanoseconds (None if unparsable)."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


@dataclass(slots=True)
class Stats:
    """What one collection did and how long it took.

    Attributes:
        blobs: blob rows removed from namespaces.
        ingests: ingest rows removed (expired or no longer leased).
        leases: expired leases removed.
        snapshots: snapshot rows removed.
        backend_blobs: blobs deleted from the content store.
        backend_ingests: ingests aborted in the content store.
        backend_snapshots: snapshots removed from snapshotters.
        mark_seconds: time spent in the mark-and-sweep transaction.
        seconds: total duration.
        next_expiry_ns: earliest future lease/ingest expiry seen (UTC ns), if any.
    """

    blobs: int = 0
    ingests: int = 0
    leases: int = 0
    snapshots: int = 0
    backend_blobs: int = 0
    backend_ingests: int = 0
    backend_snapshots: int = 0
    mark_seconds: float = 0.0
    seconds: float = 0.0
    next_expiry_ns: int | None = None
    started_at: float = 0.0

    def removed(self) -> dict[str, int]:
        """Counts by kind, for logs and metrics."""
        return {
            "blobs": self.blobs,
            "ingests": self.ingests,
            "leases": self.leases,
            "snapshots": self.snapshots,
            "backend_blobs": self.backend_blobs,
            "backend_ingests": self.backend_ingests,
            "backend_snapshots": self.backend_snapshots,
        }


@dataclass(slots=True)
class _Sweep:
    """What the transaction decided (rows already deleted)."""

    stats: Stats
    deletions: int
    swept_kinds: set[str] = field(default_factory=set)


class Metrics:
    """Counters of every collection, rendered in the Prometheus text format.

    The daemon's ``/v1/metrics`` page can append :meth:`render` to its output.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.collections = 0
        self.failures = 0
        self.seconds_total = 0.0
        self.last_seconds = 0.0
        self.removed: dict[str, int] = {}

    def observe(self, stats: Stats) -> None:
        """Count a successful collection."""
        with self._lock:
            self.collections += 1
            self.seconds_total += stats.seconds
            self.last_seconds = stats.seconds
            for kind, n in stats.removed().items():
                self.removed[kind] = self.removed.get(kind, 0) + n

    def failed(self) -> None:
        """Count a failed collection."""
        with self._lock:
            self.failures += 1

    def render(self) -> list[str]:
        """Exposition lines (``pycontainerd_gc_*``)."""
        with self._lock:
            out = [
                "# HELP pycontainerd_gc_collections_total Garbage collections completed.",
                "# TYPE pycontainerd_gc_collections_total counter",
                f"pycontainerd_gc_collections_total {self.collections}",
                "# HELP pycontainerd_gc_failures_total Garbage collections that failed.",
                "# TYPE pycontainerd_gc_failures_total counter",
                f"pycontainerd_gc_failures_total {self.failures}",
                "# HELP pycontainerd_gc_seconds_total Time spent collecting garbage.",
                "# TYPE pycontainerd_gc_seconds_total counter",
                f"pycontainerd_gc_seconds_total {self.seconds_total!r}",
                "# HELP pycontainerd_gc_last_seconds Duration of the last garbage collection.",
                "# TYPE pycontainerd_gc_last_seconds gauge",
                f"pycontainerd_gc_last_seconds {self.last_seconds!r}",
                "# HELP pycontainerd_gc_removed_total Objects removed by garbage collection.",
                "# TYPE pycontainerd_gc_removed_total counter",
            ]
            out += [
                f'pycontainerd_gc_removed_total{{kind="{kind}"}} {n}'
                for kind, n in sorted(self.removed.items())
            ]
        return out


def _mark_and_sweep(tx: Tx, db: MetadataDB, now: int) -> _Sweep:  # noqa: PLR0912, PLR0915
    """Phase 1, inside the write transaction. Counters of the database reset here."""
    deletions = db.deletions
    db.reset_dirty()
    stats = Stats()
    marked: set[Node] = set()
    queue: deque[Node] = deque()
    flat: set[Node] = set()  # marked, but their references are not followed

    def mark(node: Node) -> None:
        if node not in marked:
            marked.add(node)
            queue.append(node)

    next_expiry: int | None = None

    def note_expiry(at: int) -> None:
        nonlocal next_expiry
        if next_expiry is None or at < next_expiry:
            next_expiry = at

    # Blobs with GC labels (roots and edges); plain blobs have no outgoing edges.
    blob_labels: dict[tuple[str, str], dict[str, str]] = {}
    for ns, dgst, raw in tx.execute(
        "SELECT namespace, digest, labels FROM blobs WHERE labels LIKE '%containerd.io/gc.%'"
    ):
        labels = load_map(raw)
        blob_labels[(ns, dgst)] = labels
        if labels.get(ROOT_LABEL):
            mark((_CONTENT, ns, dgst))

    snapshots: dict[Node, tuple[str, dict[str, str]]] = {}
    for ns, snapshotter, key, parent, raw in tx.execute(
        "SELECT namespace, snapshotter, key, parent, labels FROM snapshots"
    ):
        node = (SNAPSHOTS_PREFIX + snapshotter, ns, key)
        labels = load_map(raw)
        snapshots[node] = (parent, labels)
        if labels.get(ROOT_LABEL):
            mark(node)

    ingests: dict[tuple[str, str], str] = {}
    for ns, ref, expected, expire_at in tx.execute(
        "SELECT namespace, ref, expected, expire_at FROM ingests"
    ):
        ingests[(ns, ref)] = expected
        if expire_at is not None and expire_at > now:
            mark((_INGEST, ns, ref))
            note_expiry(expire_at)

    images: dict[tuple[str, str], tuple[str, str]] = {}
    for ns, name, dgst, raw in tx.execute("SELECT namespace, name, digest, labels FROM images"):
        images[(ns, name)] = (dgst, raw)
        mark((_IMAGE, ns, name))

    for ns, raw, snapshotter, key in tx.execute(
        "SELECT namespace, labels, snapshotter, snapshot_key FROM containers"
    ):
        for node in label_refs(ns, load_map(raw)):
            mark(node)
        if snapshotter and key:
            mark((SNAPSHOTS_PREFIX + snapshotter, ns, key))

    # A sandbox is a root: what its gc.ref labels name is kept (upstream 2.x).
    for ns, raw in tx.execute("SELECT namespace, labels FROM sandboxes"):
        for node in label_refs(ns, load_map(raw)):
            mark(node)

    expired_leases: list[tuple[str, str]] = []
    live_leases: dict[tuple[str, str], bool] = {}  # -> flat
    for ns, lease_id, raw in tx.execute("SELECT namespace, id, labels FROM leases"):
        labels = load_map(raw)
        expire = labels.get(EXPIRE_LABEL)
        if expire:
            at = parse_expiry(expire)
            if at is None:
                log.warning("lease %s/%s: unparsable %s %r", ns, lease_id, EXPIRE_LABEL, expire)
            elif at <= now:
                expired_leases.append((ns, lease_id))
                continue
            else:
                note_expiry(at)
        live_leases[(ns, lease_id)] = bool(labels.get(FLAT_LABEL))
    for ns, lease_id, rtype, rid in tx.execute(
        "SELECT namespace, lease_id, type, id FROM lease_resources"
    ):
        is_flat = live_leases.get((ns, lease_id))
        if is_flat is None:
            continue  # expired
        node = (rtype, ns, rid)
        if is_flat:
            if node not in marked:
                marked.add(node)
                flat.add(node)
        else:
            mark(node)

    # Follow edges.
    while queue:
        node = queue.popleft()
        if node in flat:
            continue
        kind, ns, key = node
        if kind == _CONTENT:
            refs = blob_labels.get((ns, key))
            if refs:
                for ref in label_refs(ns, refs):
                    mark(ref)
        elif kind == _IMAGE:
            image = images.get((ns, key))
            if image is not None:
                mark((_CONTENT, ns, image[0]))
                for ref in label_refs(ns, load_map(image[1])):
                    mark(ref)
        elif kind == _INGEST:
            expected = ingests.get((ns, key))
            if expected:
                mark((_CONTENT, ns, expected))
        elif kind.startswith(SNAPSHOTS_PREFIX):
            snap = snapshots.get(node)
            if snap is not None:
                parent, labels = snap
                if parent:
                    mark((kind, ns, parent))
                for ref in label_refs(ns, labels):
                    mark(ref)

    # Sweep, flat-marked nodes included in what survives.
    swept: set[str] = set()
    dead_blobs = [
        (ns, dgst)
        for ns, dgst in tx.execute("SELECT namespace, digest FROM blobs")
        if (_CONTENT, ns, dgst) not in marked
    ]
    if dead_blobs:
        tx.executemany("DELETE FROM blobs WHERE namespace = ? AND digest = ?", dead_blobs)
        swept.add(_CONTENT)
        for ns, dgst in dead_blobs if log.isEnabledFor(logging.DEBUG) else ():
            log.debug("remove content", extra={"fields": {"key": dgst, "namespace": ns}})
    dead_ingests = [k for k in ingests if (_INGEST, k[0], k[1]) not in marked]
    if dead_ingests:
        tx.executemany("DELETE FROM ingests WHERE namespace = ? AND ref = ?", dead_ingests)
        swept.add(_INGEST)
    dead_snaps = [n for n in snapshots if n not in marked]
    if dead_snaps:
        tx.executemany(
            "DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?",
            [(ns, kind.removeprefix(SNAPSHOTS_PREFIX), key) for kind, ns, key in dead_snaps],
        )
        swept.update(kind for kind, _, _ in dead_snaps)
    if expired_leases:
        tx.executemany("DELETE FROM leases WHERE namespace = ? AND id = ?", expired_leases)
    stats.blobs = len(dead_blobs)
    stats.ingests = len(dead_ingests)
    stats.snapshots = len(dead_snaps)
    stats.leases = len(expired_leases)
    stats.next_expiry_ns = next_expiry
    return _Sweep(stats=stats, deletions=deletions, swept_kinds=swept)


def next_expiry_ns(tx: Tx, now: int | None = None) -> int | None:
    """The earliest future expiry of a lease or an unleased ingest (UTC ns), if any.

    A cheap read the scheduler uses to wake up for expiries on an idle daemon.
    """
    now = now_ns() if now is None else now
    best: int | None = None
    row = tx.execute(
        "SELECT MIN(expire_at) FROM ingests WHERE expire_at IS NOT NULL AND expire_at > ?",
        (now,),
    ).fetchone()
    if row is not None and row[0] is not None:
        best = int(row[0])
    for (raw,) in tx.execute(
        "SELECT labels FROM leases WHERE labels LIKE '%containerd.io/gc.expire%'"
    ):
        value = load_map(raw).get(EXPIRE_LABEL)
        at = parse_expiry(value) if value else None
        if at is not None and at > now and (best is None or at < best):
            best = at
    return best


class Collector:
    """Runs collections over one database, its content store and snapshotters.

    Args:
        db: the metadata database.
        content: the backend content store (bytes of every namespace).
        snapshotters: backend snapshotters by name.
        metrics: where to count collections (a new :class:`Metrics` by default).
    """

    def __init__(
        self,
        db: MetadataDB,
        content: Store | None,
        snapshotters: Mapping[str, object] | None = None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self.content = content
        self.snapshotters = {
            name: sn for name, sn in (snapshotters or {}).items() if isinstance(sn, Snapshotter)
        }
        self.metrics = metrics if metrics is not None else Metrics()
        # Backends are cleaned on the first run: a crash may have left garbage.
        self._content_dirty = True
        self._dirty_snapshotters: set[str] = set(self.snapshotters)

    async def collect(self) -> Stats:
        """Run one collection (both phases) and return what it did.

        Raises:
            ContainerdError: the database or a backend failed; the metadata
                transaction is then rolled back or already complete, never half
                applied.
        """
        started = time.monotonic()
        try:
            stats = await self._collect(started)
        except BaseException:
            self.metrics.failed()
            raise
        stats.seconds = time.monotonic() - started
        self.metrics.observe(stats)
        if log.isEnabledFor(logging.DEBUG):
            removed = {k: v for k, v in stats.removed().items() if v}
            d = f"{stats.seconds * 1000:.3f}ms"
            # ``fields`` is how the daemon's log formatter takes structured values.
            log.debug("garbage collected", extra={"fields": {"d": d, **removed}})
        return stats

    async def _collect(self, started: float) -> Stats:
        now = now_ns()

        def run(tx: Tx) -> _Sweep:
            return _mark_and_sweep(tx, self.db, now)

        sweep = await self.db.aupdate(run, notify=False)
        stats = sweep.stats
        stats.started_at = started
        stats.mark_seconds = time.monotonic() - started
        if sweep.deletions or _CONTENT in sweep.swept_kinds or _INGEST in sweep.swept_kinds:
            self._content_dirty = True
        if sweep.deletions:
            self._dirty_snapshotters.update(self.snapshotters)
        self._dirty_snapshotters.update(
            k.removeprefix(SNAPSHOTS_PREFIX)
            for k in sweep.swept_kinds
            if k.startswith(SNAPSHOTS_PREFIX)
        )
        if self._content_dirty and self.content is not None:
            self._content_dirty = True  # stays set if cleanup raises
            await self._clean_content(stats)
            self._content_dirty = False
        for name in sorted(self._dirty_snapshotters & self.snapshotters.keys()):
            await self._clean_snapshotter(name, stats)
            self._dirty_snapshotters.discard(name)
        return stats

    async def _clean_content(self, stats: Stats) -> None:
        content = self.content
        assert content is not None  # noqa: S101 - checked by the caller
        async with self.db.gc_lock.exclusive():
            referenced, refs = await self.db.aview(_backend_references)
            garbage = [i.digest async for i in content.walk() if i.digest not in referenced]
            for dgst in garbage:
                with contextlib.suppress(NotFoundError):
                    await content.delete(dgst)
                    stats.backend_blobs += 1
                    log.debug("removed content", extra={"fields": {"digest": dgst}})
            present: set[str] = set()
            for st in await content.list_statuses():
                present.add(st.ref)
                if st.ref not in refs:
                    with contextlib.suppress(NotFoundError):
                        await content.abort(st.ref)
                        stats.backend_ingests += 1
            if dangling := {r for r in refs - present if not await _exists(content.status(r))}:
                await self.db.aupdate(lambda tx: _forget_ingests(tx, dangling), notify=False)
        if garbage:
            log.debug("content garbage collected", extra={"fields": {"blobs": len(garbage)}})

    async def _clean_snapshotter(self, name: str, stats: Stats) -> None:
        sn = self.snapshotters[name]
        async with self.db.gc_lock.exclusive():
            keep = await self.db.aview(
                lambda tx: {
                    str(k)
                    for (k,) in tx.execute(
                        "SELECT backend_key FROM snapshots WHERE snapshotter = ?", (name,)
                    )
                }
            )
            parents: dict[str, str] = {}
            async for info in sn.walk():
                parents[info.name] = info.parent
            if dangling := {k for k in keep - parents.keys() if not await _exists(sn.stat(k))}:
                await self.db.aupdate(
                    lambda tx: _forget_snapshots(tx, name, dangling), notify=False
                )
            for key in _leaves_first([k for k in parents if k not in keep], parents):
                try:
                    await sn.remove(key)
                except NotFoundError:
                    continue
                except FailedPreconditionError:
                    log.warning("snapshot %s/%s still has children; kept", name, key)
                    continue
                stats.backend_snapshots += 1
                log.debug("removed snapshot", extra={"fields": {"snapshotter": name, "key": key}})
        if isinstance(sn, Cleaner):
            await sn.cleanup()


async def _exists(probe: Awaitable[object]) -> bool:
    """False only when ``probe`` (a backend's stat) says the object does not exist (NotFound).

    Any other error keeps the row: the backend (a remote store or a proxy
    snapshotter) failed, which proves nothing.
    """
    try:
        await probe
    except NotFoundError:
        return False
    except ContainerdError:
        return True
    return True


def _forget_ingests(tx: Tx, backend_refs: set[str]) -> None:
    """Drop ingest rows whose backend ingest does not exist.

    Only a crash between recording an ingest and opening it in the backend
    leaves one (both happen under the GC lock, which the caller holds
    exclusively): the client never saw it, and listings never showed it.
    """
    for bref in sorted(backend_refs):
        row = tx.execute(
            "SELECT namespace, ref FROM ingests WHERE backend_ref = ?", (bref,)
        ).fetchone()
        if row is None:
            continue
        ns, ref = row
        log.warning("ingest %s/%s has no backend ingest %s; forgotten", ns, ref, bref)
        tx.execute("DELETE FROM ingests WHERE backend_ref = ?", (bref,))
        tx.execute(
            "DELETE FROM lease_resources WHERE namespace = ? AND type = ? AND id = ?",
            (ns, _INGEST, ref),
        )


def _forget_snapshots(tx: Tx, snapshotter: str, backend_keys: set[str]) -> None:
    """Drop snapshot rows whose backend snapshot does not exist.

    A kill -9 between a backend step and the row that follows leaves one: a
    commit that renamed the active snapshot in the backend but did not record
    the result (the client got no answer; the new backend snapshot, nameless,
    is collected like any other). Under the exclusive GC lock no prepare or
    commit is half-way, so such a row is a crash's leftover, and nothing can
    use it (mounts, views and children all need the backend snapshot).
    """
    rtype = SNAPSHOTS_PREFIX + snapshotter
    for bkey in sorted(backend_keys):
        row = tx.execute(
            "SELECT namespace, key FROM snapshots WHERE snapshotter = ? AND backend_key = ?",
            (snapshotter, bkey),
        ).fetchone()
        if row is None:
            continue
        ns, key = row
        log.warning(
            "snapshot %s/%s on %s has no backend snapshot %s; forgotten", ns, key, snapshotter, bkey
        )
        tx.execute(
            "DELETE FROM snapshots WHERE snapshotter = ? AND backend_key = ?", (snapshotter, bkey)
        )
        tx.execute(
            "DELETE FROM lease_resources WHERE namespace = ? AND type = ? AND id = ?",
            (ns, rtype, key),
        )


def _backend_references(tx: Tx) -> tuple[set[str], set[str]]:
    """Digests any namespace shows and backend refs of ingests in progress."""
    digests = {str(d) for (d,) in tx.execute("SELECT DISTINCT digest FROM blobs")}
    refs = {str(r) for (r,) in tx.execute("SELECT backend_ref FROM ingests")}
    return digests, refs


def _leaves_first(doomed: Iterable[str], parents: Mapping[str, str]) -> list[str]:
    """Order ``doomed`` so that every snapshot comes before its parent."""
    doomed_set = set(doomed)
    children: dict[str, int] = dict.fromkeys(doomed_set, 0)
    for key, parent in parents.items():
        if parent in children and key in parents:
            children[parent] += 1
    ready = deque(sorted(k for k, n in children.items() if n == 0))
    out: list[str] = []
    while ready:
        key = ready.popleft()
        out.append(key)
        parent = parents.get(key, "")
        if parent in children:
            children[parent] -= 1
            if children[parent] == 0:
                ready.append(parent)
    return out
