"""The KeyViz collector: one per cluster, across all portal processes.

DESIGN.md "KeyViz: the portal is the cluster's memory". Every `serve` process
(and the demo) starts a `Collector`; it works only while it holds the lease
`keyviz:collector` (lease.py: Redis when REDIS_URL is set, else this process).
The holder renews it every second; when it dies, another process takes over
within the lease's ttl and continues from the CollectorState in the database.

While holding the lease, every step, for every node and all four series:

1. new node columns come in: pushed by StreamEvents (feeds.EventFeed) where a
   node serves it, else one GetKeyVizMatrix per node and series just after the
   node's flush is due (feeds.PollSchedule), from the last column taken from it
   + 1 (on start: from the last column the store holds, or the whole ring);
2. each node column gets its slot from the node's phase lock (align.py) and is
   saved raw (store.save_node_columns);
3. the ledger of each series (finalize.py) says which merged columns are final
   (or amended); they are merged (assemble.py), saved (store.save_merged) and
   published to the channel layer group `keyviz.<series>` (messages.py);
4. the state (phases, per-node status, last columns, ledgers) is saved at most
   once a second; compaction and pruning run in a thread about once a minute.

A failing store write is logged and reported as the state's `last_error`; it
never stops the live stream.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cluster.discovery import discovery
from cluster.fanout import Node
from elastickv_admin import metrics
from elastickv_admin.config import portal_config
from keyviz import store
from keyviz.align import NodePhase, PhaseLock, infer_step_ms
from keyviz.assemble import (
    LeaderBook,
    RowBook,
    column_cells,
    column_from_event,
    columns_of,
    merge_slot,
)
from keyviz.budgets import MAX_ROWS
from keyviz.columns import MergedColumn, NodeColumn
from keyviz.feeds import EventFeed, FeedState, PollSchedule, normalize_series
from keyviz.finalize import Finalized, SeriesLedger
from keyviz.lease import COLLECTOR, Lease, default_lease, process_owner_id
from keyviz.matrix import MalformedMatrixError
from keyviz.messages import RowCatalog, column_event, group_name, summary_of, wall_ms
from keyviz.params import SERIES
from keyviz.service import current_leaders, fetch_node_matrices
from proto import admin_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")

STATE_KEY = COLLECTOR  # the CollectorState row
STATE_EVERY_S = 1.0
CLOSE_SAVE_S = 0.5
COMPACT_EVERY_S = 60.0
LEADERS_EVERY_S = 10.0
MEMBERS_EVERY_S = 5.0
# Final columns older than this many steps (a backfill, a long outage) are stored, not published.
MAX_PUBLISH_CATCH_UP = 120
# Published slots whose node columns stay in memory (older amendments read the store).
KEEP_SLOTS_IN_MEMORY = 64
# Node column times -> slot remembered per node (persisted: series fetched apart share them).
KEEP_TIMES = 64
STEP_RETRY_S = (0.5, 30.0)
SERIES_NAMES = {v: k for k, v in SERIES.items()}


def history_error(reason: str) -> str:
    return f"history not being recorded: {reason}"


@dataclass
class NodeTrack:
    """What the collector knows of one node."""

    node: Node
    last_ms: dict[int, int] = field(default_factory=dict)  # series -> newest column taken
    times: dict[int, int] = field(default_factory=dict)  # node column time -> slot
    ok: bool = True
    error: str | None = None
    code: str | None = None
    streaming: bool = False
    catch_up: bool = True  # poll once although streaming (columns before the stream)
    answered_ms: int = 0

    @property
    def label(self) -> str:
        return self.node.label

    def newest_ms(self) -> int:
        return max(self.last_ms.values(), default=0)


class Collector:
    """This process's collector (see the module docstring)."""

    def __init__(
        self,
        *,
        lease: Lease | None = None,
        layer: Any = None,
        owner: str | None = None,
        step_ms: int | None = None,
    ) -> None:
        """`step_ms`: the nodes' step, if not the configured one (benchmarks, tests)."""
        if layer is None:
            from channels.layers import get_channel_layer

            layer = get_channel_layer()
        self.layer = layer
        self.lease: Lease = lease or default_lease()
        self.owner = owner or getattr(self.lease, "owner", None) or process_owner_id()
        self.holding = False
        self.step_ms: int | None = None
        self._step_given = step_ms
        self.published = 0
        self.amended = 0
        self.last_error: str | None = None
        self.started_ms = wall_ms()
        self.catalog = RowCatalog()
        self._tracks: dict[str, NodeTrack] = {}  # by address
        self._feeds: dict[str, EventFeed] = {}
        self._lock: PhaseLock | None = None
        self._ledgers: dict[int, SeriesLedger] = {}
        self._pending: dict[int, dict[int, dict[str, NodeColumn]]] = {}  # series, slot, node
        self._schedule: PollSchedule | None = None
        self._leaders = LeaderBook()
        self._rowbook = RowBook()
        self._pushed: list[tuple[str, int, NodeColumn]] = []  # (address, series, column)
        self._transitions: deque[tuple[int, int]] = deque(maxlen=64)
        self._notices: list[tuple[str, dict[str, Any]]] = []  # (series, channel message)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._work: asyncio.Task[None] | None = None
        self._db = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="keyviz-store")
        self._compactor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="keyviz-compact"
        )
        self._compacting: concurrent.futures.Future[None] | None = None
        self._due: dict[str, float] = {}
        self._state_saved = 0.0
        self._closed = False

    # -- lifecycle: the lease ------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._hold(), name="keyviz collector")

    async def _hold(self) -> None:
        """Take the lease when free; collect while it is ours; stop when it is lost."""
        every = self.lease.renew_s or 1.0
        while True:
            if not self.holding and await self.lease.acquire(COLLECTOR):
                log.info("keyviz collector: lease acquired by %s, collecting here", self.owner)
                self.holding = True
                self._work = asyncio.get_running_loop().create_task(
                    self._collect_forever(), name="keyviz collect"
                )
            await asyncio.sleep(every)
            renewable = self.holding and self.lease.renew_s is not None
            if renewable and not await self.lease.renew(COLLECTOR):
                log.warning("keyviz collector: lease lost, stopping")
                await self._stop_work()

    async def _stop_work(self) -> None:
        self.holding = False
        work, self._work = self._work, None
        if work is not None:
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
        for feed in list(self._feeds.values()):
            await feed.close()
        self._feeds.clear()

    async def close(self) -> None:
        """Stop, save the state, release the lease (another process takes over at once)."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        was_holding = self.holding
        await self._stop_work()
        if was_holding:
            # Bounded: a store busy with a big write must not hold the lease past a
            # shutdown (the next holder copes with a state a second old).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._save_state(force=True), CLOSE_SAVE_S)
            await self.lease.release(COLLECTOR)
            log.info("keyviz collector: stopped, lease released")
        with contextlib.suppress(Exception):
            await self.lease.close()
        if self._compacting is not None:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(self._compacting)
        await self._in_db(_close_connections)
        self._db.shutdown(wait=False)
        self._compactor.submit(_close_connections)
        self._compactor.shutdown(wait=False)

    async def _collect_forever(self) -> None:
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
            except Exception:
                log.exception("keyviz collector failed; restarting in %.0f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 30.0)

    async def _sleep_until(self, when_ms: int | None) -> None:
        timeout = None if when_ms is None else max(0.0, (when_ms - wall_ms()) / 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    # -- the store, off the event loop -----------------------------------------------------------

    async def _in_db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    async def _store(self, what: str, fn: Callable[..., T], *args: Any) -> T | None:
        """A store write; a failure is logged and recorded, never raised (live goes on)."""
        try:
            result = await self._in_db(fn, *args)
        except store.StoreError as exc:
            self._store_failed(what, str(exc))
            return None
        except Exception as exc:  # a broken database must not stop the live stream either
            log.exception("keyviz store: %s failed", what)
            self._store_failed(what, f"{type(exc).__name__}: {exc}")
            return None
        return result

    def _store_failed(self, what: str, reason: str) -> None:
        if self.last_error != history_error(reason):
            log.warning("keyviz store: %s failed: %s", what, reason)
        self.last_error = history_error(reason)

    # -- bootstrap --------------------------------------------------------------------------------

    async def _bootstrap(self) -> None:
        """Continue from the saved state (or start), learn the step, backfill."""
        self._pending = {s: {} for s in SERIES.values()}
        self._tracks.clear()
        state = await self._store("load state", store.load_state, STATE_KEY) or {}
        await self._sync_nodes(force=True)
        configured = self._step_given or getattr(portal_config(), "keyviz_step_ms", None)
        saved_step = state.get("step_ms")
        step = configured or saved_step
        restored = bool(state) and saved_step == step and step is not None
        if restored:
            self._restore(state)
        fetched = await self._fetch_all(list(self._tracks.values()))
        if step is None:
            step = await self._infer_step(fetched)
        self.step_ms = step
        self._schedule = PollSchedule(step)
        if self._lock is None:
            self._lock = PhaseLock(step)
        for s in SERIES.values():
            self._ledgers.setdefault(
                s, SeriesLedger(step, grace_ms=step + self._schedule.margin_ms)
            )
        if restored:
            await self._reload_pending()
        now = wall_ms()
        for track in self._tracks.values():
            for ledger in self._ledgers.values():
                ledger.expect(track.label, now // step + 1)
        await self._refresh_leaders(force=True)
        await self._take_fetched(fetched)
        log.info(
            "keyviz collector: step %d ms, %d nodes, %s",
            step,
            len(self._tracks),
            "continuing from the saved state" if restored else "backfilling the nodes' rings",
        )

    def _restore(self, state: Mapping[str, Any]) -> None:
        step = int(state["step_ms"])
        phases = {n: NodePhase.from_dict(p) for n, p in dict(state.get("phases", {})).items()}
        self._lock = PhaseLock(step, phases)
        self._ledgers = {
            int(s): SeriesLedger.from_dict(doc) for s, doc in dict(state.get("ledgers", {})).items()
        }
        nodes = dict(state.get("nodes", {}))
        for track in self._tracks.values():
            saved = nodes.get(track.label)
            if saved is None:
                continue
            track.last_ms = {int(s): int(t) for s, t in dict(saved.get("last_ms", {})).items()}
            track.times = {int(t): int(s) for t, s in saved.get("times", [])}

    async def _reload_pending(self) -> None:
        """Node columns of slots not final when the last holder stopped: from the store."""
        assert self.step_ms is not None
        for series, ledger in self._ledgers.items():
            if ledger.last_final is None:
                continue
            newest = max((ledger.reported(t.label) or 0 for t in self._tracks.values()), default=0)
            for slot in range(ledger.last_final + 1, min(newest, ledger.last_final + 240) + 1):
                cols = await self._store(
                    "read node columns", store.node_columns_at, series, slot * self.step_ms
                )
                for c in cols or []:
                    if ledger.take(c.node, slot, c.column_unix_ms):
                        self._pending[series].setdefault(slot, {})[c.node] = c

    async def _infer_step(
        self, fetched: list[tuple[NodeTrack, int, list[NodeColumn] | None]]
    ) -> int:
        wait = STEP_RETRY_S[0]
        while True:
            times: dict[str, list[int]] = {}
            for track, series, cols in fetched:
                if series == admin_pb2.KEYVIZ_SERIES_WRITES and cols:
                    times[track.label] = [c.column_unix_ms for c in cols]
            step = infer_step_ms(times)
            if step is not None:
                return step
            log.info("keyviz collector: no node shows its step yet; retrying in %.1f s", wait)
            await asyncio.sleep(wait)
            wait = min(2 * wait, STEP_RETRY_S[1])
            fetched = await self._fetch_all(list(self._tracks.values()))

    # -- membership, feeds, leaders -------------------------------------------------------------

    async def _sync_nodes(self, *, force: bool = False) -> None:
        if not force and time.monotonic() < self._due.get("members", 0.0):
            return
        self._due["members"] = time.monotonic() + MEMBERS_EVERY_S
        nodes = await discovery().nodes()
        wanted = {n.address: n for n in nodes}
        for address in [a for a in self._tracks if a not in wanted]:
            gone = self._tracks.pop(address)
            feed = self._feeds.pop(address, None)
            if feed is not None:
                await feed.close()
            if self._schedule is not None:
                self._schedule.drop(address)
            for ledger in self._ledgers.values():
                ledger.forget(gone.label)
            if self._lock is not None:
                self._lock.forget(gone.label)
        for address, node in wanted.items():
            track = self._tracks.get(address)
            if track is None:
                track = self._tracks[address] = NodeTrack(node)
                feed = self._feeds[address] = EventFeed(address)
                feed.add(self)
                if self.step_ms is not None:
                    for ledger in self._ledgers.values():
                        ledger.expect(track.label, wall_ms() // self.step_ms + 1)
                if self._schedule is not None:
                    self._schedule.now(address, wall_ms())
            elif track.node != node:
                track.node = node

    def on_feed_state(self, address: str, state: FeedState, error: str | None) -> None:
        track = self._tracks.get(address)
        if track is None:
            return
        was = track.streaming
        track.streaming = state == "streaming"
        if track.streaming and not was:
            track.catch_up = True  # columns flushed before the stream opened: poll once
        if was and not track.streaming and self._schedule is not None:
            self._schedule.now(address, wall_ms())
        self._wake.set()

    def on_feed_event(self, address: str, event: admin_pb2.StreamEventsEvent) -> None:
        track = self._tracks.get(address)
        kind = event.WhichOneof("event")
        if track is not None and kind == "route_transition":
            self._take_transition(event.route_transition)
            self._wake.set()
        if track is None or kind != "keyviz_column":
            return
        column = event.keyviz_column
        series = normalize_series(column.series)
        if series not in SERIES_NAMES:
            return
        try:
            taken = column_from_event(track.label, column)
        except MalformedMatrixError as exc:
            self._failed(track, f"malformed KeyViz column: {exc.reason}", "MALFORMED")
            return
        self._pushed.append((address, series, taken))
        self._wake.set()

    def _take_transition(self, t: admin_pb2.RouteTransition) -> None:
        """A split or merge, pushed by every node: sent once to every series' viewers."""
        key = (t.parent_route_id, t.unix_ms)
        if key in self._transitions:
            return
        self._transitions.append(key)
        for name in SERIES:
            message = {
                "type": "route_transition",
                "series": name,
                "parent_route_id": t.parent_route_id,
                "child_route_ids": list(t.child_route_ids),
                "lineage_id": t.lineage_id,
                "unix_ms": t.unix_ms,
            }
            self._notices.append(
                (
                    name,
                    {"type": "keyviz.notice", "json": json.dumps(message, separators=(",", ":"))},
                )
            )

    async def _send_notices(self) -> None:
        notices, self._notices = self._notices, []
        for name, notice in notices:
            with contextlib.suppress(Exception):
                await self.layer.group_send(group_name(name), notice)

    async def _refresh_leaders(self, *, force: bool = False) -> None:
        if not force and time.monotonic() < self._due.get("leaders", 0.0):
            return
        self._due["leaders"] = time.monotonic() + LEADERS_EVERY_S
        taken = wall_ms()
        tracks = sorted(self._tracks.values(), key=lambda t: not t.ok)
        leaders = await current_leaders([t.node for t in tracks])
        if leaders:
            self._leaders.update({g: n for g, (n, _) in leaders.items()}, taken)

    # -- fetching ---------------------------------------------------------------------------------

    async def _fetch_all(
        self, tracks: Sequence[NodeTrack]
    ) -> list[tuple[NodeTrack, int, list[NodeColumn] | None]]:
        """Every series of every given node, from the column after the last one taken."""
        pairs = [(t, s) for t in tracks for s in SERIES.values()]
        requests = [
            admin_pb2.GetKeyVizMatrixRequest(
                series=s,  # type: ignore[arg-type]
                from_unix_ms=t.last_ms.get(s, -1) + 1,
                rows=MAX_ROWS,
            )
            for t, s in pairs
        ]
        answers = await fetch_node_matrices([t.node for t, _ in pairs], requests)
        out: list[tuple[NodeTrack, int, list[NodeColumn] | None]] = []
        failed: dict[str, tuple[str, str | None]] = {}
        for (t, s), (matrix, status) in zip(pairs, answers, strict=True):
            if matrix is None:
                failed.setdefault(t.node.address, (status.error or "failed", status.code))
                out.append((t, s, None))
            else:
                out.append((t, s, columns_of(matrix)))
        now = wall_ms()
        for t in tracks:
            if t.node.address in failed:
                self._failed(t, *failed[t.node.address])
            else:
                self._answered(t, now)
        return out

    def _failed(self, track: NodeTrack, error: str, code: str | None) -> None:
        track.ok, track.error, track.code = False, error, code

    def _answered(self, track: NodeTrack, now: int) -> None:
        track.ok, track.error, track.code = True, None, None
        track.answered_ms = now
        self._leaders.answered(track.label, now)

    # -- taking columns in ------------------------------------------------------------------------

    async def _take_fetched(
        self, fetched: list[tuple[NodeTrack, int, list[NodeColumn] | None]]
    ) -> None:
        by_node: dict[str, list[tuple[int, NodeColumn]]] = {}
        for track, series, cols in fetched:
            for c in cols or []:
                by_node.setdefault(track.node.address, []).append((series, c))
        await self._take(by_node)

    async def _take(self, by_address: Mapping[str, Sequence[tuple[int, NodeColumn]]]) -> None:
        """Slot each new node column, save it raw, hand it to its series' ledger."""
        assert self._lock is not None
        assert self.step_ms is not None
        saves: dict[int, list[tuple[int, NodeColumn]]] = {}
        for address, cols in by_address.items():
            track = self._tracks.get(address)
            if track is None:
                continue
            fresh = [(s, c) for s, c in cols if c.column_unix_ms > track.last_ms.get(s, -1)]
            self._assign(track, sorted({c.column_unix_ms for _, c in fresh}))
            for series, c in fresh:
                slot = track.times.get(c.column_unix_ms)
                track.last_ms[series] = max(c.column_unix_ms, track.last_ms.get(series, -1))
                if slot is None:
                    continue  # older than the lock's newest column: taken before
                self._rowbook.learn(c)
                if self._ledgers[series].take(track.label, slot, c.column_unix_ms):
                    saves.setdefault(series, []).append((slot * self.step_ms, c))
                    self._pending[series].setdefault(slot, {})[track.label] = c
        for series, items in saves.items():
            await self._store("save node columns", store.save_node_columns, series, items)

    def _assign(self, track: NodeTrack, times: Sequence[int]) -> None:
        assert self._lock is not None
        phase = self._lock.phases().get(track.label)
        last = phase.last_ms if phase is not None else -1
        new = [t for t in times if t > last and t not in track.times]
        if not new:
            return
        try:
            slots = self._lock.assign(track.label, new)
        except ValueError as exc:  # a duplicate slipped through: never let it stop the others
            log.warning("keyviz collector: %s: %s", track.label, exc)
            return
        track.times.update(zip(new, slots, strict=True))
        if len(track.times) > KEEP_TIMES:
            for t in sorted(track.times)[: len(track.times) - KEEP_TIMES]:
                del track.times[t]

    # -- one tick ---------------------------------------------------------------------------------

    async def _tick(self) -> None:
        assert self._schedule is not None
        assert self.step_ms is not None
        await self._sync_nodes()
        now = wall_ms()
        polled = [a for a, t in self._tracks.items() if not t.streaming]
        due = set(self._schedule.due(now, polled))
        tracks = [t for a, t in self._tracks.items() if a in due or t.catch_up]
        if tracks:
            for t in tracks:
                t.catch_up = False
            before = {t.node.address: t.newest_ms() for t in tracks}
            fetched = await self._fetch_all(tracks)
            await self._take_fetched(fetched)
            now = wall_ms()
            for t in tracks:
                address = t.node.address
                if not t.ok:
                    self._schedule.failed(address, now)
                elif t.newest_ms() > before[address]:
                    self._schedule.observed(address, t.newest_ms(), now)
                else:
                    self._schedule.missed(address, now)
        if self._pushed:
            pushed, self._pushed = self._pushed, []
            by_address: dict[str, list[tuple[int, NodeColumn]]] = {}
            for address, series, c in pushed:
                by_address.setdefault(address, []).append((series, c))
                track = self._tracks.get(address)
                if track is not None:
                    self._answered(track, wall_ms())
            await self._take(by_address)
        await self._send_notices()
        await self._refresh_leaders()
        await self._finalize()
        await self._save_state()
        self._maybe_compact()

    def _healthy(self) -> list[str]:
        return [t.label for t in self._tracks.values() if t.ok]

    async def _finalize(self) -> None:
        assert self.step_ms is not None
        now = wall_ms()
        merged: list[tuple[Finalized, MergedColumn]] = []
        for series, ledger in self._ledgers.items():
            for fin in ledger.due(self._healthy(), now):
                column = await self._merge(series, fin)
                merged.append((fin, column))
            self._drop_old(series, ledger)
        if not merged:
            return
        await self._store("save merged columns", store.save_merged, [c for _, c in merged])
        newest = max(c.column_unix_ms for _, c in merged)
        for fin, column in merged:
            if (
                not fin.amend
                and column.column_unix_ms <= newest - MAX_PUBLISH_CATCH_UP * self.step_ms
            ):
                continue  # backfill: stored; viewers read it from the matrix API
            await self._publish(column, fin)

    async def _merge(self, series: int, fin: Finalized) -> MergedColumn:
        assert self.step_ms is not None
        held = self._pending[series].get(fin.slot, {})
        columns = [held[n] for n in fin.contributors if n in held]
        if len(columns) < len(fin.contributors):
            # Not all in memory (an old slot amended): the store has every node's column.
            stored = await self._store(
                "read node columns", store.node_columns_at, series, fin.slot * self.step_ms
            )
            have = {c.node for c in columns}
            columns += [c for c in stored or [] if c.node not in have]
        return merge_slot(
            columns,
            series=series,
            column_unix_ms=fin.slot * self.step_ms,
            step_ms=self.step_ms,
            writes_merge=portal_config().writes_merge,
            missing=fin.missing,
            leaders=self._leaders,
            rowbook=self._rowbook,
        )

    def _drop_old(self, series: int, ledger: SeriesLedger) -> None:
        if ledger.last_final is None:
            return
        oldest = ledger.last_final - KEEP_SLOTS_IN_MEMORY
        pending = self._pending[series]
        for slot in [s for s in pending if s <= oldest]:
            del pending[slot]

    async def _publish(self, column: MergedColumn, fin: Finalized) -> None:
        assert self.step_ms is not None
        name = SERIES_NAMES[column.series]
        emitted = wall_ms()
        if not fin.amend:
            metrics.LIVE_COLUMN_LAG_SECONDS.labels(name).observe(
                max(0, emitted - column.column_unix_ms) / 1000
            )
        event = column_event(
            series=name,
            step_ms=self.step_ms,
            column_unix_ms=column.column_unix_ms,
            cells=column_cells(column),
            catalog=self.catalog,
            nodes=self.summary(late=[n for n in fin.missing if self._is_healthy(n)]),
            emitted_unix_ms=emitted,
            kind="amend" if fin.amend else "column",
        )
        try:
            await self.layer.group_send(group_name(name), event)
        except Exception:  # a channel layer hiccup loses one column, not the collector
            log.exception("keyviz collector: cannot publish %s", group_name(name))
            return
        if fin.amend:
            self.amended += 1
        else:
            self.published += 1

    def _is_healthy(self, label: str) -> bool:
        return any(t.label == label and t.ok for t in self._tracks.values())

    def _next_wake_ms(self) -> int:
        assert self._schedule is not None
        polled = [a for a, t in self._tracks.items() if not t.streaming or t.catch_up]
        candidates = [
            self._schedule.next_due_ms(polled),
            *(ledger.next_deadline_ms() for ledger in self._ledgers.values()),
            wall_ms() + int(STATE_EVERY_S * 1000),
        ]
        return min(c for c in candidates if c is not None)

    # -- status and state -------------------------------------------------------------------------

    def summary(self, late: Sequence[str] = ()) -> dict[str, Any]:
        """The `nodes` of a column message (README "Live stream protocol")."""
        return summary_of(self.node_status(), late)

    def node_status(self) -> list[dict[str, Any]]:
        now = wall_ms()
        out = []
        for t in sorted(self._tracks.values(), key=lambda t: t.label):
            newest = t.newest_ms()
            out.append(
                {
                    "node": t.label,
                    "address": t.node.address,
                    "ok": t.ok,
                    "error": t.error,
                    "code": t.code,
                    "last_column_ms": newest or None,
                    "lag_ms": now - newest if newest else None,
                    "streaming": t.streaming,
                }
            )
        return out

    def state(self) -> dict[str, Any]:
        assert self._lock is not None
        return {
            "step_ms": self.step_ms,
            "holder": self.owner,
            "heartbeat_ms": wall_ms(),
            "started_ms": self.started_ms,
            "last_error": self.last_error,
            "status": self.node_status(),
            "phases": {n: p.to_dict() for n, p in self._lock.phases().items()},
            "ledgers": {str(s): ledger.to_dict() for s, ledger in self._ledgers.items()},
            "last_final_ms": {
                SERIES_NAMES[s]: None
                if ledger.last_final is None
                else ledger.last_final * ledger.step_ms
                for s, ledger in self._ledgers.items()
            },
            "nodes": {
                t.label: {
                    "last_ms": {str(s): ms for s, ms in t.last_ms.items()},
                    "times": sorted(t.times.items())[-16:],
                }
                for t in self._tracks.values()
            },
            "published": self.published,
            "amended": self.amended,
        }

    async def _save_state(self, *, force: bool = False) -> None:
        if self._lock is None or self.step_ms is None:
            return
        if not force and time.monotonic() - self._state_saved < STATE_EVERY_S:
            return
        self._state_saved = time.monotonic()
        doc = self.state()
        try:
            await self._in_db(store.save_state, STATE_KEY, doc)
        except store.StoreError as exc:
            self._store_failed("save state", str(exc))
        except Exception as exc:
            log.exception("keyviz store: save state failed")
            self._store_failed("save state", f"{type(exc).__name__}: {exc}")

    def _maybe_compact(self) -> None:
        if time.monotonic() < self._due.get("compact", 0.0):
            return
        if self._compacting is not None and not self._compacting.done():
            return
        self._due["compact"] = time.monotonic() + COMPACT_EVERY_S
        self._compacting = self._compactor.submit(_compact_and_prune, wall_ms())


def _compact_and_prune(now_ms: int) -> None:
    compact: Callable[[int], Any] | None = getattr(store, "compact", None)
    prune: Callable[[int], int] | None = getattr(store, "prune", None)
    if compact is None or prune is None:
        return  # a store without tiers yet
    try:
        report = compact(now_ms)
        pruned = prune(now_ms)
        log.info("keyviz store: compacted %s, pruned %d", report, pruned)
    except Exception:
        log.exception("keyviz store: compaction failed")
    finally:
        _close_connections()


def _close_connections() -> None:
    from django.db import connections

    connections.close_all()


# ---------------------------------------------------------------- one collector per event loop

_collectors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Collector] = (
    weakref.WeakKeyDictionary()
)


def start_collector(**kwargs: Any) -> Collector:
    """This event loop's collector, started (daphne runs one loop; tests one per test)."""
    loop = asyncio.get_running_loop()
    collector = _collectors.get(loop)
    if collector is None:
        collector = _collectors[loop] = Collector(**kwargs)
        collector.start()
    return collector


def running_collector() -> Collector | None:
    return _collectors.get(asyncio.get_running_loop())


async def close_collector() -> None:
    collector = _collectors.pop(asyncio.get_running_loop(), None)
    if collector is not None:
        await collector.close()


__all__ = [
    "STATE_KEY",
    "Collector",
    "close_collector",
    "history_error",
    "running_collector",
    "start_collector",
]
