"""The heatmap page and the API additions it uses: key-range zoom and the group leaders
in the cell detail, against a real-gRPC devcluster. KeyViz cells come from the store
(filled here as the collector fills it); the group leaders from the nodes."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from devcluster import DevCluster
from keyviz import store
from keyviz.columns import MergedColumn
from keyviz.matrix import RowMeta
from proto import admin_pb2
from tests.helpers import store_route_writes

pytestmark = pytest.mark.integration

STEP = 60_000


@pytest.fixture
def api(portal: Callable[..., AsyncClient]) -> Callable[[DevCluster], AsyncClient]:
    """`api(cluster)`: the shared signed-in `portal` fixture, seeded with every node."""
    return lambda cluster: portal(cluster)


def b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def store_traffic(cluster: DevCluster) -> list[Any]:
    """One stored column a few minutes back with writes on every route (route i: i + 1), as
    the collector would have stored them from the nodes."""
    routes = list(cluster.routes())
    rows = tuple(
        RowMeta(f"route:{r.route_id}", start=r.start, end=r.end, route_ids=(r.route_id,))
        for r in routes
    )
    store.clear_bucket_cache()
    store.save_merged(
        [
            MergedColumn(
                series=admin_pb2.KEYVIZ_SERIES_WRITES,
                column_unix_ms=(int(time.time() * 1000) // STEP - 3) * STEP,
                step_ms=STEP,
                rows=rows,
                values=np.arange(1, len(rows) + 1, dtype=np.uint64),
                flags=np.zeros(len(rows), dtype=np.uint8),
                contributors={n.node_id: 0 for n in cluster.nodes},
            )
        ]
    )
    return routes


async def test_a_key_range_keeps_only_the_rows_that_meet_it(devcluster, api):
    routes = await sync_to_async(store_traffic)(devcluster)
    client = api(devcluster)
    middle = routes[3:5]
    query = {"start_key": b64(middle[0].start), "end_key": b64(middle[-1].end)}
    doc = (await client.get("/api/keyviz/matrix", query)).json()
    assert [r["bucket_id"] for r in doc["rows"]] == [f"route:{r.route_id}" for r in middle]
    # A budget of one row inside the range joins only those rows: re-bucketed, not cropped.
    one = (await client.get("/api/keyviz/matrix", {**query, "rows": "1"})).json()
    [row] = one["rows"]
    assert row["member_bucket_ids"] == [f"route:{r.route_id}" for r in middle]
    assert sum(row["values"]) == 4 + 5
    # The binary form the page draws agrees.
    binary = await client.get("/api/keyviz/matrix", {**query, "format": "bin"})
    assert binary.status_code == 200
    assert binary["Content-Type"] == "application/octet-stream"


async def test_a_bad_key_is_a_400_that_names_the_parameter(devcluster, api):
    client = api(devcluster)
    resp = await client.get("/api/keyviz/matrix", {"start_key": "not base64!"})
    assert resp.status_code == 400
    assert resp.json()["message"].startswith("start_key: must be a key in base64url")
    resp = await client.get("/api/keyviz/matrix", {"start_key": b64(b"b"), "end_key": b64(b"a")})
    assert resp.json() == {
        "code": 400,
        "message": "start_key: must sort before end_key (the range is [start_key, end_key))",
    }


def store_node_writes(cluster: DevCluster, key: bytes, counts: dict[str, int]) -> None:
    """Node columns (as the collector stores them) of writes on `key`'s route."""
    slot = (int(time.time() * 1000) // STEP - 2) * STEP
    store.clear_bucket_cache()
    store_route_writes(cluster, key, counts, slot=slot, step_ms=STEP, lag_ms=200)


async def test_the_cell_detail_names_the_rows_group_and_its_current_leader(devcluster, api):
    key = b"user:42"
    route = devcluster.route_for_key(key)
    devcluster.transfer_leadership(route.group_id, "n3")
    await sync_to_async(store_node_writes)(devcluster, key, {"n1": 2, "n2": 2})
    doc = (await api(devcluster).get(f"/api/keyviz/buckets/route:{route.route_id}")).json()
    group = devcluster.group(route.group_id)
    # The leader now comes from the cluster (GetClusterOverview), the cells from the store.
    assert doc["groups"] == [
        {"raft_group_id": group.group_id, "leader_node_id": "n3", "leader_term": group.term}
    ]
    assert {c["raft_group_id"] for c in doc["contributions"]} == {group.group_id}
    assert doc["bucket"]["values"] == [4]


async def test_the_heatmap_page_is_served_with_its_module_and_no_inline_script(devcluster, api):
    resp = await api(devcluster).get("/keyviz/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert 'id="kv-canvas"' in html
    assert re.search(r'<script type="module" src="/static/js/heatmap\.js">', html)
    # Strict-CSP ready: no inline handlers, no inline script other than JSON data.
    assert not re.search(r"\son[a-z]+=", html)
    inline = re.findall(r"<script(?![^>]*\ssrc=)([^>]*)>", html)
    assert inline == [' id="kv-config" type="application/json"']
    for series in ("writes", "reads", "write_bytes", "read_bytes"):
        assert f'value="{series}"' in html
    for preset in ("15m", "1h", "6h", "24h", "7d", "30d", "custom"):
        assert f'value="{preset}"' in html
