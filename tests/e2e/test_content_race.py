"""Two writers of one ingest ref at once (issue 14): containerd's answers, never Unknown.

containerd locks a ref from the moment a writer opens it until its commit has
published the blob. A second writer meanwhile gets Unavailable
``ref <ns>/<seq>/<ref> locked for ...`` (the Go client's ``OpenWriter`` retries
that), and once the blob is committed, AlreadyExists for its digest.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import grpc

from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc
from tests.e2e.conftest import CTR

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.e2e.conftest import Daemon

MD = (("containerd-namespace", "default"),)


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_second_writer_of_a_held_ref_then_of_a_committed_one(daemon: Daemon) -> None:
    data = b"written by the first writer" * 1000
    first_sent: list[Any] = []

    def first() -> Iterator[content_pb2.WriteContentRequest]:
        yield content_pb2.WriteContentRequest(
            action=content_pb2.WRITE, ref="same", data=data, total=len(data)
        )
        # Hold the ref until the second writer was refused.
        while not first_sent:
            yield content_pb2.WriteContentRequest(action=content_pb2.STAT, ref="same")
        yield content_pb2.WriteContentRequest(
            action=content_pb2.COMMIT, ref="same", offset=len(data), expected=digest(data)
        )

    with grpc.insecure_channel(f"unix://{daemon.address}") as ch:
        stub = content_pb2_grpc.ContentStub(ch)
        stream = stub.Write(first(), metadata=MD, timeout=60)
        assert next(stream).offset == len(data)  # the first writer holds the ref

        def second(expected: str = "") -> Any:
            return stub.Write(
                iter(
                    [
                        content_pb2.WriteContentRequest(
                            action=content_pb2.STAT, ref="same", expected=expected
                        )
                    ]
                ),
                metadata=MD,
                timeout=30,
            )

        try:
            list(second())
        except grpc.RpcError as exc:
            refused = exc
        else:
            raise AssertionError("a second writer opened a held ref")
        assert refused.code() is grpc.StatusCode.UNAVAILABLE
        assert re.fullmatch(
            r"ref default/\d+/same locked for .+ \(since .+\): unavailable", refused.details() or ""
        )
        first_sent.append(True)
        last = list(stream)[-1]
        assert last.digest == digest(data)

        try:
            list(second(digest(data)))
        except grpc.RpcError as exc:
            exists = exc
        else:
            raise AssertionError("a second writer of a committed digest opened it")
        assert exists.code() is grpc.StatusCode.ALREADY_EXISTS
        assert exists.details() == f"content {digest(data)}: already exists"


def test_go_ctr_writers_of_one_ref_all_succeed(daemon: Daemon) -> None:
    """Pairs of ``ctr content ingest`` of one ref: the Go client retries the lock and
    reads AlreadyExists as success; an Unknown error would fail one of them."""
    for i in range(6):
        data = f"pair {i} ".encode() * 200_000
        procs = [
            subprocess.Popen(
                [CTR, "-a", daemon.address, "content", "ingest", f"pair{i}"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        # Fed at once: whichever holds the ref reads its input while the other waits.
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda p, d=data: p.communicate(d, timeout=60), procs))
        for proc, (_, err) in zip(procs, results, strict=True):
            assert proc.returncode == 0, err.decode()
        assert digest(data) in daemon.ok("content", "ls", "-q").split()
    assert daemon.ok("content", "active").splitlines()[1:] == []
