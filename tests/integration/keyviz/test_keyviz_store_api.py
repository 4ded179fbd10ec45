"""GET /api/keyviz/matrix and /api/keyviz/buckets/<id> read the KeyViz store.

The store is filled through its own functions (keyviz/store.py save_merged /
save_node_columns / save_state, keyviz/tiers.py compact) with known columns, as the
collector fills it; the API is then read through Django with a signed-in viewer. The
portal's only seed is an address nothing listens on: no answer may depend on a node.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import AsyncClient

from keyviz import store, tiers
from keyviz.columns import FLAG_SOFT, FLAG_UNKNOWN, MergedColumn, NodeColumn
from keyviz.matrix import RowMeta
from keyviz.serialize import decode_binary
from keyviz.service import COLLECTOR_STATE_KEY, NO_COLLECTOR_MESSAGE
from proto import admin_pb2

pytestmark = pytest.mark.integration

WRITES = admin_pb2.KEYVIZ_SERIES_WRITES
STEP = 60_000
MIN15 = 15 * STEP
HOUR = 60 * STEP
DAY = 24 * HOUR
UNREACHABLE = "127.0.0.1:1"

ROWS = {
    "route:1": RowMeta("route:1", start=b"", end=b"b", route_ids=(1,), route_count=1),
    "route:2": RowMeta("route:2", start=b"b", end=b"m", route_ids=(2,), route_count=1),
    "route:3": RowMeta("route:3", start=b"m", end=b"", route_ids=(3,), route_count=1),
}


@pytest.fixture
def api(portal: Callable[..., AsyncClient]) -> AsyncClient:
    # The store caches bucket pks per process; each test starts with an empty database.
    store.clear_bucket_cache()
    return portal([UNREACHABLE])


def now_ms() -> int:
    return int(time.time() * 1000)


def column(
    t: int,
    cells: Mapping[str, int | tuple[int, int]],
    *,
    missing: Sequence[str] = (),
    unknown_all: bool = False,
    step: int = STEP,
) -> MergedColumn:
    """A merged column at END time t: bucket -> value or (value, flags), in key order."""
    ids = [b for b in ROWS if b in cells]
    pairs: list[tuple[int, int]] = []
    for b in ids:
        cell = cells[b]
        pairs.append(cell if isinstance(cell, tuple) else (cell, 0))
    return MergedColumn(
        series=WRITES,
        column_unix_ms=t,
        step_ms=step,
        rows=tuple(ROWS[b] for b in ids),
        values=np.array([v for v, _ in pairs], dtype=np.uint64),
        flags=np.array([f for _, f in pairs], dtype=np.uint8),
        contributors={n: t - 500 for n in ("n1", "n2", "n3") if n not in missing},
        missing=tuple(missing),
        unknown_all=unknown_all,
    )


async def save(*columns: MergedColumn) -> None:
    await sync_to_async(store.save_merged)(list(columns))


async def collector_ran(**extra: Any) -> dict[str, Any]:
    doc = {
        "step_ms": STEP,
        "holder": "portal-a:1234",
        "heartbeat_ms": now_ms() - 2_000,
        "started_ms": now_ms() - HOUR,
        "last_error": None,
        "status": [
            {"node": "n1", "address": "10.0.0.1:50051", "ok": True, "error": None},
            {"node": "n2", "address": "10.0.0.2:50051", "ok": False, "error": "unavailable"},
        ],
        **extra,
    }
    await sync_to_async(store.save_state)(COLLECTOR_STATE_KEY, doc)
    return doc


def row(doc: dict[str, Any], bucket_id: str) -> dict[str, Any]:
    [found] = [r for r in doc["rows"] if r["bucket_id"] == bucket_id]
    return dict(found)


def minute(back: int) -> int:
    return (now_ms() // STEP - back) * STEP


async def test_the_matrix_comes_from_the_store_without_asking_any_node(api):
    await collector_ran()
    t = [minute(6), minute(5), minute(4)]
    await save(
        column(t[0], {"route:1": 5, "route:2": 1}),
        column(t[1], {"route:1": (7, FLAG_SOFT)}),
        column(t[2], {"route:2": 3}),
    )
    resp = await api.get("/api/keyviz/matrix")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["column_unix_ms"] == t
    assert doc["tier"] == 0
    assert (doc["step_ms"], doc["tier_step_ms"]) == (STEP, STEP)
    assert [r["bucket_id"] for r in doc["rows"]] == ["route:1", "route:2"]
    assert row(doc, "route:1")["values"] == [5, 7, 0]
    assert row(doc, "route:1")["soft"] == [1]
    assert row(doc, "route:2")["values"] == [1, 0, 3]
    assert doc["message"] is None


async def test_cells_a_missing_node_would_have_counted_are_unknown_in_json_and_binary(api):
    await collector_ran()
    t = [minute(6), minute(5), minute(4)]
    await save(
        column(t[0], {"route:1": 4, "route:2": 2}),
        # n2 led route:2's group and did not report this column: the cell is unknown.
        column(t[1], {"route:1": 4, "route:2": (0, FLAG_UNKNOWN)}, missing=["n2"]),
        # Nothing known about n3's groups: the whole column is unknown.
        column(t[2], {"route:1": 1}, missing=["n3"], unknown_all=True),
    )
    client = api
    doc = (await client.get("/api/keyviz/matrix")).json()
    assert row(doc, "route:1")["unknown"] == [2]
    assert row(doc, "route:2")["unknown"] == [1, 2]
    assert row(doc, "route:2")["values"] == [2, 0, 0]
    assert doc["missing_nodes"] == {str(t[1]): ["n2"], str(t[2]): ["n3"]}
    binary = decode_binary((await client.get("/api/keyviz/matrix", {"format": "bin"})).content)
    assert binary.header["flag_bits"]["unknown"] == FLAG_UNKNOWN
    assert binary.header["flag_counts"]["unknown"] == 3
    assert (binary.flags & FLAG_UNKNOWN != 0).tolist() == [
        [False, False, True],
        [False, True, True],
    ]
    assert binary.values.tolist() == [[4, 4, 1], [2, 0, 0]]
    # A one-column budget ORs unknown: the joined cell is unknown, the sum is kept.
    joined = (await client.get("/api/keyviz/matrix", {"cols": "1", "rows": "1"})).json()
    [only] = joined["rows"]
    assert (only["values"], only["unknown"]) == ([4 + 4 + 1 + 2], [0])
    assert joined["missing_nodes"] == {str(t[2]): ["n2", "n3"]}


async def test_the_answer_carries_the_collectors_node_status_and_age(api):
    state = await collector_ran(last_error="history not being recorded: database is full")
    await save(column(minute(3), {"route:1": 1}))
    doc = (await api.get("/api/keyviz/matrix")).json()
    assert [(n["node"], n["ok"], n["error"]) for n in doc["nodes"]] == [
        ("n1", True, None),
        ("n2", False, "unavailable"),
    ]
    collector = doc["collector"]
    assert collector["holder"] == "portal-a:1234"
    assert collector["step_ms"] == STEP
    assert collector["started_unix_ms"] == state["started_ms"]
    assert collector["last_error"] == "history not being recorded: database is full"
    assert 2_000 <= collector["age_ms"] < 60_000


async def test_no_collector_yet_is_a_200_with_an_empty_matrix_and_a_message(api):
    for fmt in ("json", "bin"):
        resp = await api.get("/api/keyviz/matrix", {"format": fmt})
        assert resp.status_code == 200
        doc = resp.json() if fmt == "json" else decode_binary(resp.content).header
        assert doc["rows"] == []
        assert doc["collector"] is None
        assert doc["nodes"] == []
        assert doc["message"] == NO_COLLECTOR_MESSAGE


async def test_a_store_that_cannot_be_read_is_a_503_with_the_reason(api):
    await collector_ran()

    def hide(table: str, to: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} RENAME TO {to}")

    await sync_to_async(hide)("keyviz_storedcolumn", "keyviz_storedcolumn_away")
    try:
        resp = await api.get("/api/keyviz/matrix")
    finally:
        await sync_to_async(hide)("keyviz_storedcolumn_away", "keyviz_storedcolumn")
    assert resp.status_code == 503
    message = resp.json()["message"]
    assert message.startswith("the KeyViz history could not be read from the portal database: ")
    assert "Traceback" not in message


@pytest.mark.parametrize("fmt", ["json", "bin"])
async def test_the_matrix_answer_says_where_its_time_went_in_server_timing(api, fmt):
    await collector_ran()
    await save(column(minute(3), {"route:1": 1}))
    resp = await api.get("/api/keyviz/matrix", {"format": fmt})
    phases = dict(part.split(";dur=") for part in resp["Server-Timing"].split(", "))
    assert list(phases) == ["store", "fit", "encode"]
    assert all(float(ms) >= 0 for ms in phases.values())


async def fill_days_ago() -> tuple[int, int]:
    """Tier-0 columns three days and twenty days back, compacted into 15 min and 1 h
    columns. Returns the END times of the two hours they fall in."""
    now = now_ms()
    three = (now // HOUR - 72) * HOUR  # an hour boundary three days back
    twenty = (now // HOUR - 20 * 24) * HOUR
    columns = []
    for k in range(1, 31):  # the first half hour after `three`: two 15 min windows
        flags = FLAG_UNKNOWN if k == 20 else 0
        columns.append(
            column(three + k * STEP, {"route:1": 1, "route:2": (2, flags), "route:3": k})
        )
    for k in range(1, 4):
        columns.append(column(twenty + k * STEP, {"route:3": 100}))
    await save(*columns)
    await sync_to_async(tiers.compact)(now)
    return three + HOUR, twenty + HOUR


async def test_a_7_day_window_reads_15_minute_columns_with_sums_and_unknown_kept(api):
    await collector_ran()
    hour3, _ = await fill_days_ago()
    doc = (await api.get("/api/keyviz/matrix", {"from": str(now_ms() - 7 * DAY)})).json()
    assert doc["tier"] == 1
    assert doc["tier_step_ms"] == doc["step_ms"] == MIN15
    start = hour3 - HOUR
    assert doc["column_unix_ms"] == [start + MIN15, start + 2 * MIN15]
    assert row(doc, "route:1")["values"] == [15, 15]
    assert row(doc, "route:2")["values"] == [30, 30]
    assert row(doc, "route:2")["unknown"] == [1]  # minute 20 is in the second window
    assert row(doc, "route:3")["values"] == [sum(range(1, 16)), sum(range(16, 31))]


async def test_a_30_day_window_reads_1_hour_columns(api):
    await collector_ran()
    hour3, hour20 = await fill_days_ago()
    resp = await api.get("/api/keyviz/matrix", {"from": str(now_ms() - 30 * DAY), "format": "bin"})
    decoded = decode_binary(resp.content)
    assert decoded.header["tier"] == 2
    assert decoded.header["step_ms"] == HOUR
    assert decoded.column_unix_ms.tolist() == [hour20, hour3]
    ids = [r["bucket_id"] for r in decoded.header["rows"]]
    assert decoded.values[ids.index("route:3")].tolist() == [300, sum(range(1, 31))]
    assert decoded.values[ids.index("route:1")].tolist() == [0, 30]
    assert decoded.flags[ids.index("route:2")].tolist() == [0, FLAG_UNKNOWN]


def b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


async def test_a_key_range_zooms_into_a_coarse_tier_and_rebuckets_it(api):
    await collector_ran()
    await fill_days_ago()
    query = {"from": str(now_ms() - 7 * DAY), "start_key": b64(b"b"), "end_key": b64(b"z")}
    doc = (await api.get("/api/keyviz/matrix", query)).json()
    assert doc["tier"] == 1
    assert [r["bucket_id"] for r in doc["rows"]] == ["route:2", "route:3"]
    one = (await api.get("/api/keyviz/matrix", {**query, "rows": "1", "cols": "1"})).json()
    [joined] = one["rows"]
    assert joined["member_bucket_ids"] == ["route:2", "route:3"]
    assert joined["values"] == [60 + sum(range(1, 31))]
    assert joined["unknown"] == [0]


async def test_a_window_longer_than_the_stores_retention_is_a_400_naming_from_to(api):
    resp = await api.get("/api/keyviz/matrix", {"from": str(now_ms() - 31 * DAY), "to": ""})
    assert resp.status_code == 400
    message = resp.json()["message"]
    assert message.startswith("from: the window from/to of ")
    assert "longer than the 30 days" in message


def node_column(node: str, t: int, value: int, group: int, term: int) -> NodeColumn:
    return NodeColumn(
        node=node,
        column_unix_ms=t,
        rows=(ROWS["route:1"],),
        values=np.array([value], dtype=np.uint64),
        soft=np.array([False]),
        raft_group_ids=np.array([group], dtype=np.uint64),
        leader_terms=np.array([term], dtype=np.uint64),
    )


async def test_the_cell_detail_reads_each_nodes_contribution_from_the_store(api):
    await collector_ran()
    t = minute(4)
    await sync_to_async(store.save_node_columns)(
        WRITES,
        [(t, node_column("n1", t - 300, 5, 7, 2)), (t, node_column("n2", t - 100, 3, 7, 2))],
    )
    await save(column(t, {"route:1": 8}))
    resp = await api.get("/api/keyviz/buckets/route:1")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["bucket"]["values"] == [8]
    assert doc["column_unix_ms"] == [t]
    assert [
        (c["node"], c["value"], c["node_column_unix_ms"], c["raft_group_id"], c["leader_term"])
        for c in doc["contributions"]
    ] == [("n1", 5, t - 300, 7, 2), ("n2", 3, t - 100, 7, 2)]
    assert doc["per_adapter"] == {}  # the only seed does not answer
    # The group's current leader is cluster data: nobody answered, so it is unknown.
    assert doc["groups"] == [{"raft_group_id": 7, "leader_node_id": "", "leader_term": 0}]


async def test_the_cell_detail_lists_the_events_within_a_few_steps_of_the_cell(api):
    from keyviz import events

    await collector_ran()
    t = minute(20)
    await save(column(t, {"route:1": 8}))
    near = [
        events.Observed("node_down", t - 3 * STEP - STEP // 2, "n2", details={"error": "x"}),
        events.Observed("leader_changed", t + 2 * STEP, "n1", 7, {"from": "n2", "to": "n1"}),
    ]
    far = [
        events.Observed("node_up", t - 5 * STEP, "n2"),
        events.Observed("keyviz_disabled", t + 5 * STEP, "n3"),
    ]
    await sync_to_async(events.save)(near + far)
    doc = (await api.get("/api/keyviz/buckets/route:1", {"at": str(t)})).json()
    # The same entries as GET /api/events, newest first.
    assert doc["events"] == [events.to_json(e) for e in reversed(near)]
    assert doc["events_from_unix_ms"] <= t - 4 * STEP
    assert doc["events_to_unix_ms"] > t + 3 * STEP
    # Without `at`: the events of the whole window the drawer asked for.
    whole = (await api.get("/api/keyviz/buckets/route:1")).json()
    assert len(whole["events"]) == 4


async def test_a_bad_cell_time_is_a_400_naming_at(api):
    await collector_ran()
    await save(column(minute(3), {"route:1": 1}))
    resp = await api.get("/api/keyviz/buckets/route:1", {"at": "soon"})
    assert resp.status_code == 400
    assert resp.json()["message"].startswith("at:")


async def test_an_unknown_bucket_is_a_404_that_says_what_to_do(api):
    await collector_ran()
    await save(column(minute(3), {"route:1": 1}))
    resp = await api.get("/api/keyviz/buckets/route:999")
    assert resp.status_code == 404
    assert resp.json()["message"] == (
        "no row with bucket id 'route:999' in this window; widen from/to"
    )


async def test_an_empty_window_has_the_collectors_step_not_a_default(api):
    await collector_ran(step_ms=5_000)
    doc = (await api.get("/api/keyviz/matrix")).json()
    assert doc["rows"] == []
    assert (doc["step_ms"], doc["tier_step_ms"]) == (5_000, 5_000)


async def test_the_cell_detail_of_a_coarse_tier_has_merged_values_and_says_no_per_node(api):
    await collector_ran()
    hour3, _ = await fill_days_ago()
    resp = await api.get("/api/keyviz/buckets/route:1", {"from": str(now_ms() - 7 * DAY)})
    assert resp.status_code == 200
    doc = resp.json()
    assert (doc["tier"], doc["per_node"]) == (1, False)
    assert doc["column_unix_ms"] == [hour3 - HOUR + MIN15, hour3 - HOUR + 2 * MIN15]
    assert doc["bucket"]["values"] == [15, 15]
    assert doc["contributions"] == []
    unknown = (
        await api.get("/api/keyviz/buckets/route:2", {"from": str(now_ms() - 7 * DAY)})
    ).json()
    assert unknown["bucket"]["unknown"] == [1]
