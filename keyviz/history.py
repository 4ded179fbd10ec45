"""The collector's writes to the portal database, off the event loop, never fatal.

DESIGN.md "KeyViz: the portal is the cluster's memory". Every store call of the
collector goes through `History`: on one dedicated thread (one database
connection, writes in order, the event loop free), with a failure logged once
and kept as `last_error` ("history not being recorded: <reason>", shown with the
collector's status) instead of raised, so the live stream never stops for it.
Compaction and pruning (tiers.compact / tiers.prune) run on a second thread
about once a minute.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from keyviz import store, tiers

log = logging.getLogger(__name__)
T = TypeVar("T")

COMPACT_EVERY_S = 60.0


def history_error(reason: str) -> str:
    return f"history not being recorded: {reason}"


class History:
    """Store calls for the collector (see the module docstring)."""

    def __init__(self) -> None:
        self.last_error: str | None = None
        self.last_error_ms: int | None = None
        self._db = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="keyviz-store")
        self._compactor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="keyviz-compact"
        )
        self._compacting: concurrent.futures.Future[str | None] | None = None
        self._compact_due = 0.0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the store thread; exceptions propagate."""
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    async def call(self, what: str, fn: Callable[..., T], *args: Any) -> T | None:
        """`fn(*args)` on the store thread; a failure is recorded and gives None. A write
        that succeeds again clears the error."""
        try:
            result = await self.run(fn, *args)
        except store.StoreError as exc:
            self.failed(what, str(exc))
        except Exception as exc:  # a broken database must not stop the live stream either
            log.exception("keyviz store: %s failed", what)
            self.failed(what, f"{type(exc).__name__}: {exc}")
        else:
            if self.last_error is not None and what.startswith("save merged"):
                log.info("keyviz store: recording history again")
                self.last_error = self.last_error_ms = None
            return result
        return None

    def failed(self, what: str, reason: str) -> None:
        message = history_error(reason)
        if self.last_error != message:
            log.warning("keyviz store: %s failed: %s", what, reason)
        self.last_error = message
        self.last_error_ms = time.time_ns() // 1_000_000

    def maybe_compact(self, now_ms: int) -> concurrent.futures.Future[str | None] | None:
        """Compact and prune in the background, about once a minute, one run at a time
        (the run started, if one was); a failed run is recorded like a failed write."""
        done = self._compacting
        if done is not None and done.done():
            self._compacting = None
            reason = done.result()
            if reason is not None:
                self.failed("compaction", reason)
        if time.monotonic() < self._compact_due or self._compacting is not None:
            return None
        self._compact_due = time.monotonic() + COMPACT_EVERY_S
        self._compacting = self._compactor.submit(_compact_and_prune, now_ms)
        return self._compacting

    async def close(self) -> None:
        if self._compacting is not None:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(self._compacting)
        with contextlib.suppress(Exception):
            await self.run(_close_connections)
        self._db.shutdown(wait=False)
        self._compactor.submit(_close_connections)
        self._compactor.shutdown(wait=False)


def _compact_and_prune(now_ms: int) -> str | None:
    """One compaction and prune run; the reason it failed, if it did."""
    try:
        report = tiers.compact(now_ms)
        pruned = tiers.prune(now_ms)
        log.info("keyviz store: compacted %s, pruned %d", report, pruned)
    except store.StoreError as exc:
        return str(exc)
    except Exception as exc:
        log.exception("keyviz store: compaction failed")
        return f"{type(exc).__name__}: {exc}"
    finally:
        _close_connections()
    return None


def _close_connections() -> None:
    from django.db import connections

    connections.close_all()


__all__ = ["COMPACT_EVERY_S", "History", "history_error"]
