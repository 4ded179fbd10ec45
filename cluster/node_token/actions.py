"""The audited rotation steps: every change locks the head, bumps its version and is
audited in the same transaction; a refused step is audited too (outcome ``failure``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.views.decorators.debug import sensitive_variables

from accounts.actions import ActionRefused
from audit.models import Outcome
from audit.service import record_event
from cluster.models import NodeTokenCheck, NodeTokenHead, NodeTokenRecord
from cluster.node_token.records import (
    TARGET,
    State,
    actor_name,
    bump,
    decrypt_row,
    locked_head,
    next_token_recipients,
)
from cluster.node_token.views_model import NodeCheckRow, ProbeReport
from cluster.runtime import node_client
from cluster.tokens import TokenValueError, check_token_value, fingerprint, generate_token
from elastickv_admin.lib import crypto
from elastickv_admin.lib.config import portal_config


class NodeTokenRefused(ActionRefused):
    """A rotation step that is not allowed now; the message says why (never a token)."""


@dataclass(frozen=True)
class StartedRotation:
    fingerprint: str
    # The generated token, for the one response that shows it; None when pasted.
    generated: str | None = field(repr=False)


@dataclass(frozen=True)
class FinishedRotation:
    old_fingerprint: str
    new_fingerprint: str
    forced: bool
    lost: tuple[str, ...]  # nodes that did not accept next (forced finish only)


def _bump(head: NodeTokenHead) -> None:
    bump(head)
    transaction.on_commit(_changed_in_this_process)


def _changed_in_this_process() -> None:
    node_client().tokens.mark_stale()


def _refuse(action: str, actor: str, reason: str, **details: object) -> NodeTokenRefused:
    """Audit a refused step (its own transaction: the refusal must not roll it back)."""
    with transaction.atomic():
        record_event(
            action,
            target=TARGET,
            outcome=Outcome.FAILURE,
            actor=actor,
            details={"reason": reason, **details},
        )
    return NodeTokenRefused(reason)


def _check_secure(action: str, actor: str) -> None:
    if portal_config().insecure_no_auth:
        raise _refuse(
            action,
            actor,
            "the portal runs with --adminInsecureNoAuth and presents no token to the nodes: "
            "there is no node token to rotate",
        )


def _current_and_next() -> tuple[NodeTokenRecord | None, NodeTokenRecord | None]:
    """The token rows; callers hold the head's lock."""
    rows = {row.slot: row for row in NodeTokenRecord.objects.all()}
    return rows.get(NodeTokenRecord.Slot.CURRENT), rows.get(NodeTokenRecord.Slot.NEXT)


@sensitive_variables("token", "value")
def do_start_rotation(
    actor: str, token: str | None = None, *, known_addresses: Iterable[str] = ()
) -> StartedRotation:
    """Hold a next token beside the current one: generated (256 bits, returned once for
    display) or pasted (validated, never echoed). Refused while a rotation runs.

    ``known_addresses`` (``await known_node_addresses()``) and the seeds are recorded as
    the only addresses the next token will be sent to."""
    action = "node_token.rotation_started"
    refused = "node_token.rotation_start_refused"
    actor = actor_name(actor)
    _check_secure(refused, actor)
    source = NodeTokenRecord.Source.GENERATED if token is None else NodeTokenRecord.Source.PASTED
    try:
        value = generate_token() if token is None else check_token_value(token)
    except TokenValueError as exc:
        raise _refuse(refused, actor, str(exc), source=source) from None
    fp = fingerprint(value)
    problem: str | None = None
    try:
        with transaction.atomic():
            head = locked_head()
            current, running = _current_and_next()
            if current is None:
                problem = (
                    "there is no current node token yet: start the portal with --nodeTokenFile"
                )
            elif running is not None:
                problem = (
                    f"a rotation is already running (next token {running.fingerprint}, started "
                    f"by {running.created_by} at {running.created_at:%Y-%m-%d %H:%M:%S} UTC): "
                    "finish or cancel it first"
                )
            elif current.fingerprint == fp and decrypt_row(current) == value:
                problem = "the pasted token is the current token; a rotation needs a new one"
            else:
                NodeTokenRecord.objects.create(
                    slot=NodeTokenRecord.Slot.NEXT,
                    ciphertext=crypto.encrypt(value.encode("utf-8")),
                    fingerprint=fp,
                    source=source,
                    created_by=actor,
                    known_addresses=sorted(next_token_recipients(known_addresses)),
                )
                _bump(head)
                record_event(
                    action,
                    target=TARGET,
                    actor=actor,
                    details={
                        "next_fingerprint": fp,
                        "current_fingerprint": current.fingerprint,
                        "source": source,
                    },
                )
    except IntegrityError:
        # The unique slot: another process started a rotation at the same instant.
        problem = "a rotation is already running: finish or cancel it first"
    if problem is not None:
        raise _refuse(refused, actor, problem)
    return StartedRotation(fp, value if token is None else None)


def do_finish_rotation(
    actor: str,
    report: ProbeReport,
    *,
    force: bool = False,
    confirm_nodes: Sequence[str] | None = None,
    expected_next: str | None = None,
) -> FinishedRotation:
    """Next becomes current and the old token is deleted, if ``report`` (a fresh probe of
    these very tokens) shows every known node accepting next. ``force`` finishes anyway,
    but only when ``confirm_nodes`` names exactly the nodes that will lose access (the
    list the admin confirmed)."""
    action = "node_token.rotation_finished"
    refused = "node_token.rotation_finish_refused"
    actor = actor_name(actor)
    _check_secure(refused, actor)
    losing = sorted(n.address for n in report.not_on_next)
    states = {n.label: n.state for n in report.nodes}
    problem: str | None = None
    result: FinishedRotation | None = None
    with transaction.atomic():
        head = locked_head()
        current, next_ = _current_and_next()
        if next_ is None or current is None:
            problem = "no rotation is running"
        elif expected_next is not None and expected_next != next_.fingerprint:
            problem = (
                f"the running rotation is for {next_.fingerprint}, not {expected_next}: "
                "reload the page"
            )
        elif head.version != report.version or not report.rotating:
            problem = "the tokens changed while the nodes were probed: check again"
        elif not report.nodes:
            problem = "no node is known: the portal cannot tell whether they accept next"
        elif losing and not force:
            problem = (
                f"{len(losing)} of {len(report.nodes)} nodes do not accept the next token yet: "
                + ", ".join(_describe(n) for n in report.not_on_next)
            )
        elif losing and sorted(confirm_nodes or ()) != losing:
            problem = (
                "the nodes that would lose access changed since you confirmed; now: "
                + ", ".join(_describe(n) for n in report.not_on_next)
            )
        else:
            old_fp = current.fingerprint
            # The old token is destroyed: its row (the only place its ciphertext lived) goes.
            current.delete()
            next_.slot = NodeTokenRecord.Slot.CURRENT
            next_.save(update_fields=["slot"])
            _bump(head)
            record_event(
                action,
                target=TARGET,
                actor=actor,
                details={
                    "old_fingerprint": old_fp,
                    "new_fingerprint": next_.fingerprint,
                    "forced": bool(losing),
                    "nodes_losing_access": losing,
                    "node_states": states,
                },
            )
            result = FinishedRotation(old_fp, next_.fingerprint, bool(losing), tuple(losing))
    if result is None:
        raise _refuse(refused, actor, problem or "not finished", force=force, node_states=states)
    return result


def do_cancel_rotation(actor: str, *, expected_next: str | None = None) -> str:
    """Delete the next token; the current one stays. Returns the cancelled fingerprint.
    Nodes already moved to the next token lose access until they are moved back."""
    refused = "node_token.rotation_cancel_refused"
    actor = actor_name(actor)
    _check_secure(refused, actor)
    problem: str | None = None
    cancelled: str | None = None
    with transaction.atomic():
        head = locked_head()
        next_ = _current_and_next()[1]
        if next_ is None:
            problem = "no rotation is running"
        elif expected_next is not None and expected_next != next_.fingerprint:
            problem = (
                f"the running rotation is for {next_.fingerprint}, not {expected_next}: "
                "reload the page"
            )
        else:
            on_next = sorted(
                c.node_id or c.address
                for c in NodeTokenCheck.objects.filter(version=head.version, state=State.NEXT)
            )
            cancelled = next_.fingerprint
            next_.delete()
            _bump(head)
            record_event(
                "node_token.rotation_cancelled",
                target=TARGET,
                actor=actor,
                details={"cancelled_fingerprint": cancelled, "nodes_on_next": on_next},
            )
    if cancelled is None:
        raise _refuse(refused, actor, problem or "not cancelled")
    return cancelled


def _describe(node: NodeCheckRow) -> str:
    return f"{node.label} ({node.state_label})"
