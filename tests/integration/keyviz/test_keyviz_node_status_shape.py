"""One per-node status shape: the cluster API, the KeyViz matrix API and the live stream's
node summary describe a node the same way, with the same diagnosis (cause, next step), so
the KeyViz page's banner says what the cluster pages say instead of raw gRPC text."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.diagnose import CAUSES
from keyviz import store
from keyviz.collector import close_collector, start_collector
from keyviz.lease import LocalLease
from keyviz.messages import summary_of
from tests.helpers import until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STEP = 500


async def body(client: Any, path: str) -> Any:
    response = await client.get(path)
    assert response.status_code == 200, response.content[:300]
    return response.json()


async def test_a_stopped_node_has_one_status_shape_and_diagnosis_in_every_api(
    devcluster_factory, portal
):
    cluster = devcluster_factory(timers=True, step_ms=STEP)
    client = portal(cluster)
    store.clear_bucket_cache()
    collector = start_collector(lease=LocalLease(), step_ms=STEP)
    try:
        await until(
            lambda: collector.nodes.tracks and all(t.ok for t in collector.nodes.tracks.values())
        )
        cluster.stop_node("n2")

        matrix_node = await until(lambda: _down_in(client, "/api/keyviz/matrix", "nodes"))
        cluster_node = await until(lambda: _down_in(client, "/api/nodes", "node_status"))
        live_failed = summary_of(collector.nodes.status())["failed"]
    finally:
        await close_collector()

    refused = CAUSES["refused"]
    for doc in (matrix_node, cluster_node, *live_failed):
        assert doc["node"] == "n2"
        assert (doc["code"], doc["reachable"]) == ("UNAVAILABLE", False)
        assert (doc["cause"], doc["summary"], doc["next_step"]) == (
            "refused",
            refused.cause,
            refused.next_step,
        )
    # The KeyViz shapes are the cluster API's, plus what the collector adds.
    assert set(cluster_node) <= set(matrix_node)
    assert set(matrix_node) - set(cluster_node) == {"last_column_ms", "lag_ms", "streaming"}
    assert set(live_failed[0]) == set(matrix_node)


async def _down_in(client: Any, path: str, key: str) -> dict[str, Any] | None:
    """n2's status in an API answer once it shows n2 failed."""
    doc = await body(client, path)
    return next((s for s in doc[key] if s["node"] == "n2" and not s["ok"]), None)
