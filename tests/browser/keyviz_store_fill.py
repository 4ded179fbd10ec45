"""Fill a portal process's KeyViz store with known columns, through keyviz/store.py.

The browser tests run `elastickv-admin serve` in its own process and database; this
runs inside it via `manage.py shell -c` (see `fill_portal_store`), so the page reads
exactly what the store functions wrote, as it reads what the collector writes.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

SERIES = {"reads": 1, "writes": 2, "read_bytes": 3, "write_bytes": 4}


def store_doc(
    rows: dict[str, tuple[bytes, bytes]],
    columns: list[dict[str, Any]],
    *,
    series: str = "writes",
    node_columns: list[dict[str, Any]] | None = None,
    state: dict[str, Any] | None = None,
    compact_at_ms: int | None = None,
) -> str:
    """The JSON `fill` takes. `rows`: bucket id -> (start, end). A column:
    {"t", "step", "cells": [[bucket, value, flags]], "missing": [...], "unknown_all"}.
    A node column: {"node", "slot", "t", "cells": [[bucket, value, group, term]]}."""
    return json.dumps(
        {
            "series": series,
            "rows": {
                b: [base64.b64encode(s).decode(), base64.b64encode(e).decode()]
                for b, (s, e) in rows.items()
            },
            "columns": columns,
            "node_columns": node_columns or [],
            "state": state,
            "compact_at_ms": compact_at_ms,
        }
    )


def fill(text: str) -> None:
    from keyviz import store, tiers
    from keyviz.columns import MergedColumn, NodeColumn
    from keyviz.matrix import RowMeta

    doc = json.loads(text)
    series = SERIES[doc["series"]]
    rows = {
        b: RowMeta(b, start=base64.b64decode(s), end=base64.b64decode(e))
        for b, (s, e) in doc["rows"].items()
    }

    def ordered(cells: list[list[Any]]) -> list[list[Any]]:
        return sorted(cells, key=lambda c: (rows[c[0]].start, c[0]))

    merged = []
    for c in doc["columns"]:
        cells = ordered(c["cells"])
        merged.append(
            MergedColumn(
                series=series,
                column_unix_ms=c["t"],
                step_ms=c["step"],
                rows=tuple(rows[b] for b, *_ in cells),
                values=np.array([v for _, v, _ in cells], dtype=np.uint64),
                flags=np.array([f for _, _, f in cells], dtype=np.uint8),
                contributors=c.get("contributors", {}),
                missing=tuple(c.get("missing", ())),
                unknown_all=bool(c.get("unknown_all", False)),
            )
        )
    raw = []
    for n in doc["node_columns"]:
        cells = ordered(n["cells"])
        raw.append(
            (
                n["slot"],
                NodeColumn(
                    node=n["node"],
                    column_unix_ms=n["t"],
                    rows=tuple(rows[b] for b, *_ in cells),
                    values=np.array([c[1] for c in cells], dtype=np.uint64),
                    soft=np.zeros(len(cells), dtype=np.bool_),
                    raft_group_ids=np.array([c[2] for c in cells], dtype=np.uint64),
                    leader_terms=np.array([c[3] for c in cells], dtype=np.uint64),
                ),
            )
        )
    if raw:
        store.save_node_columns(series, raw)
    store.save_merged(merged)
    if doc["state"] is not None:
        store.save_state("collector", doc["state"])
    if doc["compact_at_ms"] is not None:
        tiers.compact(doc["compact_at_ms"])


def fill_portal_store(portal: Any, text: str) -> None:
    """Run `fill` inside the portal's own database."""
    portal.manage(
        "shell", "-c", f"from tests.browser.keyviz_store_fill import fill; fill({text!r})"
    )
