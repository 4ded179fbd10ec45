"""Probing: which token does each node accept?"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from cluster.client import NodeClient, NodeError
from cluster.fanout import Node
from cluster.models import NodeTokenCheck, NodeTokenRecord
from cluster.node_token.records import State, StoredTokens, load_tokens, locked_head
from cluster.node_token.views_model import NodeCheckRow, ProbeReport
from cluster.runtime import discovery, node_client
from cluster.tokens import NodeToken
from elastickv_admin.config import portal_config

# The cheap Admin call a probe makes with each token; every elastickv version serves it.
PROBE_METHOD = "GetClusterOverview"
PROBE_DEADLINE_S = 3.0


async def known_node_addresses() -> list[str]:
    """The node addresses known now (seeds + membership), for the rotation about to start."""
    nodes = await discovery().nodes()
    return sorted({*portal_config().seeds, *(n.address for n in nodes)})


Answer = NodeError | None  # None: the node accepted the token

_UNREACHABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


INSECURE_DETAIL = "accepts any token: the node checks none (--adminInsecureNoAuth)"


def node_state(
    current: Answer, next_: Answer | None, *, rotating: bool, tokenless: bool = False
) -> tuple[str, str]:
    """(state, detail) of a node from its answers to the current and the next token;
    ``tokenless``: it also answered a call without any token (it checks none)."""
    if tokenless or (rotating and current is None and next_ is None):
        return State.ANY, INSECURE_DETAIL
    if current is None:
        return State.CURRENT, ""
    if rotating and next_ is None:
        return State.NEXT, ""
    errors = [current] if not rotating else [current, next_]
    failures = [e for e in errors if e is not None]
    codes = {e.code for e in failures}
    if "UNIMPLEMENTED" in codes:
        return State.NO_ADMIN, (
            "the node does not serve the Admin service: was it started without "
            "--adminTokenFile or --adminInsecureNoAuth?"
        )
    for error in failures:
        if error.code in _UNREACHABLE:
            return State.UNREACHABLE, error.message
    for error in failures:
        if error.code != "UNAUTHENTICATED":
            return State.ERROR, error.message
    which = "both tokens" if rotating else "the current token"
    return State.NEITHER, f"the node rejects {which} ({current.detail or current.message})"


async def _ask(client: NodeClient, address: str, token: str | None, label: str) -> Answer:
    """One probe call with exactly ``token`` (None: no authorization at all)."""
    deadline = min(client.config.rpc_timeout_s, PROBE_DEADLINE_S)
    try:
        await client.call_with_token(
            address,
            PROBE_METHOD,
            NodeToken(label, token) if token is not None else None,
            deadline_s=deadline,
        )
    except NodeError as exc:
        return exc
    return None


NOT_SENT_NEXT = (
    "not sent the next token: this address was not known when the rotation started "
    "(cancel and start the rotation again to include it)"
)


async def _probe_node(client: NodeClient, node: Node, tokens: StoredTokens) -> NodeCheckRow:
    assert tokens.current is not None
    rotating = tokens.next is not None
    asks = [
        _ask(client, node.address, tokens.current, "current"),
        _ask(client, node.address, None, ""),  # accepted without a token: insecure node
    ]
    trusted = tokens.next is not None and node.address in tokens.next_to
    if tokens.next is not None and trusted:
        asks.append(_ask(client, node.address, tokens.next, "next"))
    answers = await asyncio.gather(*asks)
    state, detail = node_state(
        answers[0],
        answers[2] if len(answers) > 2 else None,
        rotating=len(answers) > 2,
        tokenless=answers[1] is None,
    )
    if rotating and not trusted:
        detail = f"{detail}; {NOT_SENT_NEXT}" if detail else NOT_SENT_NEXT
    return NodeCheckRow(node.node_id, node.address, state, detail[:500], timezone.now(), rotating)


_in_thread = database_sync_to_async


async def probe_nodes(nodes: Sequence[Node] | None = None) -> ProbeReport:
    """Ask every known node (or ``nodes``) with the current and, during a rotation, the
    next token, and store what each node accepts (NodeTokenCheck)."""
    tokens = await _in_thread(load_tokens, thread_sensitive=False)()
    if tokens.current is None:
        return ProbeReport(tokens.version, False, (), timezone.now())
    client = node_client()
    known = list(nodes) if nodes is not None else await discovery().nodes()
    rows = await asyncio.gather(*(_probe_node(client, n, tokens) for n in known))
    report = ProbeReport(tokens.version, tokens.next is not None, tuple(rows), timezone.now())
    await _in_thread(record_probe, thread_sensitive=False)(report)
    return report


def record_probe(report: ProbeReport) -> None:
    """Keep the probe's findings (unless the tokens changed meanwhile): one row per node,
    and each token's last verification."""
    with transaction.atomic():
        head = locked_head()
        if head.version != report.version:
            return
        NodeTokenCheck.objects.exclude(address__in=[n.address for n in report.nodes]).delete()
        for node in report.nodes:
            NodeTokenCheck.objects.update_or_create(
                address=node.address,
                defaults={
                    "node_id": node.node_id,
                    "state": node.state,
                    "detail": node.detail,
                    "checked_at": node.checked_at,
                    "version": report.version,
                },
            )
        states = {n.state for n in report.nodes}
        for slot, accepting in (
            (NodeTokenRecord.Slot.CURRENT, {State.CURRENT, State.ANY}),
            (NodeTokenRecord.Slot.NEXT, {State.NEXT, State.ANY}),
        ):
            if states & accepting:
                NodeTokenRecord.objects.filter(slot=slot).update(verified_at=report.checked_at)
