"""CNI config loading and plugin execution per the CNI spec, with stand-in plugins.

The stand-ins are shell scripts that record their environment and stdin, so
the tests see exactly what a plugin receives: ADD in list order with the
previous result, DEL in reverse, errors from the plugin's error object.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import pytest

from pycontainerd.cri.cni import Attachment, Cni, CniError, CniNotReadyError, load_networks

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

RECORDER = """#!/bin/sh
n=$(ls "{log}" | grep -c "json$")
cat > "{log}/$n-$CNI_COMMAND-{name}.json"
env | grep '^CNI_' | sort > "{log}/$n-$CNI_COMMAND-{name}.env"
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{result}'
fi
"""


def _plugin(bin_dir: Path, log: Path, name: str, result: Mapping[str, object]) -> None:
    path = bin_dir / name
    path.write_text(RECORDER.format(log=log, name=name, result=json.dumps(result)))
    path.chmod(0o755)


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    conf, bins, log = tmp_path / "net.d", tmp_path / "bin", tmp_path / "log"
    for d in (conf, bins, log):
        d.mkdir()
    return conf, bins, log


def test_configs_are_read_in_lexical_order_and_invalid_ones_skipped(tmp_path: Path) -> None:
    conf, _, _ = _setup(tmp_path)
    (conf / "05-broken.conflist").write_text("{not json")
    (conf / "10-single.conf").write_text(json.dumps({"name": "one", "type": "bridge"}))
    (conf / "20-list.conflist").write_text(
        json.dumps(
            {"name": "two", "cniVersion": "1.0.0", "plugins": [{"type": "a"}, {"type": "b"}]}
        )
    )
    (conf / "30-noplugins.conflist").write_text(json.dumps({"name": "x", "plugins": []}))
    (conf / "README").write_text("not a config")
    nets = load_networks(str(conf), 0)
    assert [(n.name, len(n.plugins)) for n in nets] == [("one", 1), ("two", 2)]
    assert [n.name for n in load_networks(str(conf), 1)] == ["one"]
    assert load_networks(str(tmp_path / "missing"), 1) == []


def test_add_chains_results_and_del_runs_in_reverse(tmp_path: Path) -> None:
    conf, bins, log = _setup(tmp_path)
    first = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.9.0.7/24"}]}
    second = {**first, "dns": {}}
    _plugin(bins, log, "first", first)
    _plugin(bins, log, "second", second)
    (conf / "10.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "0.4.0",
                "name": "net",
                "plugins": [
                    {"type": "first", "opt": 1},
                    {"type": "second", "capabilities": {"portMappings": True}},
                ],
            }
        )
    )
    cni = Cni(str(conf), str(bins))
    att = Attachment(
        container_id="abc",
        netns="/var/run/netns/x",
        args=(("K8S_POD_NAME", "p"),),
        port_mappings=({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},),
    )
    results = asyncio.run(cni.add(att))
    assert [(r.network, r.ips) for r in results] == [("net", ["10.9.0.7"])]
    asyncio.run(cni.delete(att, {"net": results[0].result}))
    calls = sorted(p.name for p in log.glob("*.json"))
    assert calls == [
        "0-ADD-first.json",
        "1-ADD-second.json",
        "2-DEL-second.json",
        "3-DEL-first.json",
    ]
    add1 = json.loads((log / "0-ADD-first.json").read_text())
    assert add1 == {"type": "first", "opt": 1, "name": "net", "cniVersion": "0.4.0"}
    add2 = json.loads((log / "1-ADD-second.json").read_text())
    assert add2["prevResult"] == first
    assert add2["runtimeConfig"] == {"portMappings": list(att.port_mappings)}
    del2 = json.loads((log / "2-DEL-second.json").read_text())
    assert del2["prevResult"] == second
    env = (log / "0-ADD-first.env").read_text().splitlines()
    assert env == [
        "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=p",
        "CNI_COMMAND=ADD",
        "CNI_CONTAINERID=abc",
        "CNI_IFNAME=eth0",
        "CNI_NETNS=/var/run/netns/x",
        f"CNI_PATH={bins}",
    ]


def test_a_failing_plugin_reports_its_error_and_the_added_ones_are_deleted(tmp_path: Path) -> None:
    conf, bins, log = _setup(tmp_path)
    _plugin(bins, log, "ok", {"cniVersion": "0.4.0"})
    bad = bins / "bad"
    bad.write_text('#!/bin/sh\necho \'{"code":7,"msg":"no luck","details":"at all"}\'\nexit 1\n')
    bad.chmod(0o755)
    (conf / "10.conflist").write_text(
        json.dumps({"name": "net", "plugins": [{"type": "ok"}, {"type": "bad"}]})
    )
    with pytest.raises(CniError, match=r"plugin type='bad' failed \(ADD\): no luck; at all"):
        asyncio.run(Cni(str(conf), str(bins)).add(Attachment("abc", "/x")))
    assert sorted(p.name for p in log.glob("*.json")) == ["0-ADD-ok.json", "1-DEL-ok.json"]


def test_missing_plugin_binary_and_missing_config(tmp_path: Path) -> None:
    conf, bins, _ = _setup(tmp_path)
    with pytest.raises(CniNotReadyError, match="no network config found"):
        asyncio.run(Cni(str(conf), str(bins)).add(Attachment("abc", "/x")))
    (conf / "10.conf").write_text(json.dumps({"name": "net", "type": "nothere"}))
    with pytest.raises(CniError, match="failed to find plugin 'nothere'"):
        asyncio.run(Cni(str(conf), str(bins)).add(Attachment("abc", "/x")))
