"""errgrpc: errdefs kinds <-> gRPC status codes and messages, both directions."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
from google.rpc import status_pb2

from pycontainerd.api import errgrpc, status
from pycontainerd.core import errdefs

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SC = grpc.StatusCode

# Every errdefs kind, the code containerd sends for it, and the kind a client
# reads back from that code.
KINDS = [
    (errdefs.UnknownError, SC.UNKNOWN, errdefs.UnknownError),
    (errdefs.InvalidArgumentError, SC.INVALID_ARGUMENT, errdefs.InvalidArgumentError),
    (errdefs.NotFoundError, SC.NOT_FOUND, errdefs.NotFoundError),
    (errdefs.AlreadyExistsError, SC.ALREADY_EXISTS, errdefs.AlreadyExistsError),
    (errdefs.FailedPreconditionError, SC.FAILED_PRECONDITION, errdefs.FailedPreconditionError),
    (errdefs.ConflictError, SC.FAILED_PRECONDITION, errdefs.ConflictError),
    (errdefs.NotModifiedError, SC.FAILED_PRECONDITION, errdefs.NotModifiedError),
    (errdefs.UnavailableError, SC.UNAVAILABLE, errdefs.UnavailableError),
    (errdefs.UnimplementedError, SC.UNIMPLEMENTED, errdefs.UnimplementedError),
    (errdefs.OutOfRangeError, SC.OUT_OF_RANGE, errdefs.OutOfRangeError),
    (errdefs.DataLossError, SC.DATA_LOSS, errdefs.DataLossError),
    (errdefs.AbortedError, SC.ABORTED, errdefs.AbortedError),
    (errdefs.PermissionDeniedError, SC.PERMISSION_DENIED, errdefs.PermissionDeniedError),
    (errdefs.ResourceExhaustedError, SC.RESOURCE_EXHAUSTED, errdefs.ResourceExhaustedError),
    (errdefs.CanceledError, SC.CANCELLED, errdefs.CanceledError),
    (errdefs.DeadlineExceededError, SC.DEADLINE_EXCEEDED, errdefs.DeadlineExceededError),
    (errdefs.UnauthenticatedError, SC.UNAUTHENTICATED, errdefs.UnauthenticatedError),
    (errdefs.InternalError, SC.INTERNAL, errdefs.InternalError),
]

KindCase = tuple[type[errdefs.ContainerdError], grpc.StatusCode, type[errdefs.ContainerdError]]
EVERY_KIND = pytest.mark.parametrize("case", KINDS, ids=lambda case: case[0].__name__)


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_every_kind_is_in_the_table() -> None:
    assert {k for k, _, _ in KINDS} == set(errdefs.ALL_KINDS)


@EVERY_KIND
def test_kind_to_code_and_back(case: KindCase) -> None:
    kind, code, back = case
    err = kind("object x is odd")
    assert errgrpc.to_status_code(err) is code
    message = errgrpc.to_grpc_message(err)
    if kind is errdefs.UnknownError:
        assert message == "object x is odd"  # a plain Go error: its text alone
    else:
        assert message == f"object x is odd: {kind.sentinel}"

    returned = errgrpc.from_rpc_error(rpc_error(code, message))
    assert type(returned) is back
    assert returned.message == "object x is odd"
    assert str(returned) == f"object x is odd: {kind.sentinel}"


def test_unknown_goes_out_as_its_text_alone() -> None:
    # containerd sends Unknown-coded errors (plain Go errors) without ": unknown"
    assert errgrpc.to_grpc_message(errdefs.UnknownError("boom")) == "boom"
    assert errgrpc.to_grpc_message(errdefs.UnknownError("boom: unknown")) == "boom"
    assert errgrpc.to_grpc_message(errdefs.UnknownError()) == "unknown"
    outer = RuntimeError("outer text")
    outer.__cause__ = errdefs.UnknownError("inner")
    assert errgrpc.to_status_code(outer) is SC.UNKNOWN
    assert errgrpc.to_grpc_message(outer) == "outer text"
    # the same over ttrpc (google.rpc.Status), as the Go shim sends it
    st = errgrpc.to_status_proto(errdefs.UnknownError("runc failed"))
    assert (st.code, st.message) == (2, "runc failed")
    # a relayed Unknown keeps its text: read back and sent again, nothing is added
    relayed = errgrpc.from_rpc_error(rpc_error(SC.UNKNOWN, "runc failed"))
    assert errgrpc.to_grpc_message(relayed) == "runc failed"


def test_server_message_ends_with_sentinel() -> None:
    err = errdefs.FailedPreconditionError('namespace "x" must be empty, but it still has blobs')
    assert errgrpc.to_grpc_message(err) == (
        'namespace "x" must be empty, but it still has blobs: failed precondition'
    )


def test_message_already_ending_with_sentinel_is_not_doubled() -> None:
    err = errdefs.NotFoundError("image x: not found")
    assert errgrpc.to_grpc_message(err) == "image x: not found"


def test_empty_message_is_the_sentinel() -> None:
    assert errgrpc.to_grpc_message(errdefs.NotFoundError()) == "not found"
    back = errgrpc.from_rpc_error(rpc_error(SC.NOT_FOUND, "not found"))
    assert isinstance(back, errdefs.NotFoundError)
    assert back.message == ""
    assert str(back) == "not found"


def test_client_strips_one_duplicated_suffix() -> None:
    # The quirk seen live with filter parse errors: the suffix arrives doubled.
    desc = 'parse error: unsupported operator "=": invalid argument: invalid argument'
    back = errgrpc.from_rpc_error(rpc_error(SC.INVALID_ARGUMENT, desc))
    assert isinstance(back, errdefs.InvalidArgumentError)
    assert back.message == 'parse error: unsupported operator "=": invalid argument'
    assert str(back) == back.message


def test_message_without_sentinel_is_kept_and_gets_one() -> None:
    # Explicit status errors from containerd carry no sentinel.
    back = errgrpc.from_rpc_error(
        rpc_error(SC.INVALID_ARGUMENT, "first message must have a reference")
    )
    assert back.message == "first message must have a reference"
    assert str(back) == "first message must have a reference: invalid argument"


def test_failed_precondition_is_refined_only_by_suffix() -> None:
    conflict = errgrpc.from_rpc_error(rpc_error(SC.FAILED_PRECONDITION, "conflict"))
    assert isinstance(conflict, errdefs.ConflictError)
    plain = errgrpc.from_rpc_error(rpc_error(SC.FAILED_PRECONDITION, "conflicting thing"))
    assert type(plain) is errdefs.FailedPreconditionError


def test_ok_or_unknown_numbers_read_as_unknown() -> None:
    assert isinstance(errgrpc.from_rpc_error(rpc_error(SC.OK, "odd")), errdefs.UnknownError)
    assert status.kind_for(99) is errdefs.UnknownError
    with pytest.raises(ValueError, match="OK is not an error"):
        status.kind_for(0)


def test_unclassified_exceptions() -> None:
    assert errgrpc.to_status_code(RuntimeError("boom")) is SC.UNKNOWN
    assert errgrpc.to_grpc_message(RuntimeError("boom")) == "boom"
    assert errgrpc.to_grpc_message(RuntimeError()) == "RuntimeError"


def test_timeouts_and_cancellation_map_like_go_context_errors() -> None:
    assert errgrpc.to_status_code(TimeoutError()) is SC.DEADLINE_EXCEEDED
    assert errgrpc.to_grpc_message(TimeoutError()) == "context deadline exceeded"
    assert errgrpc.to_status_code(asyncio.CancelledError()) is SC.CANCELLED
    assert errgrpc.to_grpc_message(asyncio.CancelledError()) == "context canceled"


def test_kind_found_through_the_cause_chain() -> None:
    outer = RuntimeError("reading blob failed")
    outer.__cause__ = errdefs.NotFoundError("blob sha256:00")
    assert errgrpc.to_status_code(outer) is SC.NOT_FOUND
    assert errgrpc.to_grpc_message(outer) == "reading blob failed: not found"


def test_nested_rpc_error_passes_through() -> None:
    err = rpc_error(SC.ABORTED, "upstream aborted")
    assert errgrpc.to_status_code(err) is SC.ABORTED
    assert errgrpc.to_grpc_message(err) == "upstream aborted"


def test_status_code_numbers() -> None:
    for sc in grpc.StatusCode:
        assert errgrpc.code_to_status_code(sc.value[0]) is sc
        assert errgrpc.status_code_to_code(sc) == sc.value[0]
    assert errgrpc.code_to_status_code(42) is SC.UNKNOWN


@EVERY_KIND
def test_google_rpc_status_both_ways(case: KindCase) -> None:
    kind, code, back = case
    st = errgrpc.to_status_proto(kind("bad"))
    assert isinstance(st, status_pb2.Status)
    assert st.code == code.value[0]
    assert st.message == ("bad" if kind is errdefs.UnknownError else f"bad: {kind.sentinel}")
    assert status.to_status_proto(kind("bad")) == st
    returned = errgrpc.from_status_proto(st)
    assert type(returned) is back
    assert str(returned) == f"bad: {kind.sentinel}"


def test_ok_status_is_no_error() -> None:
    assert errgrpc.from_status_proto(status_pb2.Status(code=0)) is None


def test_status_module_does_not_import_grpc() -> None:
    probe = (
        "import sys, pycontainerd.api.status as s;"
        "s.to_status_proto(Exception('x'));"
        "print('grpc' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


# -- aborting_on_error against a real grpc.aio server --------------------------

SERVICE = "pycontainerd.test.v1.Errors"


async def _handler(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    async with errgrpc.aborting_on_error(context):
        what = request.decode()
        if what == "ok":
            return b"fine"
        if what == "notfound":
            raise errdefs.NotFoundError("content digest sha256:aa")
        if what == "precondition":
            raise errdefs.FailedPreconditionError(
                'namespace "x" must be empty, but it still has blobs'
            )
        if what == "nested":
            raise rpc_error(SC.ABORTED, "upstream aborted")
        if what == "abort":
            await context.abort(SC.OUT_OF_RANGE, "explicit abort")
        msg = f"something odd: {what}"
        raise RuntimeError(msg)
    raise AssertionError  # pragma: no cover - every branch returns or raises


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    sockdir = tempfile.mkdtemp(dir="/tmp")
    address = f"unix://{Path(sockdir) / 'e.sock'}"
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {"Do": grpc.unary_unary_rpc_method_handler(_handler)}
            ),
        )
    )
    server.add_insecure_port(address)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(address) as ch:
            yield ch
    finally:
        await server.stop(None)
        shutil.rmtree(sockdir, ignore_errors=True)


async def _call(ch: grpc.aio.Channel, what: str) -> bytes:
    method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary(f"/{SERVICE}/Do")
    result = await method(what.encode(), timeout=10)
    assert isinstance(result, bytes)
    return result


async def test_aborting_on_error_passes_success(channel: grpc.aio.Channel) -> None:
    assert await _call(channel, "ok") == b"fine"


async def test_aborting_on_error_maps_kinds(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await _call(channel, "precondition")
    assert excinfo.value.code() is SC.FAILED_PRECONDITION
    assert excinfo.value.details() == (
        'namespace "x" must be empty, but it still has blobs: failed precondition'
    )
    back = errgrpc.from_rpc_error(excinfo.value)
    assert isinstance(back, errdefs.FailedPreconditionError)
    assert back.message == 'namespace "x" must be empty, but it still has blobs'

    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await _call(channel, "notfound")
    assert excinfo.value.code() is SC.NOT_FOUND
    assert excinfo.value.details() == "content digest sha256:aa: not found"


async def test_aborting_on_error_keeps_nested_rpc_status(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await _call(channel, "nested")
    assert excinfo.value.code() is SC.ABORTED
    assert excinfo.value.details() == "upstream aborted"


async def test_aborting_on_error_lets_explicit_abort_through(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await _call(channel, "abort")
    assert excinfo.value.code() is SC.OUT_OF_RANGE
    assert excinfo.value.details() == "explicit abort"


async def test_aborting_on_error_unexpected_is_unknown_and_logged(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="pycontainerd.api.errgrpc"),
        pytest.raises(grpc.aio.AioRpcError) as excinfo,
    ):
        await _call(channel, "weird")
    assert excinfo.value.code() is SC.UNKNOWN
    assert excinfo.value.details() == "something odd: weird"
    assert any(r.exc_info and "something odd" in str(r.exc_info[1]) for r in caplog.records)


class _RecordingContext:
    """Records abort() calls (raising as grpc.aio's do), where a server cannot show it."""

    def __init__(self) -> None:
        self.aborts: list[tuple[grpc.StatusCode, str]] = []

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborts.append((code, details))
        raise grpc.aio.AbortError


def _raise(exc: BaseException) -> None:
    raise exc


async def test_aborting_on_error_does_not_swallow_cancellation() -> None:
    # grpc.aio leaves a call that raised CancelledError hanging until its
    # deadline, so this is checked directly: the error must escape unmapped.
    ctx = _RecordingContext()
    with pytest.raises(asyncio.CancelledError):
        async with errgrpc.aborting_on_error(ctx):  # type: ignore[arg-type]
            raise asyncio.CancelledError
    assert ctx.aborts == []
    with pytest.raises(grpc.aio.AbortError):
        async with errgrpc.aborting_on_error(ctx):  # type: ignore[arg-type]
            _raise(errdefs.AbortedError("lost a race"))
    assert ctx.aborts == [(SC.ABORTED, "lost a race: aborted")]


class _HeaderContext(_RecordingContext):
    """A recording context that also carries the call's headers."""

    def __init__(self, *metadata: tuple[str, str]) -> None:
        super().__init__()
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata


class _Servicer:
    @errgrpc.unary_rpc
    async def Seen(self, request: object, context: object) -> tuple[str | None, str | None]:  # noqa: N802
        from pycontainerd.core import namespaces

        return namespaces.namespace(), namespaces.lease()

    @errgrpc.unary_rpc
    async def Fails(self, request: BaseException, context: object) -> None:  # noqa: N802
        raise request


async def test_unary_rpc_runs_the_body_in_the_call_scope() -> None:
    from pycontainerd.core import namespaces

    ctx = _HeaderContext((namespaces.GRPC_HEADER, "ns1"), (namespaces.LEASE_HEADER, "l1"))
    assert await _Servicer().Seen(None, ctx) == ("ns1", "l1")
    assert namespaces.namespace() is None  # reset after the call
    assert _Servicer.Seen.__name__ == "Seen"  # the generated registration sees the same method


async def test_unary_rpc_maps_errors_and_passes_cancellation() -> None:
    ctx = _HeaderContext()
    with pytest.raises(grpc.aio.AbortError):
        await _Servicer().Fails(errdefs.NotFoundError("image x"), ctx)
    assert ctx.aborts == [(SC.NOT_FOUND, "image x: not found")]
    with pytest.raises(asyncio.CancelledError):
        await _Servicer().Fails(asyncio.CancelledError(), ctx)
    assert len(ctx.aborts) == 1
