"""The task manager's event plumbing: the exits it watches and the ones it announces.

Shims forward their own task events to the daemon; the manager publishes
only for shims that died (``/tasks/exit`` unless one was seen, then
``/tasks/delete``, as upstream's dead-shim cleanup) and for a stopped task
whose exit never arrived after a restart. It watches ``/tasks/exit`` on the
exchange so that each exit is announced once.

This module imports protobuf (never grpc).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final, Protocol

from pycontainerd.api.events import task_pb2 as events_pb2
from pycontainerd.core import namespaces

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable

    from google.protobuf import timestamp_pb2

    from pycontainerd.core.events import Envelope, EventBus

__all__ = ["DELETE_TOPIC", "EXIT_TOPIC", "Ended", "TaskEvents", "task_exit"]

log = logging.getLogger("pycontainerd.runtime")

EXIT_TOPIC: Final = "/tasks/exit"
DELETE_TOPIC: Final = "/tasks/delete"


class Ended(Protocol):
    """How a process ended: a shim's ``DeleteResponse`` or ``StateResponse``."""

    @property
    def pid(self) -> int: ...
    @property
    def exit_status(self) -> int: ...
    @property
    def exited_at(self) -> timestamp_pb2.Timestamp: ...


class TaskEvents:
    """Watches and publishes task events on the exchange ``bus``."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    async def watch_exits(
        self, ready: asyncio.Event, on_exit: Callable[[str, str], Awaitable[None]]
    ) -> None:
        """Call ``on_exit(namespace, container_id)`` for each init exit on the exchange.

        ``ready`` is set once subscribed; exits of exec processes are skipped.
        """
        sub = self.bus.subscribe(f'topic=="{EXIT_TOPIC}"')
        ready.set()
        try:
            async for env in sub:
                ev = task_exit(env)
                if ev is None:
                    continue
                if ev.id and ev.id != ev.container_id:
                    continue  # an exec process
                await on_exit(env.namespace, ev.container_id)
        finally:
            close = getattr(sub, "close", None)
            if callable(close):
                close()

    async def publish_exit(self, namespace: str, task_id: str, ended: Ended) -> None:
        """Publish ``/tasks/exit`` for the init process of ``task_id`` in ``namespace``."""
        exited = events_pb2.TaskExit(container_id=task_id, id=task_id, **_how(ended))
        await self._publish_in(namespace, EXIT_TOPIC, exited)

    async def publish_delete(self, namespace: str, task_id: str, ended: Ended) -> None:
        """Publish ``/tasks/delete`` for ``task_id`` in ``namespace``."""
        deleted = events_pb2.TaskDelete(container_id=task_id, **_how(ended))
        await self._publish_in(namespace, DELETE_TOPIC, deleted)

    async def _publish_in(self, namespace: str, topic: str, event: Any) -> None:
        with namespaces.with_namespace(namespace):
            await self.bus.publish(topic, event)


def _how(ended: Ended) -> dict[str, Any]:
    """The fields an exit and a delete event share: pid, exit status and time."""
    return {"pid": ended.pid, "exit_status": ended.exit_status, "exited_at": ended.exited_at}


def task_exit(env: Envelope) -> events_pb2.TaskExit | None:
    """The ``TaskExit`` in ``env``; None (logged) when it does not parse."""
    ev = events_pb2.TaskExit()
    try:
        ev.ParseFromString(env.event.value)
    except Exception:
        log.debug("ignoring a malformed %s event", EXIT_TOPIC)
        return None
    return ev
