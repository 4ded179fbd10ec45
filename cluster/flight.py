"""One call in flight per key and event loop, shared by everyone who asks meanwhile.

grpc.aio objects belong to the loop that created them (daphne, the tests and
async_to_sync each run their own), so the shared task is per loop. Waiters are shielded:
a cancelled page load must not cancel the call others wait on. A finished task is not a
cache: the next ask after it starts a new call.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Hashable, asyncio.Task[T]]
        ] = weakref.WeakKeyDictionary()

    def task(self, key: Hashable, start: Callable[[], Coroutine[Any, Any, T]]) -> asyncio.Task[T]:
        """The task running for ``key`` on this loop, or a new one from ``start()``."""
        loop = asyncio.get_running_loop()
        with self._lock:
            tasks = self._tasks.setdefault(loop, {})
            task = tasks.get(key)
            if task is None or task.done():
                # Finished tasks go: keys may come from node-controlled membership.
                for done in [k for k, t in tasks.items() if t.done()]:
                    del tasks[done]
                task = tasks[key] = loop.create_task(start())
            return task

    async def run(self, key: Hashable, start: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Wait for the shared call (started if none runs)."""
        return await asyncio.shield(self.task(key, start))
