"""Containers and images metadata, containerd and pycontainerd side by side.

    uv run python bench/metadata.py [--containers 500] [--records 10000]

On a fresh daemon each:

- ``containers_create_<n>_ctr_s``: ``ctr containers create --rootfs <dir> c<i>``
  ``n`` times in a row with the Go ``ctr`` (each a process; ``ctr`` builds the
  OCI spec), then ``ctr containers ls``; total seconds. Target: <= 1.3x.
- ``containers_ls_<n>_ctr_ms``: that ``ctr containers ls`` alone (median of it
  and four more).
- ``containers_create_<n>_grpc_s``: ``n`` ``Containers.Create`` calls with our
  generated stubs over one channel, one after the other, with the spec that
  ``ctr`` generated (the daemon's share without ``ctr``'s start-up). Target:
  <= 1.3x.
- ``rss_after_<n>_containers_mib``: the daemon's RSS after the above. Target:
  <= 1.5x.
- ``images_ls_<records>_ctr_s`` / ``containers_ls_<records>_ctr_s``: median
  of three ``ctr images ls`` / ``ctr containers ls`` in a namespace seeded
  with ``records`` images and containers through ``Images.Create`` and
  ``Containers.Create`` (many calls in flight). The images share one real
  manifest blob (``ctr images ls`` reads it to compute each image's size), so
  the listing also exercises ``Content.Info`` and ``Content.Read`` per image.
  Target: <= 1.5x.
- ``images_list_<records>_grpc_ms`` / ``containers_list_<records>_grpc_ms``:
  one ``Images.List`` / ``Containers.ListStream`` call with our stubs (no
  ``ctr`` work; 10 000 containers with ``ctr``'s spec exceed gRPC's 16 MiB
  message limit, so containerd refuses a unary ``List``, and ``ctr`` streams
  too). Informational.

Both daemons run at once and their timed steps alternate (which one goes first
changes every round), so load from elsewhere on a shared machine falls on both
alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from typing import TYPE_CHECKING, Any

from _harness import (
    GC_ROOT,
    Peer,
    Row,
    channel,
    ns_metadata,
    peers,
    running,
    table_main,
    write_blob,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

BIG_NS = "bench10k"
GRPC_NS = "benchgrpc"
SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
IN_FLIGHT = 64


def _stubs(ch: Any) -> tuple[Any, Any]:
    from pycontainerd.api.services.containers.v1 import containers_pb2_grpc
    from pycontainerd.api.services.images.v1 import images_pb2_grpc

    return containers_pb2_grpc.ContainersStub(ch), images_pb2_grpc.ImagesStub(ch)


def _pipelined(calls: list[Any]) -> None:
    """Run ``calls`` (thunks returning gRPC futures) with at most ``IN_FLIGHT`` pending."""
    pending: list[Any] = []
    for call in calls:
        pending.append(call())
        if len(pending) >= IN_FLIGHT:
            for fut in pending:
                fut.result()
            pending = []
    for fut in pending:
        fut.result()


def manifest_blobs(ch: Any, namespace: str) -> tuple[str, int]:
    """Write a config and a one-layer manifest into ``namespace``; return its digest and size."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    config_digest = write_blob(ch, config, ref="bench-config", labels=GC_ROOT, namespace=namespace)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + "ab" * 32,
                    "size": 1234567,
                }
            ],
        }
    ).encode()
    labels = {**GC_ROOT, "containerd.io/gc.ref.content.config": config_digest}
    digest = write_blob(ch, manifest, ref="bench-manifest", labels=labels, namespace=namespace)
    return digest, len(manifest)


def seed(ch: Any, records: int, spec: bytes) -> None:
    """``records`` images and containers in ``BIG_NS``."""
    from pycontainerd.api.services.containers.v1 import containers_pb2
    from pycontainerd.api.services.images.v1 import images_pb2
    from pycontainerd.api.types import descriptor_pb2

    containers, images = _stubs(ch)
    digest, size = manifest_blobs(ch, BIG_NS)
    md = ns_metadata(BIG_NS)
    target = descriptor_pb2.Descriptor(
        media_type="application/vnd.oci.image.manifest.v1+json", digest=digest, size=size
    )

    def image(i: int) -> Any:
        img = images_pb2.Image(
            name=f"registry.bench.test/app/image{i:05d}:v1",
            target=target,
            labels={"bench": "yes"},
        )
        return lambda: images.Create.future(images_pb2.CreateImageRequest(image=img), metadata=md)

    def container(i: int) -> Any:
        c = containers_pb2.Container(
            id=f"c{i:05d}",
            labels={"bench": "yes"},
            image=f"registry.bench.test/app/image{i:05d}:v1",
            runtime=containers_pb2.Container.Runtime(name="io.containerd.runc.v2"),
            spec={"type_url": SPEC_URL, "value": spec},
            snapshotter="overlayfs",
            snapshot_key=f"c{i:05d}",
        )
        req = containers_pb2.CreateContainerRequest(container=c)
        return lambda: containers.Create.future(req, metadata=md)

    _pipelined([image(i) for i in range(records)])
    _pipelined([container(i) for i in range(records)])


def _phases(peer: Peer, n: int, records: int, out: dict[str, float]) -> Iterator[None]:
    """Measure ``peer`` (already running) into ``out``, yielding between timed steps.

    The caller alternates the two daemons' steps, so each timed step of one
    runs right next to the same step of the other.
    """
    from pycontainerd.api.services.containers.v1 import containers_pb2
    from pycontainerd.api.services.images.v1 import images_pb2

    rootfs = str(peer.base)
    t0 = time.perf_counter()
    for i in range(n):
        peer.ctr_ok("containers", "create", "--rootfs", rootfs, f"c{i}")
    t1 = time.perf_counter()
    listing = peer.ctr_ok("containers", "ls", "-q")
    t2 = time.perf_counter()
    assert len(listing.split()) == n, listing[:200]
    out["create_ctr"] = t2 - t0
    samples = [t2 - t1]
    yield
    for _ in range(4):
        t1 = time.perf_counter()
        peer.ctr_ok("containers", "ls", "-q")
        samples.append(time.perf_counter() - t1)
        yield
    out["ls_ctr_ms"] = statistics.median(samples) * 1000
    with channel(peer) as ch:
        containers, images = _stubs(ch)
        got = containers.Get(containers_pb2.GetContainerRequest(id="c0"), metadata=ns_metadata())
        spec = got.container.spec.value
        md = ns_metadata(GRPC_NS)
        t0 = time.perf_counter()
        for i in range(n):
            c = containers_pb2.Container(
                id=f"g{i}",
                runtime=containers_pb2.Container.Runtime(name="io.containerd.runc.v2"),
                spec={"type_url": SPEC_URL, "value": spec},
            )
            containers.Create(containers_pb2.CreateContainerRequest(container=c), metadata=md)
        out["create_grpc"] = time.perf_counter() - t0
        out["rss"] = peer.rss_mib()
        yield
        t0 = time.perf_counter()
        seed(ch, records, spec)
        print(f"  {peer.name}: seeded {records} images+containers in "
              f"{time.perf_counter() - t0:.1f}s")  # fmt: skip
        yield
        md = ns_metadata(BIG_NS)
        t0 = time.perf_counter()
        resp = images.List(images_pb2.ListImagesRequest(), metadata=md)
        out["images_grpc_ms"] = (time.perf_counter() - t0) * 1000
        assert len(resp.images) == records
        yield
        t0 = time.perf_counter()
        stream = containers.ListStream(containers_pb2.ListContainersRequest(), metadata=md)
        count = sum(1 for _ in stream)
        out["containers_grpc_ms"] = (time.perf_counter() - t0) * 1000
        assert count == records
        yield
    for what in ("images", "containers"):
        samples = []
        for _ in range(3):
            t0 = time.perf_counter()
            peer.ctr_ok("-n", BIG_NS, what, "ls")
            samples.append(time.perf_counter() - t0)
            yield
        out[f"{what}_ctr"] = statistics.median(samples)


def measure_both(n: int, records: int) -> tuple[dict[str, float], dict[str, float]]:
    """containerd's and our figures, both daemons running, their steps alternating."""
    both = peers()
    results: list[dict[str, float]] = [{} for _ in both]
    with contextlib.ExitStack() as stack:
        for peer in both:
            stack.enter_context(running(peer))
        steps = [_phases(peer, n, records, out) for peer, out in zip(both, results, strict=True)]
        turn = 0
        while steps:
            for step in list(steps if turn % 2 == 0 else reversed(steps)):
                if next(step, StopIteration) is StopIteration:
                    steps.remove(step)
            turn += 1
    return results[0], results[1]


def rows(n: int = 500, records: int = 10_000) -> list[Row]:
    theirs, ours = measure_both(n, records)

    def row(name: str, key: str, target: str = "") -> Row:
        return Row(name, theirs[key], ours[key], target)

    return [
        row(f"containers_create_{n}_ctr_s", "create_ctr", "<= 1.3x"),
        row(f"containers_ls_{n}_ctr_ms", "ls_ctr_ms", "<= 1.3x"),
        row(f"containers_create_{n}_grpc_s", "create_grpc", "<= 1.3x"),
        row(f"rss_after_{n}_containers_mib", "rss", "<= 1.5x"),
        row(f"images_ls_{records}_ctr_s", "images_ctr", "<= 1.5x"),
        row(f"containers_ls_{records}_ctr_s", "containers_ctr", "<= 1.5x"),
        row(f"images_list_{records}_grpc_ms", "images_grpc_ms"),
        row(f"containers_liststream_{records}_grpc_ms", "containers_grpc_ms"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--containers", type=int, default=500, help="containers to create")
    parser.add_argument("--records", type=int, default=10_000, help="images/containers to list")
    return table_main(parser, lambda args: rows(args.containers, args.records))


if __name__ == "__main__":
    sys.exit(main())
