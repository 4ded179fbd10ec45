"""Probing: which token does each node accept?"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from cluster.client import NodeError
from cluster.fanout import Exactly, FanOut, Node, NodeStatus, fan_out
from cluster.models import NodeTokenCheck, NodeTokenRecord
from cluster.node_token.records import State, StoredTokens, load_tokens, locked_head
from cluster.node_token.views_model import NodeCheckRow, ProbeReport
from cluster.runtime import discovery, node_client
from cluster.tokens import NodeToken
from elastickv_admin.lib.config import portal_config

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
    errors: list[Answer | None] = [current] if not rotating else [current, next_]
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


def _answer(status: NodeStatus | None) -> Answer:
    """A probe's status as node_state reads it (None: the node accepted the token)."""
    if status is None or status.ok:
        return None
    return NodeError(
        status.code or "UNKNOWN",
        status.error or "",
        reachable=status.reachable is not False,
        detail=status.detail or "",
    )


NOT_SENT_NEXT = (
    "not sent the next token: this address was not known when the rotation started "
    "(cancel and start the rotation again to include it)"
)


def _node_row(
    node: Node,
    tokens: StoredTokens,
    current: NodeStatus,
    tokenless: NodeStatus,
    next_: NodeStatus | None,
) -> NodeCheckRow:
    """One node's verdict from its answers to the current token, no token and (when it
    was sent) the next token."""
    rotating = tokens.next is not None
    state, detail = node_state(
        _answer(current),
        _answer(next_),
        rotating=next_ is not None,
        tokenless=tokenless.ok,
    )
    if rotating and next_ is None:
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
    # The next token goes only to the addresses the rotation recorded (and the seeds).
    trusted = [n for n in known if tokens.next is not None and n.address in tokens.next_to]
    deadline = min(client.config.rpc_timeout_s, PROBE_DEADLINE_S)

    def ask(targets: Sequence[Node], token: NodeToken | None) -> Awaitable[FanOut[Any]]:
        return fan_out(client, targets, PROBE_METHOD, exactly=Exactly(token), deadline_s=deadline)

    current, tokenless, next_ = await asyncio.gather(
        ask(known, NodeToken("current", tokens.current)),
        ask(known, None),  # accepted without a token: an insecure node
        ask(trusted, NodeToken("next", tokens.next) if tokens.next is not None else None),
    )
    sent_next = {s.address: s for s in next_.statuses}
    rows = [
        _node_row(node, tokens, cur, none, sent_next.get(node.address))
        for node, cur, none in zip(known, current.statuses, tokenless.statuses, strict=True)
    ]
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
