"""GET /api/keyviz/matrix and /api/keyviz/buckets/<id> against a real-gRPC devcluster.

KeyViz data comes from the store (the collector's job to fill; here through
keyviz/store.py); what the API still asks the nodes for is cluster data: the
per-adapter figures of GetRouteDetail and the current group leaders. How node
columns merge (write rules, alignment, malformed nodes, unknown cells of a down
node) is the collector's, tested with it (tests/integration/keyviz/test_keyviz_collector.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from devcluster import DevCluster, Op
from keyviz import store
from tests.helpers import store_route_writes

pytestmark = pytest.mark.integration

STEP = 60_000
KEY = b"user:42"


@pytest.fixture
def api(portal: Callable[..., AsyncClient]) -> Callable[..., AsyncClient]:
    """`api(cluster, **config)`: the shared `portal` fixture, seeded with every node."""
    store.clear_bucket_cache()
    return lambda cluster, **config: portal(cluster, **config)


def minute(offset: int = 0) -> int:
    """A step boundary a few minutes back, inside the API's default last-hour window."""
    return (int(time.time() * 1000) // STEP - 5 + offset) * STEP


def store_writes(cluster: DevCluster, key: bytes, counts: dict[str, int]) -> str:
    """One column of writes on `key`'s route, as the collector stores it. The bucket id."""
    return store_route_writes(cluster, key, counts, slot=minute(), step_ms=STEP, lag_ms=300)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"series": "latency"}, "series: unknown series 'latency'"),
        ({"from": "2000", "to": "1000"}, "from: must be before to (2000 >= 1000)"),
        ({"rows": "5000"}, "rows: must be from 1 to 1024 rows, got 5000"),
        ({"from": "yesterday"}, "from: must be a whole number"),
        ({"from": "0", "to": str(31 * 24 * 3600 * 1000)}, "from: the window from/to of"),
    ],
)
async def test_bad_parameters_are_400s_naming_the_parameter(devcluster, api, query, message):
    resp = await api(devcluster).get("/api/keyviz/matrix", query)
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == 400
    assert message in body["message"]


async def test_nodes_with_keyviz_disabled_do_not_stop_the_matrix_from_the_store(devcluster, api):
    bucket = await sync_to_async(store_writes)(devcluster, KEY, {"n1": 5})
    for node in devcluster.nodes:
        devcluster.set_keyviz_enabled(node.node_id, False)
    devcluster.reset_rpc_counts()
    resp = await api(devcluster).get("/api/keyviz/matrix")
    assert resp.status_code == 200
    [row] = resp.json()["rows"]
    assert (row["bucket_id"], row["values"]) == (bucket, [5])
    # No node was asked for KeyViz data.
    assert all(
        devcluster.rpc_counts(n.node_id).get("GetKeyVizMatrix", 0) == 0 for n in devcluster.nodes
    )


async def test_bucket_detail_lists_each_nodes_contribution_with_group_and_term(devcluster, api):
    route = devcluster.route_for_key(KEY)
    group = devcluster.group(route.group_id)
    bucket = await sync_to_async(store_writes)(devcluster, KEY, {"n1": 5, "n2": 3})
    resp = await api(devcluster).get(f"/api/keyviz/buckets/{bucket}")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["bucket"]["values"] == [8]
    assert (doc["tier"], doc["per_node"]) == (0, True)
    contributions = sorted(
        (c["node"], c["value"], c["raft_group_id"], c["leader_term"]) for c in doc["contributions"]
    )
    assert contributions == [
        ("n1", 5, group.group_id, group.term),
        ("n2", 3, group.group_id, group.term),
    ]
    assert doc["per_adapter"] == {}  # upstream nodes do not implement GetRouteDetail


async def test_bucket_detail_includes_per_adapter_figures_where_nodes_implement_route_detail(
    devcluster_design, api
):
    route = devcluster_design.route_for_key(KEY)
    leader = devcluster_design.group(route.group_id).leader
    devcluster_design.inject([Op("n1", "write", KEY, count=2, adapter="redis")])
    devcluster_design.flush(at_ms=minute())
    bucket = await sync_to_async(store_writes)(devcluster_design, KEY, {leader: 2})
    doc = (await api(devcluster_design).get(f"/api/keyviz/buckets/{bucket}")).json()
    assert [(c["node"], c["value"]) for c in doc["contributions"]] == [(leader, 2)]
    assert any(
        a["adapter"] == "redis" for summaries in doc["per_adapter"].values() for a in summaries
    )


async def test_unknown_bucket_is_a_404_that_says_what_to_do(devcluster, api):
    await sync_to_async(store_writes)(devcluster, KEY, {"n1": 1})
    resp = await api(devcluster).get("/api/keyviz/buckets/route:999999")
    assert resp.status_code == 404
    assert (
        resp.json()["message"]
        == "no row with bucket id 'route:999999' in this window; widen from/to"
    )
