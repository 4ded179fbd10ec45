"""The node token's pure rules: fingerprints, what a pasted token may be, how a node's answers
to the two tokens become its state, and what the store remembers across a rotation."""

from __future__ import annotations

import base64
import hashlib
import subprocess

import pytest

from cluster.client import NodeError
from cluster.models import NodeTokenCheck
from cluster.node_token import NodeCheckRow, ProbeReport, node_state
from cluster.tokens import (
    MAX_TOKEN_BYTES,
    NodeTokenStore,
    TokenValueError,
    check_token_value,
    fingerprint,
    generate_token,
)

State = NodeTokenCheck.State
REJECTED = NodeError(
    "UNAUTHENTICATED",
    "the node rejected the portal's token (invalid admin token)",
    detail="invalid admin token",
)
DOWN = NodeError("UNAVAILABLE", "unreachable: connection refused", reachable=False)
NO_ADMIN = NodeError("UNIMPLEMENTED", "GetClusterOverview is not supported by this node")


def test_a_fingerprint_is_the_first_12_hex_digits_of_the_tokens_sha256(tmp_path):
    token = "0123456789abcdef-token"
    assert fingerprint(token) == "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:12]
    # What the page tells operators to run against a node's token file gives the same digits.
    path = tmp_path / "admin-token"
    path.write_text(token + "\n")
    shell = subprocess.run(
        ["sh", "-c", f"tr -d '\\n' < {path} | sha256sum"], capture_output=True, text=True
    )
    assert shell.stdout.startswith(fingerprint(token).removeprefix("sha256:"))


def test_a_generated_token_carries_256_random_bits_and_nodes_accept_it():
    tokens = {generate_token() for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert len(base64.urlsafe_b64decode(token + "=")) == 32
        assert check_token_value(token) == token


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "the token is empty"),
        ("   \n\t ", "the token is empty"),
        ("x" * (MAX_TOKEN_BYTES + 1), "nodes accept at most 4096 bytes"),
        ("é" * 2049, "nodes accept at most 4096 bytes"),  # 4098 bytes in UTF-8
        ("secret-with-a\x07bell-inside", "printable ASCII characters only"),
        ("secret-with-a\x00nul-inside", "printable ASCII characters only"),
        ("sécret-non-ascii-value", "printable ASCII characters only"),
        ("secret with a space inside", "contains whitespace"),
        ("short-token", "use at least 16"),
    ],
)
def test_a_pasted_token_nodes_would_refuse_is_rejected_without_echoing_it(raw, message):
    with pytest.raises(TokenValueError, match=message) as caught:
        check_token_value(raw)
    if raw.strip():
        assert raw.strip() not in str(caught.value)
        assert raw.strip()[:8] not in str(caught.value)


def test_a_pasted_token_is_trimmed_as_nodes_trim_their_file():
    assert check_token_value("  \n" + "t" * 16 + "\r\n") == "t" * 16
    assert check_token_value("~" * MAX_TOKEN_BYTES) == "~" * MAX_TOKEN_BYTES


@pytest.mark.parametrize(
    ("current", "next_", "state"),
    [
        (None, REJECTED, State.CURRENT),
        (REJECTED, None, State.NEXT),
        (None, None, State.ANY),
        (REJECTED, REJECTED, State.NEITHER),
        (DOWN, DOWN, State.UNREACHABLE),
        (REJECTED, DOWN, State.UNREACHABLE),  # cannot tell: not "neither"
        (NO_ADMIN, NO_ADMIN, State.NO_ADMIN),
        (NodeError("INTERNAL", "GetClusterOverview failed: INTERNAL boom"), REJECTED, State.ERROR),
    ],
)
def test_a_nodes_answers_to_both_tokens_decide_its_state_during_a_rotation(current, next_, state):
    assert node_state(current, next_, rotating=True)[0] == state


def test_without_a_rotation_a_node_accepts_the_current_token_or_neither():
    assert node_state(None, None, rotating=False) == (State.CURRENT, "")
    state, detail = node_state(REJECTED, None, rotating=False)
    assert state == State.NEITHER
    assert detail == "the node rejects the current token (invalid admin token)"


def test_a_node_that_answers_without_a_token_accepts_any_token_even_outside_a_rotation():
    # --adminInsecureNoAuth: it also accepts the current token, but "accepts current" would
    # hide that it checks none.
    state, detail = node_state(None, None, rotating=False, tokenless=True)
    assert state == State.ANY
    assert "--adminInsecureNoAuth" in detail
    assert row(State.ANY, rotating=False).state_label == "accepts any token (insecure)"


def row(state: str, rotating: bool = True) -> NodeCheckRow:
    from django.utils import timezone

    return NodeCheckRow("n", "a:1", state, "", timezone.now(), rotating)


def test_a_rotation_is_ready_to_finish_only_when_every_node_accepts_next():
    from django.utils import timezone

    def report(*states: str) -> ProbeReport:
        return ProbeReport(1, True, tuple(row(s) for s in states), timezone.now())

    assert report(State.NEXT, State.ANY, State.NEXT).ready
    assert not report(State.NEXT, State.CURRENT).ready
    assert not report(State.NEXT, State.UNREACHABLE).ready
    assert not report().ready  # nothing known is not "every node"
    assert [n.state for n in report(State.NEXT, State.NEITHER).not_on_next] == [State.NEITHER]


def test_the_table_colours_what_is_done_what_is_left_and_what_is_broken():
    assert [row(s).tone for s in (State.NEXT, State.CURRENT, State.NEITHER)] == [
        "ok",
        "warn",
        "bad",
    ]
    assert [row(s, rotating=False).tone for s in (State.CURRENT, State.NEITHER)] == ["ok", "bad"]


def test_the_store_remembers_which_token_each_node_accepted_by_value_across_a_finish():
    store = NodeTokenStore("old-token-aaaaaaaaaa", "new-token-bbbbbbbbbb")
    store.accepted("moved:1", "next")
    store.accepted("stayed:1", "current")
    # Finish: next becomes current, the old token is gone.
    store.set_tokens("new-token-bbbbbbbbbb", None)
    assert store.accepted_label("moved:1") == "current"
    assert store.accepted_label("stayed:1") is None
    assert [t.value for t in store.candidates("moved:1")] == ["new-token-bbbbbbbbbb"]
    # The next rotation: a node on the current token keeps preferring it.
    store.set_tokens("new-token-bbbbbbbbbb", "newer-token-ccccccccc")
    assert [t.label for t in store.candidates("moved:1")] == ["current", "next"]


def test_a_token_never_appears_in_a_repr():
    store = NodeTokenStore("repr-secret-value-0001", "repr-secret-value-0002")
    assert "repr-secret" not in repr(store.candidates("x"))
