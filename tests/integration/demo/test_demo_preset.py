"""The devcluster's demo preset: production-shaped catalog and traffic, without changing
the small default shape the other tests rely on."""

from __future__ import annotations

import re

import numpy as np
import pytest

from devcluster import DevCluster
from devcluster.demo import (
    DEMO_GROUPS,
    DEMO_ROUTES,
    DemoKeyspace,
    DemoModel,
    demo_cluster_options,
)
from devcluster.pytest_plugin import matrix

pytestmark = pytest.mark.integration

FAMILIES = (b"!ddb|route|table|", b"!sqs|route|", b"!s3|obj|head|", b"!txn|", b"!dist|")
HOUR_S = 3600.0


def test_default_devcluster_keeps_its_small_shape():
    cluster = DevCluster(timers=False)
    assert len(cluster.routes()) == 8
    assert len(cluster.groups()) == 3


def test_demo_preset_has_hundreds_of_routes_in_six_groups_over_every_family(
    devcluster_factory, devcluster_stubs
):
    cluster = devcluster_factory(**demo_cluster_options(), timers=False, profile="design")
    routes = cluster.routes()
    assert len(routes) == DEMO_ROUTES
    assert len(cluster.groups()) == DEMO_GROUPS
    assert {r.group_id for r in routes} == set(range(1, DEMO_GROUPS + 1))
    for family in FAMILIES:
        assert any(r.start.startswith(family) for r in routes), family
    # Redis user keys route by the key itself.
    assert any(r.start.startswith(b"session:") for r in routes)
    # Every DynamoDB table and SQS queue is a route of its own.
    assert cluster.route_for_key(b"!ddb|route|table|orders").start == b"!ddb|route|table|orders"
    assert cluster.route_for_key(b"!sqs|route|webhooks").start == b"!sqs|route|webhooks"

    served = cluster.generate(4.0)
    assert served > 0
    at = cluster.flush()
    labels = set()
    for node in cluster.nodes:
        m = matrix(cluster, devcluster_stubs, node.node_id, from_unix_ms=at[node.node_id])
        labels |= {r.label for r in m.rows}
        for r in m.rows:
            assert re.fullmatch(rf"route:\d+:{r.label}#[01]", r.bucket_id), r.bucket_id
    assert labels >= {"dynamo", "redis", "s3", "sqs", "rawkv"}


def test_demo_traffic_follows_the_day_and_the_drifting_hot_range():
    keys = DemoKeyspace(np.random.default_rng(0))
    model = DemoModel(keys, 1000.0)
    monday = 4 * 86_400.0  # 1970-01-05 was a Monday
    night, afternoon = model.rates(np.array([monday + 3 * HOUR_S, monday + 14 * HOUR_S]))
    assert afternoon.sum() > 1.5 * night.sum()
    t = np.array([monday + 14 * HOUR_S, monday + 14.5 * HOUR_S])
    early, later = model.rates(t)
    # Where the hot range is now, traffic grew most; where it was, it shrank most.
    was, now = (int(c) for c in model.hot_center(t))
    assert was != now
    assert abs(int(np.argmax(later - early)) - now) <= 2
    assert abs(int(np.argmin(later - early)) - was) <= 2
