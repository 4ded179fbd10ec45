"""Which portal process runs the KeyViz collector: a lease.

DESIGN.md "KeyViz: the portal is the cluster's memory": one collector per
cluster, across all portal processes. Every `serve` process runs a collector
that works only while it holds the lease `keyviz:collector`:

- `RedisLease` (REDIS_URL set, several processes):
  acquire ``SET keyviz:collector <owner> NX PX <ttl>``; renew every `renew_s`
  by extending the expiry only if the value is still ours (compare-and-set, a
  small Lua script); release by deleting it only if it is still ours.
- `LocalLease` (no Redis: the in-memory channel layer is one process): always ours.

The collector renews every second and stops collecting when a renewal fails;
a process without the lease asks again every `renew_s`. When the holder dies
its key expires after `ttl_ms`, so another process takes over within
``ttl + renew_s`` (4 s by default); a holder that shuts down cleanly releases
at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import weakref
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

RENEW_S = 1.0
TTL_MS = 3_000
KEY_PREFIX = "keyviz:"
COLLECTOR = "collector"  # the lease name: key keyviz:collector

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


class Lease(Protocol):
    """Grants a name to one holder at a time. `renew_s` None: a grant lasts until
    released; otherwise the holder renews every `renew_s` (False: lost)."""

    @property
    def renew_s(self) -> float | None: ...

    async def acquire(self, name: str) -> bool: ...

    async def renew(self, name: str) -> bool: ...

    async def release(self, name: str) -> None: ...

    async def close(self) -> None: ...


class LocalLease:
    """One process (the in-memory channel layer): always granted."""

    renew_s: float | None = None

    async def acquire(self, name: str) -> bool:
        return True

    async def renew(self, name: str) -> bool:
        return True

    async def release(self, name: str) -> None:
        return None

    async def close(self) -> None:
        return None


def default_lease() -> Lease:
    """RedisLease when REDIS_URL is set (several processes may run a collector),
    LocalLease otherwise."""
    from django.conf import settings

    url = getattr(settings, "REDIS_URL", "")
    return RedisLease(url) if url else LocalLease()


class RedisLease:
    """One holder per name across the portal processes sharing a Redis (see module doc).

    Redis errors never propagate: acquiring or renewing then answers False
    (this process does not hold it), releasing gives up (the key expires).
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

    def key(self, name: str) -> str:
        return self.prefix + name

    def _client(self) -> Redis:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = Redis.from_url(
                self.url, socket_timeout=self.renew_s, socket_connect_timeout=self.renew_s
            )
        return client

    async def acquire(self, name: str) -> bool:
        """Take the lease if nobody holds it (or extend it if we already do)."""
        try:
            client = self._client()
            if await client.set(self.key(name), self.owner, nx=True, px=self.ttl_ms):
                return True
            return await self._eval(client, _RENEW, name, self.ttl_ms)
        except (RedisError, OSError) as exc:
            log.warning("lease %s: cannot acquire (%s)", name, exc)
            return False

    async def renew(self, name: str) -> bool:
        """Extend our lease; False when it is no longer ours (expired, taken) or Redis fails."""
        try:
            return await self._eval(self._client(), _RENEW, name, self.ttl_ms)
        except (RedisError, OSError) as exc:
            log.warning("lease %s: cannot renew (%s)", name, exc)
            return False

    async def release(self, name: str) -> None:
        """Give the lease up if it is still ours, so another process takes over at once."""
        try:
            await self._eval(self._client(), _RELEASE, name)
        except (RedisError, OSError) as exc:
            log.warning("lease %s: cannot release, it expires (%s)", name, exc)

    async def holder(self, name: str) -> str | None:
        """The owner id holding a name, if any (status, tests)."""
        value: Any = await self._client().get(self.key(name))
        return None if value is None else bytes(value).decode()

    async def close(self) -> None:
        """Close this event loop's client."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def _eval(self, client: Redis, script: str, name: str, *args: int) -> bool:
        result: Any = await client.eval(script, 1, self.key(name), self.owner, *args)
        return bool(result)


__all__ = [
    "COLLECTOR",
    "KEY_PREFIX",
    "RENEW_S",
    "TTL_MS",
    "Lease",
    "LocalLease",
    "RedisLease",
    "default_lease",
    "process_owner_id",
]
