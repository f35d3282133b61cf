"""Fixtures of the CRI tests: a daemon with the CRI plugin, a pause image, a CNI bridge."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from pycontainerd.api.cri.v1 import api_pb2 as pb
from pycontainerd.api.cri.v1 import api_pb2_grpc as pb_grpc
from pycontainerd.cri import testing
from pycontainerd.cri.netns import remove as remove_netns
from pycontainerd.cri.testing import Cri

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


def _make(
    setup: Callable[[Path, Path], contextlib.AbstractContextManager[str]] | None,
    bin_dir: Callable[[Path], str] | None = None,
    *,
    registry: bool = False,
    extra: Callable[[Path, contextlib.ExitStack], tuple[str, object]] | None = None,
    settings: str = "",
) -> Iterator[Cri]:
    dt = pytest.importorskip("pycontainerd.daemon.testing")
    dt.require_binary("/usr/bin/runc")
    dt.require_binary(dt.CTR)
    dt.require_binary(f"{testing.CNI_BIN_DIR}/bridge")
    busybox = testing.static_busybox()
    if busybox is None:
        if os.environ.get("CI") == "true":
            pytest.fail("a static busybox (busybox-static) is required under CI")
        pytest.skip("no static busybox")
    with dt.short_tempdir("cri-") as base, contextlib.ExitStack() as stack:
        conf_dir = base / "net.d"
        conf_dir.mkdir()
        subnet = stack.enter_context(setup(conf_dir, base / "ipam")) if setup else ""
        sandbox_image, reg, seeded = testing.PAUSE_REF, None, ("", "", "")
        if registry:
            # the sandbox image is in a registry only: RunPodSandbox pulls it
            rt = pytest.importorskip("pycontainerd.remotes.testing")
            rt.require_registry()
            reg = stack.enter_context(rt.Registry(base / "registry").running())
            seeded = testing.seed_pause(reg, busybox, "pause", "3.9")
            sandbox_image = seeded[0]
        config = testing.cri_config(
            conf_dir,
            bin_dir=bin_dir(base) if bin_dir else testing.CNI_BIN_DIR,
            sandbox_image=sandbox_image,
            mirrors={testing.MIRRORED: reg.url} if reg else None,
            settings=settings,
        )
        extra_value: object = None
        if extra is not None:
            more, extra_value = extra(base, stack)
            config += more
        d = dt.Daemon(
            base, config=config, env=dt.daemon_env(testing.MODULES, extra=testing.daemon_path_env())
        )
        d.start()
        try:
            digest = seeded[1]
            if reg is None:
                archive = base / "pause.tar"
                digest = testing.build_pause_archive(busybox, archive)
                d.ctr("-n", "k8s.io", "images", "import", str(archive))
            channel = grpc.insecure_channel(f"unix://{d.address}")
            cri = Cri(
                daemon=d,
                channel=channel,
                runtime=pb_grpc.RuntimeServiceStub(channel),
                images=pb_grpc.ImageServiceStub(channel),
                base=base,
                conf_dir=conf_dir,
                tag=uuid.uuid4().hex[:8],
                subnet=subnet,
                pause_digest=digest,
                registry=reg,
                extra=extra_value,
            )
            try:
                yield cri
            finally:
                _cleanup(cri)
        finally:
            d.kill()
            _kill_shims(d.state)
            for f in testing.netns_files(d.state):
                remove_netns(f)


def _cleanup(cri: Cri) -> None:
    with contextlib.suppress(grpc.RpcError):
        listed = cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest())
        for item in listed.items:
            with contextlib.suppress(grpc.RpcError):
                cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=item.id))
    cri.channel.close()


def _kill_shims(state: Path) -> None:
    for f in state.glob("io.containerd.runtime.v2.task/*/*/shim.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(f.read_text())
            if "shim" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def cri() -> Iterator[Cri]:
    """A daemon whose CNI config is a bridge on a private subnet."""
    yield from _make(testing.cni_bridge)


@pytest.fixture
def cri_registry() -> Iterator[Cri]:
    """A daemon without CNI whose ``sandbox_image`` is only in a registry on 127.0.0.1."""
    yield from _make(None, registry=True)


@pytest.fixture
def cri_without_cni() -> Iterator[Cri]:
    """A daemon whose CNI conf_dir is empty."""
    yield from _make(None)


def _failing_bin_dir(base: Path) -> str:
    """Debian's plugins plus ``failnet``, a plugin that always fails ADD."""
    d = base / "cni-bin"
    d.mkdir()
    for plugin in Path(testing.CNI_BIN_DIR).iterdir():
        (d / plugin.name).symlink_to(plugin)
    fail = d / "failnet"
    fail.write_text(
        "#!/bin/sh\n"
        'if [ "$CNI_COMMAND" = ADD ]; then\n'
        '  echo \'{"cniVersion":"0.4.0","code":11,\'\n'
        '  echo \'"msg":"failnet refuses","details":"by design"}\'\n'
        "  exit 1\n"
        "fi\n"
        "exit 0\n"
    )
    fail.chmod(0o755)
    return str(d)


@pytest.fixture
def cri_failing_cni() -> Iterator[Cri]:
    """A daemon whose network list ends in a plugin that fails ADD (after the bridge)."""

    @contextlib.contextmanager
    def setup(conf_dir: Path, data_dir: Path) -> Iterator[str]:
        with testing.cni_bridge(conf_dir, data_dir) as subnet:
            conf = conf_dir / "10-pycri.conflist"
            data = json.loads(conf.read_text())
            data["plugins"].append({"type": "failnet"})
            conf.write_text(json.dumps(data))
            yield subnet

    yield from _make(setup, _failing_bin_dir)


@pytest.fixture
def cri_registry_configs() -> Iterator[Cri]:
    """A daemon whose ``registry.configs`` holds the credentials and CA of an HTTPS registry.

    The registry (htpasswd ``alice``/``s3cret``, a test CA) is ``cri.extra``.
    """

    def registry_configs(base: Path, stack: contextlib.ExitStack) -> tuple[str, object]:
        rt = pytest.importorskip("pycontainerd.remotes.testing")
        rt.require_registry()
        ca = rt.make_ca(base / "ca")
        reg = rt.Registry(
            base / "secure", htpasswd={"alice": "s3cret"}, tls=ca.issue(base, "server")
        )
        reg.tls_ca = ca.cert
        stack.enter_context(reg.running())
        table = f'[plugins."io.containerd.grpc.v1.cri".registry.configs."{reg.host}"'
        toml = (
            f'{table}.auth]\n  username = "alice"\n  password = "s3cret"\n'
            f'{table}.tls]\n  ca_file = "{ca.cert}"\n'
        )
        return toml, reg

    yield from _make(None, extra=registry_configs)


@pytest.fixture
def cri_stalling_registry() -> Iterator[Cri]:
    """A daemon with ``image_pull_progress_timeout = "1s"``; ``cri.extra`` is a
    :class:`testing.StallingRegistry` (its layer blob stops after a few bytes)."""

    def stalling(base: Path, stack: contextlib.ExitStack) -> tuple[str, object]:
        return "", stack.enter_context(testing.StallingRegistry().running())

    yield from _make(None, extra=stalling, settings='  image_pull_progress_timeout = "1s"\n')
