"""The live stream's pure parts: poll timing, degraded groups, node columns, messages.
(Column completion: test_keyviz_collector.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from keyviz.assemble import LeaderBook, column_from_event, columns_of
from keyviz.columns import FLAG_CONFLICT, FLAG_UNKNOWN
from keyviz.feeds import PollSchedule
from keyviz.matrix import NodeMatrix, RowMeta
from keyviz.messages import RowCatalog, column_event, render_column, unpack_frame
from proto import admin_pb2

S = 60_000  # step
B = 100 * S  # a boundary


# ---------------------------------------------------------------- poll timing


def test_each_node_is_asked_once_per_step_just_after_its_own_flush():
    """Three nodes flushing on offset timers; the schedule asks each once per flush."""
    step, phases = 1_000, {"n1": 130, "n2": 480, "n3": 910}
    schedule = PollSchedule(step, margin_ms=30)
    last = {n: 10_000 + p for n, p in phases.items()}
    for n, t in last.items():
        schedule.observed(n, t, now_ms=t + 30)
    polls = dict.fromkeys(phases, 0)
    for now in range(11_000, 31_000, 5):  # 20 steps, a 5 ms loop
        for n in schedule.due(now, phases):
            polls[n] += 1
            flushed = 10_000 + phases[n] + (now - 10_000 - phases[n]) // step * step
            if flushed > last[n]:
                last[n] = flushed
                schedule.observed(n, flushed, now)
            else:
                schedule.missed(n, now)
    assert polls == {"n1": 20, "n2": 20, "n3": 20}


def test_a_late_column_is_asked_for_again_with_growing_waits_then_once_a_step():
    schedule = PollSchedule(8_000, margin_ms=100)
    schedule.observed("n1", 0, now_ms=100)
    assert schedule.next_due_ms(["n1"]) == 8_100
    waits = []
    now = 8_100
    for _ in range(5):
        schedule.missed("n1", now)
        due = schedule.next_due_ms(["n1"])
        assert due is not None
        waits.append(due - now)
        now = due
    assert waits == [1_000, 2_000, 4_000, 8_000, 8_000]


def test_a_failing_node_is_asked_once_a_step_and_a_clock_behind_ours_never_spins():
    schedule = PollSchedule(1_000, margin_ms=30)
    schedule.failed("n1", now_ms=5_000)
    assert schedule.next_due_ms(["n1"]) == 6_000
    # Its newest column is older than a step: ask again in half a step, not now.
    schedule.observed("n2", 1_000, now_ms=5_000)
    assert schedule.next_due_ms(["n2"]) == 5_500
    schedule.now("n3", 7_000)
    assert schedule.due(7_000, ["n1", "n2", "n3"]) == ["n1", "n2", "n3"]


# ---------------------------------------------------------------- degraded groups


def test_a_stopped_node_keeps_the_groups_it_led_until_it_answers_again():
    book = LeaderBook()
    book.update({1: "n1", 2: "n2", 3: "n1"}, taken_at_ms=1_000)
    book.answered("n1", 1_500)
    assert book.groups_of("n1") == {1, 3}
    # n1 stops; its groups elect n2 and n3 before the next overview.
    book.update({1: "n2", 2: "n2", 3: "n3"}, taken_at_ms=2_000)
    assert book.lost_groups(["n1"]) == {1: "n1", 3: "n1"}
    # n2 answered after that overview: its groups are the new ones.
    book.answered("n2", 2_100)
    assert book.groups_of("n2") == {1, 2}
    # n1 is back and answers: it leads nothing now.
    book.answered("n1", 2_500)
    assert book.lost_groups(["n1"]) == {}


def test_leaders_named_by_churning_overviews_do_not_pile_up_in_the_leader_book():
    # Leader ids are node-controlled: a node may name a new one in every overview.
    book = LeaderBook()
    for n in range(1_000):
        book.update({1: f"ghost-{n}", 2: "n1"}, taken_at_ms=n + 1)
        book.retain({"n1", "n2"})  # the poller's nodes, on every membership sync
    assert set(book._led) == {"n1"}
    assert book.groups_of("n1") == {2}


# ---------------------------------------------------------------- node columns and merge


def test_a_matrix_splits_into_columns_and_back():
    m = NodeMatrix(
        node="n1",
        column_unix_ms=np.array([S, 2 * S], dtype=np.int64),
        rows=(RowMeta("route:1", start=b"a"), RowMeta("route:2", start=b"b")),
        values=np.array([[5, 0], [0, 7]], dtype=np.uint64),
        soft=np.zeros((2, 2), dtype=np.bool_),
        raft_group_ids=np.array([[1, 0], [0, 2]], dtype=np.uint64),
        leader_terms=np.array([[3, 0], [0, 4]], dtype=np.uint64),
    )
    first, second = columns_of(m)
    assert [r.bucket_id for r in first.rows] == ["route:1"]
    assert second.values.tolist() == [7]
    assert second.raft_group_ids.tolist() == [2]
    assert second.leader_terms.tolist() == [4]


def test_a_pushed_column_is_validated_like_a_matrix():
    good = admin_pb2.KeyVizColumn(
        column_unix_ms=S,
        rows=[
            admin_pb2.KeyVizRow(
                bucket_id="route:1", values=[4], raft_group_ids=[1], leader_terms=[2]
            )
        ],
    )
    assert column_from_event("n1", good).values.tolist() == [4]
    bad = admin_pb2.KeyVizColumn(
        column_unix_ms=S, rows=[admin_pb2.KeyVizRow(bucket_id="x", values=[1, 2])]
    )
    with pytest.raises(ValueError, match="2 values but 1 columns"):
        column_from_event("n1", bad)


# ---------------------------------------------------------------- messages


def test_rows_carry_their_metadata_the_first_time_the_collector_sends_them():
    catalog = RowCatalog()
    a = RowMeta("route:1", start=b"user:1", end=b"user:5", route_ids=(1,), route_count=1)
    b = RowMeta("route:2", start=b"user:5", route_ids=(2,), route_count=1)
    nodes = {"responded": 3, "total": 3, "failed": [], "late": [], "streaming": []}
    first = column_event(
        series="writes",
        step_ms=S,
        column_unix_ms=B,
        cells=[(a, 3, 0)],
        catalog=catalog,
        nodes=nodes,
        emitted_unix_ms=B + 1,
    )
    second = column_event(
        series="writes",
        step_ms=S,
        column_unix_ms=B + S,
        cells=[(a, 1, 0), (b, 2, FLAG_CONFLICT)],
        catalog=catalog,
        nodes=nodes,
        emitted_unix_ms=B + S + 1,
    )
    assert [r["bucket_id"] for r in first["new_rows"]] == ["route:1"]
    assert [r["bucket_id"] for r in second["new_rows"]] == ["route:2"]
    assert second["new_rows"][0]["start_text"] == "user:5"
    doc = json.loads(second["json"])
    assert doc["rows"] == [
        {"bucket_id": "route:1", "value": 1},
        {"bucket_id": "route:2", "value": 2, "flags": FLAG_CONFLICT},
    ]
    assert doc["type"] == "column"
    assert "new_rows" not in doc  # added per viewer


def test_each_viewer_gets_metadata_for_rows_it_has_not_been_sent():
    catalog = RowCatalog()
    a = RowMeta("route:1", start=b"a")
    b = RowMeta("route:2", start=b"b")
    nodes = {"responded": 1, "total": 1, "failed": [], "late": [], "streaming": []}
    early = column_event(
        series="writes",
        step_ms=S,
        column_unix_ms=B,
        cells=[(a, 1, 0)],
        catalog=catalog,
        nodes=nodes,
        emitted_unix_ms=0,
    )
    later = column_event(
        series="writes",
        step_ms=S,
        column_unix_ms=B + S,
        cells=[(a, 2, 0), (b, 3, 0)],
        catalog=catalog,
        nodes=nodes,
        emitted_unix_ms=0,
    )
    # A viewer that joined after route:1 was announced finds it through the lookup.
    sent: set[str] = set()
    doc = json.loads(render_column(later, "json", sent, catalog.meta.get))
    assert [r["bucket_id"] for r in doc["new_rows"]] == ["route:1", "route:2"]
    assert sent == {"route:1", "route:2"}
    assert "new_rows" not in json.loads(render_column(later, "json", sent, catalog.meta.get))
    # An early viewer got route:1 with the first column.
    early_sent: set[str] = set()
    render_column(early, "json", early_sent, catalog.meta.get)
    doc = json.loads(render_column(later, "json", early_sent, catalog.meta.get))
    assert [r["bucket_id"] for r in doc["new_rows"]] == ["route:2"]
    # Without metadata anywhere, the row goes out bare (the page refetches).
    bare = json.loads(render_column(later, "json", set(), lambda _: None))
    assert [r["bucket_id"] for r in bare["new_rows"]] == ["route:2"]  # announced by this event


def test_binary_column_frames_round_trip():
    catalog = RowCatalog()
    cells = [(RowMeta("route:1", start=b"a"), 2**40 + 3, 0), (RowMeta("route:2", start=b"b"), 9, 4)]
    event = column_event(
        series="reads",
        step_ms=S,
        column_unix_ms=B,
        cells=cells,
        catalog=catalog,
        nodes={},
        emitted_unix_ms=1,
    )
    frame = render_column(event, "bin", set(), catalog.meta.get)
    assert isinstance(frame, bytes)
    assert frame[:4] == b"EKVC"
    header, values, flags = unpack_frame(frame)
    assert header["bucket_ids"] == ["route:1", "route:2"]
    assert values == [2**40 + 3, 9]
    assert flags == [0, 4]
    assert [r["bucket_id"] for r in header["new_rows"]] == ["route:1", "route:2"]
    assert header["series"] == "reads"


def test_an_amendment_has_the_column_fields_and_replaces_it():
    catalog = RowCatalog()
    a = RowMeta("route:1", start=b"a")
    nodes = {"responded": 2, "total": 2, "failed": [], "late": [], "streaming": []}
    column = column_event(
        series="writes",
        step_ms=S,
        column_unix_ms=B,
        cells=[(a, 1, FLAG_UNKNOWN)],
        catalog=catalog,
        nodes=nodes,
        emitted_unix_ms=1,
    )
    amend = column_event(
        series="writes",
        step_ms=S,
        column_unix_ms=B,
        cells=[(a, 4, 0)],
        catalog=catalog,
        nodes=nodes,
        emitted_unix_ms=2,
        kind="amend",
    )
    assert (column["type"], amend["type"]) == ("keyviz.column", "keyviz.amend")
    first, second = json.loads(column["json"]), json.loads(amend["json"])
    assert second["type"] == "amend"
    assert set(first) == set(second)
    assert second["column_unix_ms"] == first["column_unix_ms"]
    assert second["rows"] == [{"bucket_id": "route:1", "value": 4}]
    header, values, flags = unpack_frame(render_column(amend, "bin", set(), catalog.meta.get))  # type: ignore[arg-type]
    assert (header["type"], values, flags) == ("amend", [4], [0])
    assert header["flag_bits"]["unknown"] == FLAG_UNKNOWN


@pytest.mark.django_db(transaction=True)
async def test_a_state_of_the_wrong_shape_still_lets_a_viewer_subscribe():
    from asgiref.sync import sync_to_async

    from keyviz import store
    from keyviz.live import Subscribed, subscribed

    save = sync_to_async(store.save_state, thread_sensitive=False)
    assert await subscribed("writes") == Subscribed()  # no collector has run yet
    await save("collector", {"step_ms": 1000, "status": [{"no": "node"}], "heartbeat_ms": 5})
    assert (await subscribed("writes")).nodes is None  # entries of another shape are dropped
    await save("collector", {"step_ms": "soon"})
    assert await subscribed("writes") == Subscribed()
    await save("collector", {"step_ms": 1000, "heartbeat_ms": 5, "holder": "h:1:x"})
    got = await subscribed("writes")
    assert (got.step_ms, got.nodes, got.replay) == (1000, None, [])
    assert got.collector is not None
    assert got.collector["holder"] == "h:1:x"
