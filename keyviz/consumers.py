"""The live stream WebSocket (`/api/stream`): validate, subscribe, forward.

One consumer per browser tab. It checks every client message, joins the
channel layer group of the series the client subscribed to, and forwards
what the cluster's one collector (collector.py) publishes there: final
columns and amendments. What a viewer gets first (step, node status, the
last final columns) comes from the database (live.py). It never talks to nodes.

Flow control: every viewer has a bounded outbox. At most `MAX_UNACKED`
columns are in flight until the client acknowledges them (`ack`); columns
that arrive meanwhile wait in the outbox, and when `MAX_QUEUED` are waiting
the viewer has fallen behind: they are dropped, the client gets one
`resync` message and nothing more until it subscribes again (the page
refetches from the matrix API first). So a slow or hidden tab costs the
server a bounded amount of memory, never an unbounded socket buffer.

The protocol is documented in README.md ("Live stream protocol").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from channels.generic.websocket import AsyncWebsocketConsumer

from accounts.roles import VIEW_DASHBOARDS
from accounts.ws import MAX_FRAME_BYTES, parse_frame
from elastickv_admin.lib import metrics
from elastickv_admin.lib.errors import ApiError, ParamError
from keyviz.live import remember_rows, row_metadata, subscribed
from keyviz.messages import PROTOCOL, group_name, render_column
from keyviz.params import MAX_UNIX_MS, SERIES

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = MAX_FRAME_BYTES  # one cap for every frame (accounts/ws.py parse_frame)
MAX_UNACKED = 8
MAX_QUEUED = 32
# Replies the client provokes but does not read (errors, pongs): past this, close.
MAX_CONTROL = 64
CLOSE_POLICY = 4403  # handshake refused: not allowed to watch the dashboards
CLOSE_OVERFLOW = 4429  # the client kept sending without reading the replies
CLOSE_INTERNAL = 4500  # the server failed to send (a bug); reconnect

Format = Literal["json", "bin"]


# ---------------------------------------------------------------- client messages


@dataclass(frozen=True)
class Subscribe:
    series: str
    format: Format = "json"


@dataclass(frozen=True)
class Unsubscribe:
    pass


@dataclass(frozen=True)
class Ack:
    column_unix_ms: int


@dataclass(frozen=True)
class Ping:
    pass


ClientMessage = Subscribe | Unsubscribe | Ack | Ping

_FIELDS: dict[str, tuple[str, ...]] = {
    "subscribe": ("type", "series", "format"),
    "unsubscribe": ("type",),
    "ack": ("type", "column_unix_ms"),
    "ping": ("type",),
}


def _shown(value: Any) -> str:
    """A client value in an error message: short, and never a deep repr."""
    if value is None or isinstance(value, bool | int | float):
        return repr(value)[:40]
    if isinstance(value, str):
        shown = repr(value)
        return shown if len(shown) <= 42 else shown[:40] + "..."
    return f"a JSON {'array' if isinstance(value, list) else 'object'}"


def parse_client_message(text: str | None, data: bytes | None = None) -> ClientMessage:
    """One client frame as a message; ParamError naming the offending field otherwise."""
    doc = parse_frame(text)
    if not isinstance(doc, dict):
        raise ParamError("message", "must be a JSON object with a type")
    kind = doc.get("type")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise ParamError("type", f"unknown message type {_shown(kind)}; use {', '.join(_FIELDS)}")
    for name in doc:
        if name not in _FIELDS[kind]:
            allowed = ", ".join(_FIELDS[kind][1:]) or "no other field"
            label = name if name.isprintable() and len(name) <= 40 else _shown(name)
            raise ParamError(label, f"unknown field for {kind}; {kind} takes {allowed}")
    if kind == "subscribe":
        series = doc.get("series")
        if not isinstance(series, str) or series not in SERIES:
            raise ParamError(
                "series", f"unknown series {_shown(series)}; use one of {', '.join(SERIES)}"
            )
        fmt = doc.get("format", "json")
        if fmt not in ("json", "bin"):
            raise ParamError("format", f"unknown format {_shown(fmt)}; use json or bin")
        return Subscribe(series, "bin" if fmt == "bin" else "json")
    if kind == "ack":
        at = doc.get("column_unix_ms")
        if not isinstance(at, int) or isinstance(at, bool) or not 0 <= at <= MAX_UNIX_MS:
            raise ParamError(
                "column_unix_ms",
                f"must be the column_unix_ms of a received column (0 to {MAX_UNIX_MS}), "
                f"got {_shown(at)}",
            )
        return Ack(at)
    return Unsubscribe() if kind == "unsubscribe" else Ping()


def error_message(exc: ApiError) -> dict[str, Any]:
    return {"type": "error", "code": exc.status, "message": str(exc)}


# ---------------------------------------------------------------- flow control


@dataclass(frozen=True)
class Outgoing:
    """One message waiting to be sent: a control message, or a column event."""

    message: dict[str, Any]
    column: bool = False


class Outbox:
    """A viewer's outgoing messages, bounded (see the module docstring).

    Control messages (subscribed, errors, notices, resync) go out in order
    and never wait for acks; columns wait while `max_unacked` are in flight.
    """

    def __init__(self, *, max_unacked: int = MAX_UNACKED, max_queued: int = MAX_QUEUED) -> None:
        self.max_unacked = max_unacked
        self.max_queued = max_queued
        self.paused = False  # after a resync, until the client subscribes again
        self.dropped = 0
        self.last_sent_ms: int | None = None
        self._queue: deque[Outgoing] = deque()
        self._columns = 0  # columns in the queue
        self._in_flight: deque[int] = deque()  # column_unix_ms sent, not acknowledged
        self._ready = asyncio.Event()

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def control(self, message: dict[str, Any]) -> bool:
        """Queue a control message; False when the client is not reading its replies."""
        if len(self._queue) - self._columns >= MAX_CONTROL:
            return False
        self._queue.append(Outgoing(message))
        self._ready.set()
        return True

    def column(self, event: dict[str, Any]) -> None:
        """Queue a column; when the viewer is too far behind, drop to a resync."""
        if self.paused:
            self.dropped += 1
            return
        if self._columns >= self.max_queued:
            self.dropped += 1  # this one
            self._resync()
            return
        self._queue.append(Outgoing(event, column=True))
        self._columns += 1
        self._ready.set()

    def _resync(self) -> None:
        kept = deque(o for o in self._queue if not o.column)
        self.dropped += len(self._queue) - len(kept)
        self._queue, self._columns = kept, 0
        self.paused = True
        self._queue.append(
            Outgoing(
                {
                    "type": "resync",
                    "reason": "this viewer fell behind; its queued columns were dropped. "
                    "Refetch from the matrix API, then subscribe again.",
                    "dropped": self.dropped,
                    "last_sent_unix_ms": self.last_sent_ms,
                }
            )
        )
        self._ready.set()

    def ack(self, column_unix_ms: int) -> None:
        """Everything sent up to this column has been taken in (cumulative)."""
        while self._in_flight and self._in_flight[0] <= column_unix_ms:
            self._in_flight.popleft()
        self._ready.set()

    def restart(self) -> None:
        """A (re)subscription: a clean slate."""
        self._queue = deque(o for o in self._queue if not o.column)
        self._columns = 0
        self._in_flight.clear()
        self.paused = False
        self.dropped = 0
        self.last_sent_ms = None

    def _sendable(self) -> bool:
        if not self._queue:
            return False
        return not self._queue[0].column or len(self._in_flight) < self.max_unacked

    async def get(self) -> Outgoing:
        """The next message that may go out now (FIFO)."""
        while not self._sendable():
            self._ready.clear()
            await self._ready.wait()
        item = self._queue.popleft()
        if item.column:
            self._columns -= 1
        return item

    def sent(self, item: Outgoing) -> None:
        if item.column:
            at = int(item.message["column_unix_ms"])
            self._in_flight.append(at)
            self.last_sent_ms = at


# ---------------------------------------------------------------- the consumer


class StreamConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """`/api/stream`: one browser tab's live subscription (README "Live stream protocol")."""

    series: str | None = None
    format: Format = "json"
    sender: asyncio.Task[None] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Cleanup on every way out: a disconnect, a close by the server or the access
        # middleware, an exception, a cancellation.
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._cleanup()

    async def connect(self) -> None:
        if not await self.authorized():
            await self.close(code=CLOSE_POLICY)  # before accept: the handshake gets a 403
            return
        self.outbox = Outbox()
        self.sent_rows: set[str] = set()
        self.last_column_ms = -1
        await self.accept()
        metrics.WEBSOCKET_VIEWERS.inc()
        self.counted = True
        self.outbox.control({"type": "hello", "protocol": PROTOCOL})
        self.sender = asyncio.get_running_loop().create_task(self._send_loop())
        self.sender.add_done_callback(self._sender_done)

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # A viewer that can no longer be sent to is closed, not left open and silent.
            log.error("live stream sender failed", exc_info=task.exception())
            asyncio.get_running_loop().create_task(self.close(code=CLOSE_INTERNAL))

    async def authorized(self) -> bool:
        """May this handshake open the live stream?

        Foreign origins never get here (accounts.ws.origin_allowed), and
        accounts.ws.WebSocketAccessMiddleware already applied the access policy to the
        session or API-token user. This repeats the dashboards' rule on the user it
        resolved, so the consumer stays closed even if that middleware were missing.
        The handshake preloaded the user's permissions, so no query runs here.
        """
        user = self.scope.get("user")
        return bool(user is not None and user.is_authenticated and user.has_perm(VIEW_DASHBOARDS))

    async def disconnect(self, code: int) -> None:
        await self._cleanup()

    async def _cleanup(self) -> None:
        """Leave the series (hub, group), uncount the viewer, stop sending. Runs once,
        however the consumer ends; a failing step does not skip the others."""
        if getattr(self, "counted", False):
            metrics.WEBSOCKET_VIEWERS.dec()
            self.counted = False
        try:
            await self._leave()
        finally:
            sender, self.sender = self.sender, None
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            message = parse_client_message(text_data, bytes_data)
        except ApiError as exc:
            self._control(error_message(exc))
            return
        if isinstance(message, Subscribe):
            await self._subscribe(message)
        elif isinstance(message, Unsubscribe):
            series = self.series
            await self._leave()
            self._control({"type": "unsubscribed", "series": series})
        elif isinstance(message, Ack):
            if self.series is None:
                self._control(error_message(ApiError(409, "ack: not subscribed to a series")))
            else:
                self.outbox.ack(message.column_unix_ms)
        else:
            self._control({"type": "pong"})

    # -- subscriptions ------------------------------------------------------------------------

    async def _subscribe(self, request: Subscribe) -> None:
        same = request.series == self.series
        if not same:
            await self._leave()
        self.series, self.format = request.series, request.format
        self.sent_rows = set()
        self.last_column_ms = -1
        self.outbox.restart()
        if not same:
            # Join the group before reading the replay, so no column slips between.
            await self.channel_layer.group_add(group_name(request.series), self.channel_name)
        first = await subscribed(request.series)
        self._control(
            {
                "type": "subscribed",
                "series": request.series,
                "format": request.format,
                "protocol": PROTOCOL,
                "step_ms": first.step_ms,
                "max_unacked": self.outbox.max_unacked,
                "nodes": first.nodes,
                "collector": first.collector,
            }
        )
        for event in first.replay:
            self.keyviz_column_event(event)

    async def _leave(self) -> None:
        series, self.series = self.series, None
        if series is not None:
            await self.channel_layer.group_discard(group_name(series), self.channel_name)

    # -- channel layer handlers (type "keyviz.column" -> keyviz_column) -------------------------

    async def keyviz_column(self, event: dict[str, Any]) -> None:
        remember_rows(event)
        self.keyviz_column_event(event)

    async def keyviz_amend(self, event: dict[str, Any]) -> None:
        """A published column changed (late data): it replaces the viewer's copy."""
        remember_rows(event)
        if self.series is not None and event.get("series") == self.series:
            self.outbox.column(event)

    async def keyviz_notice(self, event: dict[str, Any]) -> None:
        if self.series is not None and not self.outbox.paused:
            self._control({"type": "keyviz.notice", "json": event["json"]})

    def keyviz_column_event(self, event: dict[str, Any]) -> None:
        if self.series is None or event.get("series") != self.series:
            return
        at = int(event["column_unix_ms"])
        if at <= self.last_column_ms:
            return  # a replayed column also broadcast meanwhile
        self.last_column_ms = at
        self.outbox.column(event)

    # -- sending ----------------------------------------------------------------------------

    def _control(self, message: dict[str, Any]) -> None:
        if not self.outbox.control(message):
            log.warning("closing a stream client that does not read its replies")
            asyncio.get_running_loop().create_task(self.close(code=CLOSE_OVERFLOW))

    async def _send_loop(self) -> None:
        while True:
            item = await self.outbox.get()
            message = item.message
            if item.column:
                frame = render_column(
                    message,
                    self.format,
                    self.sent_rows,
                    partial(row_metadata, message["series"]),
                )
                if isinstance(frame, bytes):
                    await self.send(bytes_data=frame)
                else:
                    await self.send(text_data=frame)
            elif message.get("type") == "keyviz.notice":
                await self.send(text_data=message["json"])
            else:
                await self.send(text_data=json.dumps(message, separators=(",", ":")))
            self.outbox.sent(item)
