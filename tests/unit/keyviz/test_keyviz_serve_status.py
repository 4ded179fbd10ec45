"""What the matrix API tells about the collector, from its persisted state (untrusted
shapes are dropped, not passed on), and which nodes a displayed column lacked."""

from __future__ import annotations

from cluster.diagnose import CAUSES
from keyviz.service import collector_status, missing_by_column

NOW = 1_700_000_000_000


def test_no_state_means_no_collector_yet() -> None:
    assert collector_status(None, NOW) == ([], None)


def test_the_collectors_summary_and_node_status_come_from_its_state() -> None:
    state = {
        "step_ms": 60_000,
        "holder": "portal-a:12",
        "heartbeat_ms": NOW - 1_500,
        "started_ms": NOW - 3_600_000,
        "last_error": "history not being recorded: database is full",
        "status": [
            {"node": "n1", "address": "10.0.0.1:50051", "ok": True, "lag_ms": 800},
            {"node": "n2", "address": "10.0.0.2:50051", "ok": False, "error": "timeout"},
        ],
        "phases": {"n1": {"anchor_ms": 1}},  # collector internals: not served
    }
    nodes, collector = collector_status(state, NOW)
    assert collector == {
        "age_ms": 1_500,
        "holder": "portal-a:12",
        "step_ms": 60_000,
        "last_error": "history not being recorded: database is full",
        "started_unix_ms": NOW - 3_600_000,
    }
    assert [(n["node"], n["ok"], n["error"], n.get("lag_ms")) for n in nodes] == [
        ("n1", True, None, 800),
        ("n2", False, "timeout", None),
    ]


def test_fields_of_the_wrong_type_are_left_out_rather_than_served() -> None:
    state = {
        "step_ms": "60s",
        "holder": 7,
        "heartbeat_ms": True,
        "last_error": "",
        "status": [
            "n1",
            {"node": 3, "ok": "yes"},
            {"node": "n2", "ok": 1, "nested": {"x": 1}, "address": ["a"]},
        ],
    }
    nodes, collector = collector_status(state, NOW)
    assert collector == {
        "age_ms": None,
        "holder": None,
        "step_ms": None,
        "last_error": None,
        "started_unix_ms": None,
    }
    # Only the entry naming a node survives; "ok" must be exactly true.
    # It comes in the one per-node status shape (cluster/diagnose.py status_json), with
    # the diagnosis made here, not read from the state.
    other = CAUSES["other"]
    assert nodes == [
        {
            "node": "n2",
            "ok": False,
            "address": "n2",
            "error": None,
            "code": None,
            "latency_ms": None,
            "state": None,
            "last_seen_ms": None,
            "as_of_ms": None,
            "reachable": None,
            "detail": None,
            "cause": "other",
            "summary": other.cause,
            "next_step": other.next_step,
        }
    ]
    assert collector_status({"status": {"n1": {}}}, NOW)[0] == []


def test_a_failed_node_is_diagnosed_from_its_fields_not_from_its_stored_words() -> None:
    """The KeyViz page's banner says what the cluster pages say (cause, next step): a node
    the collector cannot reach is "connection refused", whatever its raw text; an
    UNAVAILABLE it sent itself on a KeyViz call is KeyViz disabled."""
    state = {
        "status": [
            {
                "node": "n1",
                "ok": False,
                "code": "UNAVAILABLE",
                "reachable": False,
                "error": "unreachable: failed to connect to all addresses",
                "cause": "token",
            },
            {
                "node": "n2",
                "ok": False,
                "code": "UNAVAILABLE",
                "reachable": True,
                "error": "KeyViz disabled on this node (sampler off)",
            },
            {"node": "n3", "ok": True, "reachable": True},
        ]
    }
    nodes, _ = collector_status(state, NOW)
    assert [(n["node"], n["cause"], n["next_step"]) for n in nodes] == [
        ("n1", "refused", CAUSES["refused"].next_step),
        ("n2", "keyviz_off", CAUSES["keyviz_off"].next_step),
        ("n3", None, None),
    ]


def test_a_joined_display_column_lists_every_node_its_stored_columns_lacked() -> None:
    base = [60_000, 120_000, 180_000, 240_000]
    missing = [(), ("n2",), ("n3",), ()]
    assert missing_by_column(base, missing, base) == {"120000": ["n2"], "180000": ["n3"]}
    # Two display columns of two steps each: (0, 120000] and (120000, 240000].
    assert missing_by_column(base, missing, [120_000, 240_000]) == {
        "120000": ["n2"],
        "240000": ["n3"],
    }
    assert missing_by_column(base, missing, [240_000]) == {"240000": ["n2", "n3"]}
