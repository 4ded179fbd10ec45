"""Malformed node input rejects that node's matrix with a reason; the others still merge."""

from __future__ import annotations

import numpy as np
import pytest

from keyviz.matrix import MalformedMatrixError, node_matrices_from_responses
from keyviz.merge import merge_nodes
from tests.unit.keyviz.keyviz_testkit import READS, STEP, T0, cols, node, response, row


def test_valid_response_becomes_uint64_arrays_with_missing_ids_as_zero() -> None:
    m = node(
        "n1",
        cols(3),
        row("route:1", [1, 2**64 - 1, 0], groups=[4, 4, 0], terms=[9, 9, 0]),
        row("route:2", [0, 5, 0]),
    )
    assert m.values.dtype == np.uint64
    assert m.values.tolist() == [[1, 2**64 - 1, 0], [0, 5, 0]]
    assert m.raft_group_ids.tolist() == [[4, 4, 0], [0, 0, 0]]
    assert m.leader_terms.tolist() == [[9, 9, 0], [0, 0, 0]]
    assert m.soft.tolist() == [[False] * 3] * 2
    assert m.column_unix_ms.tolist() == cols(3)
    assert (m.value_max, m.group_max, m.term_max) == (2**64 - 1, 4, 9)


def test_group_ids_and_terms_are_uint32_when_they_fit_else_uint64() -> None:
    m = node("n1", cols(1), row("route:1", [1], groups=[2**32 - 1], terms=[2**32]))
    assert (str(m.raft_group_ids.dtype), str(m.leader_terms.dtype)) == ("uint32", "uint64")
    assert (m.raft_group_ids.tolist(), m.leader_terms.tolist()) == ([[2**32 - 1]], [[2**32]])


def test_values_shorter_than_columns_reject_the_node() -> None:
    with pytest.raises(MalformedMatrixError) as err:
        node("n1", cols(4), row("route:7", [1, 2, 3]))
    assert err.value.reason == "row route:7: 3 values but 4 columns"


def test_partial_raft_group_ids_reject_the_node() -> None:
    with pytest.raises(MalformedMatrixError) as err:
        node("n1", cols(4), row("route:7", [1, 2, 3, 4], groups=[1, 1], terms=[2, 2, 2, 2]))
    assert err.value.reason == "row route:7: raft_group_ids has 2 entries, values has 4"


def test_partial_leader_terms_reject_the_node() -> None:
    with pytest.raises(MalformedMatrixError) as err:
        node("n1", cols(2), row("route:7", [1, 2], groups=[1, 1], terms=[3]))
    assert err.value.reason == "row route:7: leader_terms has 1 entries, values has 2"


def test_partial_soft_columns_reject_the_node() -> None:
    with pytest.raises(MalformedMatrixError) as err:
        node("n1", cols(3), row("route:7", [1, 2, 3], soft=[True]))
    assert err.value.reason == "row route:7: soft_columns has 1 entries, values has 3"


def test_unsorted_columns_reject_the_node() -> None:
    columns = [T0, T0 + 2 * STEP, T0 + STEP]
    with pytest.raises(MalformedMatrixError) as err:
        node("n1", columns, row("route:1", [1, 1, 1]))
    assert err.value.reason == (
        f"column timestamps not strictly increasing at index 2 ({T0 + 2 * STEP} then {T0 + STEP})"
    )


def test_duplicate_columns_reject_the_node() -> None:
    with pytest.raises(MalformedMatrixError, match="not strictly increasing at index 1"):
        node("n1", [T0, T0, T0 + STEP], row("route:1", [1, 1, 1]))


@pytest.mark.parametrize("step", [0, -60_000])
def test_negative_or_zero_step_rejects_the_node(step: int) -> None:
    with pytest.raises(MalformedMatrixError) as err:
        node("n1", cols(2), row("route:1", [1, 1]), step_ms=step)
    assert err.value.reason == f"step {step} ms is not positive"


def test_duplicate_bucket_ids_reject_the_node() -> None:
    with pytest.raises(MalformedMatrixError) as err:
        node("n1", cols(1), row("route:1", [1]), row("route:1", [2]))
    assert err.value.reason == "bucket_id route:1 appears twice"


def test_empty_bucket_id_rejects_the_node() -> None:
    with pytest.raises(MalformedMatrixError, match="empty bucket_id"):
        node("n1", cols(1), row("", [1], start=b"a"))


def test_malformed_node_is_rejected_with_its_reason_and_the_others_still_merge() -> None:
    responses = {
        "n2": response(cols(2), row("route:1", [5, 6])),
        "n1": response(cols(2), row("route:1", [1, 2])),
        "n3": response(cols(2), row("route:1", [1, 2, 3])),
    }
    valid, rejected = node_matrices_from_responses(responses)
    assert [m.node for m in valid] == ["n1", "n2"]
    assert rejected == {"n3": "malformed KeyViz matrix: row route:1: 3 values but 2 columns"}
    merged = merge_nodes(valid, series=READS)
    assert merged.values.tolist() == [[6, 8]]


def test_empty_response_is_a_valid_empty_matrix() -> None:
    m = node("n1", [])
    assert m.shape == (0, 0)
    merged = merge_nodes([m], series=READS)
    assert merged.shape == (0, 0)
