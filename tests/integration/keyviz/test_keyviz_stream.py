"""The live stream (`/api/stream`) against the real ASGI app and a real-gRPC devcluster.

Viewers are channels' WebsocketCommunicator clients of `elastickv_admin.asgi.application`
(origin check, session and auth middleware, the consumer, the in-memory channel layer);
the nodes flush on their own timers with a short step.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from cluster.runtime import node_client, reset_runtime
from devcluster import DevCluster, Op
from devcluster.pytest_plugin import TEST_TOKEN
from elastickv_admin.asgi import application
from elastickv_admin.lib.config import PortalConfig
from keyviz import consumers, store
from keyviz.collector import close_collector, start_collector
from keyviz.columns import FLAG_UNKNOWN
from keyviz.lease import LocalLease
from keyviz.matrix import RowMeta
from keyviz.messages import RowCatalog, column_event, unpack_frame
from tests.helpers import BROWSER_ORIGIN, stream_group_members

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STEP = 400
# What a browser on http://127.0.0.1/ sends: its Host, and its page's origin.
ORIGIN = BROWSER_ORIGIN
KEY = b"user:42"


class Viewer:
    """One WebSocket client; `next()` skips the message types a test is not about."""

    def __init__(self, comm: WebsocketCommunicator) -> None:
        self.comm = comm
        self.columns: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.comm.send_json_to(message)

    async def next(self, kind: str, within: float = 10.0, *, ack: bool = True) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            message = await self.comm.receive_json_from(max(0.01, deadline - time.monotonic()))
            if message["type"] == "column":
                self.columns.append(message)
                if ack:
                    await self.send({"type": "ack", "column_unix_ms": message["column_unix_ms"]})
            if message["type"] == kind:
                return dict(message)

    async def column_with(self, bucket_id: str, within: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            column = await self.next("column", max(0.01, deadline - time.monotonic()))
            if any(r["bucket_id"] == bucket_id for r in column["rows"]):
                return column


def viewer_headers(token: str) -> list[tuple[bytes, bytes]]:
    """A non-browser viewer: an allowed Origin and a viewer's API token."""
    return [*ORIGIN, (b"authorization", f"Bearer {token}".encode())]


@pytest.fixture
async def stream(tmp_path: Path, viewer_token: str) -> AsyncIterator[Callable[..., Any]]:
    """`await stream(cluster)` points the portal at the cluster and returns a viewer factory."""
    token_file = tmp_path / "token"
    token_file.write_text(TEST_TOKEN)
    overrides: list[Any] = []
    viewers: list[Viewer] = []
    store.clear_bucket_cache()  # the test database was emptied under the process's cache

    async def connect(series: str | None = "writes", fmt: str | None = None) -> Viewer:
        comm = WebsocketCommunicator(
            application, "/api/stream", headers=viewer_headers(viewer_token)
        )
        connected, _ = await comm.connect()
        assert connected
        viewer = Viewer(comm)
        viewers.append(viewer)
        assert (await comm.receive_json_from())["type"] == "hello"
        if series is not None:
            request = {"type": "subscribe", "series": series, **({"format": fmt} if fmt else {})}
            await viewer.send(request)
        return viewer

    def configure(cluster: DevCluster, **config: Any) -> Callable[..., Any]:
        config.setdefault("keyviz_step_ms", cluster.step_ms)  # the nodes' --keyvizStep
        override = override_settings(
            ELASTICKV_ADMIN=PortalConfig(
                seeds=tuple(cluster.addresses), node_token_file=str(token_file), **config
            )
        )
        override.enable()
        overrides.append(override)
        reset_runtime()
        start_collector(lease=LocalLease(), step_ms=STEP)  # what every serve process runs
        return connect

    yield configure
    for viewer in viewers:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await viewer.comm.disconnect()
    await close_collector()
    await node_client().close()
    for override in reversed(overrides):
        override.disable()
    reset_runtime()


def timed(factory: Callable[..., DevCluster], **kwargs: Any) -> DevCluster:
    return factory(timers=True, step_ms=STEP, **kwargs)


def node_columns(cluster: DevCluster, node_id: str, since_ms: int, until_ms: int) -> int:
    """How many columns a node flushed in [since, until) (read from its own matrix)."""
    import grpc

    from proto import admin_pb2, admin_pb2_grpc

    with grpc.insecure_channel(cluster.node(node_id).address) as channel:
        response = admin_pb2_grpc.AdminStub(channel).GetKeyVizMatrix(
            admin_pb2.GetKeyVizMatrixRequest(
                series=admin_pb2.KEYVIZ_SERIES_WRITES, from_unix_ms=since_ms, to_unix_ms=until_ms
            ),
            metadata=cluster.auth_metadata(node_id),
        )
    return len(response.column_unix_ms)


async def test_many_viewers_cost_one_matrix_call_per_node_per_step(devcluster_factory, stream):
    cluster = timed(devcluster_factory)
    connect = stream(cluster)
    viewers = [await connect() for _ in range(5)]
    for viewer in viewers:
        await viewer.next("column")
    # Steady state: count every call the nodes receive over several steps.
    cluster.reset_rpc_counts()
    since = int(time.time() * 1000)
    for _ in range(6):
        for viewer in viewers:
            await viewer.next("column")
    counts = {n.node_id: cluster.rpc_counts(n.node_id) for n in cluster.nodes}
    until = int(time.time() * 1000)
    for node in cluster.nodes:
        flushed = node_columns(cluster, node.node_id, since, until)
        calls = counts[node.node_id].get("GetKeyVizMatrix", 0)
        # One call per series (four) per node per flushed column, whatever the number of
        # viewers; +-1 flush on either edge of the window, and a round asked again when a
        # flush came late (PollSchedule).
        assert 4 * (flushed - 1) <= calls <= 4 * (flushed + 2), (node.node_id, calls, flushed)
        assert counts[node.node_id].get("StreamEvents", 0) == 0  # upstream: not retried yet
    # Every viewer saw the same columns, in order, one step apart.
    sequences = [[c["column_unix_ms"] for c in v.columns[-6:]] for v in viewers]
    assert all(seq == sequences[0] for seq in sequences)
    assert all(b - a == STEP for a, b in zip(sequences[0], sequences[0][1:], strict=False))


async def test_streamevents_replace_polling_one_stream_per_node(devcluster_factory, stream):
    cluster = timed(devcluster_factory, profile="design")
    connect = stream(cluster)
    viewers = [await connect() for _ in range(3)] + [await connect("reads")]
    for viewer in viewers:
        column = await viewer.next("column")
    assert column["nodes"]["streaming"] == ["n1", "n2", "n3"]
    cluster.reset_rpc_counts()
    for _ in range(4):
        await viewers[0].next("column")
    for node in cluster.nodes:
        # Two series, four viewers: still one stream per node, and no polling at all.
        assert cluster.subscriber_count(node.node_id) == 1
        assert cluster.rpc_counts(node.node_id).get("GetKeyVizMatrix", 0) == 0


async def test_a_split_shows_its_new_rows_with_their_metadata_once(devcluster_factory, stream):
    cluster = timed(devcluster_factory, profile="design")
    connect = stream(cluster)
    viewer = await connect()
    await viewer.next("column")  # live: traffic from now on arrives as columns
    route = cluster.route_for_key(KEY)
    leader = cluster.group(route.group_id).leader
    cluster.inject([Op(leader, "write", KEY, count=7)])
    first = await viewer.column_with(f"route:{route.route_id}")
    assert {r["bucket_id"] for r in first["new_rows"]} >= {f"route:{route.route_id}"}

    left, right = cluster.split_route(route.route_id, KEY)
    transition = await viewer.next("route_transition")
    assert transition["parent_route_id"] == route.route_id
    assert sorted(transition["child_route_ids"]) == sorted([left, right])
    cluster.inject([Op(leader, "write", KEY, count=9)])
    column = await viewer.column_with(f"route:{right}")
    [cell] = [r for r in column["rows"] if r["bucket_id"] == f"route:{right}"]
    assert cell["value"] == 9
    [meta] = [r for r in column["new_rows"] if r["bucket_id"] == f"route:{right}"]
    assert meta["start_text"] == KEY.decode()
    assert meta["route_ids"] == [right]
    # Metadata goes once per viewer: the next column with the row carries none for it.
    cluster.inject([Op(leader, "write", KEY, count=2)])
    again = await viewer.column_with(f"route:{right}")
    assert f"route:{right}" not in {r["bucket_id"] for r in again.get("new_rows", [])}


async def test_a_stopped_node_is_reported_and_its_groups_rows_unknown(devcluster_factory, stream):
    cluster = timed(devcluster_factory)
    connect = stream(cluster)
    viewer = await connect()
    await viewer.next("column")
    route = cluster.route_for_key(KEY)
    leader = cluster.group(route.group_id).leader
    other = next(n.node_id for n in cluster.nodes if n.node_id != leader)
    cluster.inject([Op(other, "write", KEY, count=3)])
    before = await viewer.column_with(f"route:{route.route_id}")
    assert before["nodes"]["failed"] == []

    cluster.stop_node(leader)
    cluster.inject([Op(other, "write", KEY, count=5)])
    # Viewers hear of it at once, before the next column.
    status = await viewer.next("status")
    assert [f["node"] for f in status["nodes"]["failed"]] == [leader]
    deadline = time.monotonic() + 10
    while True:
        column = await viewer.next("column")
        if column["nodes"]["failed"]:
            break
        assert time.monotonic() < deadline
    [failed] = column["nodes"]["failed"]
    assert failed["node"] == leader
    assert failed["code"] == "UNAVAILABLE"
    assert column["nodes"]["responded"] == 2
    assert column["nodes"]["total"] == 3
    # The stopped node led the row's group: the row is unknown, not zero, even with no value.
    [cell] = [r for r in column["rows"] if r["bucket_id"] == f"route:{route.route_id}"]
    assert cell["flags"] & FLAG_UNKNOWN


async def test_the_first_subscriber_gets_the_step_nodes_and_last_columns_from_the_store(
    devcluster_factory, stream
):
    cluster = timed(devcluster_factory)
    connect = stream(cluster)
    # No viewer yet: the collector works all the same, and stores what it publishes.
    cluster.inject([Op("n1", "write", KEY, count=3)])
    deadline = time.monotonic() + 10
    while True:
        state = await sync_to_async(store.load_state, thread_sensitive=False)("collector")
        if state and (state.get("last_final_ms") or {}).get("writes"):
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    viewer = await connect()
    subscribed = await viewer.next("subscribed")
    assert subscribed["step_ms"] == STEP
    assert subscribed["nodes"]["total"] == 3
    assert [n["node"] for n in subscribed["nodes"]["nodes"]] == ["n1", "n2", "n3"]
    assert subscribed["collector"]["last_error"] is None
    # The replay: the newest final columns, rows with their metadata.
    replayed = await viewer.next("column", within=1.0)
    assert replayed["column_unix_ms"] <= state["heartbeat_ms"]
    assert replayed["step_ms"] == STEP


async def test_binary_subscription_sends_compact_column_frames(devcluster_factory, stream):
    cluster = timed(devcluster_factory)
    connect = stream(cluster)
    viewer = await connect("writes", "bin")
    subscribed = await viewer.next("subscribed")
    assert subscribed["format"] == "bin"
    route = cluster.route_for_key(KEY)
    deadline = time.monotonic() + 10
    header: dict[str, Any] = {}
    described: list[str] = []  # rows whose metadata came with a frame
    while time.monotonic() < deadline:
        cluster.inject([Op("n1", "write", KEY, count=4)])
        frame = await viewer.comm.receive_output(5)
        if "bytes" not in frame or frame["bytes"] is None:
            continue
        header, values, flags = unpack_frame(frame["bytes"])
        described += [r["bucket_id"] for r in header.get("new_rows", [])]
        await viewer.send({"type": "ack", "column_unix_ms": header["column_unix_ms"]})
        # (a late node's rows may first come as unknown with no value: wait for the count)
        if (
            f"route:{route.route_id}" in header["bucket_ids"]
            and values[header["bucket_ids"].index(f"route:{route.route_id}")]
        ):
            break
    assert header["type"] in ("column", "amend")
    at = header["bucket_ids"].index(f"route:{route.route_id}")
    assert values[at] >= 4
    assert len(flags) == header["n_rows"]
    # The row's metadata came with the first frame that had it, once.
    assert described.count(f"route:{route.route_id}") == 1


async def test_client_messages_are_validated_and_the_connection_kept(devcluster, stream):
    connect = stream(devcluster)
    viewer = await connect(series=None)
    bad = [
        ("not json", "message: not valid JSON"),
        ("[1, 2]", "message: must be a JSON object"),
        ('{"type": "watch"}', "type: unknown message type 'watch'"),
        ('{"type": "subscribe", "series": "deletes"}', "series: unknown series 'deletes'"),
        ('{"type": "subscribe", "series": "writes", "format": "xml"}', "format: unknown format"),
        ('{"type": "subscribe", "series": "writes", "rows": 5}', "rows: unknown field"),
        ('{"type": "ack", "column_unix_ms": "soon"}', "column_unix_ms: must be"),
        ('{"type": "ack", "column_unix_ms": 5}', "ack: not subscribed"),
    ]
    for text, message in bad:
        await viewer.comm.send_to(text_data=text)
        error = await viewer.next("error")
        assert error["message"].startswith(message), (text, error)
        assert error["code"] == (409 if "not subscribed" in message else 400)
    await viewer.comm.send_to(bytes_data=b"\x00")
    assert (await viewer.next("error"))["message"].startswith("message: send JSON text")
    await viewer.send({"type": "ping"})
    assert (await viewer.next("pong"))["type"] == "pong"
    await viewer.send({"type": "subscribe", "series": "reads"})
    subscribed = await viewer.next("subscribed")
    assert subscribed["series"] == "reads"
    assert subscribed["protocol"] == 1


def fake_column(at: int, bucket: str = "route:1", value: int = 1) -> dict[str, Any]:
    return column_event(
        series="writes",
        step_ms=1000,
        column_unix_ms=at,
        cells=[(RowMeta(bucket, start=b"a", end=b"b", route_ids=(1,), route_count=1), value, 0)],
        catalog=RowCatalog(),
        nodes={"responded": 1, "total": 1, "failed": [], "late": [], "streaming": []},
        emitted_unix_ms=at,
    )


async def test_a_viewer_that_falls_behind_gets_a_resync_not_an_unbounded_queue(devcluster, stream):
    connect = stream(devcluster)  # manual flush: the collector has nothing to send
    slow, fast = await connect(), await connect()
    await slow.next("subscribed")
    await fast.next("subscribed")
    layer = get_channel_layer()
    burst = consumers.MAX_UNACKED + consumers.MAX_QUEUED + 10
    for i in range(burst):
        await layer.group_send("keyviz.writes", fake_column(1_000 * (i + 1)))
        # A viewer that acknowledges what it draws gets every column.
        assert (await fast.next("column"))["column_unix_ms"] == 1_000 * (i + 1)
    # The slow one never acknowledges: it gets a window of columns, then one resync.
    got = [await slow.next("column", ack=False) for _ in range(consumers.MAX_UNACKED)]
    assert [c["column_unix_ms"] for c in got] == [1_000 * (i + 1) for i in range(len(got))]
    resync = await slow.next("resync", ack=False)
    # Its queue (and the column that overflowed it) was dropped, not buffered.
    assert resync["dropped"] == consumers.MAX_QUEUED + 1
    assert resync["last_sent_unix_ms"] == got[-1]["column_unix_ms"]
    assert await slow.comm.receive_nothing(0.2)
    # After refetching, the slow one subscribes again and is live again.
    await slow.send({"type": "subscribe", "series": "writes"})
    await slow.next("subscribed", ack=False)
    await layer.group_send("keyviz.writes", fake_column(1_000 * (burst + 5), "route:2"))
    column = await slow.next("column")
    assert column["column_unix_ms"] == 1_000 * (burst + 5)
    assert column["new_rows"][0]["bucket_id"] == "route:2"


async def test_a_refused_handshake_never_opens_the_stream(monkeypatch, viewer_token):
    # Past the access middleware (a viewer's token), the consumer's own check still decides.
    async def refuse(self: consumers.StreamConsumer) -> bool:
        return False

    monkeypatch.setattr(consumers.StreamConsumer, "authorized", refuse)
    comm = WebsocketCommunicator(application, "/api/stream", headers=viewer_headers(viewer_token))
    connected, code = await comm.connect()
    assert not connected
    assert code == consumers.CLOSE_POLICY


async def test_viewers_and_column_lag_are_exported_as_metrics(devcluster_factory, stream):
    from prometheus_client import REGISTRY

    def viewers_gauge() -> float:
        return REGISTRY.get_sample_value("elastickv_admin_websocket_viewers") or 0.0

    def lag_count() -> float:
        sample = "elastickv_admin_live_column_lag_seconds_count"
        return REGISTRY.get_sample_value(sample, {"series": "writes"}) or 0.0

    cluster = timed(devcluster_factory)
    connect = stream(cluster)
    before_viewers, before_lag = viewers_gauge(), lag_count()
    viewers = [await connect() for _ in range(2)]
    assert viewers_gauge() == before_viewers + 2
    column = await viewers[0].next("column")
    assert lag_count() > before_lag
    assert column["emitted_unix_ms"] >= column["column_unix_ms"]
    for viewer in viewers:
        await viewer.comm.disconnect()
    assert viewers_gauge() == before_viewers


# --- hostile frames: an error (or a documented close), never a dead socket -----------------------

HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    (
        "lone-surrogate-escape-in-subscribe",
        {"text_data": '{"type": "subscribe", "series": "\\udc80"}'},
        "series: unknown series '\\udc80'",
    ),
    (
        "lone-surrogate-in-the-text",
        {"text_data": '{"type": "subscribe", "series": "\udc80"}'},
        "message: not valid UTF-8 text",
    ),
    ("deeply-nested-array", {"text_data": "[" * 1500 + "]" * 1500}, "message: JSON nested too"),
    (
        "deeply-nested-subscribe",
        {"text_data": '{"type": "subscribe", "series": ' + "[" * 1500 + "]" * 1500 + "}"},
        "message: JSON nested too",
    ),
    ("huge", {"text_data": '{"type": "ping", "pad": "' + "x" * 100_000 + '"}'}, "message: longer"),
    ("not-json", {"text_data": "\x00\xff{"}, "message: not valid JSON"),
    ("binary", {"bytes_data": b'{"type": "ping"}'}, "message: send JSON text frames"),
    ("type-not-a-string", {"text_data": '{"type": ["subscribe"]}'}, "type: unknown message"),
    (
        "series-not-a-string",
        {"text_data": '{"type": "subscribe", "series": {"a": [1, 2]}}'},
        "series: unknown series a JSON object",
    ),
    (
        "ack-a-huge-float",
        {"text_data": '{"type": "ack", "column_unix_ms": 1e400}'},
        "column_unix_ms: must be",
    ),
]


async def test_every_hostile_frame_gets_an_error_and_the_socket_keeps_answering(devcluster, stream):
    connect = stream(devcluster)
    viewer = await connect(series=None)
    for name, frame, expected in HOSTILE:
        await viewer.comm.send_to(**frame)
        error = await viewer.next("error")
        assert error["message"].startswith(expected), (name, error)
        assert error["code"] == 400, name
        await viewer.send({"type": "ping"})
        assert (await viewer.next("pong"))["type"] == "pong", name
    await viewer.send({"type": "subscribe", "series": "writes"})
    assert (await viewer.next("subscribed"))["series"] == "writes"


async def test_a_viewer_that_sent_hostile_frames_leaves_no_trace(devcluster_factory, stream):
    from prometheus_client import REGISTRY

    def viewers_gauge() -> float:
        return REGISTRY.get_sample_value("elastickv_admin_websocket_viewers") or 0.0

    cluster = timed(devcluster_factory)
    connect = stream(cluster)
    before = viewers_gauge()
    viewer = await connect()
    await viewer.next("column")  # subscribed, and columns flow
    assert stream_group_members("writes") == 1
    assert viewers_gauge() == before + 1
    for _, frame, _ in HOSTILE:
        await viewer.comm.send_to(**frame)
    await viewer.send({"type": "ping"})
    await viewer.next("pong")
    await viewer.comm.disconnect()
    assert viewers_gauge() == before
    assert stream_group_members("writes") == 0


async def test_a_viewer_the_server_cannot_send_to_is_closed_and_cleaned_up(
    devcluster, stream, monkeypatch
):
    from prometheus_client import REGISTRY

    def viewers_gauge() -> float:
        return REGISTRY.get_sample_value("elastickv_admin_websocket_viewers") or 0.0

    def broken(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("a rendering bug")

    connect = stream(devcluster)
    before = viewers_gauge()
    viewer = await connect()
    await viewer.next("subscribed")
    assert stream_group_members("writes") == 1
    monkeypatch.setattr(consumers, "render_column", broken)
    await get_channel_layer().group_send("keyviz.writes", fake_column(1_000))
    # Not left open and silent: closed with 4500, and its subscription released.
    assert await viewer.comm.receive_output(5) == {"type": "websocket.close", "code": 4500}
    await viewer.comm.wait(5)
    assert viewers_gauge() == before
    assert stream_group_members("writes") == 0


async def test_a_leader_change_reaches_subscribers_as_the_event_the_timeline_records(
    devcluster_factory, stream, monkeypatch
):
    from keyviz import events, intake
    from keyviz.collector import running_collector
    from keyviz.messages import wall_ms
    from tests.helpers import until

    monkeypatch.setattr(intake, "LEADERS_EVERY_S", 0.2)  # the overview is asked every 10 s
    cluster = timed(devcluster_factory)
    connect = stream(cluster)
    viewer = await connect("reads")
    await viewer.next("subscribed")
    collector = running_collector()
    assert collector is not None
    await until(lambda: collector.events.leaders is not None)  # the baseline overview
    group = cluster.groups()[0]
    to = next(n.node_id for n in cluster.nodes if n.node_id != group.leader)
    term = cluster.transfer_leadership(group.group_id, to)
    message = await viewer.next("event")
    assert set(message) == {"type", "event"}
    event = message["event"]
    assert event["type"] == "leader_changed"
    assert event["raft_group_id"] == group.group_id
    assert event["details"] == {"from": group.leader, "to": to, "term": term}
    # The same entry GET /api/events answers.
    query = events.parse_event_query({"type": "leader_changed"}, now_ms=wall_ms() + 1)
    recorded = await sync_to_async(events.read_events)(query)
    assert recorded["events"] == [event]
