"""One background thread that runs callbacks at monotonic times (flushes, workload, events)."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Ticker:
    def __init__(self, name: str = "devcluster-ticker") -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        """Run `fn` on the ticker thread at `time.monotonic() >= when`."""
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), fn))
            self._cond.notify()

    def every(self, interval: float, fn: Callable[[], None], first: float) -> None:
        """Run `fn` at `first` and then every `interval` seconds, without drift."""

        def tick(due: float = first) -> None:
            nxt = due + interval
            self.call_at(nxt, lambda: tick(nxt))
            fn()

        self.call_at(first, tick)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, fn = heapq.heappop(self._heap)
            # Outside the condition: callbacks take the cluster lock, and API calls holding
            # that lock may schedule work here.
            try:
                fn()
            except Exception:
                log.exception("devcluster timer callback failed")
