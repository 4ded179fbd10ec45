"""Node token rotation against a 3-node devcluster, through the admin pages and the command.

The devcluster re-reads a node's token file when it changes (real nodes need a restart), so
"roll a node" is ``cluster.set_node_token(node, token)``. The portal runs in-process with the
database-backed token store seeded from its --nodeTokenFile (TEST_TOKEN).
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from io import StringIO
from typing import Any

import grpc
import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.db import connection
from django.test import AsyncClient

from audit.models import AuditEvent
from cluster import node_token
from cluster.models import NodeTokenRecord
from cluster.runtime import discovery, node_client
from cluster.tokens import fingerprint
from devcluster import DevCluster, Op
from devcluster.pytest_plugin import TEST_TOKEN
from elastickv_admin.lib import crypto
from proto import admin_pb2
from tests.helpers import database_dump, decrypted_values

pytestmark = pytest.mark.integration

PAGE = "/settings/node-token/"
LIVE = {"HX-Request": "true", "HX-Target": "live"}
PASTED = "pasted-next-token-0123456789abcdef"


@dataclass
class Rig:
    cluster: DevCluster
    viewer: AsyncClient  # signed in as a viewer (the dashboards)
    admin: AsyncClient  # signed in as an admin (Settings -> Node token)
    parse_html: Callable[[str], Any]

    async def states(self) -> dict[str, str]:
        """The per-node table, as the live region htmx refreshes shows it."""
        response = await self.admin.get(PAGE, headers=LIVE)
        assert response.status_code == 200
        doc = self.parse_html(response.content.decode())
        rows = doc.find(id="node-token-nodes").find("tbody").find_all("tr")
        return {r.attrs["data-node"]: r.attrs["data-state"] for r in rows}

    async def assert_complete(self) -> None:
        """The overview and the heatmap have every node: nobody failed (auth or otherwise)."""
        overview = (await self.viewer.get("/api/cluster/overview")).json()
        assert [(s["node"], s["ok"], s["code"]) for s in overview["node_status"]] == [
            ("n1", True, None),
            ("n2", True, None),
            ("n3", True, None),
        ]
        # The heatmap reads the KeyViz store, not the nodes: it answers whatever the token
        # state, and the node status it shows is the collector's (none failed).
        heatmap = await self.viewer.get("/api/keyviz/matrix", {"series": "writes"})
        assert heatmap.status_code == 200
        assert [n["node"] for n in heatmap.json()["nodes"] if not n["ok"]] == []

    async def start(self, **form: str) -> Any:
        return await self.admin.post("/settings/node-token/start/", form or {"mode": "generate"})

    async def finish(self, **form: str | list[str]) -> Any:
        return await self.admin.post("/settings/node-token/finish/", form)

    async def cancel(self, **form: str) -> Any:
        return await self.admin.post("/settings/node-token/cancel/", form)


@pytest.fixture
async def rig(devcluster_factory, portal, make_user, parse_html) -> Rig:
    cluster = devcluster_factory(profile="design")
    cluster.inject([Op("n1", "write", b"user:1", size=10, count=5)])
    for node in cluster.nodes:
        cluster.flush(node.node_id)
    viewer = portal(cluster.addresses)
    admin = AsyncClient()
    await admin.aforce_login(await sync_to_async(make_user)("rot-admin", "admin"))
    return Rig(cluster, viewer, admin, parse_html)


def shown_token(html: str) -> str:
    match = re.search(r'<code id="next-token">([^<]+)</code>', html)
    assert match, "the generated token is on the page"
    return match.group(1)


def stored() -> dict[str, NodeTokenRecord]:
    return {r.slot: r for r in NodeTokenRecord.objects.all()}


@pytest.mark.django_db(transaction=True)
async def test_a_rolling_rotation_keeps_every_node_in_view_and_finishes_only_after_the_last(
    rig, caplog
):
    caplog.set_level(logging.DEBUG)
    await rig.assert_complete()  # the first node call seeds the table from --nodeTokenFile
    seeded = await sync_to_async(stored)()
    assert list(seeded) == ["current"]
    assert seeded["current"].fingerprint == fingerprint(TEST_TOKEN)
    assert await rig.states() == {"n1": "current", "n2": "current", "n3": "current"}

    started = await rig.start()
    assert started.status_code == 200
    assert "no-store" in started["Cache-Control"]
    new = shown_token(started.content.decode())
    assert len(base64.urlsafe_b64decode(new + "=")) == 32  # 256 bits
    rows = await sync_to_async(stored)()
    assert rows["next"].fingerprint == fingerprint(new)
    await rig.assert_complete()
    assert await rig.states() == {"n1": "current", "n2": "current", "n3": "current"}

    expected = {"n1": "current", "n2": "current", "n3": "current"}
    for node in ("n1", "n2", "n3"):
        refused = await rig.finish()
        assert refused.status_code == 409
        assert "do not accept the next token yet" in refused.content.decode()
        assert "next" in await sync_to_async(stored)()
        rig.cluster.set_node_token(node, new)
        expected[node] = "next"
        await rig.assert_complete()
        assert await rig.states() == expected

    finished = await rig.finish(expected_next=fingerprint(new))
    assert finished.status_code == 302
    rows = await sync_to_async(stored)()
    assert list(rows) == ["current"]
    assert rows["current"].fingerprint == fingerprint(new)
    await rig.assert_complete()
    assert await rig.states() == {"n1": "current", "n2": "current", "n3": "current"}

    # The old token is gone from the portal's store: a node still holding it is refused.
    store = node_client().tokens
    assert [t.value for t in store.candidates(rig.cluster.node("n1").address)] == [new]
    rig.cluster.set_node_token("n1", TEST_TOKEN)
    overview = (await rig.viewer.get("/api/cluster/overview")).json()
    assert overview["node_status"][0]["code"] == "UNAUTHENTICATED"
    rig.cluster.set_node_token("n1", new)

    # ... and from the database: the raw table holds only the new token's ciphertext.
    def raw_table() -> list[tuple[Any, ...]]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT slot, ciphertext, fingerprint FROM cluster_nodetokenrecord")
            return list(cursor.fetchall())

    [(slot, ciphertext, fp)] = await sync_to_async(raw_table)()
    assert (slot, fp) == ("current", fingerprint(new))
    assert crypto.decrypt(ciphertext).decode() == new
    dump = await sync_to_async(database_dump)()
    assert TEST_TOKEN not in decrypted_values(dump), "no ciphertext of the old token is left"
    # Neither token in clear anywhere in the database or the logs.
    for secret in (TEST_TOKEN, new):
        assert secret not in dump
        assert secret not in caplog.text
    assert "node_token.rotation_finished" in dump
    assert "node_token.rotation_started" in caplog.text, "the audit stream was captured"

    actions = await sync_to_async(
        lambda: list(AuditEvent.objects.order_by("seq").values_list("action", "outcome"))
    )()
    node_token_steps = [a for a in actions if a[0].startswith("node_token.")]
    assert node_token_steps == [
        ("node_token.bootstrapped", "success"),
        ("node_token.rotation_started", "success"),
        *[("node_token.rotation_finish_refused", "failure")] * 3,
        ("node_token.rotation_finished", "success"),
    ]


@pytest.mark.django_db(transaction=True)
async def test_cancel_destroys_the_next_token_and_keeps_the_current_one(rig):
    await rig.start(mode="paste", token=PASTED)
    rig.cluster.set_node_token("n1", PASTED)
    assert await rig.states() == {"n1": "next", "n2": "current", "n3": "current"}
    page = (await rig.admin.get(PAGE)).content.decode()
    assert "Cancelling now cuts off <strong>n1</strong>" in page

    response = await rig.cancel(expected_next=fingerprint(PASTED))
    assert response.status_code == 302
    rows = await sync_to_async(stored)()
    assert list(rows) == ["current"]
    assert rows["current"].fingerprint == fingerprint(TEST_TOKEN)
    assert PASTED not in await sync_to_async(decrypted_values)(await sync_to_async(database_dump)())
    # n1 holds the cancelled token now: it accepts neither; the others carry on.
    assert await rig.states() == {"n1": "neither", "n2": "current", "n3": "current"}
    store = node_client().tokens
    await store.sync()  # what every node call does first
    assert [t.value for t in store.candidates(rig.cluster.node("n2").address)] == [TEST_TOKEN]
    event = await sync_to_async(
        lambda: AuditEvent.objects.get(action="node_token.rotation_cancelled")
    )()
    assert event.details == {"cancelled_fingerprint": fingerprint(PASTED), "nodes_on_next": ["n1"]}
    # Cancelling twice, or a stale page's cancel, is refused and changes nothing.
    again = await rig.cancel()
    assert again.status_code == 409
    assert "no rotation is running" in again.content.decode()


@pytest.mark.django_db(transaction=True)
async def test_force_finish_needs_a_confirmation_naming_the_nodes_that_lose_access(rig):
    await rig.start(mode="paste", token=PASTED)
    rig.cluster.set_node_token("n1", PASTED)
    addresses = {n.node_id: n.address for n in rig.cluster.nodes}

    ask = await rig.finish(force="1", expected_next=fingerprint(PASTED))
    assert ask.status_code == 200
    doc = rig.parse_html(ask.content.decode())
    losing = doc.find(id="losing-nodes").find("tbody").find_all("tr")
    assert [r.attrs["data-node"] for r in losing] == ["n2", "n3"]
    confirm = [i.attrs["value"] for i in doc.find_all("input", name="confirm_nodes")]
    assert confirm == [addresses["n2"], addresses["n3"]]
    assert "next" in await sync_to_async(stored)(), "asking changes nothing"

    # A confirmation for a list that no longer holds is asked again, with the new list.
    rig.cluster.set_node_token("n2", PASTED)
    stale = await rig.finish(
        force="1", confirmed="1", expected_next=fingerprint(PASTED), confirm_nodes=confirm
    )
    assert stale.status_code == 409
    doc = rig.parse_html(stale.content.decode())
    assert "the nodes that would lose access changed" in doc.find(id="node-token-error").words
    losing = doc.find(id="losing-nodes").find("tbody").find_all("tr")
    assert [r.attrs["data-node"] for r in losing] == ["n3"]

    done = await rig.finish(
        force="1",
        confirmed="1",
        expected_next=fingerprint(PASTED),
        confirm_nodes=[addresses["n3"]],
    )
    assert done.status_code == 302
    assert [r.fingerprint for r in (await sync_to_async(stored)()).values()] == [
        fingerprint(PASTED)
    ]
    assert await rig.states() == {"n1": "current", "n2": "current", "n3": "neither"}
    event = await sync_to_async(
        lambda: AuditEvent.objects.get(action="node_token.rotation_finished")
    )()
    assert event.details["forced"] is True
    assert event.details["nodes_losing_access"] == [addresses["n3"]]


@pytest.mark.django_db(transaction=True)
async def test_a_node_that_accepts_neither_token_is_shown_and_blocks_finishing(rig):
    await rig.start(mode="paste", token=PASTED)
    for node in ("n1", "n3"):
        rig.cluster.set_node_token(node, PASTED)
    rig.cluster.set_node_token("n2", "a-third-token-nobody-gave-the-portal")
    assert await rig.states() == {"n1": "next", "n2": "neither", "n3": "next"}
    page = (await rig.admin.get(PAGE, headers=LIVE)).content.decode()
    row = rig.parse_html(page).find("tr", data_node="n2")
    assert "the node rejects both tokens (invalid admin token)" in row.words
    assert "third-token" not in page
    # The dashboards report n2 as the portal's token being rejected; the others are fine.
    overview = (await rig.viewer.get("/api/cluster/overview")).json()
    assert [(s["node"], s["code"]) for s in overview["node_status"]] == [
        ("n1", None),
        ("n2", "UNAUTHENTICATED"),
        ("n3", None),
    ]
    refused = await rig.finish()
    assert refused.status_code == 409
    assert "n2 (accepts neither)" in refused.content.decode()
    rig.cluster.set_node_token("n2", PASTED)
    assert (await rig.finish()).status_code == 302


@pytest.mark.django_db(transaction=True)
async def test_unreachable_nodes_and_nodes_without_admin_are_told_apart(rig):
    await rig.states()
    rig.cluster.stop_node("n2")
    rig.cluster.set_admin_registered("n3", False)
    assert await rig.states() == {"n1": "current", "n2": "unreachable", "n3": "no_admin"}
    page = (await rig.admin.get(PAGE)).content.decode()
    assert "started without --adminTokenFile or --adminInsecureNoAuth" in page


@pytest.mark.django_db(transaction=True)
async def test_pasting_the_current_token_or_starting_twice_is_refused(rig):
    assert (await rig.start(mode="paste", token=TEST_TOKEN)).status_code == 409
    assert (await rig.start(mode="paste", token=PASTED)).status_code == 302
    second = await rig.start()
    assert second.status_code == 409
    assert "a rotation is already running" in second.content.decode()
    assert (await sync_to_async(stored)())["next"].fingerprint == fingerprint(PASTED)


@pytest.mark.django_db(transaction=True)
async def test_a_restarted_portal_uses_the_database_token_and_warns_that_its_file_differs(
    rig, caplog
):
    await rig.start(mode="paste", token=PASTED)
    for node in ("n1", "n2", "n3"):
        rig.cluster.set_node_token(node, PASTED)
    assert (await rig.finish()).status_code == 302
    # A new process: its --nodeTokenFile still holds the first token.
    store = node_token.DatabaseTokenStore(node_client().tokens.token_file)  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="cluster.node_token"):
        await store.sync()
    assert [t.value for t in store.candidates("any")] == [PASTED]
    assert (
        f"holds {fingerprint(TEST_TOKEN)}, but the database holds current {fingerprint(PASTED)}"
        in caplog.text
    )
    assert TEST_TOKEN not in caplog.text
    assert PASTED not in caplog.text


# -- manage.py node_token -------------------------------------------------------------------


def command(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("node_token", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db(transaction=True)
async def test_the_command_walks_the_same_rotation(rig, tmp_path):
    await rig.assert_complete()
    out, _ = await sync_to_async(command)("status")
    assert f"current  {fingerprint(TEST_TOKEN)}  --nodeTokenFile" in out
    assert "rotation: none" in out
    assert re.search(r"n1 +127\.0\.0\.1:\d+ +accepts current", out)

    token_file = tmp_path / "next-token"
    token_file.write_text(PASTED + "\n")
    _, err = await sync_to_async(command)("start", "--token-file", str(token_file))
    assert f"rotation started: next token {fingerprint(PASTED)}" in err
    rig.cluster.set_node_token("n1", PASTED)
    out, _ = await sync_to_async(command)("status")
    assert "rotation: rolling, 1 of 3 nodes accept next" in out
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="2 of 3 nodes do not accept the next token yet"):
        await sync_to_async(command)("finish")
    out, err = await sync_to_async(command)("finish", "--force", "--noinput")
    assert "2 of 3 nodes will lose access" in err
    assert f"rotation finished: current token {fingerprint(PASTED)}" in out
    events = await sync_to_async(
        lambda: list(
            AuditEvent.objects.filter(action__startswith="node_token.rotation").values_list(
                "action", "actor"
            )
        )
    )()
    assert {actor for _, actor in events} == {f"cli:{__import__('getpass').getuser()}"}

    # A generated token goes to stdout once (or into a new 0600 file with --out).
    out, err = await sync_to_async(command)("start")
    assert "will not be shown again" in err
    generated = out.strip()
    assert fingerprint(generated) == (await sync_to_async(stored)())["next"].fingerprint
    out, _ = await sync_to_async(command)("cancel")
    assert "rotation cancelled" in out
    secret_file = tmp_path / "generated"
    out, err = await sync_to_async(command)("start", "--out", str(secret_file))
    assert out == ""
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert fingerprint(secret_file.read_text().strip()) in err
    out, _ = await sync_to_async(command)("status", "--no-probe")
    assert secret_file.read_text().strip() not in out


# --- a member that appears during a rotation is not handed the next token -----------------------


class Harvester(grpc.GenericRpcHandler):
    """A gRPC server posing as a node: every call is refused UNAUTHENTICATED (so the portal's
    fallback would try its other token) and the authorization header it carried is kept."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(4))
        self._server.add_generic_rpc_handlers([self])
        self.address = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        self._server.start()

    def _refuse(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.seen += [str(v) for k, v in context.invocation_metadata() if k == "authorization"]
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid admin token")
        raise AssertionError("unreachable")

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes]:
        return grpc.unary_unary_rpc_method_handler(self._refuse)

    def stop(self) -> None:
        self._server.stop(None).wait()


@pytest.fixture
def harvester() -> Iterator[Harvester]:
    server = Harvester()
    yield server
    server.stop()


@pytest.mark.django_db(transaction=True)
async def test_a_member_reported_after_the_rotation_started_never_receives_the_next_token(
    devcluster_factory, portal, make_user, grpc_proxy, harvester, parse_html
):
    cluster = devcluster_factory()
    joined = threading.Event()

    def report_the_harvester(raw: bytes) -> bytes:
        # Membership comes from the nodes: after the start, the seed reports one more member.
        overview = admin_pb2.GetClusterOverviewResponse.FromString(raw)
        if joined.is_set():
            overview.members.add(node_id="n9", grpc_address=harvester.address)
        return overview.SerializeToString()

    # The one seed is n1 (through a proxy that edits its membership); n2 and n3 are members.
    seed = grpc_proxy(cluster.node("n1").address, {"GetClusterOverview": report_the_harvester})
    viewer = portal([seed.address])
    rig = Rig(cluster, viewer, AsyncClient(), parse_html)
    await rig.admin.aforce_login(await sync_to_async(make_user)("rot-admin", "admin"))
    before = (await viewer.get("/api/cluster/overview")).json()  # seeds the token table
    assert [(s["node"], s["ok"]) for s in before["node_status"]] == [
        ("n1", True),
        ("n2", True),
        ("n3", True),
    ]
    assert (await rig.start(mode="paste", token=PASTED)).status_code == 302
    row = await sync_to_async(lambda: stored()["next"])()
    assert row.known_addresses == sorted([seed.address, *cluster.addresses[1:]])

    cluster.set_node_token("n2", PASTED)  # a node known at the start moves to next
    joined.set()
    discovery().invalidate()
    overview = (await viewer.get("/api/cluster/overview")).json()
    status = {s["node"]: (s["ok"], s["code"]) for s in overview["node_status"]}
    assert status["n2"] == (True, None), "the pre-known node was sent next and accepted it"
    assert status["n9"] == (False, "UNAUTHENTICATED")
    states = await rig.states()  # the rotation page probes every member with its tokens
    assert states["n2"] == "next"
    assert states["n9"] == "neither"
    # The harvester was asked (with the current token) and never saw the next one.
    assert harvester.seen
    assert set(harvester.seen) == {f"Bearer {TEST_TOKEN}"}
    page = (await rig.admin.get(PAGE, headers=LIVE)).content.decode()
    assert node_token.NOT_SENT_NEXT in rig.parse_html(page).find("tr", data_node="n9").words
    # Finishing would cut it off, so it is not done without a confirmation naming it.
    refused = await rig.finish()
    assert refused.status_code == 409
