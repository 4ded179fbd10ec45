"""The rules behind issue #15: failure causes, untrusted error text, progress samples,
leadership balance."""

from __future__ import annotations

import pytest
from django.template.loader import render_to_string

from cluster.client import MAX_DETAIL_CHARS, NodeError
from cluster.diagnose import cause_of, group_failures
from cluster.discovery import Membership
from cluster.fanout import WAITING, Node, NodeStatus
from cluster.history import SAMPLES_PER_SERIES, RaftHistory
from cluster.services import ClusterHealth, leadership_hints


@pytest.mark.parametrize(
    ("code", "reachable", "keyviz", "key"),
    [
        ("UNAVAILABLE", False, False, "refused"),  # unreachable: failed to connect
        ("UNAVAILABLE", True, True, "keyviz_off"),  # the node's sampler is off
        ("UNAVAILABLE", True, False, "unavailable"),  # the node is shutting down
        ("DEADLINE_EXCEEDED", False, False, "timeout"),
        ("UNAUTHENTICATED", True, False, "token"),
        ("UNIMPLEMENTED", True, False, "no_admin"),
        ("OVERSIZED", True, False, "oversized"),
        ("MALFORMED", True, False, "malformed"),
        ("INTERNAL", True, False, "other"),
    ],
)
def test_every_failure_class_has_one_cause_with_a_next_step(code, reachable, keyviz, key):
    cause = cause_of(code, reachable, keyviz=keyviz)
    assert cause.key == key
    assert cause.next_step


def test_failures_group_by_cause_and_a_seed_error_joins_its_node_once():
    failed = [
        NodeStatus("n1", "a:1", False, "unreachable: refused", 1.0, "UNAVAILABLE", reachable=False),
        NodeStatus("n2", "a:2", True, None, 1.0),
        NodeStatus("n3", "a:3", False, "unreachable: refused", 1.0, "UNAVAILABLE", reachable=False),
        NodeStatus("n4", "a:4", False, "no answer yet", None, WAITING),
    ]
    seeds = {
        "a:1": NodeError("UNAVAILABLE", "unreachable: refused", reachable=False),
        "a:9": NodeError("DEADLINE_EXCEEDED", "no answer to X", reachable=False),
    }
    problems = group_failures(failed, seeds)
    assert [(p.key, [a.node for a in p.nodes]) for p in problems] == [
        ("refused", ["n1", "n3"]),  # a:1 as a seed is n1: not listed twice
        ("timeout", ["a:9"]),
    ]


def test_node_error_text_is_capped_and_escaped_on_the_page():
    hostile = "<script>alert(1)</script>" + "x" * 5000
    status = NodeStatus("n1", "a:1", False, hostile, 1.0, "INTERNAL", state="down")
    [problem] = group_failures([status])
    assert len(problem.nodes[0].detail) == MAX_DETAIL_CHARS
    health = ClusterHealth(
        Membership((Node("n1", "a:1"),), "a:1", confirmed_at_ms=1), (status,), {}, {}, 2
    )
    html = render_to_string(
        "cluster/partials/status.html",
        {"health": health, "refresh_s": 5, "noscript_refresh_s": 15},
    )
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "x" * (MAX_DETAIL_CHARS + 10) not in html


def test_progress_gives_rates_and_lag_trend_and_stays_bounded():
    history = RaftHistory(max_series=3)
    for i in range(SAMPLES_PER_SERIES + 5):
        history.record(1_000 * i, [("n1", 1, 100 + 10 * i, 100 + 8 * i, i % 3)])
    progress = history.progress("n1", 1, 1_000 * (SAMPLES_PER_SERIES + 4))
    assert progress.commit_rate == pytest.approx(10.0)
    assert progress.applied_rate == pytest.approx(8.0)
    assert len(progress.lags) == SAMPLES_PER_SERIES  # a ring, not a log
    # Page loads closer than a second add nothing.
    history.record(1_000 * (SAMPLES_PER_SERIES + 4) + 10, [("n1", 1, 10**9, 10**9, 0)])
    assert history.progress("n1", 1, 0).lags == progress.lags
    # Node-controlled group ids: the number of series is capped.
    history.record(10**7, [("n1", g, 1, 1, None) for g in range(2, 100)])
    assert len(history) == 3


def test_a_counter_that_went_back_gives_no_rate():
    history = RaftHistory()
    history.record(0, [("n1", 1, 500, 500, None)])
    history.record(2_000, [("n1", 1, 10, 10, None)])  # the node restarted
    assert history.progress("n1", 1, 2_000).commit_rate is None


@pytest.mark.parametrize(
    ("leaders", "nodes", "hinted"),
    [
        ({"n1": 6}, 3, ["n1"]),
        ({"n1": 2, "n2": 1}, 3, []),  # 3 groups: one more than fair is no imbalance
        ({"n1": 4, "n2": 1, "n3": 1}, 3, ["n1"]),  # fair 2: 4 > 3 and >= 4
        ({"n1": 3, "n2": 2, "n3": 1}, 3, []),
        ({"n1": 5}, 1, []),
    ],
)
def test_leadership_hint_only_far_above_a_fair_share(leaders, nodes, hinted):
    hints = leadership_hints(leaders, sum(leaders.values()), nodes)
    assert [h.split()[0] for h in hints] == hinted
