"""Node failures as a cause and a next step, in one place (DESIGN.md "Truth under failure").

Every page shows its failures grouped: one line per cause, with the nodes it affects and
what to do, and the nodes' raw error text behind a disclosure. Raw text comes from the
nodes (untrusted): it is capped here and escaped by the templates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cluster.client import MAX_DETAIL_CHARS, NodeError
from cluster.fanout import NodeStatus


@dataclass(frozen=True)
class Cause:
    key: str
    title: str  # the short label of a node's status pill
    cause: str
    next_step: str


CAUSES = {
    c.key: c
    for c in (
        Cause(
            "refused",
            "down",
            "connection refused",
            "is the node running, and is its --address reachable from the portal?",
        ),
        Cause(
            "timeout",
            "timeout",
            "no answer before the deadline",
            "the node is overloaded or the network is slow "
            "(the deadline is ELASTICKV_ADMIN_RPC_TIMEOUT)",
        ),
        Cause(
            "token",
            "auth failed",
            "invalid admin token",
            "the node's --adminTokenFile holds another token; see Settings → Node token",
        ),
        Cause(
            "no_admin",
            "no Admin",
            "the Admin service is not registered",
            "start the node with --adminTokenFile (or --adminInsecureNoAuth)",
        ),
        Cause(
            "keyviz_off",
            "KeyViz off",
            "KeyViz disabled",
            "start the node with --keyvizEnabled",
        ),
        Cause(
            "oversized",
            "too large",
            "the answer is larger than the portal's receive cap",
            "raise ELASTICKV_ADMIN_MAX_RECEIVE_BYTES",
        ),
        Cause(
            "malformed",
            "malformed",
            "the answer breaks the Admin contract",
            "check that the node runs a supported elastickv version",
        ),
        Cause(
            "unavailable",
            "unavailable",
            "the node answered UNAVAILABLE",
            "it may be shutting down or starting; check its log",
        ),
        Cause(
            "other",
            "error",
            "unexpected error",
            "check the node's log for this call",
        ),
    )
}


def cause_of(code: str | None, reachable: bool | None, *, keyviz: bool = False) -> Cause:
    """The cause of one failed call, from its structured status (cluster/client.py
    NodeError): an UNAVAILABLE the node itself sent on a KeyViz call (``keyviz``) means
    its sampler is off."""
    if code == "UNAVAILABLE":
        if reachable is False:
            return CAUSES["refused"]
        return CAUSES["keyviz_off" if keyviz else "unavailable"]
    key = {
        "DEADLINE_EXCEEDED": "timeout",
        "UNAUTHENTICATED": "token",
        "UNIMPLEMENTED": "no_admin",
        "OVERSIZED": "oversized",
        "MALFORMED": "malformed",
    }.get(code or "", "other")
    return CAUSES[key]


def status_json(status: NodeStatus, *, keyviz: bool = False) -> dict[str, Any]:
    """The one per-node status shape of the cluster API, the KeyViz matrix API and the live
    stream: NodeStatus's fields plus, for a failure, its diagnosis (``cause`` key,
    ``summary``, ``next_step``; null when the node answered or is still awaited)."""
    doc = status.to_dict()
    failed = not status.ok and status.code != "WAITING"
    cause = cause_of(status.code, status.reachable, keyviz=keyviz) if failed else None
    doc["cause"] = cause.key if cause else None
    doc["summary"] = cause.cause if cause else None
    doc["next_step"] = cause.next_step if cause else None
    return doc


def cap(text: str | None) -> str:
    """Node-controlled text, bounded."""
    if not text:
        return ""
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 1] + "…"


@dataclass(frozen=True)
class Affected:
    node: str
    address: str
    code: str
    detail: str  # raw, capped
    last_seen_ms: int | None = None


@dataclass
class Problem:
    """One cause and every node it affects."""

    cause: Cause
    nodes: list[Affected] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.cause.key


def group_failures(
    statuses: Iterable[NodeStatus],
    seed_errors: Mapping[str, NodeError] | None = None,
    *,
    keyviz: bool = False,
) -> list[Problem]:
    """Failed node statuses grouped by cause, first-seen order; a seed's error joins its
    node's cause (shown once, not once per place it was seen). ``keyviz``: the statuses
    are of KeyViz calls (see cause_of)."""
    problems: dict[str, Problem] = {}
    seen: set[str] = set()
    for s in statuses:
        if s.ok or s.code == "WAITING":
            continue
        cause = cause_of(s.code, s.reachable, keyviz=keyviz)
        problem = problems.setdefault(cause.key, Problem(cause))
        problem.nodes.append(
            Affected(s.node, s.address, s.code or "", cap(s.error), s.last_seen_ms)
        )
        seen.add(s.address)
    for address, error in (seed_errors or {}).items():
        if address in seen:
            continue
        cause = cause_of(error.code, error.reachable)
        problem = problems.setdefault(cause.key, Problem(cause))
        problem.nodes.append(Affected(address, address, error.code, cap(error.message)))
    return list(problems.values())
