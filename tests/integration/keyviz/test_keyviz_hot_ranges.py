"""GET /api/keyviz/hot-ranges, the Hot ranges page and the hot range gauges.

Deterministic cases fill the store through its own functions (store.save_merged) as the
collector does; the hotspot case runs the collector against a real-gRPC devcluster and
injects the traffic into the nodes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from devcluster import Op
from keyviz import hot, store
from keyviz.collector import close_collector, start_collector
from keyviz.columns import MergedColumn
from keyviz.lease import LocalLease
from keyviz.matrix import RowMeta
from keyviz.messages import wall_ms
from proto import admin_pb2

pytestmark = pytest.mark.integration

WRITES = admin_pb2.KEYVIZ_SERIES_WRITES
READS = admin_pb2.KEYVIZ_SERIES_READS
STEP = 60_000
UNREACHABLE = "127.0.0.1:1"

ROWS = {
    "route:1": RowMeta("route:1", start=b"", end=b"b", route_ids=(1,), route_count=1),
    "route:2": RowMeta("route:2", start=b"b", end=b"m", route_ids=(2,), route_count=1),
    "route:3": RowMeta("route:3", start=b"m", end=b"", route_ids=(3,), route_count=1),
}


@pytest.fixture
def api(portal: Callable[..., AsyncClient]) -> AsyncClient:
    store.clear_bucket_cache()
    hot._metric_cache.clear()
    return portal([UNREACHABLE])


def column(t: int, cells: Mapping[str, int], series: int = WRITES) -> MergedColumn:
    ids = [b for b in ROWS if cells.get(b)]
    return MergedColumn(
        series=series,
        column_unix_ms=t,
        step_ms=STEP,
        rows=tuple(ROWS[b] for b in ids),
        values=np.array([cells[b] for b in ids], dtype=np.uint64),
        flags=np.zeros(len(ids), dtype=np.uint8),
        contributors={"n1": t - 500},
    )


def minute(back: int) -> int:
    return (int(time.time() * 1000) // STEP - back) * STEP


async def save(*columns: MergedColumn) -> None:
    await sync_to_async(store.save_merged)(list(columns))


async def get(client: AsyncClient, **params: Any) -> Any:
    return await client.get("/api/keyviz/hot-ranges", params)


async def test_ranges_come_sorted_by_rate_with_share_and_base64_bounds(api):
    # The last 5 minutes: route:2 carries 60 a minute, route:3 30, route:1 10.
    await save(
        *(column(minute(k), {"route:1": 10, "route:2": 60, "route:3": 30}) for k in range(5))
    )
    doc = (await get(api, series="writes", window="5m")).json()
    ids = [e["bucket_id"] for e in doc["entries"]]
    assert ids == ["route:2", "route:3", "route:1"]
    top = doc["entries"][0]
    assert top["start"] == "Yg=="
    assert top["end"] == "bQ=="
    assert top["route_ids"] == [2]
    assert top["share"] == pytest.approx(0.6)
    assert doc["total_rate_per_s"] > 0
    # Sum over the window's columns divided by the window's seconds.
    window_cols = sum(1 for k in range(5) if doc["from_unix_ms"] <= minute(k) < doc["to_unix_ms"])
    assert top["rate_per_s"] == pytest.approx(60 * window_cols / 300)
    assert top["leader_node_id"] == ""  # no node answers: the leader is unknown


async def test_hot_since_marks_when_a_range_went_over_the_threshold(api):
    # route:3 is idle for 20 minutes, then takes most of the traffic for the last 10.
    cols = [column(minute(k), {"route:1": 100, "route:3": 1}) for k in range(30, 10, -1)]
    cols += [column(minute(k), {"route:1": 100, "route:3": 300}) for k in range(10, -1, -1)]
    await save(*cols)
    doc = (await get(api, window="5m")).json()
    by_id = {e["bucket_id"]: e for e in doc["entries"]}
    assert by_id["route:3"]["hot_since_unix_ms"] == minute(10) - STEP
    assert by_id["route:3"]["hot_since_complete"] is True
    # route:1 still carries 25 % of each column: hot for all the hour read.
    assert by_id["route:1"]["hot_since_complete"] is False
    assert len(by_id["route:3"]["sparkline"]) == 31


async def test_a_past_window_is_answered_from_its_tier(api):
    await save(column(minute(200), {"route:2": 5}), column(minute(199), {"route:2": 7}))
    doc = (await get(api, **{"from": str(minute(205)), "to": str(minute(190))})).json()
    assert [e["bucket_id"] for e in doc["entries"]] == ["route:2"]
    assert doc["entries"][0]["count"] == 12
    assert doc["window"] is None


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"window": "2m"}, "window"),
        ({"series": "scans"}, "series"),
        ({"from": "yesterday"}, "from"),
        ({"to": "1e9"}, "to"),
        ({"limit": "5000"}, "limit"),
    ],
)
async def test_bad_parameters_are_a_400_naming_the_parameter(api, params, named):
    response = await get(api, **params)
    assert response.status_code == 400
    assert response.json()["message"].startswith(f"{named}:")


async def test_the_page_lists_readable_keys_and_links_the_zoomed_heatmap(api):
    await save(*(column(minute(k), {"route:2": 60, "route:3": 5}) for k in range(3)))
    response = await api.get("/keyviz/hot/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<code>b</code>" in html
    assert "<code>m</code>" in html
    # route:2's bounds as the heatmap's base64url start_key / end_key.
    assert "start_key=Yg&amp;end_key=bQ" in html
    assert "Leadership balance" in html


async def test_the_page_shows_a_bad_parameter_as_a_400_with_its_message(api):
    response = await api.get("/keyviz/hot/", {"window": "2m"})
    assert response.status_code == 400
    assert "window: unknown window" in response.content.decode()


async def test_metrics_export_the_top_share_and_the_count_over_the_threshold(api):
    await save(*(column(minute(k), {"route:1": 10, "route:2": 90}) for k in range(4)))
    await save(*(column(minute(k), {"route:3": 50, "route:1": 50}, READS) for k in range(4)))
    body = (await api.get("/metrics")).content.decode()
    assert 'elastickv_admin_keyviz_hot_top_share{series="writes"} 0.9' in body
    assert 'elastickv_admin_keyviz_hot_top_share{series="reads"} 0.5' in body
    assert 'elastickv_admin_keyviz_hot_ranges_over_threshold{series="writes"} 2.0' in body
    # No key ever appears in a label.
    assert "route:" not in body


# -- against the devcluster with the collector running ---------------------------------------

FAST = 500


@pytest.mark.django_db(transaction=True)
async def test_an_injected_hotspot_comes_first_with_its_leader_and_a_steady_hot_since(
    devcluster_factory, portal
):
    cluster = devcluster_factory(timers=True, step_ms=FAST)
    client = portal(cluster)
    store.clear_bucket_cache()
    start_collector(lease=LocalLease(), step_ms=FAST)
    try:
        routes = [r for r in cluster.routes() if r.start]
        target = routes[len(routes) // 2]
        hot_key = target.start + b"\x00hot"
        others = [r for r in cluster.routes() if r.route_id != target.route_id]

        async def traffic(steps: int) -> None:
            for _ in range(steps):
                ops = [Op("n1", "write", hot_key, count=40)]
                ops += [Op("n1", "write", (r.start or b"\x00") + b"x", count=1) for r in others]
                cluster.inject(ops)
                await asyncio.sleep(FAST / 1000 / 2)

        async def top() -> dict[str, Any] | None:
            doc: dict[str, Any] = (
                await client.get("/api/keyviz/hot-ranges", {"window": "1m"})
            ).json()
            entries = doc["entries"]
            if entries and target.route_id in entries[0]["route_ids"] and entries[0]["hot"]:
                return doc
            return None

        first: dict[str, Any] | None = None
        deadline = time.monotonic() + 30
        while first is None:
            assert time.monotonic() < deadline, "the hotspot never came first"
            await traffic(4)
            first = await top()
        entry = first["entries"][0]
        assert entry["raft_group_id"] == target.group_id
        assert entry["leader_node_id"] == cluster.group(target.group_id).leader
        assert entry["leader_node_id"] != ""
        since = entry["hot_since_unix_ms"]
        assert since is not None
        assert since <= first["to_unix_ms"]
        # More hot steps later: still hot from the same start, so hot for longer.
        await traffic(8)
        later = None
        while later is None:
            assert time.monotonic() < deadline + 30, "the hotspot left the top"
            later = await top()
            if later is None:
                await traffic(2)
        assert later["to_unix_ms"] > first["to_unix_ms"]
        assert later["entries"][0]["hot_since_unix_ms"] == since
        assert wall_ms() - since > first["to_unix_ms"] - since
    finally:
        await close_collector()


@pytest.mark.django_db(transaction=True)
async def test_leadership_balance_counts_groups_led_per_node_and_the_imbalance(devcluster, portal):
    client = portal(devcluster)
    store.clear_bucket_cache()
    groups = [g.group_id for g in devcluster.groups()]
    for gid in groups:  # every group led by n1: the worst imbalance
        if devcluster.group(gid).leader != "n1":
            devcluster.transfer_leadership(gid, "n1")
    doc = (await client.get("/api/keyviz/hot-ranges", {"window": "5m"})).json()
    led = {n["node_id"]: n["groups"] for n in doc["leadership"]["groups_led"]}
    assert led == {"n1": len(groups), "n2": 0, "n3": 0}
    assert doc["leadership"]["imbalance"] == len(groups)
    assert doc["leadership"]["groups_with_leader"] == doc["leadership"]["groups"] == len(groups)
    # One group moved to n2: the imbalance drops by one.
    devcluster.transfer_leadership(groups[0], "n2")
    doc = (await client.get("/api/keyviz/hot-ranges", {"window": "5m"})).json()
    led = {n["node_id"]: n["groups"] for n in doc["leadership"]["groups_led"]}
    assert led == {"n1": len(groups) - 1, "n2": 1, "n3": 0}
    assert doc["leadership"]["imbalance"] == len(groups) - 1
    # The page shows the same figures.
    html = (await client.get("/keyviz/hot/")).content.decode()
    assert f"imbalance {len(groups) - 1}" in html
    assert f'<td>n1</td><td class="num">{len(groups) - 1}</td>' in html
