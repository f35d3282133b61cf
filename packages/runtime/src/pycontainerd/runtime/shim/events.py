"""Task events from the shim to the daemon: ``Events/Forward`` over ttrpc.

Upstream's shims forward complete envelopes to the daemon's ttrpc socket
(``TTRPC_ADDRESS``, which is ``<daemon address>.ttrpc``). This forwarder keeps
a bounded queue (2048, as upstream) and sends in order. A failed send is
retried after 1, 2, 3, 4, 5 seconds (upstream's delays) with a fresh
connection, then the event is dropped with a log line naming its topic.
Unlike upstream, the head of the queue is retried in place, so ``/tasks/exit``
never overtakes ``/tasks/start``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from google.protobuf import empty_pb2

from pycontainerd.api.services.ttrpc.events.v1 import events_pb2
from pycontainerd.api.ttrpc import Client, ServiceSpec

if TYPE_CHECKING:
    from google.protobuf import message

__all__ = ["FORWARD_SPEC", "Forwarder"]

log = logging.getLogger(__name__)

FORWARD_SPEC = ServiceSpec(
    "containerd.services.events.ttrpc.v1.Events",
    {"Forward": (events_pb2.ForwardRequest, empty_pb2.Empty)},
)
_SERVICE = FORWARD_SPEC.name
QUEUE_SIZE = 2048
MAX_RETRIES = 5


class Forwarder:
    """Sends events of one namespace to the daemon at ``address``, in order."""

    def __init__(self, address: str, namespace: str, *, retry_delay: float = 1.0) -> None:
        self.address = address
        self.namespace = namespace
        self.retry_delay = retry_delay
        self._queue: asyncio.Queue[events_pb2.ForwardRequest] = asyncio.Queue(QUEUE_SIZE)
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the sending task."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def publish(self, topic: str, event: message.Message) -> None:
        """Queue ``event`` under ``topic`` (dropped with a log line if the queue is full)."""
        req = events_pb2.ForwardRequest()
        env = req.envelope
        now = time.time()
        env.timestamp.seconds = int(now)
        env.timestamp.nanos = int((now - int(now)) * 1e9)
        env.namespace = self.namespace
        env.topic = topic
        env.event.type_url = event.DESCRIPTOR.full_name
        env.event.value = event.SerializeToString()
        try:
            self._queue.put_nowait(req)
        except asyncio.QueueFull:
            log.error("event queue full: dropping %s", topic)

    async def _send(self, req: events_pb2.ForwardRequest) -> None:
        if self._client is None or self._client.closed:
            self._client = await Client.connect(self.address, timeout=5)
        await self._client.call_raw(
            _SERVICE, "Forward", req.SerializeToString(), timeout=5, namespace=self.namespace
        )

    async def _run(self) -> None:
        while True:
            req = await self._queue.get()
            for attempt in range(MAX_RETRIES + 1):
                try:
                    await self._send(req)
                    log.debug("event forwarded: %s", req.envelope.topic)
                    break
                except Exception as exc:
                    if self._client is not None:
                        self._client.close()
                        self._client = None
                    if attempt == MAX_RETRIES:
                        log.error(
                            "evicting %s from queue because of retry count: %s",
                            req.envelope.topic,
                            exc,
                        )
                        break
                    log.warning("forward %s failed (%s), retrying", req.envelope.topic, exc)
                    await asyncio.sleep(self.retry_delay * (attempt + 1))
            self._queue.task_done()

    async def flush(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait (at most ``timeout`` s) until every queued event is sent or dropped."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._queue.join()

    async def aclose(self) -> None:
        """Stop sending and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
