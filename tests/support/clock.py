"""A settable clock for code that takes ``clock: Callable[[], float]`` (store TTLs, DNS cache,
greylist and rate-limit windows): tests move time instead of sleeping."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeClock:
    """Returns ``now``; ``advance`` moves it forward."""

    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
