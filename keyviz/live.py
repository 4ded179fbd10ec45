"""Live KeyViz columns: one poller per series per process, broadcast through the channel layer.

DESIGN.md "Live heatmap". Browsers subscribe through the WebSocket consumer
(consumers.py), which only forwards; the work happens here:

- `LiveHub` (one per process and event loop) counts local subscribers per
  series. The first one starts a `SeriesPoller`, the last one to leave stops
  it. Whether this process polls at all is asked of a `PollerLease`:
  `LocalLease` always says yes (the in-memory channel layer is one process);
  with `REDIS_URL`, `RedisLease` (lease.py) lets exactly one portal process
  poll a series and the others only forward. The hub renews the lease while it
  polls (a lost lease stops the poller) and, while it has viewers but no
  lease, tries to take it every renew interval (takeover when the holder dies).
- A `SeriesPoller` takes in each node's new columns: pushed by StreamEvents
  where the node serves it (one `EventFeed` per node, shared by every series),
  otherwise polled with one GetKeyVizMatrix per node per step, timed for just
  after that node's next flush and asking only for columns after the last one
  it has (`from_unix_ms`). Node load is therefore one call per node per step
  (or one open stream per node), whatever the number of viewers.
- A `ColumnAssembler` decides when a merged column is final: when every node
  that answers has reported a column at or past its boundary (columns are
  mapped to the nearest step boundary, as in the merge), or once the boundary
  is a step old, in which case the missing nodes are reported as late.
- A final column is merged exactly like the matrix API merges (merge.py, same
  write rule, degraded rows), turned into the client message once, and sent
  to the channel layer group `keyviz.<series>`, so every portal process
  sharing the layer delivers it to its own viewers.

Wire format of one column (the consumer adds `new_rows`, the metadata of rows
that viewer has not been sent yet; see README "Live stream protocol")::

    {"type": "column", "series": "writes", "column_unix_ms": 1700000060000,
     "step_ms": 60000, "emitted_unix_ms": ..., "nodes": {...},
     "rows": [{"bucket_id": "route:7", "value": 12, "flags": 2}, ...]}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
import weakref
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from cluster.client import UNIMPLEMENTED_TTL_S, NodeError, node_client
from cluster.discovery import discovery
from cluster.fanout import Node, NodeStatus
from elastickv_admin import metrics
from elastickv_admin.config import portal_config
from keyviz.budgets import MAX_ROWS
from keyviz.columns import NodeColumn
from keyviz.matrix import (
    MalformedMatrixError,
    MergedMatrix,
    NodeMatrix,
    RowMeta,
    node_matrix_from_response,
)
from keyviz.merge import infer_step_ms, merge_nodes
from keyviz.params import SERIES
from keyviz.serialize import FLAG_CONFLICT, FLAG_DEGRADED, FLAG_SOFT, cell_flags, row_metadata
from keyviz.service import current_leaders, fetch_node_matrices
from proto import admin_pb2

log = logging.getLogger(__name__)

PROTOCOL = 1
# The first fetch of a new poller: long enough to show a 60 s step three times.
BOOTSTRAP_WINDOW_MS = 3 * 60_000
# Final columns kept for viewers that subscribe later (the API's newest column
# may have been incomplete when their page loaded).
REPLAY_COLUMNS = 2
LEADERS_REFRESH_S = 10.0
# How long a new poller waits for StreamEvents to open before its first fetch.
STREAM_SETTLE_S = 1.0
STREAM_BACKOFF_S = (0.5, 30.0)
# More missing columns than this (a long outage) are skipped, not sent one by one;
# the page sees the jump and fills it from the matrix API.
MAX_CATCH_UP_COLUMNS = 120
MAX_CATALOG_ROWS = 100_000
# A poller whose last viewer left keeps running this long: a reload or a reconnect
# does not cost a fresh bootstrap fetch from every node.
LINGER_S = 5.0
# The step is checked again over this many columns per node (a step inferred from
# the first few columns of a cluster that just started can be off by a flush's jitter).
STEP_CHECK_COLUMNS = 128
FLAG_BITS = {"soft": FLAG_SOFT, "conflict": FLAG_CONFLICT, "degraded": FLAG_DEGRADED}
_FRAME = struct.Struct("<4sHHI")
FRAME_MAGIC = b"EKVC"


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def group_name(series: str) -> str:
    """The channel layer group of a series (`keyviz.writes`)."""
    return f"keyviz.{series}"


def normalize_series(series: int) -> int:
    # UNSPECIFIED means WRITES on the wire.
    return series or admin_pb2.KEYVIZ_SERIES_WRITES


# ---------------------------------------------------------------- node columns


def columns_of(m: NodeMatrix) -> list[NodeColumn]:
    """Split a node's matrix into its columns (empty ones included: they still say
    "this node has flushed up to here")."""
    out: list[NodeColumn] = []
    for j, t in enumerate(m.column_unix_ms.tolist()):
        live = np.flatnonzero((m.values[:, j] > 0) | m.soft[:, j])
        out.append(
            NodeColumn(
                node=m.node,
                column_unix_ms=int(t),
                rows=tuple(m.rows[i] for i in live.tolist()),
                values=m.values[live, j],
                soft=m.soft[live, j],
                raft_group_ids=m.raft_group_ids[live, j],
                leader_terms=m.leader_terms[live, j],
            )
        )
    return out


def column_from_event(node: str, column: admin_pb2.KeyVizColumn) -> NodeColumn:
    """A pushed KeyVizColumn, validated like a one-column matrix (MalformedMatrixError)."""
    response = admin_pb2.GetKeyVizMatrixResponse(column_unix_ms=[column.column_unix_ms])
    response.rows.extend(column.rows)
    return columns_of(node_matrix_from_response(node, response))[0]


def node_matrix_of(columns: Sequence[NodeColumn]) -> NodeMatrix:
    """One node's columns (increasing times) back into a matrix for the merge."""
    index: dict[str, int] = {}
    rows: list[RowMeta] = []
    for c in columns:
        for row in c.rows:
            if row.bucket_id not in index:
                index[row.bucket_id] = len(rows)
                rows.append(row)
    shape = (len(rows), len(columns))
    values = np.zeros(shape, dtype=np.uint64)
    soft = np.zeros(shape, dtype=np.bool_)
    groups = np.zeros(shape, dtype=np.uint64)
    terms = np.zeros(shape, dtype=np.uint64)
    for j, c in enumerate(columns):
        at = np.array([index[r.bucket_id] for r in c.rows], dtype=np.intp)
        values[at, j] = c.values
        soft[at, j] = c.soft
        groups[at, j] = c.raft_group_ids
        terms[at, j] = c.leader_terms
    return NodeMatrix(
        node=columns[0].node,
        column_unix_ms=np.array([c.column_unix_ms for c in columns], dtype=np.int64),
        rows=tuple(rows),
        values=values,
        soft=soft,
        raft_group_ids=groups,
        leader_terms=terms,
    )


# ---------------------------------------------------------------- column completion


@dataclass(frozen=True)
class FinalColumn:
    """A merged column that will not change any more: every node's columns for it, and
    the nodes that were expected but had not reported by the deadline."""

    column_unix_ms: int
    columns: dict[str, list[NodeColumn]]
    late: tuple[str, ...] = ()


class ColumnAssembler:
    """Collects node columns and says which merged columns are final.

    A node column at t belongs to the merged column at the nearest step
    boundary (halves round up), as in the merge. Nodes flush on their own
    timers, so a boundary B gathers columns from [B - step/2, B + step/2).
    B is final when every node that answers has reported a column at or past
    B, or at B + `deadline_ms` (default one step: the last expected column
    plus half a step of grace) with at least one report, listing the others
    as late. Columns for a boundary already final are dropped and counted.
    """

    def __init__(self, step_ms: int, last_final_ms: int, *, deadline_ms: int | None = None):
        if step_ms <= 0:
            raise ValueError("step_ms must be positive")
        self.step_ms = step_ms
        self.deadline_ms = step_ms if deadline_ms is None else deadline_ms
        self.last_final_slot = last_final_ms // step_ms
        self.dropped_late = 0
        self._pending: dict[int, dict[str, list[NodeColumn]]] = {}
        self._latest: dict[str, int] = {}

    def slot(self, t: int) -> int:
        # round(t / step), halves up: merge.round_half_up_div on one integer.
        return (2 * t + self.step_ms) // (2 * self.step_ms)

    @property
    def last_final_ms(self) -> int:
        return self.last_final_slot * self.step_ms

    def latest_ms(self, node: str) -> int | None:
        """The boundary of the newest column `node` reported, if any."""
        s = self._latest.get(node)
        return None if s is None else s * self.step_ms

    def add(self, column: NodeColumn) -> bool:
        """Take a node column; False when its boundary is already final (late, dropped)."""
        s = self.slot(column.column_unix_ms)
        self._latest[column.node] = max(s, self._latest.get(column.node, s))
        if s <= self.last_final_slot:
            self.dropped_late += 1
            return False
        self._pending.setdefault(s, {}).setdefault(column.node, []).append(column)
        return True

    def forget(self, node: str) -> None:
        """A node left the membership: stop waiting for it."""
        self._latest.pop(node, None)

    def ready(self, live_nodes: Collection[str], now_ms: int) -> list[FinalColumn]:
        """The merged columns that became final, oldest first."""
        out: list[FinalColumn] = []
        live = set(live_nodes)
        while True:
            reported = {
                n for n in live if self._latest.get(n, self.last_final_slot) > self.last_final_slot
            }
            if not reported:
                return out
            s = self.last_final_slot + 1
            behind = min(self._latest[n] for n in reported) - s
            if behind > MAX_CATCH_UP_COLUMNS:
                # A long gap (poller stalled, cluster idle without flushing): skip it.
                self._skip_to(min(self._latest[n] for n in reported) - 1)
                continue
            missing = sorted(n for n in live if self._latest.get(n, -1) < s)
            boundary = s * self.step_ms
            if missing and now_ms < boundary + self.deadline_ms:
                return out
            self.last_final_slot = s
            out.append(FinalColumn(boundary, self._pending.pop(s, {}), tuple(missing)))

    def next_deadline_ms(self, live_nodes: Collection[str]) -> int | None:
        """When the next boundary goes final without its missing nodes (None: not pending)."""
        s = self.last_final_slot + 1
        if not any(self._latest.get(n, -1) >= s for n in live_nodes):
            return None
        return s * self.step_ms + self.deadline_ms

    def finalize_through(self, slot: int) -> list[FinalColumn]:
        """Declare every boundary up to `slot` final as it stands (history at startup)."""
        out = [
            FinalColumn(s * self.step_ms, self._pending.pop(s, {}))
            for s in range(self.last_final_slot + 1, slot + 1)
        ]
        self.last_final_slot = max(self.last_final_slot, slot)
        return out

    def _skip_to(self, slot: int) -> None:
        for s in [k for k in self._pending if k <= slot]:
            del self._pending[s]
        self.last_final_slot = slot


# ---------------------------------------------------------------- poll timing


class PollSchedule:
    """When to ask each polled node for its new columns.

    A node flushes every step on its own timer, so its next column is due one
    step after its last one; it is asked `margin_ms` after that. A node whose
    column was not there yet is asked again after step/8, then step/4, step/2,
    and then once a step; a failing node is asked once a step.
    """

    def __init__(self, step_ms: int, *, margin_ms: int | None = None) -> None:
        self.step_ms = step_ms
        self.margin_ms = margin_ms if margin_ms is not None else min(500, max(30, step_ms // 20))
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


# ---------------------------------------------------------------- degraded rows


class LeaderBook:
    """Which Raft groups each node led, as last seen while it was answering.

    DESIGN "KeyViz merge" step 6 marks the rows whose group a failed node
    leads. A stopped node hands its groups to a new leader within moments, so
    an overview taken after the failure names nothing for it, although the
    columns it held are exactly what is missing. So a node's groups are
    replaced by a newer overview only once the node has answered after that
    overview was taken; until then they accumulate.
    """

    def __init__(self) -> None:
        self._led: dict[str, set[int]] = {}
        self._current: dict[str, set[int]] = {}
        self._taken_at_ms = 0

    def update(self, leaders: Mapping[int, str], taken_at_ms: int) -> None:
        current: dict[str, set[int]] = {}
        for group, node in leaders.items():
            if node and group:
                current.setdefault(node, set()).add(group)
        self._current, self._taken_at_ms = current, taken_at_ms
        for node in set(current) | set(self._led):
            self._led[node] = self._led.get(node, set()) | current.get(node, set())

    def answered(self, node: str, at_ms: int) -> None:
        """`node` answered at `at_ms`; if after the newest overview, that overview holds."""
        if at_ms >= self._taken_at_ms and self._taken_at_ms:
            self._led[node] = set(self._current.get(node, set()))

    def retain(self, nodes: Collection[str]) -> None:
        """Forget the nodes that left the membership (leader ids are node-controlled)."""
        self._led = {n: g for n, g in self._led.items() if n in nodes}

    def groups_of(self, node: str) -> set[int]:
        return set(self._led.get(node, set()))

    def lost_groups(self, failed: Iterable[str]) -> dict[int, str]:
        """group -> failed node that led it, for merge_nodes(group_leaders=...)."""
        return {g: n for n in sorted(set(failed)) for g in sorted(self._led.get(n, ()))}


# ---------------------------------------------------------------- messages


def nodes_summary(
    total: int,
    failed: Sequence[NodeStatus],
    late: Sequence[str] = (),
    streaming: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        "responded": total - len(failed),
        "total": total,
        "failed": [
            {"node": s.node, "address": s.address, "error": s.error, "code": s.code} for s in failed
        ],
        "late": list(late),
        "streaming": list(streaming),
    }


@dataclass
class RowCatalog:
    """Row metadata this poller has announced, and the Raft group each row was seen in."""

    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: dict[str, RowMeta] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)

    def announce(self, row: RowMeta) -> dict[str, Any] | None:
        """Metadata to send with this row: the first time only (None afterwards)."""
        if row.bucket_id in self.meta:
            return None
        if len(self.meta) >= MAX_CATALOG_ROWS:
            # Years of splits: start over; rows are announced again when next seen.
            self.meta.clear()
            self.rows.clear()
            self.groups.clear()
        doc = row_metadata(row)
        self.meta[row.bucket_id] = doc
        self.rows[row.bucket_id] = row
        return doc


def column_cells(merged: MergedMatrix, boundary: int) -> list[tuple[RowMeta, int, int]]:
    """(row, value, flag bits) of the merged column at `boundary`, for rows with a value
    or a flag, in key order."""
    hit = np.flatnonzero(merged.column_unix_ms == boundary)
    if not hit.size:
        return []
    j = int(hit[0])
    values = merged.values[:, j]
    flags = cell_flags(merged)[:, j]
    keep = np.flatnonzero((values > 0) | (flags > 0))
    return [
        (merged.rows[i], int(v), int(f))
        for i, v, f in zip(keep.tolist(), values[keep].tolist(), flags[keep].tolist(), strict=True)
    ]


def column_event(
    *,
    series: str,
    step_ms: int,
    column_unix_ms: int,
    cells: Sequence[tuple[RowMeta, int, int]],
    catalog: RowCatalog,
    nodes: Mapping[str, Any],
    emitted_unix_ms: int,
) -> dict[str, Any]:
    """The channel layer message of one final column, with the client message encoded once.

    `json` is the client's JSON message and `bin_header` + `bin_arrays` its binary
    frame, both without `new_rows`; `new_rows` is the metadata of rows this poller
    announces for the first time, `bucket_ids` the rows in the column (the consumer
    adds metadata for rows its viewer has not had).
    """
    new_rows = [doc for row, _, _ in cells if (doc := catalog.announce(row)) is not None]
    for row, _, _ in cells:
        catalog.rows.setdefault(row.bucket_id, row)
    bucket_ids = [row.bucket_id for row, _, _ in cells]
    rows = [
        {"bucket_id": row.bucket_id, "value": v, **({"flags": f} if f else {})}
        for row, v, f in cells
    ]
    head = {
        "type": "column",
        "series": series,
        "column_unix_ms": column_unix_ms,
        "step_ms": step_ms,
        "emitted_unix_ms": emitted_unix_ms,
        "nodes": dict(nodes),
    }
    text = json.dumps({**head, "rows": rows}, separators=(",", ":"))
    header = json.dumps(
        {**head, "n_rows": len(cells), "bucket_ids": bucket_ids, "flag_bits": FLAG_BITS},
        separators=(",", ":"),
    )
    arrays = b"".join(
        (
            np.array([v for _, v, _ in cells], dtype="<u8").tobytes(),
            np.array([f for _, _, f in cells], dtype=np.uint8).tobytes(),
        )
    )
    return {
        "type": "keyviz.column",
        "series": series,
        "column_unix_ms": column_unix_ms,
        "bucket_ids": bucket_ids,
        "new_rows": new_rows,
        "json": text,
        "bin_header": header,
        "bin_arrays": arrays,
    }


def _with_new_rows(encoded: str, new_rows: Sequence[Mapping[str, Any]]) -> str:
    """Add `"new_rows": [...]` to an encoded JSON object."""
    if not new_rows:
        return encoded
    return encoded[:-1] + ',"new_rows":' + json.dumps(new_rows, separators=(",", ":")) + "}"


def pack_frame(header: str, arrays: bytes) -> bytes:
    """A binary column frame: magic `EKVC`, version, header length, JSON header, zero
    padding to a multiple of 8, then uint64 values[n_rows] and uint8 flags[n_rows]."""
    head = header.encode("utf-8")
    pad = -(_FRAME.size + len(head)) % 8
    return b"".join((_FRAME.pack(FRAME_MAGIC, PROTOCOL, 0, len(head)), head, b"\0" * pad, arrays))


def unpack_frame(frame: bytes) -> tuple[dict[str, Any], list[int], list[int]]:
    """(header, values, flags) of a binary column frame (tests and tools)."""
    magic, version, _, length = _FRAME.unpack_from(frame)
    if magic != FRAME_MAGIC or version != PROTOCOL:
        raise ValueError("not a KeyViz column frame")
    header: dict[str, Any] = json.loads(frame[_FRAME.size : _FRAME.size + length])
    at = _FRAME.size + length
    at += -at % 8
    n = int(header["n_rows"])
    values = np.frombuffer(frame, dtype="<u8", count=n, offset=at).tolist()
    flags = np.frombuffer(frame, dtype=np.uint8, count=n, offset=at + 8 * n).tolist()
    return header, values, flags


def render_column(
    event: Mapping[str, Any],
    fmt: Literal["json", "bin"],
    sent: set[str],
    lookup: Callable[[str], Mapping[str, Any] | None],
) -> str | bytes:
    """One viewer's copy of a column: metadata for every row it has not been sent yet.

    `sent` (the bucket ids this viewer has metadata for) is updated. Metadata
    comes from the event's `new_rows`, else from `lookup`; a row whose metadata
    is nowhere to be found goes out without it (the page then refetches).
    """
    fresh = {doc["bucket_id"]: doc for doc in event.get("new_rows", ())}
    new_rows: list[Mapping[str, Any]] = []
    for bucket_id in event["bucket_ids"]:
        if bucket_id in sent:
            continue
        doc = fresh.get(bucket_id) or lookup(bucket_id)
        if doc is not None:
            new_rows.append(doc)
            sent.add(bucket_id)
    if fmt == "bin":
        return pack_frame(_with_new_rows(event["bin_header"], new_rows), event["bin_arrays"])
    return _with_new_rows(event["json"], new_rows)


# ---------------------------------------------------------------- StreamEvents feeds


FeedState = Literal["connecting", "streaming", "unsupported", "down"]


class FeedListener(Protocol):
    def on_feed_event(self, address: str, event: admin_pb2.StreamEventsEvent) -> None: ...

    def on_feed_state(self, address: str, state: FeedState, error: str | None) -> None: ...


class EventFeed:
    """One StreamEvents stream to one node, shared by every series poller of the process.

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
            except Exception:  # never let one node's stream take the poller down
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


# ---------------------------------------------------------------- the poller


@dataclass
class NodeTrack:
    node: Node
    last_ms: int = 0  # the newest column (the node's own time) taken in
    streaming: bool = False
    catch_up: bool = False  # poll once although streaming (columns before the stream)
    failure: NodeStatus | None = None
    history: deque[int] = field(default_factory=lambda: deque(maxlen=STEP_CHECK_COLUMNS))

    @property
    def label(self) -> str:
        return self.node.label


class SeriesPoller:
    """Takes in every node's new columns for one series and broadcasts the final ones."""

    def __init__(self, hub: LiveHub, series: str) -> None:
        self.hub = hub
        self.series = series
        self.series_id = SERIES[series]
        self.group = group_name(series)
        self.step_ms: int | None = None
        self.catalog = RowCatalog()
        self.recent: deque[dict[str, Any]] = deque(maxlen=REPLAY_COLUMNS)
        self.status: dict[str, Any] | None = None
        self.broadcasts = 0
        self._tracks: dict[str, NodeTrack] = {}  # by address
        self._assembler: ColumnAssembler | None = None
        self._schedule: PollSchedule | None = None
        self._leaders = LeaderBook()
        self._leaders_due = 0.0
        self._early: list[tuple[str, admin_pb2.KeyVizColumn]] = []
        self._transitions: deque[tuple[int, int]] = deque(maxlen=64)
        self._outbox: list[dict[str, Any]] = []
        self._taken = 0  # node columns taken in since the last step check
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"poller:{self.group}"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for address in list(self._tracks):
            self.hub.release_feed(address, self)
        self._tracks.clear()

    async def _run(self) -> None:
        backoff = 1.0
        while True:
            try:
                await self._bootstrap()
                backoff = 1.0
                while True:
                    await self._tick()
                    await self._sleep_until(self._next_wake_ms())
            except asyncio.CancelledError:
                raise
            except _StepChanged as exc:
                log.info("live poller %s: %s; starting over", self.group, exc)
            except Exception:
                log.exception("live poller %s failed; restarting in %.0f s", self.group, backoff)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 30.0)

    async def _sleep_until(self, when_ms: int | None) -> None:
        timeout = None if when_ms is None else max(0.0, (when_ms - wall_ms()) / 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    def _next_wake_ms(self) -> int | None:
        assert self._schedule is not None
        assert self._assembler is not None
        polled = [a for a, t in self._tracks.items() if not t.streaming or t.catch_up]
        candidates = [
            self._schedule.next_due_ms(polled),
            self._assembler.next_deadline_ms(self._live()),
            int(self._leaders_due * 1000),
            wall_ms() + 5_000,  # membership changes
        ]
        return min(c for c in candidates if c is not None)

    # -- membership and feeds ---------------------------------------------------------------

    async def _sync_nodes(self) -> None:
        nodes = await discovery().nodes()
        wanted = {n.address: n for n in nodes}
        for address in [a for a in self._tracks if a not in wanted]:
            gone = self._tracks.pop(address)
            self.hub.release_feed(address, self)
            if self._schedule is not None:
                self._schedule.drop(address)
            if self._assembler is not None:
                self._assembler.forget(gone.label)
        for address, node in wanted.items():
            track = self._tracks.get(address)
            if track is None:
                track = self._tracks[address] = NodeTrack(node)
                feed = self.hub.acquire_feed(address, self)
                track.streaming = feed.state == "streaming"
                if self._schedule is not None:
                    self._schedule.now(address, wall_ms())
            elif track.node != node:
                track.node = node
        self._leaders.retain({t.label for t in self._tracks.values()})

    def on_feed_state(self, address: str, state: FeedState, error: str | None) -> None:
        track = self._tracks.get(address)
        if track is None:
            return
        was = track.streaming
        track.streaming = state == "streaming"
        if track.streaming and not was:
            # Columns flushed between the last poll and the subscription: fetch them once.
            track.catch_up = True
        if was and not track.streaming and self._schedule is not None:
            self._schedule.now(address, wall_ms())
        self._wake.set()

    def on_feed_event(self, address: str, event: admin_pb2.StreamEventsEvent) -> None:
        track = self._tracks.get(address)
        if track is None:
            return
        kind = event.WhichOneof("event")
        if kind == "keyviz_column":
            column = event.keyviz_column
            if normalize_series(column.series) != self.series_id:
                return
            if self._assembler is None:
                self._early.append((address, column))
                return
            self._take_pushed(track, column)
        elif kind == "route_transition":
            self._take_transition(event.route_transition)
        self._wake.set()

    def _take_pushed(self, track: NodeTrack, column: admin_pb2.KeyVizColumn) -> None:
        try:
            taken = column_from_event(track.label, column)
        except MalformedMatrixError as exc:
            self._fail(track, f"malformed KeyViz column: {exc.reason}", "MALFORMED")
            return
        self._take(track, [taken])

    def _take_transition(self, t: admin_pb2.RouteTransition) -> None:
        key = (t.parent_route_id, t.unix_ms)
        if key in self._transitions:  # every node pushes the same transition
            return
        self._transitions.append(key)
        message = {
            "type": "route_transition",
            "series": self.series,
            "parent_route_id": t.parent_route_id,
            "child_route_ids": list(t.child_route_ids),
            "lineage_id": t.lineage_id,
            "unix_ms": t.unix_ms,
        }
        self._outbox.append(
            {"type": "keyviz.notice", "json": json.dumps(message, separators=(",", ":"))}
        )

    # -- taking columns in ---------------------------------------------------------------------

    def _take(self, track: NodeTrack, columns: Sequence[NodeColumn]) -> None:
        assert self._assembler is not None
        now = wall_ms()
        for column in columns:
            if column.column_unix_ms <= track.last_ms:
                continue  # already have it (a catch-up poll overlapping the stream)
            track.last_ms = column.column_unix_ms
            track.history.append(column.column_unix_ms)
            self._taken += 1
            self._assembler.add(column)
        self._answered(track, now)

    def _answered(self, track: NodeTrack, now: int) -> None:
        if track.failure is not None:
            track.failure = None
            self._status_changed()
        self._leaders.answered(track.label, now)

    def _fail(self, track: NodeTrack, error: str, code: str | None) -> None:
        changed = track.failure is None or track.failure.error != error
        track.failure = NodeStatus(track.label, track.node.address, False, error, None, code)
        if changed:
            self._status_changed()

    def _live(self) -> list[str]:
        return [t.label for t in self._tracks.values() if t.failure is None]

    def _summary(self, late: Sequence[str] = ()) -> dict[str, Any]:
        tracks = sorted(self._tracks.values(), key=lambda t: t.label)
        return nodes_summary(
            len(tracks),
            [t.failure for t in tracks if t.failure is not None],
            late,
            [t.label for t in tracks if t.streaming],
        )

    def _status_changed(self) -> None:
        self.status = self._summary()
        message = {"type": "status", "series": self.series, "nodes": self.status}
        self._outbox.append(
            {"type": "keyviz.notice", "json": json.dumps(message, separators=(",", ":"))}
        )

    # -- bootstrap and polling -------------------------------------------------------------

    def _request(self, from_ms: int) -> admin_pb2.GetKeyVizMatrixRequest:
        return admin_pb2.GetKeyVizMatrixRequest(
            series=self.series_id,  # type: ignore[arg-type]
            from_unix_ms=max(0, from_ms),
            rows=MAX_ROWS,
        )

    async def _fetch(
        self, tracks: Sequence[NodeTrack], from_ms: Sequence[int]
    ) -> list[tuple[NodeTrack, NodeMatrix | None]]:
        """One GetKeyVizMatrix per node (columns from `from_ms`), decoded off the loop;
        failures recorded."""
        answers = await fetch_node_matrices(
            [t.node for t in tracks], [self._request(since) for since in from_ms]
        )
        results: list[tuple[NodeTrack, NodeMatrix | None]] = []
        for t, (matrix, status) in zip(tracks, answers, strict=True):
            if matrix is None:
                self._fail(t, status.error or "failed", status.code)
            results.append((t, matrix))
        return results

    async def _bootstrap(self) -> None:
        """Learn the step, where each node stands and the last final column; fill the replay."""
        self._assembler = self._schedule = None
        await self._sync_nodes()
        for track in self._tracks.values():  # a restart (new step) takes everything anew
            track.last_ms = 0
            track.history.clear()
        feeds = [self.hub.feeds[a].settled.wait() for a in self._tracks if a in self.hub.feeds]
        if feeds:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*feeds), STREAM_SETTLE_S)
        tracks = list(self._tracks.values())
        wait = 0.5
        while True:
            now = wall_ms()
            fetched = await self._fetch(tracks, [now - BOOTSTRAP_WINDOW_MS] * len(tracks))
            step = _common_step([m for _, m in fetched if m is not None])
            if step is None and any(m is not None for _, m in fetched):
                # Steps longer than a minute: look at the whole history.
                fetched = await self._fetch(tracks, [0] * len(tracks))
                step = _common_step([m for _, m in fetched if m is not None])
            if not any(m is not None for _, m in fetched):
                raise NodeError("UNAVAILABLE", "no node answered GetKeyVizMatrix")
            if step is not None:
                break
            # Nodes that just started show too few columns: wait for more.
            log.info("%s: no node shows its step yet; retrying in %.1f s", self.group, wait)
            await asyncio.sleep(wait)
            wait = min(2 * wait, 30.0)
        self.step_ms = step
        self._taken = 0
        per_node = [columns_of(m) for _, m in fetched if m is not None]
        probe = ColumnAssembler(step, 0)
        latest = [probe.slot(cols[-1].column_unix_ms) for cols in per_node if cols]
        # Every node that answered has reported up to `baseline`: final already.
        baseline = min(latest) if latest else probe.slot(now) - 1
        self._assembler = ColumnAssembler(step, (baseline - REPLAY_COLUMNS) * step)
        self._schedule = PollSchedule(step)
        await self._refresh_leaders(force=True)
        for t, m in fetched:
            t.catch_up = False  # this fetch is the catch-up
            if m is None:
                self._schedule.failed(t.node.address, now)
                continue
            self._take(t, columns_of(m))
            if t.last_ms:
                self._schedule.observed(t.node.address, t.last_ms, now)
            else:
                self._schedule.missed(t.node.address, now)
        # The newest final columns are merged now but only kept, for later subscribers.
        for fin in self._assembler.finalize_through(baseline):
            self.recent.append(await self._final_event(fin))
        self._assembler.dropped_late = 0
        for address, column in self._early:
            if address in self._tracks:
                self._take_pushed(self._tracks[address], column)
        self._early.clear()
        self.status = self._summary()
        log.info(
            "live poller %s: step %d ms, %d nodes (%d streaming), last final column %d",
            self.group,
            step,
            len(self._tracks),
            sum(t.streaming for t in self._tracks.values()),
            baseline * step,
        )

    async def _refresh_leaders(self, *, force: bool = False) -> None:
        if not force and time.time() < self._leaders_due:
            return
        self._leaders_due = time.time() + LEADERS_REFRESH_S
        taken = wall_ms()
        live = [t.node for t in self._tracks.values() if t.failure is None]
        others = [t.node for t in self._tracks.values() if t.failure is not None]
        leaders = await current_leaders(live + others)
        if leaders:
            self._leaders.update({g: n for g, (n, _) in leaders.items()}, taken)

    async def _tick(self) -> None:
        assert self._schedule is not None
        assert self._assembler is not None
        await self._sync_nodes()
        now = wall_ms()
        due = set(self._schedule.due(now, [a for a, t in self._tracks.items() if not t.streaming]))
        polled = [t for a, t in self._tracks.items() if a in due or t.catch_up]
        if polled:
            for t in polled:
                t.catch_up = False
            # Only the columns after the newest one this node gave: history is not refetched.
            since = [t.last_ms + 1 if t.last_ms else now - BOOTSTRAP_WINDOW_MS for t in polled]
            fetched = await self._fetch(polled, since)
            now = wall_ms()
            for t, m in fetched:
                address = t.node.address
                if m is None:
                    self._schedule.failed(address, now)
                    continue
                before = t.last_ms
                self._take(t, columns_of(m))
                if t.last_ms > before:
                    self._schedule.observed(address, t.last_ms, now)
                else:
                    self._schedule.missed(address, now)
        self._check_step()
        await self._refresh_leaders()
        for fin in self._assembler.ready(self._live(), wall_ms()):
            event = await self._final_event(fin)
            self.recent.append(event)
            self._outbox.append(event)
            self.broadcasts += 1
        await self._flush_outbox()

    def _check_step(self) -> None:
        if self._taken < STEP_CHECK_COLUMNS // 2 or self.step_ms is None:
            return
        self._taken = 0
        seen = common_step(t.history for t in self._tracks.values())
        if seen is not None and seen != self.step_ms:
            raise _StepChanged(f"columns now show a {seen} ms step, not {self.step_ms} ms")

    async def _flush_outbox(self) -> None:
        layer = self.hub.layer
        while self._outbox:
            await layer.group_send(self.group, self._outbox.pop(0))

    async def _final_event(self, fin: FinalColumn) -> dict[str, Any]:
        assert self.step_ms is not None
        failures = [t.failure for t in self._tracks.values() if t.failure is not None]
        missing = {s.node for s in failures} | set(fin.late)
        lost = self._leaders.lost_groups(missing)
        matrices = [node_matrix_of(cols) for _, cols in sorted(fin.columns.items()) if cols]
        step = self.step_ms
        merged = await asyncio.to_thread(
            merge_nodes,
            matrices,
            series=self.series_id,
            step_ms=step,
            writes_merge=portal_config().writes_merge,  # type: ignore[arg-type]
            failed_nodes=sorted(missing),
            group_leaders=lost,
        )
        cells = column_cells(merged, fin.column_unix_ms)
        self._learn_groups(merged)
        if lost:
            cells = self._with_lost_rows(cells, set(lost))
        summary = self._summary(fin.late)
        emitted = wall_ms()
        # A column's timestamp is its nodes' flush time: the lag is what viewers wait.
        metrics.LIVE_COLUMN_LAG_SECONDS.labels(self.series).observe(
            max(0, emitted - fin.column_unix_ms) / 1000
        )
        return column_event(
            series=self.series,
            step_ms=step,
            column_unix_ms=fin.column_unix_ms,
            cells=cells,
            catalog=self.catalog,
            nodes=summary,
            emitted_unix_ms=emitted,
        )

    def _learn_groups(self, merged: MergedMatrix) -> None:
        prov = merged.provenance
        if prov is None:
            return
        for a in prov.nodes:
            if not a.values.size:
                continue
            groups = a.raft_group_ids.max(axis=1).tolist()
            for i, g in zip(a.row_index.tolist(), groups, strict=True):
                if g:
                    self.catalog.groups[prov.base_rows[i].bucket_id] = int(g)

    def _with_lost_rows(
        self, cells: list[tuple[RowMeta, int, int]], lost: set[int]
    ) -> list[tuple[RowMeta, int, int]]:
        """Mark every known row of a lost group degraded, with or without a value here."""
        present = {row.bucket_id for row, _, _ in cells}
        out = [
            (row, v, f | FLAG_DEGRADED if self.catalog.groups.get(row.bucket_id) in lost else f)
            for row, v, f in cells
        ]
        for bucket_id, group in self.catalog.groups.items():
            if group in lost and bucket_id not in present and bucket_id in self.catalog.rows:
                out.append((self.catalog.rows[bucket_id], 0, FLAG_DEGRADED))
        out.sort(key=lambda c: (c[0].start, c[0].bucket_id))
        return out


def common_step(columns: Iterable[Sequence[int]], *, min_columns: int = 3) -> int | None:
    """The step the nodes' column times show: the finest, as the merge picks.

    A node needs `min_columns` columns to count: one gap is at the mercy of
    one late flush. None when no node has enough.
    """
    steps = [
        _round_step(s, len(times))
        for times in columns
        if len(times) >= min_columns and (s := infer_step_ms(np.array(times, dtype=np.int64)))
    ]
    return min(steps) if steps else None


def _round_step(step: int, columns: int) -> int:
    """Over a few columns one late flush skews the estimate; steps are round Go
    durations, so take the round value within 5%. (Checked again over more columns.)"""
    if columns >= STEP_CHECK_COLUMNS // 2:
        return step
    grain = 100 if step < 10_000 else 1000 if step < 120_000 else 10_000
    rounded = max(grain, (step + grain // 2) // grain * grain)
    return rounded if abs(rounded - step) * 20 <= rounded else step


def _common_step(matrices: Sequence[NodeMatrix]) -> int | None:
    return common_step(m.column_unix_ms.tolist() for m in matrices)


class _StepChanged(Exception):
    """The columns seen since the bootstrap show another step: start over."""


# ---------------------------------------------------------------- the hub


class PollerLease(Protocol):
    """Who polls a series. `LocalLease` (one process) always grants it; `RedisLease`
    (lease.py, several portal processes on Redis) grants it to one process at a time.

    `renew_s` None: a grant lasts until released. Otherwise the hub calls `renew`
    every `renew_s` while it polls (False: the lease is lost, the poller stops) and
    `acquire` again every `renew_s` while it has viewers but no lease (takeover).
    """

    @property
    def renew_s(self) -> float | None: ...

    async def acquire(self, series: str) -> bool: ...

    async def renew(self, series: str) -> bool: ...

    async def release(self, series: str) -> None: ...


class LocalLease:
    """One process (the in-memory channel layer): this process always polls."""

    renew_s: float | None = None

    async def acquire(self, series: str) -> bool:
        return True

    async def renew(self, series: str) -> bool:
        return True

    async def release(self, series: str) -> None:
        return None


def default_lease() -> PollerLease:
    """RedisLease when REDIS_URL is set (several processes may share the channel layer),
    LocalLease otherwise."""
    from django.conf import settings

    url = getattr(settings, "REDIS_URL", "")
    if url:
        from keyviz.lease import RedisLease

        return RedisLease(url)
    return LocalLease()


class LiveHub:
    """This process's live state on one event loop: subscribers, pollers, node feeds."""

    def __init__(self, layer: Any = None, lease: PollerLease | None = None) -> None:
        if layer is None:
            from channels.layers import get_channel_layer

            layer = get_channel_layer()
        self.layer = layer
        self.lease: PollerLease = lease or LocalLease()
        self.linger_s = LINGER_S
        self.subscribers: Counter[str] = Counter()
        self.pollers: dict[str, SeriesPoller] = {}
        self.feeds: dict[str, EventFeed] = {}
        self.lost_leases = 0
        self._stops: dict[str, asyncio.TimerHandle] = {}
        # Per series with viewers, under a renewable lease: renew it, or retry acquiring it.
        self._keepers: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    async def subscribe(self, series: str) -> None:
        """A local viewer subscribed; the first one starts the series' poller."""
        if series not in SERIES:
            raise ValueError(f"unknown series {series!r}")
        async with self._lock:
            if self._closed:
                return
            self.subscribers[series] += 1
            stop = self._stops.pop(series, None)
            if stop is not None:
                stop.cancel()  # back within the grace: the poller never stopped
            if series not in self.pollers and await self.lease.acquire(series):
                self._start_poller(series)
            if self.lease.renew_s is not None and series not in self._keepers:
                self._keepers[series] = asyncio.get_running_loop().create_task(
                    self._keep(series, self.lease.renew_s), name=f"lease {series}"
                )

    def _start_poller(self, series: str) -> None:
        poller = self.pollers[series] = SeriesPoller(self, series)
        poller.start()

    async def _keep(self, series: str, every_s: float) -> None:
        """While this series has viewers here: renew the lease we poll under, or try to
        take it over (its holder may have died). A lost lease stops our poller."""
        while True:
            await asyncio.sleep(every_s)
            lost: SeriesPoller | None = None
            async with self._lock:
                if self._closed:
                    return
                poller = self.pollers.get(series)
                if poller is not None:
                    if not await self.lease.renew(series):
                        lost = self.pollers.pop(series)
                        self.lost_leases += 1
                elif self.subscribers[series] > 0 and await self.lease.acquire(series):
                    log.info("live poller %s: lease acquired, polling here", group_name(series))
                    self._start_poller(series)
            if lost is not None:
                log.warning("live poller %s: lease lost, stopping", group_name(series))
                await asyncio.shield(lost.stop())

    async def unsubscribe(self, series: str) -> None:
        """A local viewer left; when it was the last, the poller stops after `linger_s`
        (a reload or a reconnect does not restart it)."""
        async with self._lock:
            if self._closed or self.subscribers[series] <= 0:
                return
            self.subscribers[series] -= 1
            if self.subscribers[series] > 0:
                return
            del self.subscribers[series]
            if self.linger_s > 0:
                loop = asyncio.get_running_loop()
                self._stops[series] = loop.call_later(
                    self.linger_s, lambda: loop.create_task(self._stop_idle(series))
                )
                return
        await self._stop_idle(series)

    async def _stop_idle(self, series: str) -> None:
        async with self._lock:
            self._stops.pop(series, None)
            if self.subscribers[series] > 0:
                return
            self.subscribers.pop(series, None)
            poller = self.pollers.pop(series, None)
            keeper = self._keepers.pop(series, None)
        if keeper is not None:
            keeper.cancel()
        if poller is not None:
            await poller.stop()
            await self.lease.release(series)

    def step_ms(self, series: str) -> int | None:
        poller = self.pollers.get(series)
        return None if poller is None else poller.step_ms

    def recent(self, series: str) -> list[dict[str, Any]]:
        """The last final columns of a series (for a viewer that just subscribed)."""
        poller = self.pollers.get(series)
        return [] if poller is None else list(poller.recent)

    def status(self, series: str) -> dict[str, Any] | None:
        poller = self.pollers.get(series)
        return None if poller is None else poller.status

    def row_metadata(self, series: str, bucket_id: str) -> dict[str, Any] | None:
        poller = self.pollers.get(series)
        return None if poller is None else poller.catalog.meta.get(bucket_id)

    def acquire_feed(self, address: str, listener: FeedListener) -> EventFeed:
        feed = self.feeds.get(address)
        if feed is None:
            feed = self.feeds[address] = EventFeed(address)
        feed.add(listener)
        return feed

    def release_feed(self, address: str, listener: FeedListener) -> None:
        feed = self.feeds.get(address)
        if feed is not None and feed.remove(listener) == 0:
            del self.feeds[address]
            asyncio.get_running_loop().create_task(feed.close())

    async def close(self) -> None:
        """Stop every poller and feed and release the leases held, so another process
        takes the series over at once (shutdown, tests). Later calls do nothing."""
        async with self._lock:  # no subscribe or renewal half-way through
            self._closed = True
            for stop in self._stops.values():
                stop.cancel()
            self._stops.clear()
            for keeper in self._keepers.values():
                keeper.cancel()
            self._keepers.clear()
            pollers, self.pollers = dict(self.pollers), {}
        for series, poller in pollers.items():
            await poller.stop()
            await self.lease.release(series)
        self.subscribers.clear()
        for feed in list(self.feeds.values()):
            await feed.close()
        self.feeds.clear()
        close_lease = getattr(self.lease, "close", None)
        if close_lease is not None:
            await close_lease()


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LiveHub] = weakref.WeakKeyDictionary()


def live_hub() -> LiveHub:
    """The hub of the running event loop (daphne runs one; tests run one per test)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = LiveHub(lease=default_lease())
    return hub


async def close_live_hub() -> None:
    hub = _hubs.pop(asyncio.get_running_loop(), None)
    if hub is not None:
        await hub.close()


__all__ = [
    "ColumnAssembler",
    "EventFeed",
    "FinalColumn",
    "LeaderBook",
    "LiveHub",
    "LocalLease",
    "NodeColumn",
    "PollSchedule",
    "PollerLease",
    "SeriesPoller",
    "close_live_hub",
    "column_event",
    "columns_of",
    "default_lease",
    "group_name",
    "live_hub",
    "node_matrix_of",
    "render_column",
]
