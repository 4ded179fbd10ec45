"""A few minutes of Raft progress per replica, kept in memory, for rates and lag trends.

Commit and applied indexes are lifetime counters: what an operator needs is how fast they
move (entries/s) and whether a follower's lag grows. Each health fetch adds one sample per
(node, group) it saw answered; groups and nodes are node-controlled, so the number of
series is capped (least recently sampled dropped first) and each series is a short ring.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass

SAMPLES_PER_SERIES = 36  # 3 min at the 5 s page refresh
MAX_SERIES = 4096
MIN_SAMPLE_GAP_MS = 1000  # page loads closer than this add no sample
RATE_WINDOW_MS = 60_000


@dataclass(frozen=True, slots=True)
class Sample:
    at_ms: int
    commit: int
    applied: int
    lag: int | None


@dataclass(frozen=True, slots=True)
class Progress:
    commit_rate: float | None  # entries/s over the last minute; None: too few samples
    applied_rate: float | None
    lags: tuple[int, ...]  # the lag samples, oldest first (the trend)


def _rate(samples: list[Sample], field: str) -> float | None:
    if len(samples) < 2:
        return None
    first, last = samples[0], samples[-1]
    span = last.at_ms - first.at_ms
    delta: int = getattr(last, field) - getattr(first, field)
    if span <= 0 or delta < 0:  # a restarted node counts from zero again
        return None
    return delta * 1000.0 / span


class RaftHistory:
    def __init__(self, max_series: int = MAX_SERIES) -> None:
        self.max_series = max_series
        self._lock = threading.Lock()
        self._series: OrderedDict[tuple[str, int], deque[Sample]] = OrderedDict()

    def record(self, at_ms: int, samples: Iterable[tuple[str, int, int, int, int | None]]) -> None:
        """(node, group, commit, applied, lag) seen at ``at_ms``."""
        with self._lock:
            for node, group, commit, applied, lag in samples:
                key = (node, group)
                ring = self._series.pop(key, None)
                if ring is None:
                    ring = deque(maxlen=SAMPLES_PER_SERIES)
                if not ring or at_ms - ring[-1].at_ms >= MIN_SAMPLE_GAP_MS:
                    ring.append(Sample(at_ms, commit, applied, lag))
                self._series[key] = ring
                while len(self._series) > self.max_series:
                    self._series.popitem(last=False)

    def progress(self, node: str, group: int, now_ms: int) -> Progress:
        with self._lock:
            ring = self._series.get((node, group))
            samples = list(ring) if ring else []
        recent = [s for s in samples if now_ms - s.at_ms <= RATE_WINDOW_MS]
        return Progress(
            _rate(recent, "commit"),
            _rate(recent, "applied"),
            tuple(s.lag for s in samples if s.lag is not None),
        )

    def __len__(self) -> int:
        with self._lock:
            return len(self._series)
