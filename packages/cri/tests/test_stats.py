"""Parsing of cgroup v1 and v2 usage files.

The machine's own hierarchy is read by the container tests; this one checks
the v2 parser on a directory laid out like the unified hierarchy, which CI
machines with cgroup v1 do not have.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pycontainerd.cri.stats import is_v2, read_usage

if TYPE_CHECKING:
    from pathlib import Path


def test_v2_usage(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    d = tmp_path / "k8s.io" / "abc"
    d.mkdir(parents=True)
    (d / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    (d / "memory.current").write_text("10000\n")
    (d / "memory.stat").write_text("anon 4000\nfile 6000\ninactive_file 2500\n")
    assert is_v2(tmp_path)
    usage = read_usage("/k8s.io/abc", tmp_path)
    assert (usage.cpu_ns, usage.memory_bytes, usage.working_set_bytes) == (1_500_000, 10000, 7500)


def test_v1_usage_and_missing_cgroup(tmp_path: Path) -> None:
    (tmp_path / "cpuacct" / "k8s.io" / "abc").mkdir(parents=True)
    (tmp_path / "cpuacct" / "k8s.io" / "abc" / "cpuacct.usage").write_text("123456\n")
    mem = tmp_path / "memory" / "k8s.io" / "abc"
    mem.mkdir(parents=True)
    (mem / "memory.usage_in_bytes").write_text("8192\n")
    (mem / "memory.stat").write_text("cache 100\ntotal_inactive_file 4096\n")
    assert not is_v2(tmp_path)
    usage = read_usage("/k8s.io/abc", tmp_path)
    assert (usage.cpu_ns, usage.memory_bytes, usage.working_set_bytes) == (123456, 8192, 4096)
    gone = read_usage("/k8s.io/nothere", tmp_path)
    assert (gone.cpu_ns, gone.memory_bytes, gone.working_set_bytes) == (None, None, None)
