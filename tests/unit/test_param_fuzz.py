"""No query or path parameter of any endpoint yields a 500 (issue #13 item 8).

Hypothesis throws arbitrary strings, huge and negative integers, floats, unicode and empty
values at every parameter the API and the auditors' pages read, signed in as a viewer (the
API) or an auditor (the audit pages). No node is reachable: a 503 is an answer, a 500 never
is. Numeric parameters out of range answer 400 naming the parameter and the valid range.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client, override_settings
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from elastickv_admin.lib.config import PortalConfig

pytestmark = pytest.mark.django_db(transaction=True)

NO_NODE = "127.0.0.1:1"
KEYVIZ_PARAMS = (
    "series",
    "from",
    "to",
    "rows",
    "cols",
    "format",
    "start_key",
    "end_key",
    "step_ms",
)
ROUTE_PARAMS = ("group", "prefix", "sort")
AUDIT_PARAMS = ("from", "to", "actor", "action", "outcome", "request_id", "q", "before", "after")
# Paths that take no parameter still must not choke on some.
PLAIN_API = ("/api/cluster/overview", "/api/nodes", "/api/raft/groups", "/api/adapters/summary")

INT64_MAX = 2**63 - 1
edge_values = st.sampled_from(
    [
        "",
        " ",
        "0",
        "-0",
        "-1",
        "1",
        str(INT64_MAX),
        str(INT64_MAX + 1),
        "9999999999999999999",
        "99999999999999999999999999",
        "-9999999999999999999",
        "1e309",
        "nan",
        "inf",
        "1.5",
        "0x10",
        "1_000",
        " 7",
        "٣",
        "\x00",
        "9999-12-31T23:59",
        "0001-01-01T00:00+14:00",
        "9999-12-31T23:59-14:00",
        "2024-01-01",
        "=",
        "====",
        "-start",
        "writes",
        "bin",
    ]
)
values = st.one_of(
    edge_values,
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.integers(min_value=10**18, max_value=10**19 - 1).map(str),  # int64 overflow: 19 digits
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=40),
)


def params_of(names: tuple[str, ...]) -> st.SearchStrategy[dict[str, str]]:
    # Few at a time, so that one bad value is not always masked by another's 400.
    return st.dictionaries(st.sampled_from(names), values, max_size=3)


def path_segment() -> st.SearchStrategy[str]:
    return st.one_of(edge_values, st.text(min_size=1, max_size=40)).filter(bool)


@pytest.fixture
def no_nodes() -> Iterator[None]:
    from cluster.runtime import reset_runtime

    config = PortalConfig(seeds=(NO_NODE,), insecure_no_auth=True, rpc_timeout_s=0.5)
    with override_settings(ELASTICKV_ADMIN=config):
        reset_runtime()
        yield
    reset_runtime()


def check_api(response: Any) -> None:
    assert response.status_code in (200, 400, 404, 503), response.content[:300]
    if response.status_code != 200:
        body = response.json()
        assert set(body) == {"code", "message"}
        assert body["code"] == response.status_code


# The example count comes from the hypothesis profile (tests/conftest.py).
FUZZ = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(query=params_of(KEYVIZ_PARAMS), bucket=path_segment())
@example(query={"to": "9999999999999999999"}, bucket="route:1")  # the reported attack
@example(query={"from": str(INT64_MAX - 1), "to": str(INT64_MAX)}, bucket="route:1")
def test_keyviz_parameters_never_answer_500(no_nodes, make_user, query, bucket):
    client = _client(make_user, "viewer")
    check_api(client.get("/api/keyviz/matrix", query))
    check_api(client.get("/api/keyviz/buckets/" + urllib.parse.quote(bucket, safe=""), query))


@FUZZ
@given(query=params_of(ROUTE_PARAMS), node=path_segment(), extra=params_of(KEYVIZ_PARAMS))
def test_cluster_parameters_never_answer_500(no_nodes, make_user, query, node, extra):
    client = _client(make_user, "viewer")
    check_api(client.get("/api/routes", query))
    check_api(client.get("/api/nodes/" + urllib.parse.quote(node, safe="")))
    for path in PLAIN_API:
        check_api(client.get(path, extra))
    assert client.get("/routes/", query).status_code == 200  # the page shows errors inline


@FUZZ
@given(query=params_of(AUDIT_PARAMS), seq=path_segment(), fmt=values)
@example(query={"before": "99999999999999999999999"}, seq="1", fmt="csv")
@example(query={"after": "-99999999999999999999999"}, seq="1", fmt="jsonl")
@example(query={"to": "9999-12-31T23:59"}, seq="99999999999999999999999", fmt="csv")
@example(query={"from": "0001-01-01T00:00+14:00"}, seq="1", fmt="csv")
def test_audit_parameters_never_answer_500(make_user, query, seq, fmt):
    client = _client(make_user, "auditor")
    assert client.get("/audit/", query).status_code in (200, 400)
    assert client.get("/audit/export/", {**query, "format": fmt}).status_code in (200, 400)
    assert client.get(f"/audit/{urllib.parse.quote(seq, safe='')}/").status_code in (200, 404)


@pytest.mark.parametrize(
    ("path", "param", "raw", "range_text"),
    [
        ("/api/keyviz/matrix", "to", "9999999999999999999", "from 1 to 253402300799999"),
        ("/api/keyviz/matrix", "from", "-1", "from 0 to 253402300799999"),
        ("/api/keyviz/buckets/route:1", "to", "9223372036854775808", "from 1 to 253402300799999"),
        ("/api/keyviz/matrix", "rows", "99999999999999999999", "from 1 to 1024"),
        ("/api/keyviz/matrix", "cols", "0", "from 1 to 10000"),
        ("/api/keyviz/matrix", "step_ms", "1.5", "from 1 to 86400000"),
        ("/api/routes", "group", "18446744073709551616", "from 1"),
    ],
)
def test_out_of_range_numbers_answer_400_naming_the_parameter_and_range(
    no_nodes, make_user, path, param, raw, range_text
):
    response = _client(make_user, "viewer").get(path, {param: raw})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 400
    assert body["message"].startswith(f"{param}: ")
    assert range_text in body["message"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "before=99999999999999999999",
            "before: must be an event number from 0 to 9223372036854775807",
        ),
        ("after=-1", "after: must be an event number from 0 to 9223372036854775807"),
        (
            "to=9999-12-31T23:59",
            "to: must be a date and time (YYYY-MM-DDTHH:MM, UTC) from 1970-01-01 to 9999-12-30",
        ),
    ],
)
def test_out_of_range_audit_filters_answer_400_naming_the_parameter_and_range(
    make_user, query, message
):
    response = _client(make_user, "auditor").get(f"/audit/?{query}")
    assert response.status_code == 400
    assert message.encode() in response.content


def _client(make_user: Any, role: str) -> Client:
    """A client signed in as the fuzz user holding ``role`` (Hypothesis reruns the body)."""
    from django.contrib.auth.models import User

    user = User.objects.filter(username=f"fuzz-{role}").first()
    if user is None:
        user = make_user(f"fuzz-{role}", role)
    client = Client()
    client.force_login(user)
    return client
