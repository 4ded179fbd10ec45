"""The pure rules behind the cluster pages: leaders, terms, lag, adapters, route filters."""

from __future__ import annotations

import pytest

from cluster.aggregate import (
    AdapterSample,
    GroupReport,
    RouteEntry,
    applied_lag,
    consensus_by_group,
    filter_routes,
    group_consensus,
    last_contact_age_ms,
    leaders_per_node,
    merge_adapter_summaries,
    prefix_end,
    route_covers_prefix,
    sort_routes,
)


def report(node: str, leader: str, term: int, group: int = 1, applied: int = 0) -> GroupReport:
    return GroupReport(node, group, leader, term, commit_index=applied, applied_index=applied)


# -- leader consensus -------------------------------------------------------------------------


def test_nodes_agreeing_give_that_leader_and_no_flags():
    c = group_consensus(1, [report("n1", "n2", 4), report("n2", "n2", 4), report("n3", "n2", 4)])
    assert (c.leader, c.term, c.reporters) == ("n2", 4, 3)
    assert not c.leader_disagreement
    assert not c.term_disagreement
    assert not c.highlight


def test_highest_term_naming_a_leader_wins_over_stale_reports():
    c = group_consensus(1, [report("n1", "n1", 3), report("n2", "n3", 5), report("n3", "n3", 5)])
    assert (c.leader, c.term) == ("n3", 5)
    assert c.term_disagreement
    assert not c.leader_disagreement
    assert c.highlight


def test_a_lone_campaigning_node_with_a_higher_term_does_not_hide_the_leader():
    c = group_consensus(1, [report("n1", "n2", 4), report("n2", "n2", 4), report("n3", "", 9)])
    assert (c.leader, c.term) == ("n2", 4)
    assert c.term_disagreement
    assert c.highlight


def test_no_node_naming_a_leader_means_no_leader_at_the_highest_term():
    c = group_consensus(7, [report("n1", "", 6), report("n2", "", 6)])
    assert (c.leader, c.term, c.has_leader) == ("", 6, False)
    assert c.highlight
    assert not c.term_disagreement


def test_a_node_naming_itself_beats_the_majority_at_the_same_term():
    c = group_consensus(1, [report("n1", "n3", 5), report("n2", "n3", 5), report("n3", "n1", 5)])
    # n3 names n1 and n1/n2 name n3; nobody names itself, so the most named wins...
    assert c.leader == "n3"
    assert c.leader_disagreement
    c = group_consensus(1, [report("n1", "n1", 5), report("n2", "n3", 5), report("n3", "n3", 5)])
    # ...but a node that says "I lead" knows it.
    assert c.leader == "n1"
    assert c.leader_disagreement
    assert c.highlight


def test_a_tie_between_named_leaders_goes_to_the_smallest_id():
    c = group_consensus(1, [report("n1", "n3", 2), report("n2", "n2b", 2)])
    assert c.leader == "n2b"
    assert c.leader_disagreement


def test_a_group_nobody_reports_has_no_leader():
    c = group_consensus(4, [])
    assert (c.leader, c.term, c.reporters, c.highlight) == ("", 0, 0, True)


def test_consensus_by_group_is_in_group_id_order():
    reports = [report("n1", "n1", 1, group=3), report("n1", "n2", 1, group=1)]
    assert list(consensus_by_group(reports)) == [1, 3]
    assert consensus_by_group(reports)[3].leader == "n1"


def test_leaders_per_node_counts_groups_led_and_skips_leaderless_groups():
    groups = consensus_by_group(
        [
            report("n1", "n2", 1, group=1),
            report("n1", "n2", 1, group=2),
            report("n1", "n1", 1, group=3),
            report("n1", "", 1, group=4),
        ]
    )
    assert leaders_per_node(groups.values()) == {"n1": 1, "n2": 2}


# -- lag and last contact ---------------------------------------------------------------------


def test_lag_is_what_the_leader_applied_beyond_the_replica():
    assert applied_lag(120, 100) == 20
    assert applied_lag(120, 120) == 0


def test_lag_of_a_replica_ahead_of_the_leaders_older_answer_is_zero():
    assert applied_lag(100, 103) == 0


def test_lag_is_unknown_when_the_leader_did_not_report():
    assert applied_lag(None, 100) is None


def test_last_contact_zero_is_unknown_and_otherwise_an_age():
    assert last_contact_age_ms(0, 10_000) is None
    assert last_contact_age_ms(9_250, 10_000) == 750
    assert last_contact_age_ms(10_500, 10_000) == 0  # clocks skewed: never negative


# -- adapters ---------------------------------------------------------------------------------


def sample(node: str, adapter: str, op: str, requests: int, p50: float = 1.0) -> AdapterSample:
    return AdapterSample(
        node, adapter, op, requests, 1, requests * 10, requests * 20, p50, 2 * p50, 3 * p50
    )


def test_adapter_merge_sums_counters_per_adapter_and_operation():
    rows = merge_adapter_summaries(
        [
            sample("n1", "redis", "GET", 5),
            sample("n2", "redis", "GET", 7),
            sample("n1", "redis", "SET", 2),
        ]
    )
    assert [(r.adapter, r.operation) for r in rows] == [("redis", "GET"), ("redis", "SET")]
    get = rows[0]
    assert (get.requests, get.in_flight, get.bytes_in, get.bytes_out) == (12, 2, 120, 240)


def test_adapter_merge_keeps_each_nodes_quantiles_instead_of_combining_them():
    rows = merge_adapter_summaries(
        [sample("n2", "s3", "GetObject", 1, p50=100.0), sample("n1", "s3", "GetObject", 9, p50=5.0)]
    )
    assert [(s.node, s.p50_ns, s.p99_ns) for s in rows[0].per_node] == [
        ("n2", 100.0, 300.0),
        ("n1", 5.0, 15.0),
    ]


def test_adapter_rows_are_sorted_by_adapter_then_operation():
    rows = merge_adapter_summaries(
        [
            sample("n1", "sqs", "A", 1),
            sample("n1", "dynamo", "PutItem", 1),
            sample("n1", "dynamo", "GetItem", 1),
        ]
    )
    assert [(r.adapter, r.operation) for r in rows] == [
        ("dynamo", "GetItem"),
        ("dynamo", "PutItem"),
        ("sqs", "A"),
    ]


def test_adapter_merge_of_nothing_is_empty():
    assert merge_adapter_summaries([]) == []


# -- routes -----------------------------------------------------------------------------------


def route(rid: int, start: bytes, end: bytes, group: int = 1, **kw: object) -> RouteEntry:
    fields: dict[str, object] = {
        "state": "active",
        "parent_route_id": 0,
        "split_at_hlc": 0,
        "leader": "",
    }
    fields.update(kw)
    return RouteEntry(rid, start, end, group, **fields)  # type: ignore[arg-type]


CATALOG = [
    route(1, b"", b"!", group=1, leader="n1"),
    route(2, b"!", b"item:", group=2, leader="n2"),
    route(3, b"item:", b"user:", group=3, leader="n3", parent_route_id=9, split_at_hlc=50),
    route(4, b"user:", b"user:m", group=1, leader="n1", state="write_fenced"),
    route(5, b"user:m", b"\x80", group=2, leader="n2", split_at_hlc=10),
    route(6, b"\x80", b"", group=3, leader="", parent_route_id=2),
]


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"abc", b"abd"), (b"a\xff", b"b"), (b"\xff\xff", b""), (b"", b"")],
)
def test_prefix_end_is_the_first_key_past_every_key_with_the_prefix(prefix, end):
    assert prefix_end(prefix) == end


def test_a_route_covers_a_prefix_when_its_range_overlaps_the_prefixed_keys():
    assert route_covers_prefix(b"item:", b"user:", b"order:")  # inside
    assert route_covers_prefix(b"user:m", b"\x80", b"user:")  # the prefix straddles routes
    assert not route_covers_prefix(b"item:", b"user:", b"user:")  # end is exclusive
    assert route_covers_prefix(b"\x80", b"", b"\xff")  # +inf end
    assert route_covers_prefix(b"", b"!", b"")  # no prefix: everything


def test_filter_by_prefix_keeps_every_route_holding_such_keys():
    assert [r.route_id for r in filter_routes(CATALOG, prefix=b"user:")] == [4, 5]
    assert [r.route_id for r in filter_routes(CATALOG, prefix=b"!txn|")] == [2]
    assert [r.route_id for r in filter_routes(CATALOG, prefix=b"\x90")] == [6]


def test_filter_by_group_and_prefix_combine():
    assert [r.route_id for r in filter_routes(CATALOG, group=1)] == [1, 4]
    assert [r.route_id for r in filter_routes(CATALOG, group=2, prefix=b"user:")] == [5]
    assert filter_routes(CATALOG, group=99) == []


def test_default_sort_is_key_order_with_the_empty_start_first():
    shuffled = [CATALOG[i] for i in (3, 5, 0, 2, 1, 4)]
    assert [r.route_id for r in sort_routes(shuffled)] == [1, 2, 3, 4, 5, 6]


def test_sort_by_group_breaks_ties_in_key_order_and_can_descend():
    assert [r.route_id for r in sort_routes(CATALOG, "group")] == [1, 4, 2, 5, 3, 6]
    assert [r.route_id for r in sort_routes(CATALOG, "group", descending=True)] == [
        6,
        3,
        5,
        2,
        4,
        1,
    ]


@pytest.mark.parametrize(
    ("key", "order"),
    [
        ("route", [1, 2, 3, 4, 5, 6]),
        ("leader", [6, 1, 4, 2, 5, 3]),
        ("state", [1, 2, 3, 5, 6, 4]),
        ("parent", [1, 2, 4, 5, 6, 3]),
        ("split_hlc", [1, 2, 4, 6, 5, 3]),
    ],
)
def test_every_sort_key_orders_routes(key, order):
    assert [r.route_id for r in sort_routes(CATALOG, key)] == order


def test_an_unknown_sort_key_is_refused():
    with pytest.raises(ValueError, match="unknown sort key"):
        sort_routes(CATALOG, "size")
