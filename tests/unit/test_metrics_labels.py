"""Metric labels take values from closed sets (issue #13 item 2): requests with invented
methods and paths, anonymous or not, must not create a series each."""

from __future__ import annotations

import re
import secrets

import pytest
from django.test import Client
from prometheus_client import generate_latest

from elastickv_admin.lib import metrics

pytestmark = pytest.mark.django_db


def series(name: str) -> set[str]:
    """The label sets of ``name``'s samples in the registry /metrics reads."""
    text = generate_latest(metrics.registry()).decode()
    return set(re.findall(rf"^{name}_count\{{([^}}]*)\}}", text, flags=re.MULTILINE))


def test_invented_http_methods_and_unknown_paths_do_not_create_request_series() -> None:
    client = Client()
    # One of each kind first, so their "other" series exist.
    client.generic("INVENTED", "/no-such-page/")
    client.generic("GET", "/api/no-such-endpoint")
    client.generic("INVENTED", "/api/nodes")
    before = series("elastickv_admin_request_seconds")
    for _ in range(500):
        word = secrets.token_hex(6).upper()
        client.generic(word, f"/{word.lower()}/")
        client.generic("GET", f"/api/{word.lower()}")
        client.generic(word, "/api/nodes")
    after = series("elastickv_admin_request_seconds")
    assert after == before
    labels = {dict(re.findall(r'(\w+)="([^"]*)"', s))["method"] for s in after}
    assert labels <= metrics.HTTP_METHODS | {metrics.OTHER}


def test_request_metric_labels_fold_into_other() -> None:
    assert metrics.method_label("GET") == "GET"
    assert metrics.method_label("get") == "other"  # methods are case-sensitive (RFC 9110)
    assert metrics.method_label("X" * 1000) == "other"
    assert metrics.method_label(None) == "other"
    assert metrics.status_label(404) == "404"
    assert metrics.status_label(1000) == "other"


def test_node_labels_are_bounded_however_many_addresses_churn_through() -> None:
    labels = metrics.BoundedLabels(3)
    seen = {labels.label(f"10.0.0.{n}:50051") for n in range(1000)}
    assert seen == {"10.0.0.0:50051", "10.0.0.1:50051", "10.0.0.2:50051", "other"}
    assert labels.label("10.0.0.1:50051") == "10.0.0.1:50051"  # a labelled node keeps it
