"""The node bearer token: stored encrypted, rotated without losing sight of the cluster.

Real nodes hold exactly one token and need a restart to change it (CONTRACT.md
"Authentication"), so a rotation is rolling: the portal holds the current and the next
token while operators move the nodes one by one, probes each node with both to show which
one it accepts, and finishes (next becomes current, the old one is deleted) once every node
accepts next. DESIGN.md "Access, tokens, audit"; README "Node token rotation".

- Storage: NodeTokenRecord rows hold only Fernet ciphertext (elastickv_admin.crypto); people see
  fingerprints. On first start, --nodeTokenFile seeds the table (``ensure_node_token``);
  afterwards the database is the source of truth.
- Changes: ``do_start_rotation``, ``do_finish_rotation``, ``do_cancel_rotation`` and
  ``do_bootstrap_node_token``, each under the lock of the NodeTokenHead row and audited in
  the same transaction. A refused step is audited too (outcome ``failure``).
- Who gets the next token: membership comes from the nodes (untrusted), so a node address
  that appears during a rotation could be anyone's, and a node that answers UNAUTHENTICATED
  would otherwise be handed the next token by the fallback. The rotation row records the
  addresses known when it started (seeds + membership then); only those and the seeds are
  ever sent next, by node calls and by probes (``next_token_recipients``).
- Every portal process follows the database: ``DatabaseTokenStore.sync()`` runs before each
  node call and, at most once per SYNC_INTERVAL_S, reads the token rows' ciphertexts (one
  small query); when they changed it decrypts them. So a change committed by any process is
  used by every other process from its first node call after at most SYNC_INTERVAL_S (plus
  that query), and by the process that made it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from channels.db import database_sync_to_async
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from accounts.actions import ActionRefused
from audit.models import Outcome
from audit.service import record_event
from cluster.client import NodeClient, NodeError, node_client
from cluster.discovery import discovery
from cluster.fanout import Node
from cluster.models import NodeTokenCheck, NodeTokenHead, NodeTokenRecord
from cluster.tokens import (
    NodeToken,
    NodeTokenStore,
    TokenFileError,
    TokenValueError,
    check_token_value,
    fingerprint,
    generate_token,
    read_token_file,
)
from elastickv_admin import crypto
from elastickv_admin.config import portal_config

logger = logging.getLogger(__name__)

# How stale a process's tokens may be (see the module docstring).
SYNC_INTERVAL_S = 1.0
# The cheap Admin call a probe makes with each token; every elastickv version serves it.
PROBE_METHOD = "GetClusterOverview"
# How often ordinary calls refresh a token's "last verified" in the database.
VERIFIED_WRITE_S = 60.0
PROBE_DEADLINE_S = 3.0
TARGET = "node-token"
State = NodeTokenCheck.State
# A node in one of these states keeps working when next becomes current.
ACCEPTS_NEXT = frozenset({State.NEXT, State.ANY})


class NodeTokenRefused(ActionRefused):
    """A rotation step that is not allowed now; the message says why (never a token)."""


# --- reading the stored tokens --------------------------------------------------------------


@dataclass(frozen=True)
class StoredTokens:
    """The decrypted tokens of one version. Never shown, never logged."""

    version: int
    current: str | None = field(repr=False)
    next: str | None = field(repr=False)
    next_to: frozenset[str] = frozenset()  # next_token_recipients of the rotation


def next_token_recipients(known_addresses: Iterable[str]) -> frozenset[str]:
    """The addresses the next token may be sent to: those recorded when the rotation
    started, and the seeds (operator-configured, trusted)."""
    return frozenset(known_addresses) | frozenset(portal_config().seeds)


async def known_node_addresses() -> list[str]:
    """The node addresses known now (seeds + membership), for the rotation about to start."""
    nodes = await discovery().nodes()
    return sorted({*portal_config().seeds, *(n.address for n in nodes)})


def _decrypt(row: NodeTokenRecord) -> str:
    return crypto.decrypt(row.ciphertext).decode("utf-8")


def load_tokens() -> StoredTokens:
    """The head's version and its tokens, consistently: every change bumps the version in
    the transaction that changes the rows, so equal versions before and after the read
    mean the rows belong to that version."""
    while True:
        before = _version()
        rows = {row.slot: row for row in NodeTokenRecord.objects.all()}
        if _version() == before:
            break
    current, next_ = rows.get(NodeTokenRecord.Slot.CURRENT), rows.get(NodeTokenRecord.Slot.NEXT)
    return StoredTokens(
        before,
        _decrypt(current) if current else None,
        _decrypt(next_) if next_ else None,
        next_token_recipients(next_.known_addresses if next_ else ()),
    )


def _version() -> int:
    version = NodeTokenHead.objects.filter(pk=1).values_list("version", flat=True).first()
    return int(version or 0)


def _locked_head() -> NodeTokenHead:
    """The head row, locked for this transaction (made first in a freshly flushed database)."""
    head = NodeTokenHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        NodeTokenHead.objects.bulk_create([NodeTokenHead(pk=1)], ignore_conflicts=True)
        head = NodeTokenHead.objects.select_for_update().get(pk=1)
    return head


# --- what admins see: metadata only ---------------------------------------------------------


@dataclass(frozen=True)
class TokenInfo:
    fingerprint: str
    source: str
    created_at: datetime
    created_by: str
    verified_at: datetime | None


@dataclass(frozen=True)
class NodeCheckRow:
    node_id: str
    address: str
    state: str
    detail: str
    checked_at: datetime
    rotating: bool = False

    @property
    def label(self) -> str:
        return self.node_id or self.address

    @property
    def tone(self) -> str:
        """The pill's colour: ok (nothing to do), warn (still to move), bad."""
        if self.state == State.ANY or self.state == (
            State.NEXT if self.rotating else State.CURRENT
        ):
            return "ok"
        return "warn" if self.rotating and self.state == State.CURRENT else "bad"

    @property
    def state_label(self) -> str:
        if self.state == State.ANY:
            return "accepts any token (insecure)"
        return str(State(self.state).label)

    @property
    def accepts_next(self) -> bool:
        return self.state in ACCEPTS_NEXT


@dataclass(frozen=True)
class TokenStatus:
    insecure: bool
    version: int
    current: TokenInfo | None
    next: TokenInfo | None
    checks: tuple[NodeCheckRow, ...] = ()

    @property
    def rotating(self) -> bool:
        return self.next is not None


def _info(row: NodeTokenRecord | None) -> TokenInfo | None:
    if row is None:
        return None
    return TokenInfo(
        row.fingerprint,
        NodeTokenRecord.Source(row.source).label,
        row.created_at,
        row.created_by,
        row.verified_at,
    )


def token_status() -> TokenStatus:
    """Fingerprints, who made each token and when, and the last probe of each node."""
    rows = {row.slot: row for row in NodeTokenRecord.objects.all()}
    version = _version()
    rotating = NodeTokenRecord.Slot.NEXT in rows
    checks = tuple(
        NodeCheckRow(c.node_id, c.address, c.state, c.detail, c.checked_at, rotating)
        for c in NodeTokenCheck.objects.filter(version=version)
    )
    return TokenStatus(
        insecure=portal_config().insecure_no_auth,
        version=version,
        current=_info(rows.get(NodeTokenRecord.Slot.CURRENT)),
        next=_info(rows.get(NodeTokenRecord.Slot.NEXT)),
        checks=checks,
    )


# --- probing: which token does each node accept? --------------------------------------------


@dataclass(frozen=True)
class ProbeReport:
    """Every known node probed with the tokens of ``version``."""

    version: int
    rotating: bool
    nodes: tuple[NodeCheckRow, ...]
    checked_at: datetime

    @property
    def not_on_next(self) -> list[NodeCheckRow]:
        """The nodes that would lose access if next became current now."""
        return [n for n in self.nodes if not n.accepts_next]

    @property
    def ready(self) -> bool:
        """Every known node accepts next: the rotation may finish."""
        return self.rotating and bool(self.nodes) and not self.not_on_next

    @property
    def on_next(self) -> int:
        return sum(1 for n in self.nodes if n.accepts_next)

    @property
    def only_next(self) -> list[NodeCheckRow]:
        """The nodes a cancel would cut off (they hold the next token only)."""
        return [n for n in self.nodes if n.state == State.NEXT]

    @property
    def not_on_current(self) -> list[NodeCheckRow]:
        return [n for n in self.nodes if n.state not in (State.CURRENT, State.ANY)]

    @property
    def on_current(self) -> int:
        return len(self.nodes) - len(self.not_on_current)


Answer = NodeError | None  # None: the node accepted the token

_UNREACHABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


INSECURE_DETAIL = "accepts any token: the node checks none (--adminInsecureNoAuth)"


def node_state(
    current: Answer, next_: Answer | None, *, rotating: bool, tokenless: bool = False
) -> tuple[str, str]:
    """(state, detail) of a node from its answers to the current and the next token;
    ``tokenless``: it also answered a call without any token (it checks none)."""
    if tokenless or (rotating and current is None and next_ is None):
        return State.ANY, INSECURE_DETAIL
    if current is None:
        return State.CURRENT, ""
    if rotating and next_ is None:
        return State.NEXT, ""
    errors: list[Answer] = [current] if not rotating else [current, next_]
    failures = [e for e in errors if e is not None]
    codes = {e.code for e in failures}
    if "UNIMPLEMENTED" in codes:
        return State.NO_ADMIN, (
            "the node does not serve the Admin service: was it started without "
            "--adminTokenFile or --adminInsecureNoAuth?"
        )
    for error in failures:
        if error.code in _UNREACHABLE:
            return State.UNREACHABLE, error.message
    for error in failures:
        if error.code != "UNAUTHENTICATED":
            return State.ERROR, error.message
    which = "both tokens" if rotating else "the current token"
    return State.NEITHER, f"the node rejects {which} ({_auth_reason(current.message)})"


def _auth_reason(message: str) -> str:
    """The node's own words from a NodeError message (cluster/client.py classify)."""
    prefix = "the node rejected the portal's token ("
    if message.startswith(prefix) and message.endswith(")"):
        return message[len(prefix) : -1]
    return message


async def _ask(client: NodeClient, address: str, token: str | None, label: str) -> Answer:
    """One probe call with exactly ``token`` (None: no authorization at all)."""
    deadline = min(client.config.rpc_timeout_s, PROBE_DEADLINE_S)
    try:
        await client.call_with_token(
            address,
            PROBE_METHOD,
            NodeToken(label, token) if token is not None else None,
            deadline_s=deadline,
        )
    except NodeError as exc:
        return exc
    return None


NOT_SENT_NEXT = (
    "not sent the next token: this address was not known when the rotation started "
    "(cancel and start the rotation again to include it)"
)


async def _probe_node(client: NodeClient, node: Node, tokens: StoredTokens) -> NodeCheckRow:
    assert tokens.current is not None
    rotating = tokens.next is not None
    asks = [
        _ask(client, node.address, tokens.current, "current"),
        _ask(client, node.address, None, ""),  # accepted without a token: insecure node
    ]
    trusted = tokens.next is not None and node.address in tokens.next_to
    if tokens.next is not None and trusted:
        asks.append(_ask(client, node.address, tokens.next, "next"))
    answers = await asyncio.gather(*asks)
    state, detail = node_state(
        answers[0],
        answers[2] if len(answers) > 2 else None,
        rotating=len(answers) > 2,
        tokenless=answers[1] is None,
    )
    if rotating and not trusted:
        detail = f"{detail}; {NOT_SENT_NEXT}" if detail else NOT_SENT_NEXT
    return NodeCheckRow(node.node_id, node.address, state, detail[:500], timezone.now(), rotating)


_in_thread = database_sync_to_async


async def probe_nodes(nodes: Sequence[Node] | None = None) -> ProbeReport:
    """Ask every known node (or ``nodes``) with the current and, during a rotation, the
    next token, and store what each node accepts (NodeTokenCheck)."""
    tokens = await _in_thread(load_tokens, thread_sensitive=False)()
    if tokens.current is None:
        return ProbeReport(tokens.version, False, (), timezone.now())
    client = node_client()
    known = list(nodes) if nodes is not None else await discovery().nodes()
    rows = await asyncio.gather(*(_probe_node(client, n, tokens) for n in known))
    report = ProbeReport(tokens.version, tokens.next is not None, tuple(rows), timezone.now())
    await _in_thread(record_probe, thread_sensitive=False)(report)
    return report


def record_probe(report: ProbeReport) -> None:
    """Keep the probe's findings (unless the tokens changed meanwhile): one row per node,
    and each token's last verification."""
    with transaction.atomic():
        head = _locked_head()
        if head.version != report.version:
            return
        NodeTokenCheck.objects.exclude(address__in=[n.address for n in report.nodes]).delete()
        for node in report.nodes:
            NodeTokenCheck.objects.update_or_create(
                address=node.address,
                defaults={
                    "node_id": node.node_id,
                    "state": node.state,
                    "detail": node.detail,
                    "checked_at": node.checked_at,
                    "version": report.version,
                },
            )
        states = {n.state for n in report.nodes}
        for slot, accepting in (
            (NodeTokenRecord.Slot.CURRENT, {State.CURRENT, State.ANY}),
            (NodeTokenRecord.Slot.NEXT, {State.NEXT, State.ANY}),
        ):
            if states & accepting:
                NodeTokenRecord.objects.filter(slot=slot).update(verified_at=report.checked_at)


# --- actions: every change locks the head, bumps its version and is audited ----------------


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
    head.version += 1
    head.updated_at = timezone.now()
    head.save(update_fields=["version", "updated_at"])
    # Probes of the previous version say nothing about the new tokens.
    NodeTokenCheck.objects.all().delete()
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


def _ensure_actor(actor: str) -> str:
    return (actor or "unknown")[:150]


def do_bootstrap_node_token(token: str, *, source_file: str, actor: str = "system") -> bool:
    """Seed the table from --nodeTokenFile when it holds no token yet; False when it does."""
    token = token.strip()
    with transaction.atomic():
        head = _locked_head()
        if NodeTokenRecord.objects.exists():
            return False
        fp = fingerprint(token)
        NodeTokenRecord.objects.create(
            slot=NodeTokenRecord.Slot.CURRENT,
            ciphertext=crypto.encrypt(token.encode("utf-8")),
            fingerprint=fp,
            source=NodeTokenRecord.Source.FILE,
            created_by=_ensure_actor(actor),
        )
        _bump(head)
        record_event(
            "node_token.bootstrapped",
            target=TARGET,
            actor=actor,
            details={"fingerprint": fp, "from": "--nodeTokenFile", "file": source_file},
        )
    return True


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
    actor = _ensure_actor(actor)
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
            head = _locked_head()
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
            elif current.fingerprint == fp and _decrypt(current) == value:
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
    actor = _ensure_actor(actor)
    _check_secure(refused, actor)
    losing = sorted(n.address for n in report.not_on_next)
    states = {n.label: n.state for n in report.nodes}
    problem: str | None = None
    result: FinishedRotation | None = None
    with transaction.atomic():
        head = _locked_head()
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
    actor = _ensure_actor(actor)
    _check_secure(refused, actor)
    problem: str | None = None
    cancelled: str | None = None
    with transaction.atomic():
        head = _locked_head()
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


# --- bootstrap: --nodeTokenFile seeds the table once ----------------------------------------

_file_checked: set[str] = set()
_file_checked_lock = threading.Lock()


def ensure_node_token(token_file: str | None = None) -> None:
    """On first start, seed the table from --nodeTokenFile; afterwards warn (once per
    process, fingerprints only) when the file holds a token the database does not."""
    config = portal_config()
    path = token_file or config.node_token_file
    if config.insecure_no_auth or not path:
        return
    stored_any = NodeTokenRecord.objects.exists()
    if stored_any and path in _file_checked:
        return  # the usual case: nothing to read, nothing to lock
    try:
        token = read_token_file(path)
    except TokenFileError as exc:
        if not stored_any:
            logger.error("no node token: %s", exc)
        return
    if not stored_any and do_bootstrap_node_token(token, source_file=str(Path(path))):
        logger.info("node token: seeded the database from --nodeTokenFile (%s)", fingerprint(token))
        return
    with _file_checked_lock:
        if path in _file_checked:
            return
        _file_checked.add(path)
    stored = {row.slot: row.fingerprint for row in NodeTokenRecord.objects.all()}
    fp = fingerprint(token)
    if fp not in stored.values():
        logger.warning(
            "--nodeTokenFile %s holds %s, but the database holds %s: the database is the "
            "source of truth (the file only seeds a first start); update or ignore the file",
            path,
            fp,
            " and ".join(f"{slot} {f}" for slot, f in sorted(stored.items())) or "nothing",
        )


# --- every process's token store follows the database ---------------------------------------


class DatabaseTokenStore(NodeTokenStore):
    """The node client's tokens, read from the database at most once per ``interval_s``
    (see the module docstring for the bound). Until the database has been read once (or
    when it cannot be read at first), the --nodeTokenFile token is used."""

    def __init__(self, token_file: str | None, *, interval_s: float = SYNC_INTERVAL_S) -> None:
        super().__init__(None)
        self.token_file = token_file
        self.interval_s = interval_s
        self._fresh_until = 0.0  # time.monotonic()
        # (slot, ciphertext, known addresses) rows
        self._seen: frozenset[tuple[str, str, tuple[str, ...]]] | None = None
        self._refresh_lock = threading.Lock()
        self._failing = False
        # Ordinary calls a node accepted, by slot: (token fingerprint, when), written to the
        # token's "last verified" at the next sync, at most once per VERIFIED_WRITE_S.
        self._verified: dict[str, tuple[str, datetime]] = {}
        self._verified_written: dict[str, float] = {}

    def accepted(self, address: str, label: str, *, limit: int | None = None) -> None:
        super().accepted(address, label, limit=limit)
        with self._lock:
            value = next((t.value for t in self._tokens if t.label == label), None)
            if value is not None:
                self._verified[label] = (fingerprint(value), timezone.now())

    def _write_verified(self) -> None:
        """A successful node call verifies the token it carried (not only a probe)."""
        now = time.monotonic()
        with self._lock:
            due = {
                label: seen
                for label, seen in self._verified.items()
                if now - self._verified_written.get(label, -VERIFIED_WRITE_S) >= VERIFIED_WRITE_S
            }
            for label in due:
                del self._verified[label]
                self._verified_written[label] = now
        for label, (fp, when) in due.items():
            NodeTokenRecord.objects.filter(slot=label, fingerprint=fp).update(verified_at=when)

    async def sync(self) -> None:
        if time.monotonic() < self._fresh_until:
            return
        await database_sync_to_async(self.refresh, thread_sensitive=False)()

    def mark_stale(self) -> None:
        self._fresh_until = 0.0

    def refresh(self) -> None:
        with self._refresh_lock:
            if time.monotonic() < self._fresh_until:
                return  # another caller just did
            try:
                if self._seen is None:
                    ensure_node_token(self.token_file)
                rows = frozenset(
                    (slot, ciphertext, tuple(known or ()))
                    for slot, ciphertext, known in NodeTokenRecord.objects.values_list(
                        "slot", "ciphertext", "known_addresses"
                    )
                )
                if rows != self._seen:
                    by_slot = {slot: (ciphertext, known) for slot, ciphertext, known in rows}
                    current, next_ = by_slot.get("current"), by_slot.get("next")
                    self.set_tokens(
                        crypto.decrypt(current[0]).decode("utf-8") if current else None,
                        crypto.decrypt(next_[0]).decode("utf-8") if next_ else None,
                        next_token_recipients(next_[1] if next_ else ()),
                    )
                    self._seen = rows
                self._write_verified()
                if self._failing:
                    logger.info("node token: reading the database works again")
                self._failing = False
            except Exception as exc:  # node calls go on with the tokens held
                self._failed(exc)
            self._fresh_until = time.monotonic() + self.interval_s

    def _failed(self, exc: Exception) -> None:
        reason = (
            "the stored token cannot be decrypted: is ELASTICKV_ADMIN_SECRETS_KEY (or "
            "ELASTICKV_ADMIN_SECRETS_OLD_KEYS) the key that wrote it?"
            if isinstance(exc, crypto.InvalidToken)
            else f"{type(exc).__name__}: {exc}"
        )
        if self._seen is None and self.token_file and self.insecure:
            with contextlib.suppress(TokenFileError):
                self.set_tokens(read_token_file(self.token_file), None)
        if not self._failing:
            logger.warning(
                "node token: cannot read the database (%s); using the tokens held (%s)",
                reason,
                "from --nodeTokenFile" if self._seen is None else "last read",
            )
        self._failing = True
