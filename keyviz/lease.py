"""Who polls a series when several portal processes share Redis: a lease per series.

DESIGN.md "Live heatmap": N viewers cost one fan-out per step. With Redis as
the channel layer every portal process delivers the broadcast of a series to
its own viewers, so only one process needs to poll it. `RedisLease` grants a
series to one process at a time:

- acquire: ``SET keyviz:poller:<series> <owner> NX PX <ttl>``;
- renew (every `renew_s`): extend the expiry only if the value is still ours
  (compare-and-set, a small Lua script);
- release: delete the key only if it is still ours (compare-and-delete).

The hub (live.py) renews while it polls and stops its poller when a renewal
fails; a process with viewers but no lease asks again every `renew_s`. When
the holder dies its key expires after `ttl_ms`, so another process takes
over within ``ttl + renew_s`` (4 s by default); a holder that shuts down
cleanly releases at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import weakref
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

RENEW_S = 1.0
TTL_MS = 3_000
KEY_PREFIX = "keyviz:poller:"

# KEYS[1] the lease key, ARGV[1] our owner id, ARGV[2] the new ttl in ms.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def process_owner_id() -> str:
    """This process's lease value: readable (host, pid) and unique (a random suffix)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class RedisLease:
    """One poller per series across the portal processes sharing a Redis (see module doc).

    Redis errors never propagate: acquiring or renewing then answers False
    (this process does not poll), releasing gives up (the key expires).
    """

    def __init__(
        self,
        url: str,
        *,
        owner: str | None = None,
        renew_s: float = RENEW_S,
        ttl_ms: int = TTL_MS,
        prefix: str = KEY_PREFIX,
    ) -> None:
        if ttl_ms <= renew_s * 1000:
            raise ValueError("ttl_ms must be longer than the renew interval")
        self.url = url
        self.owner = owner or process_owner_id()
        self.renew_s = renew_s
        self.ttl_ms = ttl_ms
        self.prefix = prefix
        # One client per event loop (a client's connections belong to the loop that made them).
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Redis] = (
            weakref.WeakKeyDictionary()
        )

    def key(self, series: str) -> str:
        return self.prefix + series

    def _client(self) -> Redis:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = Redis.from_url(
                self.url, socket_timeout=self.renew_s, socket_connect_timeout=self.renew_s
            )
        return client

    async def acquire(self, series: str) -> bool:
        """Take the lease if nobody holds it (or extend it if we already do)."""
        try:
            client = self._client()
            if await client.set(self.key(series), self.owner, nx=True, px=self.ttl_ms):
                return True
            return await self._eval(client, _RENEW, series, self.ttl_ms)
        except (RedisError, OSError) as exc:
            log.warning("poller lease %s: cannot acquire (%s)", series, exc)
            return False

    async def renew(self, series: str) -> bool:
        """Extend our lease; False when it is no longer ours (expired, taken) or Redis fails."""
        try:
            return await self._eval(self._client(), _RENEW, series, self.ttl_ms)
        except (RedisError, OSError) as exc:
            log.warning("poller lease %s: cannot renew (%s)", series, exc)
            return False

    async def release(self, series: str) -> None:
        """Give the lease up if it is still ours, so another process takes over at once."""
        try:
            await self._eval(self._client(), _RELEASE, series)
        except (RedisError, OSError) as exc:
            log.warning("poller lease %s: cannot release, it expires (%s)", series, exc)

    async def holder(self, series: str) -> str | None:
        """The owner id holding a series, if any (status, tests)."""
        value: Any = await self._client().get(self.key(series))
        return None if value is None else bytes(value).decode()

    async def close(self) -> None:
        """Close this event loop's client."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def _eval(self, client: Redis, script: str, series: str, *args: int) -> bool:
        result: Any = await client.eval(script, 1, self.key(series), self.owner, *args)
        return bool(result)


__all__ = ["KEY_PREFIX", "RENEW_S", "TTL_MS", "RedisLease", "process_owner_id"]
