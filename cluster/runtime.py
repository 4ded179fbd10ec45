"""The portal process's long-lived objects, in one place with one reset.

One `Runtime` per process holds what is built from the settings on first use and shared
by every request: the node client (with its token store), discovery, the probe cache,
the Raft progress samples, and the single-flights and caches of the modules above
(`shared`). Tests that change settings call `reset_runtime()` once; nothing else keeps
module-level state about the nodes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from cluster.client import NodeClient
from cluster.discovery import Discovery
from cluster.history import RaftHistory
from cluster.probes import SupportCache
from cluster.tokens import NodeTokenStore
from elastickv_admin.lib.config import PortalConfig, portal_config

T = TypeVar("T")


def token_store_from_config(config: PortalConfig) -> NodeTokenStore:
    """No token with --adminInsecureNoAuth; otherwise the database's tokens, which
    --nodeTokenFile seeds on first start (cluster/node_token)."""
    if config.insecure_no_auth or not config.node_token_file:
        return NodeTokenStore(None)
    # Imported here: the node_token package's actions use this runtime (its __init__
    # re-exports them), so a top-level import would run that package half-built.
    from cluster.node_token.store import DatabaseTokenStore

    return DatabaseTokenStore(config.node_token_file)


class Runtime:
    """Built lazily from ``config``; every attribute is created once, under one lock."""

    def __init__(self, config: PortalConfig) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._client: NodeClient | None = None
        self._discovery: Discovery | None = None
        self.support = SupportCache()
        self.raft_history = RaftHistory()
        self._shared: dict[str, Any] = {}

    @property
    def client(self) -> NodeClient:
        with self._lock:
            if self._client is None:
                self._client = NodeClient(self.config, token_store_from_config(self.config))
            return self._client

    @property
    def discovery(self) -> Discovery:
        with self._lock:
            if self._discovery is None:
                c = self.config
                self._discovery = Discovery(
                    self.client, c.seeds, c.refresh_interval_s, c.max_discovered_nodes
                )
            return self._discovery

    def shared(self, key: str, factory: Callable[[], T]) -> T:
        """The process's object ``key`` of a module above this one (its single-flight, its
        cache), built by ``factory`` on first use and dropped with the runtime."""
        with self._lock:
            if key not in self._shared:
                self._shared[key] = factory()
            return cast(T, self._shared[key])


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime(portal_config())
        return _runtime


def reset_runtime() -> None:
    """Forget every process-wide object (tests that change settings)."""
    global _runtime
    with _runtime_lock:
        _runtime = None


def node_client() -> NodeClient:
    """The process-wide node client."""
    return runtime().client


def discovery() -> Discovery:
    """The process-wide membership cache."""
    return runtime().discovery
