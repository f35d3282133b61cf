"""ttrpc round trip of an empty unary call on one connection (target: <= 100 us median).

Client and server run in this process on one event loop, talking over a unix
socket under a temporary directory; the numbers include both sides' Python.

    uv run python bench/ttrpc_roundtrip.py [--calls N] [--warmup N]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from google.protobuf import empty_pb2

from pycontainerd.api.ttrpc import CallContext, Client, Server, ServiceSpec

SPEC = ServiceSpec("bench.v1.Echo", {"Empty": (empty_pb2.Empty, empty_pb2.Empty)})


class Echo:
    async def Empty(self, ctx: CallContext, req: empty_pb2.Empty) -> empty_pb2.Empty:  # noqa: N802
        return req


async def run(calls: int, warmup: int) -> list[float]:
    tmp = tempfile.mkdtemp(dir="/tmp")
    try:
        sock = str(Path(tmp) / "b.sock")
        server = Server()
        server.register_service(SPEC, Echo())
        await server.listen_unix(sock)
        client = await Client.connect(sock)
        req = empty_pb2.Empty()
        for _ in range(warmup):
            await client.call(SPEC.name, "Empty", req, empty_pb2.Empty)
        samples = []
        clock = time.perf_counter_ns
        for _ in range(calls):
            t0 = clock()
            await client.call(SPEC.name, "Empty", req, empty_pb2.Empty)
            samples.append((clock() - t0) / 1000)
        await client.aclose()
        server.close()
        return samples
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=2000)
    args = parser.parse_args()
    samples = sorted(asyncio.run(run(args.calls, args.warmup)))
    median = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"ttrpc empty unary round trip, {len(samples)} calls on one connection")
    print(f"median {median:.1f} us  p99 {p99:.1f} us  min {samples[0]:.1f} us")


if __name__ == "__main__":
    main()
