"""CNI: load network configs and run the plugins, per the CNI specification.

A network config list is read from ``conf_dir`` (``*.conflist``, ``*.conf``
and ``*.json`` in lexical order; a single-plugin ``.conf`` is a list of one),
and each plugin runs as an executable found in ``bin_dir``, with the
``CNI_*`` environment variables and the plugin's config on stdin. ADD runs the
plugins in order, each one receiving the previous result as ``prevResult``;
DEL runs them in reverse with the ADD's final result. A plugin reports
failure with a non-zero exit and an error object (``code``, ``msg``,
``details``) on stdout.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_SUFFIXES = (".conflist", ".conf", ".json")
DEFAULT_IFNAME = "eth0"


class CniError(Exception):
    """A config could not be loaded or a plugin failed."""


class CniNotReadyError(CniError):
    """No usable network config in ``conf_dir``."""


@dataclass(frozen=True, slots=True)
class NetworkList:
    """A loaded network configuration list."""

    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    source: Path


LOOPBACK = NetworkList(
    name="cni-loopback",
    cni_version="0.3.1",
    plugins=({"type": "loopback"},),
    source=Path("cni-loopback"),
)


@dataclass(frozen=True, slots=True)
class Attachment:
    """What a pod needs to attach: ids and the runtime-provided config."""

    container_id: str
    netns: str
    ifname: str = DEFAULT_IFNAME
    args: tuple[tuple[str, str], ...] = ()
    port_mappings: tuple[dict[str, Any], ...] = ()

    def cni_args(self) -> str:
        return ";".join(["IgnoreUnknown=1", *(f"{k}={v}" for k, v in self.args)])


@dataclass(slots=True)
class AddResult:
    """The final result of an ADD and the pod's addresses from it."""

    network: str
    result: dict[str, Any]
    ips: list[str] = field(default_factory=list)


def load_networks(conf_dir: str, max_conf_num: int = 1) -> list[NetworkList]:
    """The usable network lists of ``conf_dir``, at most ``max_conf_num`` (0 = all).

    Invalid files are skipped, as containerd's CNI library does.
    """
    directory = Path(conf_dir)
    if not directory.is_dir():
        return []
    found: list[NetworkList] = []
    for path in sorted(p for p in directory.iterdir() if p.suffix in CONFIG_SUFFIXES):
        try:
            found.append(parse_network(path))
        except (OSError, ValueError, CniError):
            continue
        if max_conf_num and len(found) >= max_conf_num:
            break
    return found


def parse_network(path: Path) -> NetworkList:
    """Parse one config file (a list, or a single plugin config).

    Raises:
        CniError: it is not a usable network config.
    """
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        msg = f"{path.name}: not a JSON object"
        raise CniError(msg)
    if path.suffix == ".conflist" or "plugins" in data:
        plugins = data.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            msg = f"{path.name}: no plugins"
            raise CniError(msg)
    else:
        plugins = [data]
    if not all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in plugins):
        msg = f"{path.name}: every plugin needs a type"
        raise CniError(msg)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        msg = f"{path.name}: no network name"
        raise CniError(msg)
    return NetworkList(
        name=name,
        cni_version=str(data.get("cniVersion", "0.4.0")),
        plugins=tuple(plugins),
        source=path,
    )


class Cni:
    """Runs the plugins of the configured networks for pod sandboxes."""

    def __init__(self, conf_dir: str, bin_dir: str, max_conf_num: int = 1) -> None:
        self.conf_dir = conf_dir
        self.bin_dirs = [d for d in bin_dir.split(os.pathsep) if d]
        self.max_conf_num = max_conf_num

    def networks(self) -> list[NetworkList]:
        return load_networks(self.conf_dir, self.max_conf_num)

    def ready(self) -> bool:
        return bool(self.networks())

    def _networks_or_fail(self) -> list[NetworkList]:
        nets = self.networks()
        if not nets:
            msg = f"cni config load failed: no network config found in {self.conf_dir}"
            raise CniNotReadyError(msg)
        return nets

    def _loopback(self) -> NetworkList | None:
        """The built-in network that brings ``lo`` up, when the ``loopback`` plugin exists."""
        try:
            self._binary("loopback")
        except CniError:
            return None
        return LOOPBACK

    async def add(self, att: Attachment) -> list[AddResult]:
        """ADD the pod to every network; on failure, DEL what was added and raise.

        The pod's ``lo`` is brought up first by the ``loopback`` plugin (as
        containerd's CNI library does), when ``bin_dir`` has it.
        """
        results: list[AddResult] = []
        nets = self._networks_or_fail()
        loopback = self._loopback()
        if loopback is not None:
            await self._add_one(loopback, att, "lo")
        for index, net in enumerate(nets):
            ifname = att.ifname if index == 0 else f"net{index}"
            try:
                result = await self._add_one(net, att, ifname)
            except BaseException:
                for done in reversed(results):
                    await self._del_quietly(done.network, att, done.result)
                await self._del_quietly(net.name, att, None)
                if loopback is not None:
                    await self._del_net_quietly(loopback, att, "lo")
                raise
            results.append(AddResult(net.name, result, _ips(result)))
        return results

    async def delete(self, att: Attachment, previous: dict[str, dict[str, Any]]) -> None:
        """DEL the pod from every network (in reverse); raise the first failure."""
        errors: list[str] = []
        for index, net in reversed(list(enumerate(self._networks_or_fail()))):
            ifname = att.ifname if index == 0 else f"net{index}"
            prev: dict[str, Any] | None = previous.get(net.name)
            for plugin in reversed(net.plugins):
                try:
                    await self._exec(net, plugin, "DEL", att=att, ifname=ifname, prev=prev)
                except CniError as exc:
                    errors.append(str(exc))
        loopback = self._loopback()
        if loopback is not None:
            await self._del_net_quietly(loopback, att, "lo")
        if errors:
            raise CniError("; ".join(errors))

    async def check(self, att: Attachment, previous: dict[str, dict[str, Any]]) -> None:
        """CHECK the pod in every network, in order, with each network's ADD result.

        Networks whose ``cniVersion`` is older than 0.4.0 (which has no
        CHECK) are skipped, as the CNI library does.

        Raises:
            CniError: a plugin reports a problem (or no config is left).
        """
        for index, net in enumerate(self._networks_or_fail()):
            if _version(net.cni_version) < (0, 4, 0):
                continue
            ifname = att.ifname if index == 0 else f"net{index}"
            prev: dict[str, Any] | None = previous.get(net.name)
            for plugin in net.plugins:
                await self._exec(net, plugin, "CHECK", att=att, ifname=ifname, prev=prev)

    async def _del_net_quietly(self, net: NetworkList, att: Attachment, ifname: str) -> None:
        for plugin in reversed(net.plugins):
            try:
                await self._exec(net, plugin, "DEL", att=att, ifname=ifname, prev=None)
            except CniError:
                continue

    async def _del_quietly(self, name: str, att: Attachment, prev: dict[str, Any] | None) -> None:
        for net in self.networks():
            if net.name == name:
                for plugin in reversed(net.plugins):
                    try:
                        await self._exec(net, plugin, "DEL", att=att, ifname=att.ifname, prev=prev)
                    except CniError:
                        continue

    async def _add_one(self, net: NetworkList, att: Attachment, ifname: str) -> dict[str, Any]:
        prev: dict[str, Any] | None = None
        for plugin in net.plugins:
            prev = await self._exec(net, plugin, "ADD", att=att, ifname=ifname, prev=prev)
        return prev or {}

    def _binary(self, plugin_type: str) -> str:
        for d in self.bin_dirs:
            candidate = Path(d) / plugin_type
            if os.access(candidate, os.X_OK):
                return str(candidate)
        msg = f"failed to find plugin {plugin_type!r} in path {self.bin_dirs}"
        raise CniError(msg)

    async def _exec(
        self,
        net: NetworkList,
        plugin: dict[str, Any],
        command: str,
        *,
        att: Attachment,
        ifname: str,
        prev: dict[str, Any] | None,
    ) -> dict[str, Any]:
        conf = dict(plugin)
        conf["name"] = net.name
        conf["cniVersion"] = net.cni_version
        if prev is not None:
            conf["prevResult"] = prev
        caps = plugin.get("capabilities")
        if isinstance(caps, dict) and caps.get("portMappings") and att.port_mappings:
            conf["runtimeConfig"] = {"portMappings": list(att.port_mappings)}
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": att.container_id,
            "CNI_NETNS": att.netns,
            "CNI_IFNAME": ifname,
            "CNI_ARGS": att.cni_args(),
            "CNI_PATH": os.pathsep.join(self.bin_dirs),
        }
        binary = self._binary(str(plugin["type"]))
        proc = await asyncio.create_subprocess_exec(
            binary,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await proc.communicate(json.dumps(conf).encode())
        if proc.returncode != 0:
            raise CniError(_plugin_error(str(plugin["type"]), command, out, err))
        if command != "ADD":
            return prev or {}
        try:
            result = json.loads(out or b"{}")
        except ValueError as exc:
            msg = f"plugin type={plugin['type']!r} {command}: invalid result: {exc}"
            raise CniError(msg) from exc
        if not isinstance(result, dict):
            msg = f"plugin type={plugin['type']!r} {command}: result is not an object"
            raise CniError(msg)
        return result


def _version(text: str) -> tuple[int, ...]:
    """``"1.0.0"`` -> ``(1, 0, 0)``; unparsable parts count as 0."""
    return tuple(int(p) if p.isdigit() else 0 for p in (text or "0.0.0").split("."))


def _plugin_error(plugin_type: str, command: str, out: bytes, err: bytes) -> str:
    text = out.decode(errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and "msg" in data:
        detail = str(data["msg"])
        if data.get("details"):
            detail += f"; {data['details']}"
    else:
        detail = text or err.decode(errors="replace").strip() or "failed without output"
    return f"plugin type={plugin_type!r} failed ({command}): {detail}"


def _ips(result: dict[str, Any]) -> list[str]:
    """The addresses of a result (IPv4 first), without prefix lengths."""
    found: list[str] = []
    for entry in result.get("ips", []) or []:
        if isinstance(entry, dict) and isinstance(entry.get("address"), str):
            try:
                found.append(str(ipaddress.ip_interface(entry["address"]).ip))
            except ValueError:
                continue
    found.sort(key=lambda ip: ipaddress.ip_address(ip).version)
    return found
