"""The Routes query: every bad parameter is named, with what to fix."""

from __future__ import annotations

import pytest

from cluster.params import RouteQuery, parse_route_query, parse_route_query_lenient
from elastickv_admin.lib.errors import ParamError


def test_no_parameters_mean_every_route_in_key_order():
    assert parse_route_query({}) == RouteQuery()
    assert parse_route_query({"group": "", "prefix": "", "sort": ""}) == RouteQuery()


def test_group_prefix_and_sort_are_parsed():
    q = parse_route_query({"group": "3", "prefix": "user:", "sort": "-split_hlc"})
    assert (q.group, q.prefix, q.sort, q.descending, q.sort_param) == (
        3,
        b"user:",
        "split_hlc",
        True,
        "-split_hlc",
    )
    assert q.filtered


def test_a_0x_prefix_is_raw_bytes_and_other_text_is_utf8():
    assert parse_route_query({"prefix": "0x80ff"}).prefix == b"\x80\xff"
    assert parse_route_query({"prefix": "0xZZ"}).prefix == b"0xZZ"
    assert parse_route_query({"prefix": "clé"}).prefix == "clé".encode()
    assert parse_route_query({"prefix": "0x80ff"}).prefix_input == "0x80ff"


@pytest.mark.parametrize(
    ("query", "param", "fragment"),
    [
        ({"group": "abc"}, "group", "must be a Raft group id"),
        ({"group": "0"}, "group", "from 1"),
        ({"group": "-2"}, "group", "from 1"),
        ({"group": "1.5"}, "group", "got '1.5'"),
        ({"group": str(2**64)}, "group", "must be a Raft group id"),
        ({"prefix": "0xabc"}, "prefix", "two digits per byte"),
        ({"prefix": "x" * 1025}, "prefix", "at most 1024 bytes"),
        ({"sort": "size"}, "sort", "must be one of start, route, group"),
        ({"sort": "--group"}, "sort", "got '--group'"),
    ],
)
def test_a_bad_parameter_is_named_with_what_to_fix(query, param, fragment):
    with pytest.raises(ParamError) as caught:
        parse_route_query(query)
    assert caught.value.param == param
    assert fragment in caught.value.message


def test_the_page_keeps_the_good_parameters_and_reports_every_bad_one():
    q, errors = parse_route_query_lenient({"group": "x", "prefix": "user:", "sort": "nope"})
    assert [e.param for e in errors] == ["group", "sort"]
    assert q == RouteQuery(None, b"user:", "user:", "start", False)
