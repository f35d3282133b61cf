"""The daemon process: signals, directories, plugins, listeners, shutdown.

Order of events, as containerd does it:

1. signal handlers first (SIGTERM/SIGINT stop, SIGUSR1 dumps stacks, SIGPIPE
   ignored), so a hung plugin init can still be stopped;
2. ``starting containerd``, OOM score, root (0700) and state (0711);
3. plugins discovered, ordered and initialised one by one;
4. services registered on the servers only after every init, then listeners
   come up in containerd's order — debug, metrics, ttrpc, tcp, grpc — each
   logging ``serving...`` with its address;
5. ``READY=1`` to systemd (when ``NOTIFY_SOCKET`` is set), then
   ``containerd successfully booted in <s>s``;
6. on SIGTERM/SIGINT: ``STOPPING=1`` to systemd, stop accepting, give
   in-flight calls a grace period, close plugins in reverse init order,
   remove the sockets, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import inspect
import json
import logging
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import grpc
import grpc.aio

from pycontainerd.api import grpcutil, h2grpc
from pycontainerd.core.plugin import (
    GrpcService,
    InitContext,
    MetricsSource,
    PluginType,
    Registration,
    TtrpcService,
)
from pycontainerd.daemon import metrics as metrics_mod
from pycontainerd.daemon.httpserve import HttpServer
from pycontainerd.daemon.log import LogConfigError, fields
from pycontainerd.daemon.plugins import (
    DaemonError,
    PluginSet,
    collect,
    initialize,
    make_manager,
    ordered,
)
from pycontainerd.daemon.stacks import dump_stacks
from pycontainerd.daemon.version import revision, server_version, version

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from pycontainerd.config.model import Config
    from pycontainerd.daemon.settings import Settings

log = logging.getLogger("pycontainerd.daemon")

SHUTDOWN_GRACE: Final = 5.0
"""Seconds in-flight RPCs get to finish after SIGTERM/SIGINT."""

MAX_UNIX_PATH: Final = 107
"""Longest unix socket path Linux accepts (``sun_path`` is 108 bytes with the NUL)."""

STACK_DUMP_PATH: Final = "/debug/pprof/goroutine"
"""Debug endpoint with every thread's and task's stack (``?debug=2`` accepted, ignored)."""

PROPERTY_ROOT: Final = "io.containerd.plugin.root"
PROPERTY_STATE: Final = "io.containerd.plugin.state"
PROPERTY_GRPC_ADDRESS: Final = "io.containerd.plugin.grpc.address"
PROPERTY_TTRPC_ADDRESS: Final = "io.containerd.plugin.ttrpc.address"


def stacks_file_path(pid: int | None = None) -> Path:
    """``$TMPDIR/containerd.<pid>.stacks.log`` (``/tmp`` when TMPDIR is unset)."""
    tmp = os.environ.get("TMPDIR") or "/tmp"  # noqa: S108 - Go's os.TempDir rule
    return Path(tmp) / f"containerd.{pid if pid is not None else os.getpid()}.stacks.log"


def dump_stacks_to_log_and_file() -> Path:
    """What SIGUSR1 does: log every stack at info and write them to the stacks file."""
    text = dump_stacks()
    log.info("=== BEGIN goroutine stack dump ===\n%s\n=== END goroutine stack dump ===", text)
    path = stacks_file_path()
    try:
        path.write_text(text)
    except OSError as exc:
        log.error("failed to write goroutine stack dump", extra=fields(error=str(exc)))
    else:
        log.info("goroutine stack dump written to %s", path)
    return path


def prepare_unix_socket(path: str, uid: int, gid: int) -> None:
    """Check the length, create the parent dir (0770) if missing, remove a stale socket.

    Raises:
        DaemonError: the path is too long, something that is not a socket is in
            the way, or a live server is listening on it.
    """
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        msg = f"unix socket path {path!r} too long (> {MAX_UNIX_PATH} bytes)"
        raise DaemonError(msg)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o770)
        if uid or gid or os.geteuid() == 0:
            with contextlib.suppress(PermissionError):
                os.chown(parent, uid, gid)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        msg = f"{path} exists and is not a socket"
        raise DaemonError(msg)
    if _socket_in_use(path):
        msg = f"{path}: address already in use by a running server"
        raise DaemonError(msg)
    os.unlink(path)


def _socket_in_use(path: str) -> bool:
    """Whether something accepts connections on the unix socket ``path``.

    containerd removes whatever socket is there; taking over a live daemon's
    socket is never what anyone wants, so that is refused instead.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def secure_unix_socket(path: str, uid: int, gid: int) -> None:
    """Socket mode 0660, owned by ``uid:gid``."""
    os.chmod(path, 0o660)
    if uid or gid or os.geteuid() == 0:
        os.chown(path, uid, gid)


def _remove_socket(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)


def sd_notify(state: str) -> bool:
    """Tell systemd ``state`` (``READY=1``, ``STOPPING=1``) when it asked to be told.

    systemd's notify protocol: one datagram to the unix socket named by
    ``NOTIFY_SOCKET`` (a leading ``@`` is the abstract namespace). Nothing is
    sent without it; a socket that is gone is logged and ignored, as upstream.
    Returns whether the message was sent.
    """
    target = os.environ.get("NOTIFY_SOCKET", "")
    if not target:
        return False
    address = "\0" + target[1:] if target.startswith("@") else target
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("sd notification failed", extra=fields(state=state, error=str(exc)))
        return False
    return True


PROXY_TYPES: Final = {"snapshot": PluginType.SNAPSHOT}
"""``[proxy_plugins]`` types this daemon serves through a gRPC client."""


def proxy_registrations(config: Config) -> list[Registration]:
    """A registration per ``[proxy_plugins.<name>]`` of a supported type.

    A ``snapshot`` proxy becomes ``io.containerd.snapshotter.v1.<name>``, a
    snapshotter whose calls go to the Snapshots service at ``address`` with
    the snapshotter name ``<name>`` (as upstream); the metadata plugin then
    offers it like any other. Other types are logged and skipped.
    """
    regs: list[Registration] = []
    for name, proxy in sorted(config.proxy_plugins.items()):
        kind = PROXY_TYPES.get(proxy.type)
        if kind is None:
            log.warning(
                "unsupported proxy plugin type",
                extra=fields(name=name, type=proxy.type, address=proxy.address),
            )
            continue
        regs.append(
            Registration(
                type=kind,
                id=name,
                init=functools.partial(_init_snapshot_proxy, name, proxy.address),
            )
        )
    return regs


async def _init_snapshot_proxy(name: str, address: str, ic: InitContext) -> object:
    import grpc.aio

    from pycontainerd.api.snapshots_proxy import SnapshotsProxy
    from pycontainerd.core import namespaces

    target = address if "://" in address else f"unix://{address}"
    channel = grpc.aio.insecure_channel(target)

    def options() -> dict[str, Any]:
        ns = namespaces.namespace()  # the calling request's, as upstream's context carries it
        return {"metadata": ((namespaces.GRPC_HEADER, ns),)} if ns else {}

    return SnapshotsProxy(channel, name, options, owns_channel=True)


def _write_oom_score(score: int) -> None:
    if not score:
        return
    if not -1000 <= score <= 1000:
        msg = f"oom_score {score} out of range (-1000..1000)"
        raise DaemonError(msg)
    try:
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write(str(score))
    except PermissionError:
        log.warning("failed to set oom_score_adj: permission denied")


def _make_dir(path: str, mode: int) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, mode=mode)
        os.chmod(path, mode)


RPC_TYPE_ATTR: Final = h2grpc.RPC_TYPE_ATTR


def _code_name(context: grpc.aio.ServicerContext[Any, Any], failed: bool) -> str:
    code: object = None
    with contextlib.suppress(Exception):
        code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):
        for sc in grpc.StatusCode:
            if sc.value[0] == code:
                return str(sc.name)
    return "UNKNOWN" if failed else "OK"


class _Observed:
    """One RPC counted as started on entry and as handled, with its latency, on exit."""

    __slots__ = ("_context", "_method", "_recorder", "_rpc_type", "_start")

    def __init__(
        self,
        recorder: metrics_mod.GrpcMetrics,
        method: str,
        rpc_type: str,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        self._recorder = recorder
        self._method = method
        self._rpc_type = rpc_type
        self._context = context
        self._start = 0.0

    def __enter__(self) -> None:
        self._recorder.started(self._method, self._rpc_type)
        self._start = metrics_mod.now()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        code = _code_name(self._context, exc_type is not None)
        self._recorder.handled(self._method, self._rpc_type, code, metrics_mod.now() - self._start)


_HANDLER_FACTORIES: Final[tuple[tuple[str, Callable[..., Any]], ...]] = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every RPC and times it into :class:`metrics.GrpcMetrics`.

    The wrapped handler of a method is built once and reused while the server
    resolves the method to the same handler: building it costs more than the
    counting, on every call, and hot paths (``ctr content get`` makes one
    ``Content.Read`` per 32 KiB) make thousands of calls a second.
    """

    def __init__(self, recorder: metrics_mod.GrpcMetrics) -> None:
        self._recorder = recorder
        self._wrapped: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = str(handler_call_details.method)
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        rpc_type = h2grpc.rpc_type(handler)
        recorder = self._recorder

        def wrap(behavior: Any) -> Any:
            if inspect.isasyncgenfunction(behavior):

                async def gen(request: Any, context: Any) -> Any:
                    with _Observed(recorder, method, rpc_type, context):
                        async for item in behavior(request, context):
                            yield item

                if getattr(behavior, grpcutil.LAST_WITH_STATUS_ATTR, False):
                    grpcutil.last_message_with_status(gen)  # the wrapper keeps the marker
                return gen

            async def call(request: Any, context: Any) -> Any:
                with _Observed(recorder, method, rpc_type, context):
                    return await behavior(request, context)

            return call

        for attr, factory in _HANDLER_FACTORIES:
            behavior = getattr(handler, attr)
            if behavior is not None:
                wrapped: grpc.RpcMethodHandler[Any, Any] = factory(
                    wrap(behavior),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
                return wrapped
        return handler


def _split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        msg = f"invalid TCP address {address!r}: expected host:port"
        raise DaemonError(msg)
    return host.strip("[]"), int(port)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        msg = f"failed to load {what} {path}: {exc.strerror or exc}"
        raise DaemonError(msg) from exc


class Daemon:
    """One daemon run: owns the plugin set, the servers and the sockets."""

    def __init__(self, config: Config, *, started: float | None = None) -> None:
        self.config = config
        self.started = started if started is not None else time.monotonic()
        self.plugins: PluginSet | None = None
        self.grpc_server: grpc.aio.Server | None = None
        self.h2_server: h2grpc.Server | None = None
        self.ttrpc_server: Any = None
        self.http_servers: list[HttpServer] = []
        self.sockets: list[str] = []
        self.grpc_metrics = metrics_mod.GrpcMetrics()
        self.stop_event = asyncio.Event()

    # -- signals -------------------------------------------------------------

    def install_signals(self) -> None:
        """SIGTERM/SIGINT stop, SIGUSR1 dumps stacks, SIGPIPE is ignored."""
        loop = asyncio.get_running_loop()
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGUSR1, dump_stacks_to_log_and_file)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        log.debug("received signal", extra=fields(signal=sig.name))
        sd_notify("STOPPING=1")
        self.stop_event.set()

    # -- start-up ------------------------------------------------------------

    def _properties(self) -> dict[str, str]:
        cfg = self.config
        return {
            PROPERTY_ROOT: cfg.root,
            PROPERTY_STATE: cfg.state,
            PROPERTY_GRPC_ADDRESS: cfg.grpc.address,
            PROPERTY_TTRPC_ADDRESS: cfg.effective_ttrpc.address,
        }

    async def load_plugins(self) -> PluginSet:
        """Discover, order and initialise the plugins."""
        cfg = self.config
        pm = make_manager()
        try:
            regs = ordered([*collect(pm), *proxy_registrations(cfg)], set(cfg.disabled_plugins))
        except (ValueError, LookupError) as exc:
            raise DaemonError(str(exc)) from exc
        except Exception as exc:
            raise DaemonError(str(exc)) from exc
        return await initialize(
            regs,
            root=Path(cfg.root),
            state=Path(cfg.state),
            plugin_config=cfg.plugins,
            required=cfg.required_plugins,
            properties=self._properties(),
            disabled=set(cfg.disabled_plugins),
        )

    def _grpc_options(self) -> list[tuple[str, Any]]:
        cfg = self.config.grpc
        return [
            ("grpc.max_receive_message_length", cfg.max_recv_message_size),
            ("grpc.max_send_message_length", cfg.max_send_message_size),
            ("grpc.so_reuseport", 0),
        ]

    async def _start_debug(self) -> None:
        cfg = self.config.debug
        if not cfg.address:
            return
        server = HttpServer(
            {
                "/debug/vars": self._debug_vars,
                STACK_DUMP_PATH: self._debug_stacks,
                "/debug/pprof/": self._debug_index,
            }
        )
        if os.path.isabs(cfg.address):
            prepare_unix_socket(cfg.address, cfg.uid, cfg.gid)
            await server.start_unix(cfg.address)
            self.sockets.append(cfg.address)
            secure_unix_socket(cfg.address, cfg.uid, cfg.gid)
            address = cfg.address
        else:
            host, port = _split_host_port(cfg.address)
            bound = await server.start_tcp(host, port)
            address = f"{host}:{bound}"
        self.http_servers.append(server)
        log.info("serving...", extra=fields(address=address))

    async def _debug_vars(self, _query: str) -> tuple[int, str, bytes]:
        stats = metrics_mod.process_stats()
        body = {
            "cmdline": sys.argv,
            "memstats": {"Sys": stats.get("virtual_memory_bytes", 0)},
            "process": {
                "pid": os.getpid(),
                "python": sys.version,
                "version": version(),
                "revision": revision(),
                "uptime_seconds": time.monotonic() - self.started,
                "asyncio_tasks": len(asyncio.all_tasks()),
                **stats,
            },
        }
        return 200, "application/json; charset=utf-8", (json.dumps(body, indent=1) + "\n").encode()

    async def _debug_stacks(self, _query: str) -> tuple[int, str, bytes]:
        return 200, "text/plain; charset=utf-8", dump_stacks().encode()

    async def _debug_index(self, _query: str) -> tuple[int, str, bytes]:
        text = f"/debug/vars\n{STACK_DUMP_PATH}?debug=2\n"
        return 200, "text/plain; charset=utf-8", text.encode()

    async def _start_metrics(self, sources: list[MetricsSource]) -> None:
        cfg = self.config.metrics
        if not cfg.address:
            return
        recorder = self.grpc_metrics

        async def page(_query: str) -> tuple[int, str, bytes]:
            body = metrics_mod.render(recorder, sources)
            return 200, "text/plain; version=0.0.4; charset=utf-8", body

        server = HttpServer({"/v1/metrics": page})
        host, port = _split_host_port(cfg.address)
        bound = await server.start_tcp(host, port)
        self.http_servers.append(server)
        log.info("serving...", extra=fields(address=f"{host}:{bound}"))

    async def _start_ttrpc(self, services: list[TtrpcService]) -> None:
        from pycontainerd.api.ttrpc import Server as TtrpcServer

        cfg = self.config.effective_ttrpc
        server = TtrpcServer()
        for svc in services:
            svc.register_ttrpc(server)
        prepare_unix_socket(cfg.address, cfg.uid, cfg.gid)
        await server.listen_unix(cfg.address, mode=0o660)
        self.sockets.append(cfg.address)
        secure_unix_socket(cfg.address, cfg.uid, cfg.gid)
        self.ttrpc_server = server
        log.info("serving...", extra=fields(address=cfg.address))

    def _tcp_credentials(self) -> grpc.ServerCredentials | None:
        cfg = self.config.grpc
        if not (cfg.tcp_tls_cert or cfg.tcp_tls_key):
            return None
        if not (cfg.tcp_tls_cert and cfg.tcp_tls_key):
            msg = "tcp_tls_cert and tcp_tls_key must be set together"
            raise DaemonError(msg)
        pair = (_read(cfg.tcp_tls_key, "TLS key"), _read(cfg.tcp_tls_cert, "TLS certificate"))
        ca = _read(cfg.tcp_tls_ca, "TLS CA") if cfg.tcp_tls_ca else None
        return grpc.ssl_server_credentials(
            [pair], root_certificates=ca, require_client_auth=bool(ca)
        )

    async def start_servers(self, plugins: PluginSet) -> None:
        """Register services, then bring up every listener in containerd's order."""
        cfg = self.config
        grpc_services: list[GrpcService] = []
        ttrpc_services: list[TtrpcService] = []
        for reg, instance in plugins.instances:
            if isinstance(instance, GrpcService) and reg.type is not PluginType.TTRPC:
                grpc_services.append(instance)
            if isinstance(instance, TtrpcService):
                ttrpc_services.append(instance)
        metrics_sources = [i for _, i in plugins.instances if isinstance(i, MetricsSource)]

        if _socket_in_use(cfg.grpc.address):  # before any listener is touched
            msg = f"{cfg.grpc.address}: address already in use by a running server"
            raise DaemonError(msg)
        await self._start_debug()
        await self._start_metrics(metrics_sources)
        await self._start_ttrpc(ttrpc_services)

        tcp_address = await self._start_grpc(grpc_services)
        path = cfg.grpc.address
        secure_unix_socket(path, cfg.grpc.uid, cfg.grpc.gid)
        if tcp_address:
            log.info("serving...", extra=fields(address=tcp_address))
        log.info("serving...", extra=fields(address=path))

    async def _start_grpc(self, services: list[GrpcService]) -> str:
        """Serve the unix socket (our HTTP/2 server) and the TCP address (grpcio).

        Returns the TCP address actually bound ("" when none is configured).
        ``PYCONTAINERD_GRPC_SERVER=grpcio`` serves the unix socket with grpcio too.
        """
        cfg = self.config.grpc
        interceptor = MetricsInterceptor(self.grpc_metrics)
        own = h2grpc.enabled()
        tcp_address = ""
        if not own or cfg.tcp_address:
            server = grpc.aio.server(interceptors=[interceptor], options=self._grpc_options())
            for svc in services:
                svc.register(server)
            self.grpc_server = server
            if cfg.tcp_address:
                tcp_address = self._add_tcp_port(server, cfg.tcp_address)
        prepare_unix_socket(cfg.address, cfg.uid, cfg.gid)
        old_umask = os.umask(0o117)
        try:
            if own:
                h2 = h2grpc.Server(
                    observer=self.grpc_metrics,
                    max_receive_message_length=cfg.max_recv_message_size,
                    max_send_message_length=cfg.max_send_message_size,
                    limits=h2grpc.Limits(
                        max_concurrent_streams=cfg.max_concurrent_streams,
                        max_connections=cfg.max_connections,
                        handshake_timeout=cfg.handshake_timeout,
                        idle_timeout=cfg.idle_timeout,
                        max_header_list_size=cfg.max_header_list_size,
                    ),
                )
                for svc in services:
                    svc.register(cast("grpc.aio.Server", h2))
                self.h2_server = h2
                await h2.listen_unix(cfg.address)
            elif self.grpc_server is None or not self.grpc_server.add_insecure_port(
                f"unix:{cfg.address}"
            ):
                msg = f"failed to listen on {cfg.address}"
                raise DaemonError(msg)
            self.sockets.append(cfg.address)
            if self.grpc_server is not None:
                await self.grpc_server.start()
        finally:
            os.umask(old_umask)
        return tcp_address

    def _add_tcp_port(self, server: grpc.aio.Server, address: str) -> str:
        creds = self._tcp_credentials()
        if creds is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, creds)
        if port == 0:
            msg = f"failed to listen on {address}"
            raise DaemonError(msg)
        host, _ = _split_host_port(address)
        return f"{host}:{port}"

    # -- shutdown ------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop listeners (with grace for in-flight RPCs), close plugins, remove sockets."""
        if self.plugins is not None:
            from pycontainerd.daemon.services.health import HealthService

            for _reg, instance in self.plugins.instances:
                if isinstance(instance, HealthService):
                    await instance.set_serving(serving=False)
        stops = []
        if self.h2_server is not None:
            stops.append(self.h2_server.stop(SHUTDOWN_GRACE))
        if self.grpc_server is not None:
            stops.append(self.grpc_server.stop(SHUTDOWN_GRACE))
        if stops:
            await asyncio.gather(*stops)
        if self.ttrpc_server is not None:
            with contextlib.suppress(Exception):
                await self.ttrpc_server.shutdown(SHUTDOWN_GRACE)
        for http in self.http_servers:
            await http.close()
        if self.plugins is not None:
            await self.plugins.aclose()
        for path in self.sockets:
            _remove_socket(path)

    async def main(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit status."""
        self.install_signals()
        cfg = self.config
        log.info("starting containerd", extra=fields(revision=revision(), version=server_version()))
        try:
            raise_nofile_limit()
            _write_oom_score(cfg.oom_score)
            _make_dir(cfg.root, 0o700)
            _make_dir(cfg.state, 0o711)
            loading = asyncio.ensure_future(self.load_plugins())
            stopping = asyncio.ensure_future(self.stop_event.wait())
            await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not loading.done():
                loading.cancel()
                with contextlib.suppress(BaseException):
                    await loading
                return 0
            self.plugins = loading.result()
            await self.start_servers(self.plugins)
            # What start-up built lives as long as the daemon: out of the
            # collector's full passes, which would otherwise scan it all (some
            # 20 ms, stalling the loop) in the first burst of calls.
            gc.freeze()
            sd_notify("READY=1")
            log.info("containerd successfully booted in %fs", time.monotonic() - self.started)
            await stopping
            return 0
        finally:
            await self.shutdown()
            self._ignore_stop_signals()

    def _ignore_stop_signals(self) -> None:
        """After shutdown, a repeated SIGTERM/SIGINT must not kill the exiting process.

        The loop would restore the default actions when it closes; taking the
        handlers back first and ignoring the signals keeps the exit status 0.
        The signals are ignored first: the loop's ``remove_signal_handler``
        sets the default action, and a signal in that moment (a client's second
        SIGTERM as the daemon ends) would kill the process, from whatever
        thread takes it. The loop then only forgets its handlers (its table of
        them, private to asyncio's Unix loop; without one, the public call).
        """
        loop = asyncio.get_running_loop()
        handlers = getattr(loop, "_signal_handlers", None)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
            if isinstance(handlers, dict):
                handlers.pop(sig, None)
            else:
                loop.remove_signal_handler(sig)
                signal.signal(sig, signal.SIG_IGN)


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit, as Go's runtime does at start.

    Every client connection, content writer and shim socket is a descriptor;
    the usual soft limit (1024) would cap the daemon far below what its
    ``[grpc] max_connections`` allows. Returns the soft limit now in force.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:
            log.warning("cannot raise RLIMIT_NOFILE", extra=fields(error=str(exc)))
            return soft
        return hard
    return soft


def run(settings: Settings) -> int:
    """Set up logging and run the daemon; returns the process exit status."""
    from pycontainerd.daemon import log as daemon_log

    started = time.monotonic()
    try:
        daemon_log.setup(settings.log_level, settings.log_format)
    except LogConfigError as exc:
        print(f"containerd: {exc}", file=sys.stderr)
        return 1
    daemon = Daemon(settings.config, started=started)
    try:
        return asyncio.run(daemon.main())
    except DaemonError as exc:
        print(f"containerd: {exc}", file=sys.stderr)
        return 1
    except (OSError, grpc.RpcError) as exc:
        print(f"containerd: {exc}", file=sys.stderr)
        return 1
