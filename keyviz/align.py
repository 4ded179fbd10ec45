"""Phase-locked column alignment: which merged slot each node column belongs to.

Why a lock per node (DESIGN.md "Merge rules", rule 1; CONTRACT.md "More facts
about real nodes"):

- An elastickv node flushes a KeyViz column every `--keyvizStep` on its own
  timer, started at its own boot. A column's timestamp is the END of its window
  (the moment the node flushed it), so each node's timestamps sit at its own
  phase within the step, and two nodes' phases can be anywhere apart,
  including near half a step.
- Under load a flush is LATE, never early: 0-280 ms usually, occasionally much
  later. The earliest flushes of a node therefore show its true phase.
- A restart starts a new timer (the phase moves) and loses the node's ring; a
  node that is down flushes nothing (its columns are missed, not late).

Rounding each column's own time to the nearest step boundary (what the old
merge did) sends a node whose phase is near half a step to the next slot
whenever it flushes a little late: an empty merged column followed by a doubled
one. So each node column goes through its node's lock:

- The lock keeps an anchor at the node's earliest-flush phase, with the slot of
  that reference column (`anchor_slot`, fixed for the epoch, so a phase within
  1% of half a step never flips between slots).
- A column at t is at lattice index k = floor((t - anchor + tol) / step) (tol, a
  few % of a step, absorbs the anchor estimate's own error); its nominal time is
  anchor + k * step and its slot anchor_slot + k. Late flushes up to about 90%
  of a step stay at their own k.
- A column that flushes earlier than the anchor (within tol) lowers the anchor
  without moving past assignments. A column that would land on the node's last
  slot or before is a tick the anchor did not expect (the anchor was a late
  flush, or the node restarted with an earlier phase): it takes the next slot
  and becomes the anchor.
- After a gap (k skips a slot: the node missed columns) a column at another
  phase re-anchors from scratch: slot = round-half-up(t / step), still after
  the last slot. Several consecutive columns at a persistent new phase (a quick
  restart, no gap) move the anchor there without moving any slot. Each
  re-anchor starts a new epoch.
- Returned slots always strictly increase: no two columns of a node share a
  slot (no spike), and a skipped slot means the node really missed a column
  (its cells are unknown, not zero).

When one `assign` call brings a node's first columns (a backfill of its ring),
the anchor comes from the leading columns together: the phase that makes their
total lateness smallest, so one late first column does not set it.

A merged slot s is the column whose window ENDS at s * step_ms.

Limits, by design: a node's very first column, or its first after a restart,
taken alone (live, one column per call) sets the anchor; if that flush was late
across half a step, that node's columns sit one slot late until its next
restart (never doubled, never skipped). A backfill (several columns in one call)
does not have this problem.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# Anchor tolerance as a fraction of the step (the anchor may sit this much late).
TOL_FRACTION = 20  # tol = step // 20 = 5%
# This many consecutive columns at another phase (and no gap) move the anchor.
PHASE_MOVE_COLUMNS = 4
# A backfill's anchor is estimated from at most this many leading columns.
ANCHOR_LOOKAHEAD = 16
# infer_step_ms measures the step over pairs of columns this many apart.
SLOPE_SPAN = 8


def round_half_up_div(t: int, step: int) -> int:
    """round(t / step) with halves rounding up, exact in integers."""
    return (2 * t + step) // (2 * step)


@dataclass
class NodePhase:
    """Where one node's flush timer stands; JSON-serialisable for the collector's state.

    `anchor_ms` is the nominal flush time of a reference column (the earliest-flush
    estimate) and `anchor_slot` its slot; `last_ms`/`last_slot` the newest column
    assigned. `move_*` track a run of columns at another phase (no gap): how many,
    and the one with the earliest phase (its time and slot).
    """

    anchor_ms: int
    anchor_slot: int
    last_ms: int
    last_slot: int
    epoch: int = 0
    move_count: int = 0
    move_ms: int = 0
    move_slot: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> NodePhase:
        """The inverse of to_dict; ValueError naming the field that is wrong."""
        if not isinstance(doc, Mapping):
            raise ValueError(f"node phase must be an object, got {type(doc).__name__}")
        values: dict[str, int] = {}
        for name in ("anchor_ms", "anchor_slot", "last_ms", "last_slot"):
            values[name] = _int_field(doc, name, required=True)
        for name in ("epoch", "move_count", "move_ms", "move_slot"):
            values[name] = _int_field(doc, name, required=False)
        if values["epoch"] < 0 or values["move_count"] < 0:
            raise ValueError("node phase: epoch and move_count must not be negative")
        return cls(**values)


def _int_field(doc: Mapping[str, Any], name: str, *, required: bool) -> int:
    if name not in doc:
        if required:
            raise ValueError(f"node phase: {name} is missing")
        return 0
    value: object = doc[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"node phase: {name} must be an integer, got {value!r}")
    return value


class PhaseLock:
    """Assigns each node's columns to merged slots, one phase lock per node."""

    def __init__(self, step_ms: int, phases: Mapping[str, NodePhase] | None = None) -> None:
        if isinstance(step_ms, bool) or not isinstance(step_ms, int) or step_ms < 1:
            raise ValueError(f"step_ms must be a positive whole number of ms, got {step_ms!r}")
        self.step_ms = step_ms
        self.tol_ms = max(1, step_ms // TOL_FRACTION)
        self._phases: dict[str, NodePhase] = {
            node: NodePhase(**phase.to_dict()) for node, phase in (phases or {}).items()
        }

    def phases(self) -> dict[str, NodePhase]:
        """A copy of every node's phase (to persist; from_dict restores it)."""
        return {node: NodePhase(**p.to_dict()) for node, p in self._phases.items()}

    def forget(self, node: str) -> None:
        """Drop a node's lock (it left the cluster); its next column starts afresh."""
        self._phases.pop(node, None)

    def assign(self, node: str, column_unix_ms: Sequence[int]) -> list[int]:
        """Slots for the node's NEW columns, in order.

        The times must strictly increase and be later than the last column
        assigned for this node (older ones are the caller's duplicates):
        ValueError otherwise, with nothing assigned. The slots strictly increase
        and are after the node's last slot.
        """
        times = [int(t) for t in column_unix_ms]
        phase = self._phases.get(node)
        previous = phase.last_ms if phase is not None else None
        for t in times:
            if previous is not None and t <= previous:
                raise ValueError(
                    f"node {node!r}: column at {t} ms is not after the previous one at "
                    f"{previous} ms (columns must be new and in time order)"
                )
            previous = t
        slots: list[int] = []
        for i, t in enumerate(times):
            if phase is None:
                phase = self._start(t, times[i : i + ANCHOR_LOOKAHEAD], last_slot=None, epoch=0)
            else:
                self._place(phase, t, times[i : i + ANCHOR_LOOKAHEAD])
            slots.append(phase.last_slot)
        if phase is not None:
            self._phases[node] = phase
        return slots

    # ------------------------------------------------------------ internals

    def _start(
        self, t: int, ahead: Sequence[int], *, last_slot: int | None, epoch: int
    ) -> NodePhase:
        """A fresh anchor at t's nominal time (from the run of columns that starts at t)."""
        nominal = t - self._lateness(t, self._earliest_phase(ahead))
        slot = round_half_up_div(nominal, self.step_ms)
        if last_slot is not None:
            slot = max(slot, last_slot + 1)
        return NodePhase(nominal, slot, t, slot, epoch)

    def _earliest_phase(self, ahead: Sequence[int]) -> int:
        """The node's phase (mod step) that best explains the leading run of columns.

        Only the columns up to the first gap of 2 steps or more count (after a
        gap the node may have restarted with another phase). Jitter is late only,
        so the true phase is at (or just before) one of the observed phases:
        with no missed tick in the run, the one chosen is the earliest flush.
        """
        step = self.step_ms
        run = [ahead[0]]
        for t in ahead[1:]:
            if t - run[-1] >= 2 * step:
                break
            run.append(t)
        max_late = step - 2 * self.tol_ms

        def cost(c: int) -> tuple[bool, int, int, int, int]:
            # Ruled out: a column later than step - 2 tol (no flush is that
            # late) or two columns on one tick. Then, since missed ticks and
            # flushes late by over half a step are both rare: fewest missed
            # ticks, fewest such late flushes, least total lateness.
            late = [(t - c) % step for t in run]
            ticks = [(t - x) // step for t, x in zip(run, late, strict=True)]
            gaps = [b - a for a, b in itertools.pairwise(ticks)]
            impossible = max(late) > max_late or any(g < 1 for g in gaps)
            missed = sum(gaps) - len(gaps)
            return (impossible, missed, sum(2 * x > step for x in late), sum(late), c)

        return min((t % step for t in run), key=cost)

    def _lateness(self, t: int, phase: int) -> int:
        return (t - phase) % self.step_ms

    def _place(self, phase: NodePhase, t: int, ahead: Sequence[int]) -> None:
        step, tol = self.step_ms, self.tol_ms
        k = (t - phase.anchor_ms + tol) // step
        slot = phase.anchor_slot + k
        late = t - phase.anchor_ms - k * step  # in [-tol, step - tol)
        if slot <= phase.last_slot:
            # A tick the anchor did not expect: the anchor was a late flush, or
            # the node restarted at an earlier phase. Next slot; t is the anchor.
            self._reanchor(phase, t, phase.last_slot + 1)
            return
        if slot > phase.last_slot + 1 and late > tol:
            # A gap (missed columns) and, at t, another phase. If the run that
            # starts at t sits at the anchor's phase after all, t was only late;
            # else the node restarted: start afresh (a new slot offset).
            run_phase = self._earliest_phase(ahead)
            shift = (run_phase - phase.anchor_ms + tol) % step - tol
            if shift > tol:
                fresh = self._start(t, ahead, last_slot=phase.last_slot, epoch=phase.epoch + 1)
                phase.__dict__.update(fresh.__dict__)
                return
        if late < 0:
            # Earlier than the anchor, within tol: the anchor was a bit late.
            phase.anchor_ms += late
            late = 0
        if late > tol and slot == phase.last_slot + 1:
            self._note_move(phase, t, slot, late)
        else:
            phase.move_count = 0
        phase.last_ms, phase.last_slot = t, slot
        if phase.move_count >= PHASE_MOVE_COLUMNS:
            # A persistent new phase without a gap (a quick restart): anchor at
            # its earliest column; the slots already given stay.
            self._reanchor(phase, phase.move_ms, phase.move_slot, last=(t, slot))

    def _note_move(self, phase: NodePhase, t: int, slot: int, late: int) -> None:
        if phase.move_count == 0:
            phase.move_ms, phase.move_slot = t, slot
        else:
            k = (phase.move_ms - phase.anchor_ms + self.tol_ms) // self.step_ms
            if late < phase.move_ms - phase.anchor_ms - k * self.step_ms:
                phase.move_ms, phase.move_slot = t, slot
        phase.move_count += 1

    def _reanchor(
        self,
        phase: NodePhase,
        anchor_ms: int,
        anchor_slot: int,
        *,
        last: tuple[int, int] | None = None,
    ) -> None:
        phase.anchor_ms, phase.anchor_slot = anchor_ms, anchor_slot
        phase.last_ms, phase.last_slot = last if last is not None else (anchor_ms, anchor_slot)
        phase.epoch += 1
        phase.move_count = phase.move_ms = phase.move_slot = 0


# ------------------------------------------------------------ step inference


def infer_step_ms(
    columns_by_node: Mapping[str, Sequence[int]], *, min_columns: int = 32
) -> int | None:
    """The nodes' common step from many columns; None while no node has `min_columns`.

    Never from a few gaps: one late flush makes one gap long and the next short,
    a missed column doubles a gap, a restart shifts the phase. First a coarse
    step per node: the median of (t[i+m] - t[i]) / steps-between over growing m
    (each round's estimate counts the steps of the next, longer span). Then
    each node's columns are cut where the phase jumps (a restart, or a very
    late flush), and the step is the median slope of pairs SLOPE_SPAN columns
    apart over all nodes, so jitter is divided by long spans and outliers
    fall out. A whole 1000, 100 or 10 ms step is taken when it lies within
    the estimate's error (steps are Go durations: 60s, 500ms).
    """
    eligible = [
        times
        for times in (sorted({int(t) for t in col}) for col in columns_by_node.values())
        if len(times) >= max(2, min_columns)
    ]
    coarse = sorted(c for c in map(_coarse_step, eligible) if c is not None)
    if not coarse:
        return None
    step = coarse[(len(coarse) - 1) // 2]
    slopes: list[float] = []
    lateness: list[float] = []
    for times in eligible:
        for segment in _segments(times, step):
            # Pairs SLOPE_SPAN columns apart: long enough to divide the jitter,
            # short enough that a phase jump too small to cut at spoils few.
            span = min(SLOPE_SPAN, len(segment) - 1)
            for (ta, na), (tb, nb) in zip(segment, segment[span:], strict=False):
                slopes.append((tb - ta) / (nb - na))
            # How late each flush is against the earliest of its neighbours.
            late = [t - n * step for t, n in segment]
            for i, x in enumerate(late):
                lo, hi = max(0, i - SLOPE_SPAN // 2), i + SLOPE_SPAN // 2 + 1
                lateness.append(x - min(late[lo:hi]))
    if not slopes:
        return max(1, round(step))
    raw = _median(slopes)
    # A whole step within the estimate's error is the step. The error is about
    # the jitter over the span plus the slopes' spread (both none: an exact
    # 1234 ms step stays 1234).
    jitter = _median(lateness)
    spread = _median([abs(x - raw) for x in slopes])
    tolerance = 0.5 + min(1.5 * jitter / SLOPE_SPAN + 2 * spread, raw / 50)
    for grain in (1000, 100, 10):
        snapped = round(raw / grain) * grain
        if snapped >= grain and abs(snapped - raw) <= tolerance:
            return snapped
    return max(1, round(raw))


def _coarse_step(times: list[int]) -> float | None:
    n = len(times)
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    estimate = float(gaps[(len(gaps) - 1) // 2])
    if estimate <= 0:
        return None
    m = 1
    while True:
        nxt = min(m * 4, max(1, (n - 1) // 8))
        if nxt <= m:
            return estimate
        m = nxt
        spans = []
        for a, b in zip(times, times[m:], strict=False):
            spans.append((b - a) / max(1, round((b - a) / estimate)))
        estimate = _median(spans)


def _segments(times: list[int], step: float) -> list[list[tuple[int, int]]]:
    """Runs of (time, tick index) with no phase jump: a gap off whole steps by
    more than the jitter explains (8 x the median gap's offset, at most 30% of a
    step) starts a new run."""
    gaps = [b - a for a, b in itertools.pairwise(times)]
    offsets = [g - max(1, round(g / step)) * step for g in gaps]
    noise = _median([abs(x) for x in offsets]) if offsets else 0.0
    limit = min(0.3 * step, max(8 * noise, 1.0))
    segments: list[list[tuple[int, int]]] = [[(times[0], 0)]]
    for b, gap, offset in zip(times[1:], gaps, offsets, strict=True):
        if round(gap / step) >= 1 and abs(offset) <= limit:
            segments[-1].append((b, segments[-1][-1][1] + round(gap / step)))
        else:
            segments.append([(b, 0)])
    return [seg for seg in segments if len(seg) >= 2]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# ------------------------------------------------------------ parsing


_GO_UNITS_MS = {
    "h": 3_600_000.0,
    "m": 60_000.0,
    "s": 1000.0,
    "ms": 1.0,
    "us": 0.001,
    "µs": 0.001,
    "ns": 1e-6,
}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
MAX_STEP_MS = 24 * 3_600_000


def parse_step(text: str) -> int | None:
    """A KeyViz step as the nodes' --keyvizStep takes it: "60s", "1m30s", "500ms" -> ms.

    "auto" -> None (infer from the columns). ValueError saying what is wrong
    otherwise; the step must be a whole number of milliseconds, 1 ms to 24 h.
    """
    if not isinstance(text, str):
        raise ValueError(f"step must be text like 60s, got {type(text).__name__}")
    raw = text.strip()
    if raw.lower() == "auto":
        return None
    if not raw:
        raise ValueError("step is empty (use a duration like 60s, 1m30s, 500ms, or auto)")
    if raw.startswith("-"):
        raise ValueError(f"step {text!r} is negative (use a duration like 60s)")
    pos, total = 0, 0.0
    for match in _GO_PART.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _GO_UNITS_MS[match.group(2)]
        pos = match.end()
    if pos != len(raw) or pos == 0:
        if re.fullmatch(r"\d+(\.\d+)?", raw):
            raise ValueError(f"step {text!r} has no unit (use e.g. {raw}s or {raw}ms)")
        raise ValueError(f"step {text!r} is not a duration (use e.g. 60s, 1m30s, 500ms, or auto)")
    if not math.isfinite(total) or total <= 0:
        raise ValueError(f"step {text!r} must be longer than zero")
    ms = round(total)
    if abs(total - ms) > 1e-6:
        raise ValueError(f"step {text!r} is not a whole number of milliseconds")
    if ms > MAX_STEP_MS:
        raise ValueError(f"step {text!r} is longer than 24h")
    return ms
