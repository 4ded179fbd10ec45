"""The cluster timeline's rules (keyviz/events.py EventObserver and the query's 400s)."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.aggregate import RouteEntry
from elastickv_admin.lib.errors import ParamError
from keyviz import events

UP: dict[str, tuple[bool, str | None]] = {"n1": (True, None), "n2": (True, None)}


def observer() -> events.EventObserver:
    o = events.EventObserver()
    # The first observation is the baseline: nothing is recorded.
    assert (
        o.observe(
            1000,
            joined=["n1", "n2"],
            left=[],
            nodes_ok=UP,
            leaders={1: ("n1", 3)},
            leaders_taken_ms=900,
        )
        == []
    )
    return o


def test_a_new_leader_is_one_event_timed_when_the_overview_was_taken() -> None:
    o = observer()
    seen = o.observe(
        2000, joined=[], left=[], nodes_ok=UP, leaders={1: ("n2", 4)}, leaders_taken_ms=1900
    )
    assert seen == [
        events.Observed("leader_changed", 1900, "n2", 1, {"from": "n1", "to": "n2", "term": 4})
    ]
    # The same overview seen again is not a second change.
    assert (
        o.observe(
            2100, joined=[], left=[], nodes_ok=UP, leaders={1: ("n2", 4)}, leaders_taken_ms=1900
        )
        == []
    )


def test_a_group_first_seen_or_without_a_leader_is_not_a_leader_change() -> None:
    o = observer()
    seen = o.observe(
        2000,
        joined=[],
        left=[],
        nodes_ok=UP,
        leaders={1: ("", 4), 2: ("n1", 1)},
        leaders_taken_ms=1900,
    )
    assert seen == []


def test_a_node_that_stops_answering_is_down_once_and_up_once_when_back() -> None:
    o = observer()
    down: dict[str, tuple[bool, str | None]] = {"n1": (True, None), "n2": (False, "unavailable")}

    def at(t: int, nodes: dict[str, tuple[bool, str | None]]) -> list[events.Observed]:
        return o.observe(t, joined=[], left=[], nodes_ok=nodes, leaders={}, leaders_taken_ms=0)

    assert at(2000, down) == [
        events.Observed("node_down", 2000, "n2", details={"error": "unavailable"})
    ]
    assert at(2500, down) == []
    assert at(3000, UP) == [events.Observed("node_up", 3000, "n2")]


def test_membership_changes_are_joined_and_left_events() -> None:
    o = observer()
    seen = o.observe(2000, joined=["n3"], left=["n1"], nodes_ok=UP, leaders={}, leaders_taken_ms=0)
    assert [(e.type, e.node_id) for e in seen] == [("node_joined", "n3"), ("node_left", "n1")]


def test_node_controlled_strings_are_cut_before_they_are_stored() -> None:
    o = observer()
    seen = o.observe(
        2000, joined=["x" * 1000], left=[], nodes_ok=UP, leaders={}, leaders_taken_ms=0
    )
    assert len(seen[0].node_id) == 255


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"type": "reboot"}, "type"),
        ({"from": "yesterday"}, "from"),
        ({"to": "-1"}, "to"),
        ({"to": "1969-12-31T23:59"}, "to"),
        ({"from": "2026-13-01T00:00"}, "from"),
        ({"from": "20", "to": "10"}, "from"),
        ({"group": "one"}, "group"),
        ({"group": "-3"}, "group"),
        ({"node": "n" * 300}, "node"),
    ],
)
def test_bad_event_parameters_name_the_parameter(params: dict[str, str], named: str) -> None:
    with pytest.raises(ParamError) as caught:
        events.parse_event_query(params, now_ms=10_000)
    assert caught.value.param == named


def test_a_window_is_unix_milliseconds_or_a_utc_date_and_time() -> None:
    as_ms = events.parse_event_query({"from": "1765065600000", "to": "1765069200000"}, now_ms=0)
    as_utc = events.parse_event_query(
        {"from": "2025-12-07T00:00", "to": "2025-12-07T01:00:00"}, now_ms=0
    )
    with_offset = events.parse_event_query(
        {"from": "2025-12-07T09:00+09:00", "to": "2025-12-07T01:00Z"}, now_ms=0
    )
    assert (
        (as_utc.from_ms, as_utc.to_ms)
        == (as_ms.from_ms, as_ms.to_ms)
        == (1765065600000, 1765069200000)
    )
    assert (with_offset.from_ms, with_offset.to_ms) == (as_ms.from_ms, as_ms.to_ms)
    # The page's inputs show either form back in UTC; what is not a time shows nothing.
    assert events.utc_input("1765065600000") == "2025-12-07T00:00:00"
    assert events.utc_input("2025-12-07T09:00+09:00") == "2025-12-07T00:00:00"
    assert events.utc_input("yesterday") == ""


def route(rid: int, start: bytes, end: bytes, group: int = 1) -> RouteEntry:
    return RouteEntry(rid, start, end, group, "active", 0, 0)


def test_a_route_replaced_by_two_inside_its_range_is_one_split() -> None:
    before = [route(1, b"", b"m"), route(2, b"m", b"")]
    after = [route(1, b"", b"m"), route(3, b"m", b"t"), route(4, b"t", b"")]
    assert events.catalog_changes(before, after, 500, 7) == [
        events.Observed("route_split", 500, "", 1, {"route_id": 2, "into": [3, 4], "version": 7})
    ]


def test_two_routes_replaced_by_one_covering_them_is_one_merge() -> None:
    before = [route(1, b"", b"m"), route(2, b"m", b"")]
    after = [route(5, b"", b"")]
    assert events.catalog_changes(before, after, 500, 8) == [
        events.Observed("route_merged", 500, "", 1, {"route_id": 5, "from": [1, 2], "version": 8})
    ]


def test_a_route_in_another_group_is_one_move_and_an_unchanged_catalog_nothing() -> None:
    before = [route(1, b"", b"")]
    assert events.catalog_changes(before, [route(1, b"", b"", group=2)], 500, 9) == [
        events.Observed(
            "route_moved", 500, "", 2, {"route_id": 1, "from_group": 1, "to_group": 2, "version": 9}
        )
    ]
    assert events.catalog_changes(before, before, 500, 9) == []


def test_the_catalog_version_changing_is_what_triggers_route_events() -> None:
    o = observer()
    old = (3, [route(1, b"", b"")])
    new = (4, [route(2, b"", b"m"), route(3, b"m", b"")])
    kw: dict[str, Any] = {"joined": [], "left": [], "nodes_ok": UP, "leaders": {}}
    assert o.observe(2000, leaders_taken_ms=0, catalog=old, **kw) == []  # first catalog seen
    assert o.observe(2100, leaders_taken_ms=0, catalog=(3, new[1]), **kw) == []  # same version
    o.catalog = (3, tuple(old[1]))
    [split] = o.observe(2200, leaders_taken_ms=0, catalog=new, **kw)
    assert split.type == "route_split"


def test_keyviz_turned_off_and_on_is_one_disabled_and_one_enabled_event_not_a_node_down() -> None:
    o = observer()

    def at(t: int, off: set[str]) -> list[events.Observed]:
        return o.observe(
            t, joined=[], left=[], nodes_ok=UP, leaders={}, leaders_taken_ms=0, keyviz_off=off
        )

    assert at(2000, {"n2"}) == [events.Observed("keyviz_disabled", 2000, "n2")]
    assert at(2500, {"n2"}) == []
    assert at(3000, set()) == [events.Observed("keyviz_enabled", 3000, "n2")]
    assert at(3500, set()) == []


def test_a_node_back_from_down_without_its_sampler_is_up_then_keyviz_disabled() -> None:
    o = observer()
    down: dict[str, tuple[bool, str | None]] = {"n1": (True, None), "n2": (False, "refused")}
    assert [
        e.type
        for e in o.observe(2000, joined=[], left=[], nodes_ok=down, leaders={}, leaders_taken_ms=0)
    ] == ["node_down"]
    back = o.observe(
        3000, joined=[], left=[], nodes_ok=UP, leaders={}, leaders_taken_ms=0, keyviz_off={"n2"}
    )
    assert [(e.type, e.node_id) for e in back] == [("node_up", "n2"), ("keyviz_disabled", "n2")]


def test_a_node_already_without_keyviz_at_the_baseline_is_not_an_event() -> None:
    o = events.EventObserver()
    first = o.observe(
        1000, joined=[], left=[], nodes_ok=UP, leaders={}, leaders_taken_ms=0, keyviz_off={"n1"}
    )
    again = o.observe(
        2000, joined=[], left=[], nodes_ok=UP, leaders={}, leaders_taken_ms=0, keyviz_off={"n1"}
    )
    assert first == again == []


@pytest.mark.parametrize(
    ("code", "reachable", "off"),
    [
        ("UNAVAILABLE", True, True),  # the node answered: its sampler is off
        ("UNAVAILABLE", False, False),  # no connection: the node is down, not KeyViz
        ("DEADLINE_EXCEEDED", None, False),
        (None, None, False),
    ],
)
def test_only_a_reachable_node_refusing_keyviz_reads_as_keyviz_off(
    code: str | None, reachable: bool | None, off: bool
) -> None:
    assert events.keyviz_off(code, reachable) is off


def test_streamed_transitions_time_the_split_and_merge_the_catalog_shows() -> None:
    o = observer()
    kw: dict[str, Any] = {"joined": [], "left": [], "nodes_ok": UP, "leaders": {}}
    o.observe(2000, leaders_taken_ms=0, catalog=(1, [route(1, b"", b"")]), **kw)
    # Split pushed at 1500 by the node: the catalog is due at once, the event timed 1500.
    o.transitions([(1, (2, 3), 1500)])
    assert o._catalog_due == 0.0
    split_catalog = (2, [route(2, b"", b"m"), route(3, b"m", b"")])
    [split] = o.observe(2600, leaders_taken_ms=0, catalog=split_catalog, **kw)
    assert (split.type, split.unix_ms) == ("route_split", 1500)
    # A merge comes as one transition per parent, each naming the one child.
    o.transitions([(2, (4,), 3000), (3, (4,), 3000)])
    [merge] = o.observe(3400, leaders_taken_ms=0, catalog=(3, [route(4, b"", b"")]), **kw)
    assert (merge.type, merge.unix_ms, merge.details["from"]) == ("route_merged", 3000, [2, 3])
    assert o.route_ms == {}  # used once
    # A node's impossible time is not used: the change is timed when it was seen.
    o.transitions([(4, (5, 6), -1)])
    catalog = (4, [route(5, b"", b"k"), route(6, b"k", b"")])
    [late] = o.observe(4000, leaders_taken_ms=0, catalog=catalog, **kw)
    assert late.unix_ms == 4000
