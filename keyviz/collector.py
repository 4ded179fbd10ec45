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
import contextlib
import logging
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from elastickv_admin.lib.config import portal_config
from keyviz import events, store
from keyviz.align import NodePhase, PhaseLock, infer_step_ms
from keyviz.assemble import (
    merge_slot,
)
from keyviz.columns import MergedColumn, NodeColumn
from keyviz.feeds import PollSchedule
from keyviz.finalize import Finalized, SeriesLedger
from keyviz.history import History
from keyviz.intake import SERIES_NAMES, Fetched, NodeIntake
from keyviz.lease import COLLECTOR, Lease, default_lease, process_owner_id
from keyviz.messages import wall_ms
from keyviz.params import SERIES
from keyviz.publish import Publisher
from proto import admin_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")

STATE_KEY = COLLECTOR  # the CollectorState row
STATE_EVERY_S = 1.0
CLOSE_SAVE_S = 0.5
STOP_WAIT_S = 0.5
# Final columns older than this many steps (a backfill, a long outage) are stored, not published.
MAX_PUBLISH_CATCH_UP = 120
# Published slots whose node columns stay in memory (older amendments read the store).
KEEP_SLOTS_IN_MEMORY = 64
STEP_RETRY_S = (0.5, 30.0)


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
        self.out = Publisher(layer)
        self.lease: Lease = lease or default_lease()
        self.owner = owner or getattr(self.lease, "owner", None) or process_owner_id()
        self.holding = False
        self.step_ms: int | None = None
        self._step_given = step_ms
        self.started_ms = wall_ms()
        self._wake = asyncio.Event()
        self.nodes = NodeIntake(self._wake)
        self._ledgers: dict[int, SeriesLedger] = {}
        self._pending: dict[int, dict[int, dict[str, NodeColumn]]] = {}  # series, slot, node
        self._task: asyncio.Task[None] | None = None
        self._work: asyncio.Task[None] | None = None
        self.history = History()
        self.events = events.EventObserver()
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
            # Bounded: the lease is released even if a call does not end at once.
            done, _ = await asyncio.wait({work}, timeout=STOP_WAIT_S)
            if not done:
                log.warning("keyviz collector: still stopping after %.1f s", STOP_WAIT_S)
        await self.nodes.close()

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
        await self.history.close()

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

    # -- bootstrap --------------------------------------------------------------------------------

    async def _bootstrap(self) -> None:
        """Continue from the saved state (or start), learn the step, backfill."""
        await self.nodes.close()
        self.nodes = NodeIntake(self._wake)
        self._ledgers = {}
        self._pending = {s: {} for s in SERIES.values()}
        state = await self.history.call("load state", store.load_state, STATE_KEY) or {}
        await self.nodes.sync_nodes(force=True)
        configured = self._step_given or getattr(portal_config(), "keyviz_step_ms", None)
        saved_step = state.get("step_ms")
        step = configured or saved_step
        restored = bool(state) and saved_step == step and step is not None
        if restored:
            self._restore(state)
        await self._resume_from_store()
        fetched = await self.nodes.fetch(list(self.nodes.tracks.values()))
        if step is None:
            step = await self._infer_step(fetched)
        self.step_ms = step
        self.nodes.schedule = PollSchedule(step)
        if self.nodes.lock is None:
            self.nodes.lock = PhaseLock(step)
        for s in SERIES.values():
            self._ledgers.setdefault(
                s, SeriesLedger(step, grace_ms=step + self.nodes.schedule.margin_ms)
            )
        if restored:
            await self._reload_pending()
        self._expect(self.nodes.healthy() + [t.label for t in self.nodes.tracks.values()])
        await self.nodes.refresh_leaders(force=True)
        await self._take(fetched)
        log.info(
            "keyviz collector: step %d ms, %d nodes, %s",
            step,
            len(self.nodes.tracks),
            "continuing from the saved state" if restored else "backfilling the nodes' rings",
        )

    async def _resume_from_store(self) -> None:
        """A node the state does not cover: ask it from after the last column the store
        holds from it (its whole ring when none), so nothing stored is taken twice."""
        for track in self.nodes.tracks.values():
            for s in SERIES.values():
                if s in track.last_ms:
                    continue
                last = await self.history.call(
                    "read the last node column", store.latest_node_column_ms, s, track.label
                )
                if last is not None:
                    track.last_ms[s] = last

    def _expect(self, labels: Sequence[str]) -> None:
        """Nodes listed from now on: missing from the next slot unless they report."""
        assert self.step_ms is not None
        for label in labels:
            for ledger in self._ledgers.values():
                ledger.expect(label, wall_ms() // self.step_ms + 1)

    def _restore(self, state: Mapping[str, Any]) -> None:
        step = int(state["step_ms"])
        phases = {n: NodePhase.from_dict(p) for n, p in dict(state.get("phases", {})).items()}
        self.nodes.lock = PhaseLock(step, phases)
        self._ledgers = {
            int(s): SeriesLedger.from_dict(doc) for s, doc in dict(state.get("ledgers", {})).items()
        }
        self.nodes.restore(dict(state.get("nodes", {})))

    async def _reload_pending(self) -> None:
        """Node columns of slots not final when the last holder stopped: from the store."""
        assert self.step_ms is not None
        for series, ledger in self._ledgers.items():
            if ledger.last_final is None:
                continue
            newest = max(
                (ledger.reported(t.label) or 0 for t in self.nodes.tracks.values()), default=0
            )
            for slot in range(ledger.last_final + 1, min(newest, ledger.last_final + 240) + 1):
                cols = await self.history.call(
                    "read node columns", store.node_columns_at, series, slot * self.step_ms
                )
                for c in cols or []:
                    if ledger.take(c.node, slot, c.column_unix_ms):
                        self._pending[series].setdefault(slot, {})[c.node] = c

    async def _infer_step(self, fetched: Fetched) -> int:
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
            fetched = await self.nodes.fetch(list(self.nodes.tracks.values()))

    # -- one tick ---------------------------------------------------------------------------------

    async def _tick(self) -> None:
        joined, left = await self.nodes.sync_nodes()
        self._expect(joined)
        for label in left:
            for ledger in self._ledgers.values():
                ledger.forget(label)
        tracks = self.nodes.due(wall_ms())
        fetched: Fetched = []
        if tracks:
            before = {t.node.address: t.newest_ms() for t in tracks}
            fetched = await self.nodes.fetch(tracks)
        pushed, self.nodes.pushed = self.nodes.pushed, []
        await self._take(fetched, pushed)
        if tracks:
            self.nodes.polled(tracks, before)
        self.out.status_changed(self.nodes.status())
        for name, message in self.nodes.take_notices():
            self.out.notice(name, message)
        await self.out.send_notices()
        await self.nodes.refresh_leaders()
        await self._observe_events(joined, left)
        await self._finalize()
        await self._save_state()
        self.history.maybe_compact(wall_ms())

    async def _observe_events(self, joined: Sequence[str], left: Sequence[str]) -> None:
        """The cluster timeline (keyviz/events.py): what changed since the last tick."""
        pushed, self.nodes.route_transitions = self.nodes.route_transitions, []
        self.events.transitions(pushed)
        catalog = await self.events.catalog_if_due(
            [t.node for t in sorted(self.nodes.tracks.values(), key=lambda t: not t.ok)]
        )
        tracks = self.nodes.tracks.values()
        off = {t.label for t in tracks if not t.ok and events.keyviz_off(t.code, t.reachable)}
        seen = self.events.observe(
            wall_ms(),
            joined=joined,
            left=left,
            nodes_ok={t.label: (t.ok or t.label in off, t.error) for t in tracks},
            leaders=self.nodes.leader_terms,
            leaders_taken_ms=self.nodes.leader_terms_ms,
            catalog=catalog,
            keyviz_off=off,
        )
        if not seen:
            return
        await self.history.call("save events", events.save, seen)
        # Recorded: to every series' viewers at once (README "Live stream protocol").
        for e in seen:
            message = {"type": "event", "event": events.to_json(e)}
            for name in SERIES:
                self.out.notice(name, message)
        await self.out.send_notices()

    async def _take(
        self, fetched: Fetched, pushed: Sequence[tuple[str, int, NodeColumn]] = ()
    ) -> None:
        """Each new node column, in its slot: saved raw and handed to its series' ledger."""
        assert self.step_ms is not None
        saves: dict[int, list[tuple[int, NodeColumn]]] = {}
        for series, slot, c in self.nodes.slotted(fetched, pushed):
            if self._ledgers[series].take(c.node, slot, c.column_unix_ms):
                saves.setdefault(series, []).append((slot * self.step_ms, c))
                self._pending[series].setdefault(slot, {})[c.node] = c
        for series, items in saves.items():
            await self.history.call("save node columns", store.save_node_columns, series, items)

    async def _finalize(self) -> None:
        assert self.step_ms is not None
        now = wall_ms()
        merged: list[tuple[Finalized, MergedColumn]] = []
        for series, ledger in self._ledgers.items():
            for fin in ledger.due(self.nodes.healthy(), now):
                column = await self._merge(series, fin)
                merged.append((fin, column))
            self._drop_old(series, ledger)
        if not merged:
            return
        await self.history.call("save merged columns", store.save_merged, [c for _, c in merged])
        newest = max(c.column_unix_ms for _, c in merged)
        for fin, column in merged:
            if (
                not fin.amend
                and column.column_unix_ms <= newest - MAX_PUBLISH_CATCH_UP * self.step_ms
            ):
                continue  # backfill: stored; viewers read it from the matrix API
            late = [n for n in fin.missing if self.nodes.is_healthy(n)]
            await self.out.column(column, amend=fin.amend, status=self.nodes.status(), late=late)

    async def _merge(self, series: int, fin: Finalized) -> MergedColumn:
        assert self.step_ms is not None
        held = self._pending[series].get(fin.slot, {})
        columns = [held[n] for n in fin.contributors if n in held]
        if len(columns) < len(fin.contributors):
            # Not all in memory (an old slot amended): the store has every node's column.
            stored = await self.history.call(
                "read node columns", store.node_columns_at, series, fin.slot * self.step_ms
            )
            have = {c.node for c in columns}
            columns += [c for c in stored or [] if c.node not in have]
        # Off the loop: a backfill merges hundreds of slots.
        return await asyncio.to_thread(
            merge_slot,
            columns,
            series=series,
            column_unix_ms=fin.slot * self.step_ms,
            step_ms=self.step_ms,
            writes_merge=portal_config().writes_merge,
            missing=fin.missing,
            leaders=self.nodes.leaders,
            rowbook=self.nodes.rowbook,
        )

    def _drop_old(self, series: int, ledger: SeriesLedger) -> None:
        if ledger.last_final is None:
            return
        oldest = ledger.last_final - KEEP_SLOTS_IN_MEMORY
        pending = self._pending[series]
        for slot in [s for s in pending if s <= oldest]:
            del pending[slot]

    def _next_wake_ms(self) -> int:
        candidates = [
            self.nodes.next_poll_ms(),
            *(ledger.next_deadline_ms() for ledger in self._ledgers.values()),
            wall_ms() + int(STATE_EVERY_S * 1000),
        ]
        return min(c for c in candidates if c is not None)

    # -- status and state -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The CollectorState document (README "Live stream protocol", DESIGN "KeyViz")."""
        assert self.nodes.lock is not None
        return {
            "step_ms": self.step_ms,
            "holder": self.owner,
            "heartbeat_ms": wall_ms(),
            "started_ms": self.started_ms,
            "last_error": self.history.last_error,
            "last_error_ms": self.history.last_error_ms,
            "status": self.nodes.status(),
            "phases": {n: p.to_dict() for n, p in self.nodes.lock.phases().items()},
            "ledgers": {str(s): ledger.to_dict() for s, ledger in self._ledgers.items()},
            "last_final_ms": {
                SERIES_NAMES[s]: None
                if ledger.last_final is None
                else ledger.last_final * ledger.step_ms
                for s, ledger in self._ledgers.items()
            },
            "nodes": self.nodes.to_state(),
            "published": self.out.published,
            "amended": self.out.amended,
        }

    async def _save_state(self, *, force: bool = False) -> None:
        if self.nodes.lock is None or self.step_ms is None:
            return
        if not force and time.monotonic() - self._state_saved < STATE_EVERY_S:
            return
        self._state_saved = time.monotonic()
        await self.history.call("save state", store.save_state, STATE_KEY, self.state())


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
    "running_collector",
    "start_collector",
]
