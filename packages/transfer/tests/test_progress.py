"""Progress events from a transfer's tracker: what is sent, and when."""

from __future__ import annotations

import pytest

from pycontainerd.transfer.progress import Event, EventTracker

LAYER = "layer-sha256:" + "a" * 64
CONFIG = "config-sha256:" + "b" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("pycontainerd.transfer.progress.time.monotonic", fake)
    return fake


def kinds(events: list[Event], name: str) -> list[tuple[str, int]]:
    return [(e.event, e.progress) for e in events if e.name == name]


def test_a_blob_done_within_the_interval_sends_no_downloading_event(clock: Clock) -> None:
    # as upstream, whose 300 ms ticker never sees a blob that comes and goes between ticks
    events: list[Event] = []
    tracker = EventTracker("img", events.append, interval=0.3)
    tracker.set(CONFIG, "downloading", offset=0, total=10)
    clock.now += 0.01
    tracker.set(CONFIG, "downloading", offset=10)
    tracker.set(CONFIG, "done", total=10)
    assert kinds(events, CONFIG) == [("waiting", 0), ("complete", 10)]


def test_a_long_download_is_reported_each_interval(clock: Clock) -> None:
    events: list[Event] = []
    tracker = EventTracker("img", events.append, interval=0.3)
    tracker.set(LAYER, "waiting", total=4 << 20)
    clock.now += 5  # waited for a download slot: that time does not count
    tracker.set(LAYER, "downloading", offset=0, total=4 << 20)
    for mib in range(1, 5):
        clock.now += 0.2
        tracker.set(LAYER, "downloading", offset=mib << 20)
    tracker.set(LAYER, "done", total=4 << 20)
    assert kinds(events, LAYER) == [
        ("waiting", 0),
        ("downloading", 2 << 20),  # 0.4 s in
        ("downloading", 4 << 20),  # 0.8 s in
        ("complete", 4 << 20),
    ]
    assert all(e.parents == ("img",) for e in events)
