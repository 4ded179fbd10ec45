"""How node columns reach the collector: StreamEvents pushes, or polls timed to each flush.

DESIGN.md "KeyViz: the portal is the cluster's memory". Where a node serves
StreamEvents, one `EventFeed` holds its stream open and hands every pushed
KeyVizColumn to the collector; every other node is polled once a step with
GetKeyVizMatrix, just after its own flush is due (`PollSchedule`), asking only
for the columns after the last one taken. Node load is one call per node per
step (or one open stream), whatever the number of viewers or portal processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Literal, Protocol

from cluster.client import UNIMPLEMENTED_TTL_S, NodeError
from cluster.runtime import node_client
from proto import admin_pb2

log = logging.getLogger(__name__)

STREAM_BACKOFF_S = (0.5, 30.0)


def normalize_series(series: int) -> int:
    # UNSPECIFIED means WRITES on the wire.
    return series or admin_pb2.KEYVIZ_SERIES_WRITES


class PollSchedule:
    """When to ask each polled node for its new columns.

    A node flushes every step on its own timer, so its next column is due one
    step after its last one; it is asked `margin_ms` after that. A node whose
    column was not there yet is asked again after step/8, then step/4, step/2,
    and then once a step; a failing node is asked once a step. The default margin,
    a fifth of the step (at most 500 ms), lets most late flushes (jitter) land first.
    """

    def __init__(self, step_ms: int, *, margin_ms: int | None = None) -> None:
        self.step_ms = step_ms
        self.margin_ms = margin_ms if margin_ms is not None else min(500, max(30, step_ms // 5))
        self._next: dict[str, int] = {}
        self._misses: Counter[str] = Counter()

    def observed(self, node: str, last_column_ms: int, now_ms: int) -> None:
        """A poll returned columns up to `last_column_ms`."""
        self._misses.pop(node, None)
        due = last_column_ms + self.step_ms + self.margin_ms
        # A node whose clock runs behind ours would be "due" in the past forever.
        self._next[node] = due if due > now_ms else now_ms + self.step_ms // 2

    def missed(self, node: str, now_ms: int) -> None:
        """A poll found no new column."""
        self._misses[node] += 1
        wait = self.step_ms // (2 ** max(0, 4 - self._misses[node]))
        self._next[node] = now_ms + max(self.margin_ms, wait)

    def failed(self, node: str, now_ms: int) -> None:
        self._misses.pop(node, None)
        self._next[node] = now_ms + self.step_ms

    def now(self, node: str, now_ms: int) -> None:
        """Ask this node at once (it just joined, or its stream ended)."""
        self._next[node] = now_ms

    def drop(self, node: str) -> None:
        self._next.pop(node, None)
        self._misses.pop(node, None)

    def due(self, now_ms: int, nodes: Iterable[str]) -> list[str]:
        return [n for n in nodes if self._next.get(n, now_ms) <= now_ms]

    def next_due_ms(self, nodes: Iterable[str]) -> int | None:
        return min((self._next[n] for n in nodes if n in self._next), default=None)


FeedState = Literal["connecting", "streaming", "unsupported", "down"]


class FeedListener(Protocol):
    def on_feed_event(self, address: str, event: admin_pb2.StreamEventsEvent) -> None: ...

    def on_feed_state(self, address: str, state: FeedState, error: str | None) -> None: ...


class EventFeed:
    """One StreamEvents stream to one node, held by the collector (all four series).

    Reconnects with backoff when the stream ends; a node that answers
    UNIMPLEMENTED (every node today, CONTRACT.md) is tried again after a minute.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.state: FeedState = "connecting"
        self.error: str | None = None
        self.settled = asyncio.Event()
        self._listeners: set[FeedListener] = set()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def add(self, listener: FeedListener) -> None:
        self._listeners.add(listener)

    def remove(self, listener: FeedListener) -> int:
        self._listeners.discard(listener)
        return len(self._listeners)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def _set(self, state: FeedState, error: str | None = None) -> None:
        self.state, self.error = state, error
        if state != "connecting":
            self.settled.set()
        for listener in list(self._listeners):
            listener.on_feed_state(self.address, state, error)

    async def _run(self) -> None:
        backoff = STREAM_BACKOFF_S[0]
        while True:
            try:
                async for event in self._events():
                    backoff = STREAM_BACKOFF_S[0]
                    for listener in list(self._listeners):
                        listener.on_feed_event(self.address, event)
                raise NodeError("UNAVAILABLE", "StreamEvents ended")
            except NodeError as exc:
                if exc.code == "UNIMPLEMENTED":
                    self._set("unsupported", exc.message)
                    await asyncio.sleep(UNIMPLEMENTED_TTL_S)
                else:
                    self._set("down", exc.message)
                    await asyncio.sleep(backoff)
                    backoff = min(2 * backoff, STREAM_BACKOFF_S[1])
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one node's stream take the collector down
                log.exception("StreamEvents feed of %s failed", self.address)
                self._set("down", "internal error reading StreamEvents")
                await asyncio.sleep(STREAM_BACKOFF_S[1])

    async def _events(self) -> AsyncIterator[admin_pb2.StreamEventsEvent]:
        """Open the stream through the one node client and yield its events."""
        async for event in node_client().stream(
            self.address,
            "StreamEvents",
            admin_pb2.StreamEventsRequest(),
            on_open=lambda: self._set("streaming"),
        ):
            yield event


__all__ = ["EventFeed", "FeedListener", "FeedState", "PollSchedule", "normalize_series"]
