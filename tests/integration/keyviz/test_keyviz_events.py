"""The cluster timeline against a real-gRPC devcluster with the collector running: each
change the collector can observe is recorded exactly once, at the time it was seen."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import AsyncClient

from keyviz import intake, store
from keyviz.collector import Collector, close_collector, start_collector
from keyviz.lease import LocalLease
from keyviz.messages import wall_ms
from tests.helpers import until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STEP = 500


async def events_of(client: AsyncClient, kind: str) -> list[dict[str, Any]]:
    response = await client.get("/api/events", {"type": kind})
    assert response.status_code == 200
    found: list[dict[str, Any]] = response.json()["events"]
    return found


async def started(
    devcluster_factory: Any, portal: Any, monkeypatch: Any
) -> tuple[Any, AsyncClient, Collector]:
    monkeypatch.setattr(intake, "LEADERS_EVERY_S", 0.2)  # the overview is asked every 10 s
    cluster = devcluster_factory(timers=True, step_ms=STEP)
    client = portal(cluster)
    store.clear_bucket_cache()
    collector = start_collector(lease=LocalLease(), step_ms=STEP)
    # The baseline: a first overview and every node's answering state.
    await until(lambda: collector.events.leaders is not None and collector.events.nodes_ok)
    return cluster, client, collector


async def test_a_leader_transfer_is_one_leader_changed_event_at_its_time(
    devcluster_factory, portal, monkeypatch
):
    cluster, client, _ = await started(devcluster_factory, portal, monkeypatch)
    try:
        group = cluster.groups()[0]
        to = next(n.node_id for n in cluster.nodes if n.node_id != group.leader)
        before = wall_ms()
        term = cluster.transfer_leadership(group.group_id, to)
        found = await until(lambda: events_of(client, "leader_changed"))
        after = wall_ms()
        await asyncio.sleep(1.0)  # several more overviews: still one event
        found = await events_of(client, "leader_changed")
        assert len(found) == 1
        [event] = found
        assert event["raft_group_id"] == group.group_id
        assert event["node_id"] == to
        assert event["details"] == {"from": group.leader, "to": to, "term": term}
        assert before <= event["unix_ms"] <= after
    finally:
        await close_collector()


async def test_a_stopped_and_restarted_node_is_one_down_and_one_up_event(
    devcluster_factory, portal, monkeypatch
):
    cluster, client, _ = await started(devcluster_factory, portal, monkeypatch)
    try:
        before = wall_ms()
        cluster.stop_node("n3")
        await until(lambda: events_of(client, "node_down"))
        stopped = wall_ms()
        cluster.start_node("n3")
        await until(lambda: events_of(client, "node_up"))
        back = wall_ms()
        await asyncio.sleep(1.0)
        [down] = await events_of(client, "node_down")
        [up] = await events_of(client, "node_up")
        assert down["node_id"] == "n3"
        assert up["node_id"] == "n3"
        assert before <= down["unix_ms"] <= stopped <= up["unix_ms"] <= back
        # The page lists both.
        html = (await client.get("/events/")).content.decode()
        assert html.count('data-type="node_') == 2
    finally:
        await close_collector()


async def test_the_events_api_refuses_an_unknown_type_naming_it(portal):
    client = portal(["127.0.0.1:1"])
    response = await client.get("/api/events", {"type": "reboot"})
    assert response.status_code == 400
    assert response.json()["message"].startswith("type:")


async def test_a_route_split_is_one_route_split_event_at_its_time(
    devcluster_factory, portal, monkeypatch
):
    cluster, client, collector = await started(devcluster_factory, portal, monkeypatch)
    try:
        await until(lambda: collector.events.catalog is not None)
        target = max(cluster.routes(), key=lambda r: len(r.start))
        at = target.start + b"\x80"
        before = wall_ms()
        left, right = cluster.split_route(target.route_id, at)
        await until(lambda: events_of(client, "route_split"))
        after = wall_ms()
        await asyncio.sleep(1.0)
        [event] = await events_of(client, "route_split")
        assert event["details"]["route_id"] == target.route_id
        assert event["details"]["into"] == sorted([left, right])
        assert event["raft_group_id"] == target.group_id
        assert before <= event["unix_ms"] <= after
        assert await events_of(client, "route_merged") == []
    finally:
        await close_collector()


async def test_node_token_rotation_steps_come_from_the_audit_log(portal):
    from asgiref.sync import sync_to_async
    from django.db import transaction

    from audit.service import record_event

    client = portal(["127.0.0.1:1"])

    def rotate() -> None:
        with transaction.atomic():
            record_event("node_token.rotation_started", actor="alice", details={"fp": "x"})
            record_event("node_token.rotation_start_refused", actor="bob", outcome="failure")

    before = wall_ms()
    await sync_to_async(rotate)()
    after = wall_ms()
    [step] = await events_of(client, "node_token_rotation")
    assert step["details"] == {"action": "rotation_started", "actor": "alice"}
    assert before - 1 <= step["unix_ms"] <= after
    # Other types leave the audit log out.
    assert await events_of(client, "node_down") == []


async def test_keyviz_turned_off_and_on_is_one_disabled_and_one_enabled_event_not_a_node_down(
    devcluster_factory, portal, monkeypatch
):
    cluster, client, _ = await started(devcluster_factory, portal, monkeypatch)
    try:
        before = wall_ms()
        cluster.set_keyviz_enabled("n2", False)
        await until(lambda: events_of(client, "keyviz_disabled"))
        off = wall_ms()
        cluster.set_keyviz_enabled("n2", True)
        await until(lambda: events_of(client, "keyviz_enabled"))
        on = wall_ms()
        await asyncio.sleep(1.0)  # more polls of the node: still one event each
        [disabled] = await events_of(client, "keyviz_disabled")
        [enabled] = await events_of(client, "keyviz_enabled")
        assert disabled["node_id"] == enabled["node_id"] == "n2"
        assert before <= disabled["unix_ms"] <= off <= enabled["unix_ms"] <= on
        # The node kept answering: no down/up.
        assert await events_of(client, "node_down,node_up") == []
    finally:
        await close_collector()


async def test_a_split_a_node_streams_is_recorded_at_once_at_the_nodes_time(
    devcluster_factory, portal
):
    # The catalog is asked every 10 s (not shortened here): the pushed RouteTransition
    # makes it due at once, and the event carries the node's time of the split.
    cluster = devcluster_factory(timers=True, step_ms=STEP, profile="design")
    client = portal(cluster)
    store.clear_bucket_cache()
    collector = start_collector(lease=LocalLease(), step_ms=STEP)
    try:
        await until(lambda: collector.events.catalog is not None)
        await until(lambda: all(t.streaming for t in collector.nodes.tracks.values()))
        target = max(cluster.routes(), key=lambda r: len(r.start))
        before = wall_ms()
        left, right = cluster.split_route(target.route_id, target.start + b"\x80")
        after = wall_ms()
        [event] = await until(lambda: events_of(client, "route_split"), within=5.0)
        assert event["details"]["into"] == sorted([left, right])
        assert before <= event["unix_ms"] <= after
    finally:
        await close_collector()


async def test_the_timeline_filters_by_node_and_raft_group(portal):
    from asgiref.sync import sync_to_async

    from keyviz import events

    client = portal(["127.0.0.1:1"])
    now = wall_ms()
    await sync_to_async(events.save)(
        [
            events.Observed("node_down", now - 3000, "n2", details={"error": "x"}),
            events.Observed("leader_changed", now - 2000, "n1", 7, {"from": "n2", "to": "n1"}),
            events.Observed("leader_changed", now - 1000, "n3", 8, {"from": "n1", "to": "n3"}),
        ]
    )
    doc = (await client.get("/api/events", {"node": "n1"})).json()
    assert [(e["type"], e["node_id"]) for e in doc["events"]] == [("leader_changed", "n1")]
    doc = (await client.get("/api/events", {"group": "8"})).json()
    assert [e["raft_group_id"] for e in doc["events"]] == [8]
    html = (await client.get("/events/", {"node": "n2"})).content.decode()
    assert html.count('data-type="') == 1
    assert 'data-type="node_down"' in html
    bad = await client.get("/events/", {"group": "seven"})
    assert bad.status_code == 400
    assert "group: must be a Raft group id" in bad.content.decode()


async def test_the_timeline_page_shows_each_time_in_utc_with_its_zone(portal):
    from asgiref.sync import sync_to_async

    from keyviz import events

    client = portal(["127.0.0.1:1"])
    at = wall_ms() - 60_000
    at -= at % 1000
    await sync_to_async(events.save)([events.Observed("node_up", at, "n2")])
    html = (await client.get("/events/")).content.decode()
    shown = datetime.fromtimestamp(at / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert "When (UTC)" in html
    assert f">{shown}</time>" in html
    assert f">{at}</time>" not in html  # not raw Unix milliseconds
    # The filters take the time in UTC and show it back so.
    since = datetime.fromtimestamp((at - 1000) / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    html = (await client.get("/events/", {"from": since})).content.decode()
    assert f'name="from" value="{since}"' in html
    assert 'data-type="node_up"' in html
    later = datetime.fromtimestamp((at + 1000) / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    html = (await client.get("/events/", {"from": later})).content.decode()
    assert 'data-type="node_up"' not in html
