"""What admins see of the node token: metadata only (fingerprints, who, when, probes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cluster.models import NodeTokenCheck, NodeTokenRecord
from cluster.node_token.records import ACCEPTS_NEXT, State, stored_version
from elastickv_admin.lib.config import portal_config


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
    version = stored_version()
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
