"""The collector's side of the nodes: membership, fetches and pushes, slots, per-node status.

collector.py decides what is final and publishes; this module gets it the
node columns, each with its slot:

- membership from discovery, one `NodeTrack` per node, one StreamEvents feed
  per node (feeds.py); polled nodes asked when their flush is due (PollSchedule);
- GetKeyVizMatrix for the four series of a node at once, from the column after
  the last one taken from it (`from_unix_ms`), through the one node client and
  fan-out (service.fetch_node_matrices over cluster/fanout.py: deadlines, per-node
  status, each answer decoded as it arrives);
- each new node column through the node's phase lock (align.PhaseLock). The
  four series of one flush share its time, so the lock is asked once per new
  time and each series finds its slot by time (`NodeTrack.times`);
- the Raft group leaders (LeaderBook) for the unknown cells of missing nodes, as
  discovery's GetClusterOverview named them (no node is asked for it here);
- route transitions pushed by the nodes, once each, as notices for the viewers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cluster.diagnose import status_json
from cluster.fanout import Node, NodeStatus
from cluster.runtime import discovery
from keyviz.align import PhaseLock
from keyviz.assemble import LeaderBook, RowBook, column_from_event, columns_of
from keyviz.budgets import MAX_ROWS
from keyviz.columns import NodeColumn
from keyviz.feeds import EventFeed, FeedState, PollSchedule, normalize_series
from keyviz.matrix import MalformedMatrixError
from keyviz.messages import wall_ms
from keyviz.params import SERIES
from keyviz.service import current_leaders, fetch_node_matrices
from proto import admin_pb2

log = logging.getLogger(__name__)

LEADERS_EVERY_S = 10.0
MEMBERS_EVERY_S = 5.0
# Node column times -> slot remembered per node (series fetched apart share them).
KEEP_TIMES = 64
SERIES_NAMES = {v: k for k, v in SERIES.items()}

Fetched = list[tuple["NodeTrack", int, list[NodeColumn] | None]]


@dataclass
class NodeTrack:
    """What the collector knows of one node."""

    node: Node
    last_ms: dict[int, int] = field(default_factory=dict)  # series -> newest column taken
    times: dict[int, int] = field(default_factory=dict)  # node column time -> slot
    ok: bool = True
    error: str | None = None
    code: str | None = None
    reachable: bool | None = None  # None: not heard from yet
    detail: str | None = None  # the node's own words on its last failure
    last_seen_ms: int | None = None  # when it last answered (unix ms)
    streaming: bool = False
    catch_up: bool = True  # poll once although streaming (columns before the stream)

    @property
    def label(self) -> str:
        return self.node.label

    def newest_ms(self) -> int:
        return max(self.last_ms.values(), default=0)


class NodeIntake:
    """The nodes as the collector sees them (see the module docstring)."""

    def __init__(self, wake: asyncio.Event) -> None:
        self.wake = wake
        self.tracks: dict[str, NodeTrack] = {}  # by address
        self.feeds: dict[str, EventFeed] = {}
        self.lock: PhaseLock | None = None
        self.schedule: PollSchedule | None = None
        self.leaders = LeaderBook()
        # The newest overview as asked, with terms (for the cluster timeline, events.py).
        self.leader_terms: dict[int, tuple[str, int]] = {}
        self.leader_terms_ms = 0
        self.rowbook = RowBook()
        self.pushed: list[tuple[str, int, NodeColumn]] = []  # (address, series, column)
        self.notices: list[tuple[str, dict[str, Any]]] = []  # (series, client message)
        self._transitions: deque[tuple[int, int]] = deque(maxlen=64)
        # Route transitions pushed since the collector last asked (for the timeline).
        self.route_transitions: list[tuple[int, tuple[int, ...], int]] = []
        self._due: dict[str, float] = {}

    # -- membership -------------------------------------------------------------------------

    async def sync_nodes(self, *, force: bool = False) -> tuple[list[str], list[str]]:
        """Follow the membership; (labels of nodes that joined, labels of nodes that left)."""
        if not force and time.monotonic() < self._due.get("members", 0.0):
            return [], []
        self._due["members"] = time.monotonic() + MEMBERS_EVERY_S
        wanted = {n.address: n for n in await discovery().nodes()}
        joined, left = [], []
        for address in [a for a in self.tracks if a not in wanted]:
            gone = self.tracks.pop(address)
            left.append(gone.label)
            feed = self.feeds.pop(address, None)
            if feed is not None:
                await feed.close()
            if self.schedule is not None:
                self.schedule.drop(address)
            if self.lock is not None:
                self.lock.forget(gone.label)
        for address, node in wanted.items():
            track = self.tracks.get(address)
            if track is None:
                track = self.tracks[address] = NodeTrack(node)
                joined.append(track.label)
                feed = self.feeds[address] = EventFeed(address)
                feed.add(self)
                if self.schedule is not None:
                    self.schedule.now(address, wall_ms())
            elif track.node != node:
                track.node = node
        self.leaders.retain({t.label for t in self.tracks.values()})
        return joined, left

    async def close(self) -> None:
        """Close the node streams (what is known of the nodes stays, for the state)."""
        for feed in list(self.feeds.values()):
            await feed.close()
        self.feeds.clear()

    def healthy(self) -> list[str]:
        return [t.label for t in self.tracks.values() if t.ok]

    def is_healthy(self, label: str) -> bool:
        return any(t.label == label and t.ok for t in self.tracks.values())

    # -- StreamEvents -----------------------------------------------------------------------

    def on_feed_state(self, address: str, state: FeedState, error: str | None) -> None:
        track = self.tracks.get(address)
        if track is None:
            return
        was = track.streaming
        track.streaming = state == "streaming"
        if track.streaming and not was:
            track.catch_up = True  # columns flushed before the stream opened: poll once
        if was and not track.streaming and self.schedule is not None:
            self.schedule.now(address, wall_ms())
        self.wake.set()

    def on_feed_event(self, address: str, event: admin_pb2.StreamEventsEvent) -> None:
        track = self.tracks.get(address)
        if track is None:
            return
        kind = event.WhichOneof("event")
        if kind == "route_transition":
            self._take_transition(event.route_transition)
            self.wake.set()
            return
        if kind != "keyviz_column":
            return
        column = event.keyviz_column
        series = normalize_series(column.series)
        if series not in SERIES_NAMES:
            return
        try:
            taken = column_from_event(track.label, column)
        except MalformedMatrixError as exc:
            self.failed(track, f"malformed KeyViz column: {exc.reason}", "MALFORMED", True)
            return
        self.pushed.append((address, series, taken))
        self.answered(track, wall_ms())
        self.wake.set()

    def _take_transition(self, t: admin_pb2.RouteTransition) -> None:
        """A split or merge, pushed by every node: sent once to every series' viewers."""
        key = (t.parent_route_id, t.unix_ms)
        if key in self._transitions:
            return
        self._transitions.append(key)
        self.route_transitions.append((t.parent_route_id, tuple(t.child_route_ids), t.unix_ms))
        for name in SERIES:
            message = {
                "type": "route_transition",
                "series": name,
                "parent_route_id": t.parent_route_id,
                "child_route_ids": list(t.child_route_ids),
                "lineage_id": t.lineage_id,
                "unix_ms": t.unix_ms,
            }
            self.notices.append((name, message))

    def take_notices(self) -> list[tuple[str, dict[str, Any]]]:
        """Messages for the viewers gathered from the feeds since the last call."""
        notices, self.notices = self.notices, []
        return notices

    # -- polling ----------------------------------------------------------------------------

    def due(self, now_ms: int) -> list[NodeTrack]:
        """The nodes to ask now: polled ones whose flush is due, and catch-ups."""
        assert self.schedule is not None
        polled = [a for a, t in self.tracks.items() if not t.streaming]
        due = set(self.schedule.due(now_ms, polled))
        tracks = [t for a, t in self.tracks.items() if a in due or t.catch_up]
        for t in tracks:
            t.catch_up = False
        return tracks

    def polled(self, tracks: Sequence[NodeTrack], before: Mapping[str, int]) -> None:
        """Reschedule polled nodes after their answers (before: newest column per address)."""
        assert self.schedule is not None
        now = wall_ms()
        for t in tracks:
            address = t.node.address
            if not t.ok:
                self.schedule.failed(address, now)
            elif t.newest_ms() > before[address]:
                self.schedule.observed(address, t.newest_ms(), now)
            else:
                self.schedule.missed(address, now)

    def next_poll_ms(self) -> int | None:
        assert self.schedule is not None
        polled = [a for a, t in self.tracks.items() if not t.streaming or t.catch_up]
        return self.schedule.next_due_ms(polled)

    async def fetch(self, tracks: Sequence[NodeTrack]) -> Fetched:
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
        out: Fetched = []
        failed: dict[str, NodeStatus] = {}
        for (t, s), (matrix, status) in zip(pairs, answers, strict=True):
            if matrix is None:
                failed.setdefault(t.node.address, status)
                out.append((t, s, None))
            else:
                out.append((t, s, columns_of(matrix)))
        now = wall_ms()
        for t in tracks:
            bad = failed.get(t.node.address)
            if bad is not None:
                self.failed(t, bad.error or "failed", bad.code, bad.reachable, bad.detail)
            else:
                self.answered(t, now)
        return out

    def failed(
        self,
        track: NodeTrack,
        error: str,
        code: str | None,
        reachable: bool | None,
        detail: str | None = None,
    ) -> None:
        track.ok, track.error, track.code = False, error, code
        track.reachable, track.detail = reachable, detail

    def answered(self, track: NodeTrack, now: int) -> None:
        track.ok, track.error, track.code = True, None, None
        track.reachable, track.detail, track.last_seen_ms = True, None, now
        self.leaders.answered(track.label, now)

    async def refresh_leaders(self, *, force: bool = False) -> None:
        if not force and time.monotonic() < self._due.get("leaders", 0.0):
            return
        self._due["leaders"] = time.monotonic() + LEADERS_EVERY_S
        taken = wall_ms()
        leaders = await current_leaders(max_age_s=LEADERS_EVERY_S)
        if leaders:
            self.leaders.update({g: n for g, (n, _) in leaders.items()}, taken)
            self.leader_terms, self.leader_terms_ms = dict(leaders), taken

    # -- slots ------------------------------------------------------------------------------

    def slotted(
        self, fetched: Fetched, pushed: Sequence[tuple[str, int, NodeColumn]] = ()
    ) -> list[tuple[int, int, NodeColumn]]:
        """(series, slot, column) of every NEW node column, in each node's time order."""
        by_address: dict[str, list[tuple[int, NodeColumn]]] = {}
        for asked, series, answer in fetched:
            for c in answer or []:
                by_address.setdefault(asked.node.address, []).append((series, c))
        for address, series, c in pushed:
            by_address.setdefault(address, []).append((series, c))
        out: list[tuple[int, int, NodeColumn]] = []
        for address, taken in by_address.items():
            track = self.tracks.get(address)
            if track is None:
                continue
            fresh = [(s, c) for s, c in taken if c.column_unix_ms > track.last_ms.get(s, -1)]
            slots = self._assign(track, sorted({c.column_unix_ms for _, c in fresh}))
            newest: dict[int, NodeColumn] = {}
            for series, c in fresh:
                slot = slots.get(c.column_unix_ms, track.times.get(c.column_unix_ms))
                track.last_ms[series] = max(c.column_unix_ms, track.last_ms.get(series, -1))
                if slot is None:
                    continue  # older than the lock's newest column: taken before
                out.append((series, slot, c))
                if c.column_unix_ms >= newest.get(series, c).column_unix_ms:
                    newest[series] = c
            # Rows' groups change rarely: the newest column says (a backfill of a whole ring
            # is not walked row by row).
            for c in newest.values():
                self.rowbook.learn(c)
        return out

    def _assign(self, track: NodeTrack, times: Sequence[int]) -> dict[int, int]:
        """Slots of the node's new column times (all of them: a backfill brings a whole
        ring); the newest KEEP_TIMES stay remembered for series fetched later."""
        assert self.lock is not None
        phase = self.lock.phases().get(track.label)
        last = phase.last_ms if phase is not None else -1
        new = [t for t in times if t > last and t not in track.times]
        if not new:
            return {}
        try:
            slots = dict(zip(new, self.lock.assign(track.label, new), strict=True))
        except ValueError as exc:  # a duplicate slipped through: never stop the others
            log.warning("keyviz collector: %s: %s", track.label, exc)
            return {}
        track.times.update(slots)
        if len(track.times) > KEEP_TIMES:
            for t in sorted(track.times)[: len(track.times) - KEEP_TIMES]:
                del track.times[t]
        return slots

    # -- status and persistence -------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Per node, the one per-node status shape (cluster/diagnose.py status_json: ok or
        failed with its diagnosis) plus the collector's newest column, lag, streaming."""
        now = wall_ms()
        out = []
        for t in sorted(self.tracks.values(), key=lambda t: t.label):
            newest = t.newest_ms()
            status = NodeStatus(
                t.label,
                t.node.address,
                t.ok,
                t.error,
                None,
                t.code,
                state="up" if t.ok else "down",
                last_seen_ms=t.last_seen_ms,
                reachable=t.reachable,
                detail=t.detail,
            )
            out.append(
                status_json(status, keyviz=True)
                | {
                    "last_column_ms": newest or None,
                    "lag_ms": now - newest if newest else None,
                    "streaming": t.streaming,
                }
            )
        return out

    def to_state(self) -> dict[str, Any]:
        return {
            t.label: {
                "last_ms": {str(s): ms for s, ms in t.last_ms.items()},
                "times": sorted(t.times.items())[-16:],
            }
            for t in self.tracks.values()
        }

    def restore(self, nodes: Mapping[str, Any]) -> None:
        for track in self.tracks.values():
            saved = nodes.get(track.label)
            if saved is None:
                continue
            track.last_ms = {int(s): int(t) for s, t in dict(saved.get("last_ms", {})).items()}
            track.times = {int(t): int(s) for t, s in saved.get("times", [])}


__all__ = ["SERIES_NAMES", "Fetched", "NodeIntake", "NodeTrack"]
