"""The pull/push progress table: upstream's layout, and redraws in place on a terminal."""

from __future__ import annotations

import io

from pycontainerd.ctr.progress import CLEAR_LINE, Progress, bar, render
from pycontainerd.remotes.progress import Tracker

REF = "127.0.0.1:5000/test/a:v1"
MANIFEST = "manifest-sha256:" + "f" * 64
LAYER = "layer-sha256:" + "5" * 64
CONFIG = "config-sha256:" + "2" * 64


def test_bar() -> None:
    assert bar(0.0, color=False) == "|" + "-" * 38 + "|"
    assert bar(1.0, color=False) == "|" + "+" * 38 + "|"
    assert bar(0.5, color=False) == "|" + "+" * 19 + "-" * 19 + "|"
    assert bar(2.0, color=True) == "|\x1b[32m" + "+" * 38 + "\x1b[0m|"


def test_render_matches_upstream_layout() -> None:
    tracker = Tracker()
    tracker.set(REF, "resolved")
    tracker.set(MANIFEST, "done", total=840)
    tracker.set(LAYER, "downloading", offset=1536, total=4096)
    tracker.set(CONFIG, "waiting", total=266)
    out = render(tracker, color=True, now=tracker.started + 0.25)
    full = "|\x1b[32m" + "+" * 38 + "\x1b[0m|"
    empty = "|\x1b[32m\x1b[0m" + "-" * 38 + "|"
    half = "|\x1b[32m" + "+" * 14 + "\x1b[0m" + "-" * 24 + "|"
    # column widths as Go's tabwriter gives them (minwidth 1, padding 1)
    w0 = len(MANIFEST) + 2
    w1 = len("total:  2.3 Ki") + 1
    w2 = len(full) + 1
    assert out.splitlines() == [
        f"{REF + ':':<{w0}}{'resolved':<{w1}}{full:<{w2}}",
        f"{MANIFEST + ':':<{w0}}{'done':<{w1}}{full:<{w2}}",
        f"{LAYER + ':':<{w0}}{'downloading':<{w1}}{half:<{w2}} 1.5 KiB/4.0 KiB ",
        f"{CONFIG + ':':<{w0}}{'waiting':<{w1}}{empty:<{w2}}",
        f"{'elapsed: 0.2 s':<{w0}}{'total:  2.3 Ki':<{w1}}{'(9.3 KiB/s)':<{w2}}",
    ]


def test_live_progress_redraws_in_place() -> None:
    tracker = Tracker()
    tracker.set(REF, "resolving")
    out = io.StringIO()
    progress = Progress(tracker, out, live=True)
    progress.draw()
    first = out.getvalue()
    assert first.count("\n") == 2
    assert CLEAR_LINE not in first
    tracker.set(MANIFEST, "done", total=10)
    progress.draw()
    second = out.getvalue()[len(first) :]
    assert second.startswith(CLEAR_LINE * 2)
    assert MANIFEST in second


def test_plain_progress_prints_once_without_escapes() -> None:
    tracker = Tracker()
    tracker.set(REF, "resolved")
    out = io.StringIO()
    progress = Progress(tracker, out)  # StringIO is not a terminal
    assert not progress.live
    progress.finish()
    assert "\x1b" not in out.getvalue()
    assert out.getvalue().startswith(f"{REF}:")
    silent = io.StringIO()
    Progress(tracker, silent, enabled=False).finish()
    assert silent.getvalue() == ""
