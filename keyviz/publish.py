"""What the collector sends to viewers: columns, amendments, notices, on the channel layer.

README "Live stream protocol". Every message goes to the channel layer group
`keyviz.<series>`, so every portal process sharing the layer (Redis) delivers
it to its own viewers; the client message is encoded once here (messages.py)
and each consumer only adds the row metadata its viewer lacks. A channel-layer
failure loses that one message, never the collector.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from elastickv_admin.lib import metrics
from keyviz.assemble import column_cells
from keyviz.columns import MergedColumn
from keyviz.messages import RowCatalog, column_event, group_name, summary_of, wall_ms
from keyviz.params import SERIES

log = logging.getLogger(__name__)

SERIES_NAMES = {v: k for k, v in SERIES.items()}


class Publisher:
    """The collector's outgoing messages (see the module docstring)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.catalog = RowCatalog()  # rows whose metadata was announced
        self.published = 0
        self.amended = 0
        self._notices: list[tuple[str, dict[str, Any]]] = []
        self._failing: frozenset[str] | None = None

    async def column(
        self,
        column: MergedColumn,
        *,
        amend: bool,
        status: Sequence[dict[str, Any]],
        late: Sequence[str],
    ) -> None:
        """A final column (or, `amend`, a changed one) to its series' viewers."""
        name = SERIES_NAMES[column.series]
        emitted = wall_ms()
        if not amend:
            metrics.LIVE_COLUMN_LAG_SECONDS.labels(name).observe(
                max(0, emitted - column.column_unix_ms) / 1000
            )
        event = column_event(
            series=name,
            step_ms=column.step_ms,
            column_unix_ms=column.column_unix_ms,
            cells=column_cells(column),
            catalog=self.catalog,
            nodes=summary_of(status, late),
            emitted_unix_ms=emitted,
            kind="amend" if amend else "column",
        )
        try:
            await self.layer.group_send(group_name(name), event)
        except Exception:  # a channel layer hiccup loses one column, not the collector
            log.exception("keyviz collector: cannot publish %s", group_name(name))
            return
        if amend:
            self.amended += 1
        else:
            self.published += 1

    def notice(self, series: str, message: dict[str, Any]) -> None:
        """A control message (route transition, status) for one series' viewers."""
        text = json.dumps(message, separators=(",", ":"))
        self._notices.append((series, {"type": "keyviz.notice", "json": text}))

    def status_changed(self, status: Sequence[dict[str, Any]]) -> None:
        """A `status` message to every series when the set of failing nodes changes."""
        failing = frozenset(s["node"] for s in status if not s["ok"])
        if failing == self._failing or (self._failing is None and not failing):
            self._failing = failing
            return
        self._failing = failing
        nodes = summary_of(status)
        for name in SERIES:
            self.notice(name, {"type": "status", "series": name, "nodes": nodes})

    async def send_notices(self) -> None:
        notices, self._notices = self._notices, []
        for name, notice in notices:
            try:
                await self.layer.group_send(group_name(name), notice)
            except Exception:  # one lost notice, not the collector
                log.exception("keyviz collector: cannot send a notice")


__all__ = ["SERIES_NAMES", "Publisher"]
