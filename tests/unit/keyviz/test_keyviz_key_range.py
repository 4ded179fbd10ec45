"""Key-range zoom of the matrix API: `start_key` / `end_key`, and rows cut before the budgets."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from elastickv_admin.lib.errors import ParamError
from keyviz.budgets import fit_to_display
from keyviz.matrix import NodeMatrix, RowMeta
from keyviz.merge import cell_contributions, merge_nodes
from keyviz.params import MatrixQuery, parse_matrix_query
from keyviz.service import restrict_to_key_range, rows_in_key_range

NOW = 1_700_000_000_000


def b64(key: bytes, *, pad: bool = False) -> str:
    text = base64.urlsafe_b64encode(key).decode()
    return text if pad else text.rstrip("=")


def parse(**query: str) -> MatrixQuery:
    return parse_matrix_query(query, now_ms=NOW)


def error(**query: str) -> ParamError:
    with pytest.raises(ParamError) as err:
        parse(**query)
    return err.value


def test_key_range_defaults_to_the_whole_key_space():
    q = parse()
    assert (q.start_key, q.end_key, q.key_range) == (b"", b"", False)


def test_keys_are_base64url_with_or_without_padding_and_may_be_binary():
    q = parse(start_key=b64(b"user:1"), end_key=b64(b"\xff\xfe\x00", pad=True))
    assert (q.start_key, q.end_key, q.key_range) == (b"user:1", b"\xff\xfe\x00", True)
    assert parse(end_key=b64(b"z")).start_key == b""


@pytest.mark.parametrize(
    ("query", "param", "says"),
    [
        ({"start_key": "dXNlcjox+"}, "start_key", "base64url"),
        ({"end_key": "a/b"}, "end_key", "base64url"),
        ({"start_key": "abcde"}, "start_key", "do not make whole bytes"),
        ({"start_key": "ab==="}, "start_key", "base64url"),
        ({"end_key": "A" * 6000}, "end_key", "at most 4096 bytes"),
        ({"start_key": b64(b"b"), "end_key": b64(b"a")}, "start_key", "before end_key"),
        ({"start_key": b64(b"a"), "end_key": b64(b"a")}, "start_key", "before end_key"),
    ],
)
def test_bad_keys_are_400s_that_name_the_parameter(query: dict[str, str], param: str, says: str):
    err = error(**query)
    assert err.param == param
    assert says in str(err)
    assert str(err).startswith(f"{param}: ")


def rows(*spans: tuple[str, bytes, bytes]) -> tuple[RowMeta, ...]:
    return tuple(RowMeta(b, start=s, end=e) for b, s, e in spans)


def test_rows_meeting_the_range_are_kept_including_unbounded_ends_and_old_generations():
    catalog = rows(
        ("route:1", b"", b"b"),  # -inf .. b
        ("route:5", b"b", b"m"),  # split later into 8 and 9; both generations in the window
        ("route:8", b"b", b"f"),
        ("route:9", b"f", b"m"),
        ("route:3", b"m", b""),  # m .. +inf
    )
    assert rows_in_key_range(catalog, b"f", b"g").tolist() == [1, 3]
    assert rows_in_key_range(catalog, b"", b"b").tolist() == [0]
    assert rows_in_key_range(catalog, b"m", b"").tolist() == [4]
    assert rows_in_key_range(catalog, b"a", b"").tolist() == [0, 1, 2, 3, 4]


def node(name: str, values: list[list[int]], catalog: tuple[RowMeta, ...]) -> NodeMatrix:
    v = np.array(values, dtype=np.uint64)
    return NodeMatrix(
        node=name,
        column_unix_ms=np.array([60_000 * (j + 1) for j in range(v.shape[1])], dtype=np.int64),
        rows=catalog,
        values=v,
        soft=np.zeros(v.shape, dtype=np.bool_),
        raft_group_ids=np.ones(v.shape, dtype=np.uint64),
        leader_terms=np.ones(v.shape, dtype=np.uint64),
    )


def test_a_key_range_is_cut_before_the_budget_so_a_zoom_re_buckets_for_real():
    catalog = rows(*((f"route:{i}", bytes([97 + i]), bytes([98 + i])) for i in range(8)))
    hot = [[1, 1], [1, 1], [50, 0], [1, 1], [0, 60], [1, 1], [1, 1], [1, 1]]
    merged = merge_nodes(
        [node("n1", hot, catalog), node("n2", hot, catalog)], step_ms=60_000, writes_merge="sum"
    )
    # Whole key space with a 2-row budget: both hot rows disappear into aggregates.
    whole = fit_to_display(merged, max_rows=2)
    assert not {"route:2", "route:4"} & {r.bucket_id for r in whole.rows}
    zoomed = restrict_to_key_range(merged, b"c", b"f")  # rows c, d, e
    assert [r.bucket_id for r in zoomed.rows] == ["route:2", "route:3", "route:4"]
    # The same budget over the zoomed range keeps the hottest row single.
    shown = fit_to_display(zoomed, max_rows=2)
    assert [r.bucket_id for r in shown.rows] == ["virtual:route:2..route:3", "route:4"]
    assert int(shown.values.sum()) == 2 * (50 + 2 + 60)
    # Provenance followed: each node's contribution to a zoomed row still resolves.
    contributions = cell_contributions(zoomed, "route:4")
    assert sorted((c.node, c.value) for c in contributions) == [("n1", 60), ("n2", 60)]


def test_the_whole_key_space_leaves_the_matrix_untouched():
    catalog = rows(("route:1", b"", b""))
    merged = merge_nodes([node("n1", [[1]], catalog)], step_ms=60_000)
    assert restrict_to_key_range(merged, b"", b"") is merged


def test_a_step_hint_is_optional_and_bounded():
    assert parse().step_ms is None
    assert parse(step_ms="1000").step_ms == 1000
    err = error(step_ms="0")
    assert err.param == "step_ms"
    assert "from 1 to 86400000 milliseconds" in str(err)
    assert error(step_ms="1s").param == "step_ms"
