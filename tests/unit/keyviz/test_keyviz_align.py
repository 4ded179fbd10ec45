"""The phase lock (keyviz/align.py): each node column lands in exactly one slot.

Generated clusters model real nodes (CONTRACT.md "More facts about real nodes"):
each node flushes on its own phase, late only (jitter up to 20% of a step, a few
late flushes up to 80%), some columns are missed, and a restart moves the phase
and loses columns.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyviz.align import NodePhase, PhaseLock, infer_step_ms, parse_step, round_half_up_div

# ------------------------------------------------------------ generated nodes


@dataclass(frozen=True)
class NodeRun:
    name: str
    times: list[int]  # flush times, strictly increasing
    nominal: list[int]  # the tick each column belongs to (its time without the lateness)
    values: list[int]


def _phase(draw: st.DrawFn, step: int) -> int:
    """Anywhere, within 1% of half a step, or near 0 / near a whole step."""
    one_pct = max(1, step // 100)
    kind = draw(st.sampled_from(["any", "half", "zero", "end"]))
    if kind == "half":
        return step // 2 + draw(st.integers(-one_pct, one_pct))
    if kind == "zero":
        return draw(st.integers(0, one_pct))
    if kind == "end":
        return step - 1 - draw(st.integers(0, one_pct))
    return draw(st.integers(0, step - 1))


def _lateness(draw: st.DrawFn, step: int, jitter_div: int) -> int:
    if jitter_div == 5 and draw(st.integers(0, 19)) == 0:  # a few late flushes, up to 80%
        return draw(st.integers(0, step * 8 // 10))
    return draw(st.integers(0, step // jitter_div))


@st.composite
def node_run(
    draw: st.DrawFn,
    name: str,
    step: int,
    ticks: int,
    *,
    restarts: bool,
    missing: bool,
    jitter_div: int,
) -> NodeRun:
    phase = _phase(draw, step)
    times: list[int] = []
    nominal: list[int] = []
    tick = 10
    end = tick + ticks
    while tick < end:
        if restarts and times and draw(st.integers(0, 24)) == 0:
            # Restart: the node is down for some ticks (their columns are lost),
            # then flushes on a new phase, after its last column.
            tick += draw(st.integers(0, 3))
            phase = _phase(draw, step)
            while tick * step + phase <= times[-1]:
                tick += 1
        if missing and draw(st.integers(0, 14)) == 0:
            tick += 1
            continue
        at = tick * step + phase
        t = at + _lateness(draw, step, jitter_div)
        if times and t <= times[-1]:
            t = times[-1] + 1  # a late flush right before the next tick: keep the order
        times.append(t)
        nominal.append(at)
        tick += 1
    values = draw(st.lists(st.integers(0, 1000), min_size=len(times), max_size=len(times)))
    return NodeRun(name, times, nominal, values)


@st.composite
def cluster(
    draw: st.DrawFn, *, restarts: bool, missing: bool, jitter_div: int = 5
) -> tuple[int, list[NodeRun]]:
    """Jitter up to step / jitter_div (5: 20% plus a few late flushes up to 80%)."""
    step = draw(st.integers(1000, 300_000))
    ticks = draw(st.integers(1, 40))
    n = draw(st.integers(1, 4))
    return step, [
        draw(
            node_run(
                f"n{i}", step, ticks, restarts=restarts, missing=missing, jitter_div=jitter_div
            )
        )
        for i in range(n)
    ]


def _assign_in_chunks(step: int, runs: list[NodeRun], cuts: list[int]) -> dict[str, list[int]]:
    """The collector's way: a backfill, then a few columns per poll, the lock's
    state persisted (to_dict/from_dict) between polls."""
    state: dict[str, dict[str, int]] = {}
    slots: dict[str, list[int]] = {r.name: [] for r in runs}
    for run in runs:
        start = 0
        for cut in [*cuts, len(run.times)]:
            chunk = run.times[start : max(start, cut)]
            start = max(start, cut)
            if not chunk:
                continue
            lock = PhaseLock(step, {n: NodePhase.from_dict(d) for n, d in state.items()})
            slots[run.name] += lock.assign(run.name, chunk)
            state = {n: p.to_dict() for n, p in lock.phases().items()}
    return slots


# Where the columns are cut into assign() calls: a few cuts, or one column per call (live).
chunking = st.one_of(
    st.lists(st.integers(0, 40), max_size=6).map(sorted), st.just(list(range(1, 41)))
)


# ------------------------------------------------------------ properties


@given(cluster(restarts=True, missing=True), chunking)
def test_every_node_column_lands_in_exactly_one_slot_and_a_nodes_slots_strictly_increase(
    generated: tuple[int, list[NodeRun]], cuts: list[int]
) -> None:
    step, runs = generated
    slots = _assign_in_chunks(step, runs, cuts)
    for run in runs:
        got = slots[run.name]
        assert len(got) == len(run.times)
        assert all(b > a for a, b in itertools.pairwise(got))


@given(cluster(restarts=True, missing=True), chunking)
def test_totals_per_slot_equal_the_inputs_with_restarts_and_missed_columns(
    generated: tuple[int, list[NodeRun]], cuts: list[int]
) -> None:
    step, runs = generated
    slots = _assign_in_chunks(step, runs, cuts)
    per_slot: Counter[int] = Counter()
    for run in runs:
        for slot, value in zip(slots[run.name], run.values, strict=True):
            per_slot[slot] += value
    assert sum(per_slot.values()) == sum(sum(r.values) for r in runs)


@given(cluster(restarts=False, missing=False), chunking)
def test_nodes_flushing_every_step_leave_no_hole_and_no_spike(
    generated: tuple[int, list[NodeRun]], cuts: list[int]
) -> None:
    step, runs = generated
    slots = _assign_in_chunks(step, runs, cuts)
    merged: Counter[tuple[int, str]] = Counter()
    for run in runs:
        got = slots[run.name]
        # each node's own slots are consecutive: a late flush never skips a slot
        assert got == list(range(got[0], got[0] + len(got)))
        merged.update((s, run.name) for s in got)
    assert max(merged.values()) == 1  # no slot holds two columns of one node
    used = {s for s, _ in merged}
    assert used == set(range(min(used), max(used) + 1))  # no empty merged slot in between


@given(cluster(restarts=False, missing=True, jitter_div=20), chunking)
def test_a_missed_column_leaves_exactly_its_slot_empty(
    generated: tuple[int, list[NodeRun]], cuts: list[int]
) -> None:
    # Jitter within the lock's tolerance (5%; real nodes: 0-280 ms of 60 s):
    # every column keeps its distance in ticks from the first, so the skipped
    # slots are exactly the missed ticks, however the columns come in.
    step, runs = generated
    for run in runs:
        got = _assign_in_chunks(step, [run], cuts)[run.name]
        ticks = [(n - run.nominal[0]) // step for n in run.nominal]
        assert [s - got[0] for s in got] == ticks


# ------------------------------------------------------------ the awkward cases


STEP = 60_000


def _one_at_a_time(lock: PhaseLock, node: str, times: list[int]) -> list[int]:
    return [lock.assign(node, [t])[0] for t in times]


@pytest.mark.parametrize("mode", ["live", "backfill"])
def test_phase_near_half_step_never_flips(mode: str) -> None:
    # Phase 0.3% below half a step; jitter of 0-2% takes half the flushes past
    # the half. Nearest-boundary rounding sends those to the next slot (an empty
    # merged column then a doubled one); the lock keeps every column in turn.
    phase = STEP // 2 - 180
    late = [0, 1_200, 300, 900, 0, 1_100, 50, 1_000, 400, 700]
    times = [(k + 100) * STEP + phase + j for k, j in enumerate(late)]
    old_rule = [round_half_up_div(t, STEP) for t in times]
    assert len(set(old_rule)) < len(times)  # the old rule doubles (and so skips) a slot

    lock = PhaseLock(STEP)
    slots = _one_at_a_time(lock, "n1", times) if mode == "live" else lock.assign("n1", times)
    assert slots == list(range(100, 110))


def test_late_flush_stays_in_its_slot() -> None:
    lock = PhaseLock(STEP)
    phase = 20_000
    steady = [(k + 100) * STEP + phase + 100 for k in range(5)]
    assert lock.assign("n1", steady) == [100, 101, 102, 103, 104]
    # 80% of a step late: its own time rounds two slots on, it stays at 105
    late = 105 * STEP + phase + 48_000
    assert round_half_up_div(late, STEP) == 106
    assert lock.assign("n1", [late]) == [105]
    # the next on-time flush follows it, in its own slot
    assert lock.assign("n1", [106 * STEP + phase + 50]) == [106]
    assert lock.phases()["n1"].epoch == 0


def test_first_column_late_in_a_backfill_does_not_set_the_anchor() -> None:
    phase = 25_000  # a late flush of 10 s takes it past half a step
    times = [(k + 100) * STEP + phase + (10_000 if k == 0 else 100) for k in range(6)]
    assert PhaseLock(STEP).assign("n1", times) == [100, 101, 102, 103, 104, 105]


def test_restart_with_new_phase_reanchors_without_collision() -> None:
    lock = PhaseLock(STEP)
    old = [(k + 100) * STEP + 50_000 for k in range(4)]  # phase 50 s: slots 101..104
    assert lock.assign("n1", old) == [101, 102, 103, 104]
    # Quick restart: the new timer fires 15 s after the last flush, at phase 5 s,
    # whose own time rounds to slot 104, already taken by the old phase.
    quick = [104 * STEP + 5_000 + k * STEP for k in range(3)]
    assert round_half_up_div(quick[0], STEP) == 104
    assert lock.assign("n1", quick) == [105, 106, 107]
    assert lock.phases()["n1"].epoch >= 1
    # Down for three steps, then back at phase 40 s: re-anchored at its own
    # slot; the slots in between stay empty (the node missed them).
    back = [111 * STEP + 40_000 + k * STEP for k in range(3)]
    epoch = lock.phases()["n1"].epoch
    assert lock.assign("n1", back) == [112, 113, 114]
    assert lock.phases()["n1"].epoch == epoch + 1


def test_persistent_phase_move_without_gap_moves_the_anchor_not_the_slots() -> None:
    lock = PhaseLock(STEP)
    assert lock.assign("n1", [(k + 100) * STEP + 10_000 for k in range(3)]) == [100, 101, 102]
    moved = [(k + 103) * STEP + 25_000 for k in range(6)]  # 15 s later, no gap
    assert _one_at_a_time(lock, "n1", moved) == [103, 104, 105, 106, 107, 108]
    phase = lock.phases()["n1"]
    assert phase.epoch == 1
    assert phase.anchor_ms % STEP == 25_000


def test_columns_must_be_new_and_in_order() -> None:
    lock = PhaseLock(STEP)
    lock.assign("n1", [100 * STEP, 101 * STEP])
    with pytest.raises(ValueError, match="not after the previous"):
        lock.assign("n1", [101 * STEP])
    with pytest.raises(ValueError, match="not after the previous"):
        lock.assign("n2", [5 * STEP, 4 * STEP])
    assert "n2" not in lock.phases()  # nothing assigned from a refused call


def test_forget_starts_the_node_afresh() -> None:
    lock = PhaseLock(STEP)
    lock.assign("n1", [100 * STEP])
    lock.forget("n1")
    assert lock.assign("n1", [50 * STEP]) == [50]


def test_node_phase_round_trips_and_refuses_bad_documents() -> None:
    phase = NodePhase(anchor_ms=1, anchor_slot=2, last_ms=3, last_slot=4, epoch=5)
    assert NodePhase.from_dict(phase.to_dict()) == phase
    with pytest.raises(ValueError, match="anchor_slot is missing"):
        NodePhase.from_dict({"anchor_ms": 1, "last_ms": 3, "last_slot": 4})
    with pytest.raises(ValueError, match="last_ms must be an integer"):
        NodePhase.from_dict({"anchor_ms": 1, "anchor_slot": 2, "last_ms": "3", "last_slot": 4})


def test_phase_lock_refuses_a_step_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="step_ms must be a positive"):
        PhaseLock(0)


# ------------------------------------------------------------ step inference


def _jittered(step: int, n: int, phase: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    times = []
    for k in range(n):
        if k % 17 == 16:
            continue  # a missed column now and then
        late = rng.randint(0, 280) if k % 11 else rng.randint(step * 3 // 10, step * 6 // 10)
        times.append((k + 1000) * step + phase + late)
    return times


@pytest.mark.parametrize("step", [1_000, 5_000, 60_000, 90_000, 300_000, 2_500])
def test_infer_step_ignores_jittered_gaps(step: int) -> None:
    columns = {f"n{i}": _jittered(step, 64, phase, i) for i, phase in enumerate([0, step // 2, 7])}
    assert infer_step_ms(columns) == step


@st.composite
def go_step_columns(draw: st.DrawFn) -> tuple[int, dict[str, list[int]]]:
    """Nodes' column times at a Go-duration step, as real nodes flush: late by
    0-280 ms (within a tenth of the step), a few late flushes, missed columns and
    at most one restart (new phase) per node."""
    step = draw(
        st.one_of(
            st.integers(1, 300).map(lambda s: s * 1000), st.integers(5, 100).map(lambda d: d * 100)
        )
    )
    jitter = min(280, step // 10)
    late_max = min(5_000, step * 3 // 10)
    columns: dict[str, list[int]] = {}
    for i in range(draw(st.integers(1, 3))):
        n = draw(st.integers(32, 160))
        restart_at = draw(st.one_of(st.none(), st.integers(1, n - 1)))
        phase, tick = draw(st.integers(0, step - 1)), 1_000
        times: list[int] = []
        for k in range(n):
            if k == restart_at:
                phase, tick = draw(st.integers(0, step - 1)), tick + draw(st.integers(1, 3))
            if draw(st.integers(0, 29)) == 29:  # (rare events on the high end: shrinking
                tick += 1  # a missed column    # towards 0 must not make them common)
            late = draw(st.integers(0, jitter))
            if draw(st.integers(0, 29)) == 29:
                late = draw(st.integers(jitter, late_max))  # a late flush
            t = tick * step + phase + late
            times.append(max(t, times[-1] + 1) if times else t)
            tick += 1
        columns[f"n{i}"] = times
    return step, columns


@given(go_step_columns())
def test_infer_step_finds_the_go_duration_through_jitter_late_flushes_and_restarts(
    generated: tuple[int, dict[str, list[int]]],
) -> None:
    step, columns = generated
    assert infer_step_ms(columns) == step


def test_infer_step_needs_many_columns_not_a_few_gaps() -> None:
    # Five columns whose gaps are 60.28 s, 59.72 s, ...: no step from that.
    few = {"n1": [0, 60_280, 120_000, 180_280, 240_000]}
    assert infer_step_ms(few) is None
    assert infer_step_ms(few, min_columns=5) == 60_000


def test_infer_step_survives_a_restart() -> None:
    before = [(k + 100) * STEP + 10_000 for k in range(20)]
    after = [(k + 125) * STEP + 41_000 for k in range(20)]
    assert infer_step_ms({"n1": before + after}) == STEP


def test_infer_step_keeps_a_step_that_is_not_a_round_number() -> None:
    times = [k * 1_234 for k in range(100, 140)]
    assert infer_step_ms({"n1": times}) == 1_234


# ------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("text", "ms"),
    [("60s", 60_000), ("1m", 60_000), ("500ms", 500), ("1m30s", 90_000), ("1.5s", 1_500)],
)
def test_parse_step_reads_go_durations(text: str, ms: int) -> None:
    assert parse_step(text) == ms


def test_parse_step_auto_means_infer() -> None:
    assert parse_step("auto") is None
    assert parse_step(" AUTO ") is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("60", "no unit"),
        ("sixty", "not a duration"),
        ("1m 30s", "not a duration"),
        ("-5s", "negative"),
        ("0s", "longer than zero"),
        ("1500us", "whole number of milliseconds"),
        ("25h", "longer than 24h"),
    ],
)
def test_parse_step_rejects_garbage_with_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_step(text)
