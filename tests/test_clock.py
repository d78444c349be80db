"""Wall-clock jumps are told apart from NTP's slewing and from the passing of time."""

from __future__ import annotations

from daemon.clock import ClockWatch


class Clocks:
    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 1000.0

    def tick(self, seconds: float, *, wall_extra: float = 0.0) -> None:
        self.mono += seconds
        self.wall += seconds + wall_extra


def test_jumps_back_and_forward_are_seen_and_slewing_is_not():
    clocks = Clocks()
    set_back: list[float] = []
    watch = ClockWatch(set_back.append, wall=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    clocks.tick(5)
    assert watch.check() == 0.0
    clocks.tick(5, wall_extra=-0.5)  # NTP slewing a drifting clock
    assert watch.check() == 0.0
    clocks.tick(5, wall_extra=-3600)  # set back an hour
    assert watch.check() == -3600
    assert set_back == [3600]
    clocks.tick(5, wall_extra=600)  # resumed after ten minutes asleep: nothing to move
    assert watch.check() == 600
    assert set_back == [3600]
