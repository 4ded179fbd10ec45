"""GET /api/keyviz/matrix and /api/keyviz/buckets/<id> against a real-gRPC devcluster.

Each test injects a known workload, closes columns at known times, and checks the
API's merged matrix cell by cell.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.test import AsyncClient

from devcluster import DevCluster, Malformation, Op
from keyviz.serialize import FLAG_DEGRADED, decode_binary

# The API answers signed-in callers only: a viewer's read-only token (tests/conftest.py).
pytestmark = pytest.mark.integration

STEP = 60_000
KEY = b"user:42"


@pytest.fixture
def api(portal: Callable[..., AsyncClient]) -> Callable[..., AsyncClient]:
    """`api(cluster, **config)`: the shared `portal` fixture, seeded with every node."""
    return lambda cluster, **config: portal(cluster, **config)


def minute(offset: int = 0) -> int:
    """A step boundary a few minutes back, inside the API's default last-hour window."""
    return (int(time.time() * 1000) // STEP - 5 + offset) * STEP


def row(doc: dict[str, Any], bucket_id: str) -> dict[str, Any]:
    [found] = [r for r in doc["rows"] if r["bucket_id"] == bucket_id]
    return dict(found)


def flush_staggered(cluster: DevCluster, at: int) -> None:
    # Real nodes flush on their own timers: offsets well under half a step.
    for i, node in enumerate(cluster.nodes):
        cluster.flush(node.node_id, at_ms=at + 1_500 * i)


async def test_dedupe_writes_reported_by_two_entry_nodes_for_one_group_and_term_conflict_and_take_the_max(
    devcluster, api
):
    # Upstream profile: writes are counted on the node the client hit.
    bucket = f"route:{devcluster.route_for_key(KEY).route_id}"
    devcluster.inject(
        [Op("n1", "write", KEY, size=10, count=5), Op("n2", "write", KEY, size=10, count=3)]
    )
    flush_staggered(devcluster, minute())
    resp = await api(devcluster, writes_merge="dedupe").get(
        "/api/keyviz/matrix", {"series": "writes"}
    )
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["column_unix_ms"] == [minute()]
    assert row(doc, bucket)["values"] == [5]
    assert row(doc, bucket)["conflict"] == [0]
    assert [n["ok"] for n in doc["nodes"]] == [True, True, True]


async def test_writes_sum_by_default_adding_the_entry_nodes_writes(devcluster, api):
    bucket = f"route:{devcluster.route_for_key(KEY).route_id}"
    devcluster.inject([Op("n1", "write", KEY, count=5), Op("n2", "write", KEY, count=3)])
    flush_staggered(devcluster, minute())
    doc = (await api(devcluster).get("/api/keyviz/matrix")).json()
    assert row(doc, bucket)["values"] == [8]
    assert row(doc, bucket)["conflict"] == []


@pytest.mark.parametrize(("policy", "shown"), [("sum", False), ("dedupe", True)])
async def test_page_legend_shows_conflict_only_when_writes_are_deduplicated(
    devcluster, api, policy, shown
):
    page = await api(devcluster, writes_merge=policy).get("/keyviz/")
    assert page.status_code == 200
    assert ('class="kv-mark conflict"' in page.content.decode()) is shown


async def test_reads_from_leader_and_follower_are_summed_across_nodes(devcluster, api):
    route = devcluster.route_for_key(KEY)
    leader = devcluster.group(route.group_id).leader
    follower = next(n.node_id for n in devcluster.nodes if n.node_id != leader)
    devcluster.inject(
        [
            Op(leader, "read", KEY, size=100, count=4),
            Op(follower, "read", KEY, size=100, count=2, follower_local=True),
        ]
    )
    flush_staggered(devcluster, minute())
    client = api(devcluster)
    reads = (await client.get("/api/keyviz/matrix", {"series": "reads"})).json()
    assert row(reads, f"route:{route.route_id}")["values"] == [6]
    read_bytes = (await client.get("/api/keyviz/matrix", {"series": "read_bytes"})).json()
    assert row(read_bytes, f"route:{route.route_id}")["values"] == [600]


async def test_columns_of_nodes_flushing_at_different_offsets_align_to_one_step(devcluster, api):
    devcluster.inject([Op("n1", "write", KEY, count=1)])
    flush_staggered(devcluster, minute(0))
    devcluster.inject([Op("n2", "write", KEY, count=2)])
    flush_staggered(devcluster, minute(1))
    doc = (await api(devcluster).get("/api/keyviz/matrix")).json()
    assert doc["step_ms"] == STEP
    assert doc["column_unix_ms"] == [minute(0), minute(1)]
    assert row(doc, f"route:{devcluster.route_for_key(KEY).route_id}")["values"] == [1, 2]


async def test_binary_format_carries_the_same_matrix(devcluster, api):
    devcluster.inject([Op("n1", "write", KEY, count=7), Op("n3", "write", b"order:1", count=2)])
    flush_staggered(devcluster, minute())
    client = api(devcluster)
    as_json = (await client.get("/api/keyviz/matrix")).json()
    resp = await client.get("/api/keyviz/matrix", {"format": "bin"})
    assert resp["Content-Type"] == "application/octet-stream"
    decoded = decode_binary(resp.content)
    assert decoded.column_unix_ms.tolist() == as_json["column_unix_ms"]
    assert decoded.values.tolist() == [r["values"] for r in as_json["rows"]]
    assert [r["bucket_id"] for r in decoded.header["rows"]] == [
        r["bucket_id"] for r in as_json["rows"]
    ]


@pytest.mark.parametrize("fmt", ["json", "bin"])
async def test_the_matrix_answer_says_where_its_time_went_in_server_timing(devcluster, api, fmt):
    devcluster.inject([Op("n1", "write", KEY, count=7)])
    flush_staggered(devcluster, minute())
    resp = await api(devcluster).get("/api/keyviz/matrix", {"format": fmt})
    assert resp.status_code == 200
    phases = dict(part.split(";dur=") for part in resp["Server-Timing"].split(", "))
    assert list(phases) == ["nodes", "merge", "fit", "encode"]
    assert all(float(ms) >= 0 for ms in phases.values())


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"series": "latency"}, "series: unknown series 'latency'"),
        ({"from": "2000", "to": "1000"}, "from: must be before to (2000 >= 1000)"),
        ({"rows": "5000"}, "rows: must be from 1 to 1024 rows, got 5000"),
        ({"from": "yesterday"}, "from: must be a whole number"),
        ({"from": "0", "to": str(8 * 24 * 3600 * 1000)}, "window"),
    ],
)
async def test_bad_parameters_are_400s_naming_the_parameter(devcluster, api, query, message):
    resp = await api(devcluster).get("/api/keyviz/matrix", query)
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == 400
    assert message in body["message"]


async def test_malformed_node_is_reported_and_the_others_still_merge(devcluster, api):
    devcluster.inject([Op("n1", "write", KEY, count=4), Op("n2", "write", b"order:9", count=1)])
    devcluster.set_fault("n2", malformed=Malformation.VALUES_LENGTH)
    flush_staggered(devcluster, minute())
    doc = (await api(devcluster).get("/api/keyviz/matrix")).json()
    statuses = {n["node"]: n for n in doc["nodes"]}
    assert statuses["n2"]["ok"] is False
    assert statuses["n2"]["code"] == "MALFORMED"
    assert statuses["n2"]["error"].startswith("malformed KeyViz matrix: row ")
    assert row(doc, f"route:{devcluster.route_for_key(KEY).route_id}")["values"] == [4]


async def test_rows_of_groups_led_by_a_stopped_node_are_degraded(devcluster, api):
    route = devcluster.route_for_key(KEY)
    leader = devcluster.group(route.group_id).leader
    other = next(n.node_id for n in devcluster.nodes if n.node_id != leader)
    devcluster.inject([Op(other, "write", KEY, count=3)])
    flush_staggered(devcluster, minute())
    # A stopped devcluster node hands its groups to a new leader; a node that times out
    # keeps leading, so its failure maps to this row's group.
    devcluster.set_fault(leader, delay_s=5.0, methods=["GetKeyVizMatrix"])
    doc = (
        await api(devcluster, rpc_timeout_s=0.5).get("/api/keyviz/matrix", {"format": "json"})
    ).json()
    statuses = {n["node"]: n for n in doc["nodes"]}
    assert statuses[leader]["code"] == "DEADLINE_EXCEEDED"
    assert row(doc, f"route:{route.route_id}")["degraded"] == [0]
    # Binary flags agree.
    resp = await api(devcluster, rpc_timeout_s=0.5).get("/api/keyviz/matrix", {"format": "bin"})
    decoded = decode_binary(resp.content)
    index = [r["bucket_id"] for r in decoded.header["rows"]].index(f"route:{route.route_id}")
    assert decoded.flags[index, 0] & FLAG_DEGRADED


async def test_no_node_answering_is_a_503_with_every_reason(devcluster, api):
    for node in devcluster.nodes:
        devcluster.set_keyviz_enabled(node.node_id, False)
    resp = await api(devcluster).get("/api/keyviz/matrix")
    assert resp.status_code == 503
    assert resp.json()["message"].startswith(
        "no node answered GetKeyVizMatrix (n1: KeyViz disabled on this node"
    )


async def test_bucket_detail_lists_each_nodes_contribution_with_group_and_term(devcluster, api):
    route = devcluster.route_for_key(KEY)
    group = devcluster.group(route.group_id)
    devcluster.inject([Op("n1", "write", KEY, count=5), Op("n2", "write", KEY, count=3)])
    flush_staggered(devcluster, minute())
    resp = await api(devcluster, writes_merge="dedupe").get(
        f"/api/keyviz/buckets/route:{route.route_id}"
    )
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["bucket"]["values"] == [5]
    assert doc["bucket"]["conflict"] == [0]
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
    flush_staggered(devcluster_design, minute())
    doc = (await api(devcluster_design).get(f"/api/keyviz/buckets/route:{route.route_id}")).json()
    assert [(c["node"], c["value"]) for c in doc["contributions"]] == [(leader, 2)]
    assert any(
        a["adapter"] == "redis" for summaries in doc["per_adapter"].values() for a in summaries
    )


async def test_unknown_bucket_is_a_404_that_says_what_to_do(devcluster, api):
    devcluster.inject([Op("n1", "write", KEY, count=1)])
    flush_staggered(devcluster, minute())
    resp = await api(devcluster).get("/api/keyviz/buckets/route:999999")
    assert resp.status_code == 404
    assert (
        resp.json()["message"]
        == "no row with bucket id 'route:999999' in this window; widen from/to"
    )
