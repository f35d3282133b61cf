"""A third-party pycontainerd plugin: ``io.containerd.grpc.v1.example-greeter``.

It serves ``/pcdexample.v1.Greeter/Say`` with raw bytes (no protos): the
answer is ``hello `` followed by the request. Importing it imports no grpc.
"""

from __future__ import annotations

from typing import Any

from pycontainerd.core.plugin import InitContext, PluginType, Registration, hookimpl

SERVICE = "pcdexample.v1.Greeter"


class Greeter:
    """The service; the daemon mounts it through ``register``."""

    def register(self, server: Any) -> None:
        import grpc

        async def say(request: bytes, context: Any) -> bytes:
            return b"hello " + request

        handler = grpc.method_handlers_generic_handler(
            SERVICE, {"Say": grpc.unary_unary_rpc_method_handler(say)}
        )
        server.add_generic_rpc_handlers((handler,))


async def _init(ic: InitContext) -> Greeter:
    ic.exports["greeting"] = "hello"
    return Greeter()


@hookimpl
def pycontainerd_plugins() -> list[Registration]:
    return [Registration(type=PluginType.GRPC, id="example-greeter", init=_init)]
