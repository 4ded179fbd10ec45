"""When a merged column is final, and when a published one must be amended: pure bookkeeping.

DESIGN.md "Live heatmap" and merge rule 6. The collector (collector.py) feeds
one `SeriesLedger` per series with node columns already placed in slots by
the nodes' phase locks (align.py), and asks it which slots are now final and
which published ones changed. No I/O, no clock: `now_ms` is passed in, so
every rule here is unit-tested on its own (tests/unit/keyviz/test_keyviz_collector.py).

Rules:
- A slot is FINAL once every healthy node expected in it has reported a slot
  at or past it, or once `grace_ms` passed after the slot's end time. Nodes
  expected but absent are its `missing` nodes (their cells become unknown).
- A node is expected in a slot from the first slot it ever reported (a node's
  history before the collector first saw it is not "missing": it was never
  ours to lose). A node that never answered is expected from when it was
  first listed (`expect`).
- Slots are final in order. A run of empty slots longer than `max_gap` (the
  whole cluster down, or idle without flushing) is skipped, not published.
- A node column for a slot already final is an AMENDMENT of that slot (a late
  flush, a node back with its ring): the slot is reported again with the new
  contributor and fewer missing nodes. A column seen before (same node, same
  slot) is a duplicate and changes nothing, so a restarted collector that
  re-reads what it already took never doubles a column.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Empty slots in a row that are still published one by one (each all-unknown);
# a longer gap is skipped and the page shows no column there.
MAX_GAP_SLOTS = 120
# Published slots whose contributors are remembered (for amendments and duplicates).
KEEP_PUBLISHED_SLOTS = 4096


@dataclass(frozen=True)
class Finalized:
    """A slot that became final (`amend` False) or a published slot that changed."""

    slot: int
    contributors: dict[str, int]  # node -> its own column time
    missing: tuple[str, ...]
    amend: bool = False


@dataclass
class _Slot:
    contributors: dict[str, int] = field(default_factory=dict)
    expected: frozenset[str] = frozenset()


class SeriesLedger:
    """Which slots of one series are final / amended (see the module docstring)."""

    def __init__(
        self,
        step_ms: int,
        *,
        grace_ms: int | None = None,
        max_gap: int = MAX_GAP_SLOTS,
        keep: int = KEEP_PUBLISHED_SLOTS,
    ) -> None:
        if step_ms <= 0:
            raise ValueError("step_ms must be positive")
        self.step_ms = step_ms
        self.grace_ms = step_ms if grace_ms is None else grace_ms
        self.max_gap = max_gap
        self.keep = keep
        self.last_final: int | None = None
        self.duplicates = 0
        self._reported: dict[str, int] = {}  # node -> newest slot it reported
        self._first: dict[str, int] = {}  # node -> first slot it is expected in
        self._pending: dict[int, _Slot] = {}  # slots not final yet
        self._published: dict[int, _Slot] = {}  # recent final slots
        self._amended: set[int] = set()

    # -- input -----------------------------------------------------------------------------

    def expect(self, node: str, from_slot: int) -> None:
        """`node` is a member: expected from `from_slot` unless it reported earlier."""
        self._first.setdefault(node, from_slot)

    def forget(self, node: str) -> None:
        """`node` left the membership: no slot waits for it or misses it any more."""
        self._reported.pop(node, None)
        self._first.pop(node, None)

    def take(self, node: str, slot: int, node_ms: int) -> bool:
        """A node column placed in `slot`; False when it was taken before (duplicate)."""
        known = self._published.get(slot) or self._pending.get(slot)
        if known is not None and node in known.contributors:
            self.duplicates += 1
            return False
        self._reported[node] = max(slot, self._reported.get(node, slot))
        self._first[node] = min(slot, self._first.get(node, slot))
        if self.last_final is not None and slot <= self.last_final:
            record = self._published.get(slot)
            if record is None:
                # Too old to be remembered: amended from what the store holds.
                record = self._published[slot] = _Slot()
            record.contributors[node] = node_ms
            self._amended.add(slot)
            return True
        self._pending.setdefault(slot, _Slot()).contributors[node] = node_ms
        return True

    # -- output ----------------------------------------------------------------------------

    def reported(self, node: str) -> int | None:
        return self._reported.get(node)

    def due(self, healthy: Collection[str], now_ms: int) -> list[Finalized]:
        """Slots that became final (oldest first), then the published slots amended since
        the last call. `healthy`: the member nodes that answer (the others never hold a
        slot back)."""
        out: list[Finalized] = []
        live = set(healthy)
        while True:
            slot = self._next_slot()
            if slot is None:
                break
            if not any(r >= slot for r in self._reported.values()):
                break  # nobody has reported this slot yet: it is in the future
            expected = frozenset(n for n, first in self._first.items() if first <= slot)
            waiting = [n for n in expected & live if self._reported.get(n, slot - 1) < slot]
            if waiting and now_ms < slot * self.step_ms + self.grace_ms:
                break
            record = self._pending.pop(slot, None) or _Slot()
            record.expected = expected
            self.last_final = slot
            self._published[slot] = record
            self._amended.discard(slot)
            out.append(Finalized(slot, dict(record.contributors), self._missing(record)))
        for slot in sorted(self._amended):
            record = self._published[slot]
            out.append(Finalized(slot, dict(record.contributors), self._missing(record), True))
        self._amended.clear()
        self._trim()
        return out

    def next_deadline_ms(self) -> int | None:
        """When the next slot goes final by grace (None: nothing pending)."""
        slot = self._next_slot()
        if slot is None or not any(r >= slot for r in self._reported.values()):
            return None
        return slot * self.step_ms + self.grace_ms

    def _next_slot(self) -> int | None:
        if self.last_final is None:
            candidates = list(self._pending) or list(self._reported.values())
            return min(candidates) if candidates else None
        slot = self.last_final + 1
        if slot in self._pending:
            return slot
        ahead = min(self._pending, default=None)
        newest = max(self._reported.values(), default=slot)
        target = ahead if ahead is not None else newest
        if target - slot > self.max_gap:
            # A long empty run: skip it (see MAX_GAP_SLOTS).
            self.last_final = target - 1
            return target
        return slot

    @staticmethod
    def _missing(record: _Slot) -> tuple[str, ...]:
        return tuple(sorted(record.expected - set(record.contributors)))

    def _trim(self) -> None:
        if self.last_final is None:
            return
        oldest = self.last_final - self.keep
        for slot in [s for s in self._published if s <= oldest]:
            del self._published[slot]

    # -- persistence (CollectorState) -------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """What a restarted collector needs to continue: JSON-serialisable.

        Pending slots are not kept: their node columns are in the store and the
        collector reloads them (`restore_pending`)."""
        return {
            "step_ms": self.step_ms,
            "last_final": self.last_final,
            "reported": dict(self._reported),
            "first": dict(self._first),
            "published": {
                str(s): {"contributors": r.contributors, "expected": sorted(r.expected)}
                for s, r in self._published.items()
                if self.last_final is not None and s > self.last_final - 8
            },
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, grace_ms: int | None = None) -> SeriesLedger:
        ledger = cls(int(doc["step_ms"]), grace_ms=grace_ms)
        last = doc.get("last_final")
        ledger.last_final = None if last is None else int(last)
        ledger._reported = {str(n): int(s) for n, s in dict(doc.get("reported", {})).items()}
        ledger._first = {str(n): int(s) for n, s in dict(doc.get("first", {})).items()}
        for s, r in dict(doc.get("published", {})).items():
            ledger._published[int(s)] = _Slot(
                {str(n): int(t) for n, t in dict(r["contributors"]).items()},
                frozenset(str(n) for n in r["expected"]),
            )
        return ledger

    def restore_pending(self, slot: int, contributors: Iterable[tuple[str, int]]) -> None:
        """Node columns of a not-yet-final slot, read back from the store after a restart."""
        for node, node_ms in contributors:
            self.take(node, slot, node_ms)


__all__ = ["KEEP_PUBLISHED_SLOTS", "MAX_GAP_SLOTS", "Finalized", "SeriesLedger"]
