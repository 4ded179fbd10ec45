"""The heatmap page and the API additions it uses: key-range zoom and the group leaders
in the cell detail, against a real-gRPC devcluster."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.test import AsyncClient

from devcluster import DevCluster, Op

pytestmark = pytest.mark.integration

STEP = 60_000


@pytest.fixture
def api(portal: Callable[..., AsyncClient]) -> Callable[[DevCluster], AsyncClient]:
    """`api(cluster)`: the shared signed-in `portal` fixture, seeded with every node."""
    return lambda cluster: portal(cluster)


def b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def traffic(cluster: DevCluster) -> list[Any]:
    """Writes on every route, one column, a few minutes back."""
    routes = cluster.routes()
    ops = [
        Op("n1", "write", (r.start or b"\x00") + b"k", count=i + 1) for i, r in enumerate(routes)
    ]
    cluster.inject(ops)
    cluster.flush(at_ms=(int(time.time() * 1000) // STEP - 3) * STEP)
    return list(routes)


async def test_a_key_range_keeps_only_the_rows_that_meet_it(devcluster, api):
    routes = traffic(devcluster)
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


async def test_the_cell_detail_names_the_rows_group_and_its_current_leader(devcluster, api):
    key = b"user:42"
    route = devcluster.route_for_key(key)
    devcluster.transfer_leadership(route.group_id, "n3")
    devcluster.inject([Op("n1", "write", key, count=2), Op("n2", "write", key, count=2)])
    devcluster.flush(at_ms=(int(time.time() * 1000) // STEP - 2) * STEP)
    doc = (await api(devcluster).get(f"/api/keyviz/buckets/route:{route.route_id}")).json()
    group = devcluster.group(route.group_id)
    assert doc["groups"] == [
        {"raft_group_id": group.group_id, "leader_node_id": "n3", "leader_term": group.term}
    ]
    assert {c["raft_group_id"] for c in doc["contributions"]} == {group.group_id}


async def test_the_heatmap_page_is_served_with_its_module_and_no_inline_script(devcluster, api):
    resp = await api(devcluster).get("/keyviz/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert 'id="kv-canvas"' in html
    assert re.search(r'<script type="module" src="/static/js/heatmap\.js">', html)
    # Strict-CSP ready: no inline handlers, no inline script other than JSON data.
    assert not re.search(r"\son[a-z]+=", html)
    inline = re.findall(r"<script(?![^>]*\ssrc=)([^>]*)>", html)
    assert inline == [' id="kv-reserved" type="application/json"']
    for series in ("writes", "reads", "write_bytes", "read_bytes"):
        assert f'value="{series}"' in html
    for preset in ("15m", "1h", "6h", "24h", "custom"):
        assert f'value="{preset}"' in html


async def test_a_step_hint_merges_a_short_window_on_the_nodes_grid(devcluster, api):
    # One column per node: the merge cannot see the step and would assume 60 s.
    at = int(time.time() * 1000) // 1000 * 1000 - 5_300
    devcluster.inject([Op("n1", "write", b"user:42", count=3)])
    for i, node in enumerate(devcluster.nodes):
        devcluster.flush(node.node_id, at_ms=at + 100 * i)
    client = api(devcluster)
    query = {"from": str(at - 2_000), "to": str(at + 2_000)}
    guessed = (await client.get("/api/keyviz/matrix", query)).json()
    assert guessed["step_ms"] == 60_000
    hinted = (await client.get("/api/keyviz/matrix", {**query, "step_ms": "1000"})).json()
    assert hinted["step_ms"] == 1_000
    assert hinted["column_unix_ms"] == [(at + 500) // 1000 * 1000]
