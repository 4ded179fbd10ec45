"""The JSON API's shapes (DESIGN.md Layer B): the services' dataclasses as plain dicts.

Every endpoint answers ``{"data": ..., "nodes_responded", "nodes_total", "node_status":
[{node, address, ok, error, latency_ms, code, state, last_seen_ms, as_of_ms, reachable,
detail, cause, summary, next_step}] (cluster/diagnose.py status_json, the one per-node
status shape),
"membership": {..., last_known, confirmed_at_ms}, "problems": [{cause, summary, next_step,
nodes}], "nodes_waiting", "generated_at_ms"}`` so a script can tell "2 of 3 nodes
responded", why and what to do, whatever it asked for. Fields are only ever added. Keys are
raw bytes on the wire: the API gives their hex (exact) beside the preview the pages show.
"""

from __future__ import annotations

from typing import Any

from cluster.aggregate import AdapterRow, AdapterSample, GroupConsensus
from cluster.diagnose import Problem, status_json
from cluster.probes import PROBED_METHODS, NodeSupport
from cluster.services import (
    AdaptersView,
    Catalog,
    ClusterHealth,
    GroupView,
    NodeDetail,
    NodeRow,
    NodesView,
    Overview,
    RaftGroupsView,
    RouteRow,
    RoutesView,
    Traffic,
)
from keyviz.keys import KeyPreview

Json = dict[str, Any]


def envelope(health: ClusterHealth, data: Json) -> Json:
    membership = health.membership
    return {
        "data": data,
        "nodes_responded": health.responded,
        "nodes_total": health.total,
        "node_status": [status_json(s) for s in health.statuses],
        "membership": {
            "source": membership.source or None,
            "truncated": membership.truncated,
            "seed_errors": {a: e.message for a, e in membership.seed_errors.items()},
            "last_known": membership.last_known,
            "confirmed_at_ms": membership.confirmed_at_ms,
        },
        "problems": [problem_json(p) for p in health.problems],
        "nodes_waiting": [s.node for s in health.waiting],
        "generated_at_ms": health.now_ms,
    }


def problem_json(problem: Problem) -> Json:
    """One cause of failure, its next step and the nodes it affects (raw detail capped)."""
    return {
        "cause": problem.key,
        "summary": problem.cause.cause,
        "next_step": problem.cause.next_step,
        "nodes": [
            {
                "node": a.node,
                "address": a.address,
                "code": a.code or None,
                "detail": a.detail,
                "last_seen_ms": a.last_seen_ms,
            }
            for a in problem.nodes
        ],
    }


def rpcs_json(row: NodeRow) -> dict[str, str]:
    """Per RPC: yes, no (UNIMPLEMENTED), disabled (KeyViz off) or unknown."""
    status = row.status
    if status.code == "UNIMPLEMENTED":  # no Admin service: none of its RPCs
        return dict.fromkeys(("GetRaftGroups", *PROBED_METHODS), "no")
    raft = "yes" if status.ok else "unknown"
    return {"GetRaftGroups": raft, **_support_json(row.support)}


def _support_json(support: NodeSupport | None) -> dict[str, str]:
    if support is None:
        return dict.fromkeys(PROBED_METHODS, "unknown")
    return support.as_dict()


def node_json(row: NodeRow) -> Json:
    return {
        "node_id": row.node_id,
        "address": row.address,
        "reachable": row.status.ok,
        "state": row.status.state,
        "last_seen_ms": row.status.last_seen_ms,
        "data_as_of_ms": row.status.as_of_ms,
        "latency_ms": row.status.latency_ms,
        "error": row.status.error,
        "code": row.status.code,
        "groups_reported": row.groups_reported,
        "groups_led": row.groups_led,
        "rpcs": rpcs_json(row),
    }


def consensus_json(c: GroupConsensus) -> Json:
    return {
        "raft_group_id": c.raft_group_id,
        "leader": c.leader or None,
        "term": c.term,
        "leader_disagreement": c.leader_disagreement,
        "term_disagreement": c.term_disagreement,
        "reporters": c.reporters,
        "highlight": c.highlight,
    }


def catalog_json(catalog: Catalog) -> Json:
    return {
        "version": catalog.version,
        "routes": len(catalog.routes) if catalog.source is not None else None,
        "source": catalog.source.label if catalog.source is not None else None,
        "error": catalog.error,
    }


def overview_json(view: Overview) -> Json:
    s = view.summary
    return envelope(
        view.health,
        {
            "summary": {
                "nodes_up": s.nodes_up,
                "nodes_total": s.nodes_total,
                "groups": s.groups,
                "groups_with_leader": s.groups_with_leader,
                "leaders": s.leaders,
                "routes": s.routes,
                "catalog_version": s.catalog_version,
            },
            "nodes": [node_json(r) for r in view.nodes],
            "groups": [consensus_json(g) for g in view.groups],
            "catalog": catalog_json(view.catalog),
            "traffic": traffic_json(view.traffic),
            "leadership_hints": list(view.leadership),
        },
    )


def traffic_json(t: Traffic | None) -> Json | None:
    if t is None:
        return None
    return {
        "reads_per_s": t.reads_per_s,
        "writes_per_s": t.writes_per_s,
        "reads": list(t.reads),
        "writes": list(t.writes),
        "column_unix_ms": list(t.column_unix_ms),
        "step_ms": t.step_ms,
        "error": t.error,
    }


def nodes_json(view: NodesView) -> Json:
    return envelope(view.health, {"nodes": [node_json(r) for r in view.nodes]})


def node_detail_json(detail: NodeDetail) -> Json:
    groups = [
        {
            "raft_group_id": g.state.raft_group_id,
            "leader": g.state.leader_node_id or None,
            "term": g.state.leader_term,
            "commit_index": g.state.commit_index,
            "applied_index": g.state.applied_index,
            "last_contact_unix_ms": g.state.last_contact_unix_ms or None,
            "last_contact_age_ms": g.last_contact_age_ms,
            "agrees_with_cluster": g.agrees,
            "cluster_leader": (g.consensus.leader or None) if g.consensus else None,
            "cluster_term": g.consensus.term if g.consensus else None,
        }
        for g in detail.groups
    ]
    return envelope(detail.health, {"node": node_json(detail.row), "groups": groups})


def group_json(view: GroupView) -> Json:
    return {
        **consensus_json(view.consensus),
        "replicas": [
            {
                "node": r.node,
                "address": r.address,
                "is_leader": r.is_leader,
                "leader": r.leader or None,
                "term": r.term,
                "commit_index": r.commit_index,
                "applied_index": r.applied_index,
                "lag": r.lag,
                "last_contact_unix_ms": r.last_contact_unix_ms or None,
                "last_contact_age_ms": r.last_contact_age_ms,
                "reachable": r.reachable,
                "unreachable_since_ms": r.unreachable_since_ms,
                "data_as_of_ms": r.as_of_ms,
                "commit_rate": r.progress.commit_rate,
                "applied_rate": r.progress.applied_rate,
                "lag_trend": list(r.progress.lags),
            }
            for r in view.replicas
        ],
    }


def raft_json(view: RaftGroupsView) -> Json:
    return envelope(view.health, {"groups": [group_json(g) for g in view.groups]})


def key_json(raw: bytes, preview: KeyPreview) -> Json:
    return {
        "hex": raw.hex(),
        "preview": preview.text,
        "infinite": preview.is_infinite,
        "is_hex": preview.is_hex,
        "reserved_prefix": preview.reserved_prefix,
        "reserved_label": preview.reserved_label,
        "label": preview.label,
        "family": preview.family,
    }


def route_json(row: RouteRow) -> Json:
    r = row.route
    return {
        "route_id": r.route_id,
        "start": key_json(r.start, row.start),
        "end": key_json(r.end, row.end),
        "raft_group_id": r.raft_group_id,
        "leader": r.leader or None,
        "state": r.state,
        "parent_route_id": r.parent_route_id,
        "split_at_hlc": r.split_at_hlc,
    }


def routes_json(view: RoutesView) -> Json:
    q = view.query
    return envelope(
        view.health,
        {
            "catalog": catalog_json(view.catalog),
            "query": {
                "group": q.group,
                "prefix_hex": q.prefix.hex(),
                "sort": q.sort_param,
            },
            "matched": len(view.rows),
            "routes": [route_json(r) for r in view.rows],
        },
    )


def _sample_json(s: AdapterSample) -> Json:
    return {
        "node": s.node,
        "requests": s.requests,
        "in_flight": s.in_flight,
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "p50_ns": s.p50_ns,
        "p95_ns": s.p95_ns,
        "p99_ns": s.p99_ns,
    }


def _adapter_row_json(row: AdapterRow) -> Json:
    return {
        "adapter": row.adapter,
        "operation": row.operation,
        "requests": row.requests,
        "in_flight": row.in_flight,
        "bytes_in": row.bytes_in,
        "bytes_out": row.bytes_out,
        "per_node": [_sample_json(s) for s in row.per_node],
    }


def adapters_json(view: AdaptersView) -> Json:
    return envelope(
        view.health,
        {
            "supported": not view.unsupported_everywhere,
            "summaries": [_adapter_row_json(r) for r in view.rows],
            "sources": [
                {"node": s.node, "address": s.address, "state": s.state, "error": s.error}
                for s in view.sources
            ],
        },
    )
