"""The one node client: every gRPC call the portal makes to a node goes through here.

- One channel per node address and event loop (grpc.aio objects belong to the
  loop that created them; daphne, the tests and async_to_sync each run their own).
  Membership is node-controlled, so everything kept per address is bounded: at most
  ``capacity`` (--maxDiscoveredNodes + the seeds) channels per loop, least recently used
  closed first, and a membership refresh (``retain``) closes the channels, remembered
  failures and accepted tokens of addresses that are no longer members.
- Every call has a deadline; responses are capped in size.
- Admin calls carry the bearer token; on UNAUTHENTICATED the other token of a
  rotation is tried, and the one that worked is remembered per node. The token store
  syncs with the database (where rotations happen) before each call.
- UNIMPLEMENTED and UNAVAILABLE are remembered per node and method for a short
  while, so a node that lacks a method is not asked again on every page load. A
  remembered UNIMPLEMENTED holds only while the connection that produced it stays up: a
  node that restarted (to register Admin, enable KeyViz, upgrade) is asked again at once.
  Every (re)connection bumps the address's ``epoch``, which other caches (cluster/probes.py)
  compare to drop verdicts about the node's previous life.
- Failures become NodeError: structured (code, reachable, the node's own detail) for code
  that decides, with a message an operator can act on for people.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message

from cluster.tokens import NodeToken, NodeTokenStore
from elastickv_admin.lib import metrics
from elastickv_admin.lib.config import PortalConfig
from proto import admin_pb2, admin_pb2_grpc, distribution_pb2, distribution_pb2_grpc

ADMIN_METHODS = (
    "GetClusterOverview",
    "GetRaftGroups",
    "GetAdapterSummary",
    "GetKeyVizMatrix",
    "GetRouteDetail",
)
DISTRIBUTION_METHODS = ("ListRoutes",)
REQUESTS: dict[str, Callable[[], Message]] = {
    "GetClusterOverview": admin_pb2.GetClusterOverviewRequest,
    "GetRaftGroups": admin_pb2.GetRaftGroupsRequest,
    "GetAdapterSummary": admin_pb2.GetAdapterSummaryRequest,
    "ListRoutes": distribution_pb2.ListRoutesRequest,
}
# How long a node's "I don't have that" is believed.
UNIMPLEMENTED_TTL_S = 60.0
UNAVAILABLE_TTL_S = 3.0
# After a stream's headers, how long an error may take to follow before the stream counts
# as open.
STREAM_PROBE_GRACE_S = 0.2
# How much of a node's own error text is kept.
MAX_DETAIL_CHARS = 300
# Remembered failures per address: one per method the portal calls.
REMEMBERED_PER_NODE = len(ADMIN_METHODS) + len(DISTRIBUTION_METHODS) + 1  # + StreamEvents


class NodeError(Exception):
    """A failed node call, structured so nobody parses its wording:

    - ``code``: a gRPC status name or one of ours (OVERSIZED, MALFORMED);
    - ``reachable``: False when no answer came from the node at all (connection failed,
      deadline passed), True when the node itself answered with the error;
    - ``detail``: the node's own words (untrusted, capped; "" when it gave none);
    - ``message``: what happened and what to check, for an operator."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        reachable: bool = True,
        detail: str = "",
        cached: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reachable = reachable
        self.detail = detail
        self.cached = cached

    @property
    def unsupported(self) -> bool:
        return self.code == "UNIMPLEMENTED"

    def recalled(self) -> NodeError:
        """The same failure, remembered from an earlier call."""
        return NodeError(
            self.code, self.message, reachable=self.reachable, detail=self.detail, cached=True
        )


@dataclass
class _Remembered:
    error: NodeError
    until: float


class _Channel:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.admin = admin_pb2_grpc.AdminStub(channel)
        self.distribution = distribution_pb2_grpc.DistributionStub(channel)


def _tls(
    config: PortalConfig, address: str
) -> tuple[grpc.ChannelCredentials, list[tuple[str, str]]]:
    """Channel credentials and name-override options for a TLS-terminating proxy."""
    if config.tls_insecure_skip_verify:
        # grpc has no "don't verify" switch: trust exactly the certificate the
        # endpoint presents now, under whatever name it carries.
        host, _, port = address.rpartition(":")
        pem = ssl.get_server_certificate(
            (host.strip("[]"), int(port)), timeout=config.rpc_timeout_s
        )
        name = config.tls_server_name or _certificate_name(pem.encode())
        options = [("grpc.ssl_target_name_override", name)] if name else []
        return grpc.ssl_channel_credentials(root_certificates=pem.encode()), options
    root = None
    if config.tls_ca_cert_file:
        with open(config.tls_ca_cert_file, "rb") as fh:
            root = fh.read()
    options = (
        [("grpc.ssl_target_name_override", config.tls_server_name)]
        if config.tls_server_name
        else []
    )
    return grpc.ssl_channel_credentials(root_certificates=root), options


def _certificate_name(pem: bytes) -> str | None:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = names.get_values_for_type(x509.DNSName)
        if dns:
            return str(dns[0])
    except x509.ExtensionNotFound:
        pass
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cn[0].value) if cn else None


class NodeClient:
    """Calls nodes. One instance serves the whole process (cluster/runtime.py)."""

    def __init__(self, config: PortalConfig, tokens: NodeTokenStore) -> None:
        self.config = config
        self.tokens = tokens
        # Every address the portal may hold state for: the membership cap plus the seeds.
        self.capacity = config.max_discovered_nodes + len(config.seeds)
        self._lock = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, OrderedDict[str, _Channel]
        ] = weakref.WeakKeyDictionary()
        self._remembered: OrderedDict[tuple[str, str], _Remembered] = OrderedDict()
        # The current membership and seeds, once discovery has told us (None: not yet).
        self._members: frozenset[str] | None = None
        self._labels = metrics.BoundedLabels(self.capacity)
        # Channels being closed in the background, by the task closing them.
        self._closing: dict[asyncio.Task[None], _Channel] = {}
        # Per address, how many times a call succeeded on a fresh connection (bounded).
        self._epochs: OrderedDict[str, int] = OrderedDict()

    # -- channels -------------------------------------------------------------------------

    def _options(self) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", self.config.max_receive_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.enable_retries", 0),
            # A dead node should fail fast, not sit in exponential reconnect backoff.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.min_reconnect_backoff_ms", 200),
        ]
        return options

    def _channel(self, address: str) -> _Channel:
        loop = asyncio.get_running_loop()
        with self._lock:
            channels = self._loops.setdefault(loop, OrderedDict())
            existing = channels.get(address)
            if existing is not None:
                channels.move_to_end(address)
                return existing
        options = self._options()
        if self.config.tls:
            creds, name_options = _tls(self.config, address)
            channel = grpc.aio.secure_channel(address, creds, options=options + name_options)
        else:
            channel = grpc.aio.insecure_channel(address, options=options)
        created = _Channel(channel)
        evicted: list[_Channel] = []
        with self._lock:
            channels = self._loops.setdefault(loop, OrderedDict())
            kept = channels.setdefault(address, created)
            channels.move_to_end(address)
            while len(channels) > self.capacity:
                evicted.append(channels.popitem(last=False)[1])
        if kept is not created:
            evicted.append(created)
        for ch in evicted:
            self._close_later(loop, ch)
        return kept

    def _close_later(self, loop: asyncio.AbstractEventLoop, ch: _Channel) -> None:
        """Close a channel on its own loop; calls still running on it get until their
        deadline (a live stream is cancelled then)."""

        def start() -> None:
            task = loop.create_task(ch.channel.close(self.config.rpc_timeout_s))
            self._closing[task] = ch
            task.add_done_callback(lambda done: self._closing.pop(done, None))

        if loop.is_closed():
            return  # its channels went with it
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            start()
        elif loop.is_running():
            with contextlib.suppress(RuntimeError):  # closed in between
                loop.call_soon_threadsafe(start)

    def open_channels(self) -> int:
        """Channels held now, over every event loop (tests, diagnostics)."""
        with self._lock:
            return sum(len(channels) for channels in self._loops.values())

    def retain(self, addresses: Collection[str]) -> None:
        """Membership refreshed: ``addresses`` (members and seeds) are the nodes now. Close
        the channels and forget what is remembered for every other address."""
        keep = frozenset(addresses)
        dropped: list[tuple[asyncio.AbstractEventLoop, _Channel]] = []
        with self._lock:
            self._members = keep
            for loop, channels in list(self._loops.items()):
                for address in [a for a in channels if a not in keep]:
                    dropped.append((loop, channels.pop(address)))
            for key in [k for k in self._remembered if k[0] not in keep]:
                del self._remembered[key]
            for address in [a for a in self._epochs if a not in keep]:
                del self._epochs[address]
        for loop, ch in dropped:
            self._close_later(loop, ch)
        self.tokens.retain(keep)

    async def close(self) -> None:
        """Close this loop's channels (shutdown, tests)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            channels = self._loops.pop(loop, OrderedDict())
        for ch in channels.values():
            await ch.channel.close(None)
        # Channels still closing gracefully are closed now: shutdown does not wait for them.
        closing = [(t, ch) for t, ch in list(self._closing.items()) if t.get_loop() is loop]
        for task, ch in closing:
            task.cancel()
            await ch.channel.close(None)
        await asyncio.gather(*(t for t, _ in closing), return_exceptions=True)

    # -- remembered failures ----------------------------------------------------------------

    def _recall(self, address: str, method: str) -> NodeError | None:
        with self._lock:
            memo = self._remembered.get((address, method))
            if memo is None:
                return None
            if memo.until < time.monotonic():
                del self._remembered[(address, method)]
                return None
        if memo.error.code == "UNIMPLEMENTED" and not self._connected(address):
            # The connection that said "not supported" is gone: the node may have restarted
            # with the method registered. Ask again.
            with self._lock:
                self._remembered.pop((address, method), None)
            return None
        return memo.error.recalled()

    def _connected(self, address: str) -> bool:
        """This loop's channel to ``address`` holds a live connection now."""
        ch = self._channel(address)
        return bool(ch.channel.get_state(False) == grpc.ChannelConnectivity.READY)

    def epoch(self, address: str) -> int:
        """How many times a call to ``address`` succeeded on a new connection: it changes
        when the node restarts or the portal reconnects to it."""
        with self._lock:
            return self._epochs.get(address, 0)

    def _reconnected(self, address: str) -> None:
        """A call succeeded on a fresh connection: what was remembered about the node's
        previous connection (UNIMPLEMENTED, UNAVAILABLE) no longer holds."""
        with self._lock:
            self._epochs[address] = self._epochs.pop(address, 0) + 1
            while len(self._epochs) > self.capacity:
                self._epochs.popitem(last=False)
            for key in [k for k in self._remembered if k[0] == address]:
                del self._remembered[key]

    def _remember(self, address: str, method: str, error: NodeError) -> None:
        ttl = {"UNIMPLEMENTED": UNIMPLEMENTED_TTL_S, "UNAVAILABLE": UNAVAILABLE_TTL_S}.get(
            error.code
        )
        if ttl:
            with self._lock:
                self._remembered[(address, method)] = _Remembered(error, time.monotonic() + ttl)
                self._remembered.move_to_end((address, method))
                while len(self._remembered) > self.capacity * REMEMBERED_PER_NODE:
                    self._remembered.popitem(last=False)

    def forget(self, address: str | None = None) -> None:
        """Drop remembered failures (all, or one node's), e.g. after a token change."""
        with self._lock:
            for key in [k for k in self._remembered if address is None or k[0] == address]:
                del self._remembered[key]

    # -- calls ------------------------------------------------------------------------------

    async def _attempts(self, address: str, method: str) -> list[NodeToken | None]:
        """The tokens to try, in order, after any remembered failure has been raised."""
        recalled = self._recall(address, method)
        if recalled is not None:
            raise recalled
        if method in DISTRIBUTION_METHODS:
            return [None]  # Distribution is not token-gated on real nodes.
        await self.tokens.sync()
        return list(self.tokens.candidates(address)) or [None]

    async def call(
        self,
        address: str,
        method: str,
        request: Message | None = None,
        *,
        deadline_s: float | None = None,
        raw: bool = False,
    ) -> Any:
        """One unary call. Returns the decoded response or raises NodeError.

        ``raw=True`` returns the response's bytes undecoded, so a large answer (a
        KeyViz matrix) can be decoded off the event loop."""
        attempts = await self._attempts(address, method)
        return await self._unary(address, method, request, attempts, deadline_s, raw=raw)

    async def call_with_token(
        self,
        address: str,
        method: str,
        token: NodeToken | None,
        request: Message | None = None,
        *,
        deadline_s: float | None = None,
    ) -> Any:
        """One Admin call with exactly ``token`` (None: no authorization): no fallback, no
        remembered failures, nothing remembered for later calls. For probes that ask which
        token a node accepts (cluster/node_token.py)."""
        return await self._unary(
            address, method, request, [token], deadline_s, raw=False, probe=True
        )

    async def _unary(
        self,
        address: str,
        method: str,
        request: Message | None,
        attempts: list[NodeToken | None],
        deadline_s: float | None,
        *,
        raw: bool,
        probe: bool = False,
    ) -> Any:
        """Try ``attempts`` in order, moving on only on UNAUTHENTICATED."""
        timeout = self.config.rpc_timeout_s if deadline_s is None else deadline_s
        if request is None:
            request = REQUESTS[method]()
        ch = self._channel(address)
        service = "Distribution" if method in DISTRIBUTION_METHODS else "Admin"
        rpc: grpc.aio.UnaryUnaryMultiCallable[Any, Any]
        if raw:
            rpc = ch.channel.unary_unary(
                f"/{service}/{method}",
                request_serializer=type(request).SerializeToString,
                response_deserializer=None,
            )
        else:
            rpc = getattr(ch.distribution if service == "Distribution" else ch.admin, method)
        started = time.perf_counter()
        fresh = ch.channel.get_state(False) != grpc.ChannelConnectivity.READY
        for index, token in enumerate(attempts):
            metadata = token.metadata() if token else ()
            try:
                response = await rpc(request, timeout=timeout, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                more = index + 1 < len(attempts)
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED and more:
                    continue
                error = classify(exc, method, timeout, self.config.max_receive_bytes)
                if not probe:
                    self._remember(address, method, error)
                self._observe(address, method, started, error.code)
                raise error from None
            if token is not None and not probe:
                self.tokens.accepted(address, token.label, limit=self.capacity)
            if fresh:
                self._reconnected(address)
            self._observe(address, method, started, None)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _node_label(self, address: str) -> str:
        """The metrics label of a node: its address while it is a member (or a seed), among
        the first ``capacity`` addresses ever labelled; otherwise "other"."""
        with self._lock:
            members = self._members
        if members is not None and address not in members:
            return metrics.OTHER
        return self._labels.label(address)

    def _observe(self, address: str, method: str, started: float, error_code: str | None) -> None:
        elapsed = time.perf_counter() - started
        node = self._node_label(address)
        outcome = "error" if error_code else "ok"
        metrics.NODE_RPC_SECONDS.labels(node, method, outcome).observe(elapsed)
        if error_code:
            metrics.NODE_RPC_ERRORS.labels(node, method, error_code).inc()

    async def probe_stream(
        self, address: str, method: str, request: Message, *, deadline_s: float
    ) -> None:
        """Learn whether a node serves a server-streaming Admin method, without reading it.

        Returns when the stream opened (still running a moment after its headers, or open
        until the deadline); raises NodeError when the node ended the call with an error
        (UNIMPLEMENTED: not supported). The stream is always cancelled.
        """
        attempts = await self._attempts(address, method)
        rpc = getattr(self._channel(address).admin, method)
        for index, token in enumerate(attempts):
            call = rpc(request, timeout=deadline_s, metadata=token.metadata() if token else ())
            try:
                initial = await call.initial_metadata()
                try:
                    # Some servers send headers before the handler refuses the call.
                    code = await asyncio.wait_for(
                        asyncio.shield(call.code()), min(STREAM_PROBE_GRACE_S, deadline_s)
                    )
                except TimeoutError:
                    code = grpc.StatusCode.OK  # still open: the stream is served
                if code in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED):
                    if token is not None:
                        self.tokens.accepted(address, token.label, limit=self.capacity)
                    return
                if code == grpc.StatusCode.UNAUTHENTICATED and index + 1 < len(attempts):
                    continue
                exc = grpc.aio.AioRpcError(
                    code, initial, await call.trailing_metadata(), await call.details(), None
                )
                error = classify(exc, method, deadline_s, self.config.max_receive_bytes)
                self._remember(address, method, error)
                raise error
            finally:
                call.cancel()
        raise AssertionError("unreachable")  # pragma: no cover

    async def stream(
        self,
        address: str,
        method: str,
        request: Message,
        *,
        on_open: Callable[[], None] | None = None,
    ) -> AsyncIterator[Any]:
        """A server-streaming Admin call: yields the node's messages until it ends the stream.

        Token fallback as for unary calls; ``on_open`` runs once the node accepted the call
        (its headers arrived and it did not refuse at once). No deadline: a live feed stays
        open. Failures raise NodeError; the call is cancelled when the caller stops."""
        attempts = await self._attempts(address, method)
        rpc = getattr(self._channel(address).admin, method)
        for index, token in enumerate(attempts):
            call = rpc(request, metadata=token.metadata() if token else ())
            try:
                await call.initial_metadata()
                if call.done():
                    await call.read()  # raises the status the node ended the call with
                if token is not None:
                    self.tokens.accepted(address, token.label, limit=self.capacity)
                if on_open is not None:
                    on_open()
                while True:
                    message = await call.read()
                    if not isinstance(message, Message):
                        return  # grpc.aio.EOF: the node closed the stream
                    yield message
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED and index + 1 < len(attempts):
                    continue
                error = classify(exc, method, 0, self.config.max_receive_bytes)
                self._remember(address, method, error)
                raise error from None
            finally:
                call.cancel()


# UNAVAILABLE texts that mean the node (or the connection) went away, not that the node
# refused the call: a node shutting down cancels its in-flight calls ("Cancelling all calls"
# from grpc-core, "transport is closing" / "error reading from server" / draining from Go).
_SERVER_GONE = (
    "failed to connect",
    "cancelling all calls",
    "transport is closing",
    "error reading from server",
    "connection is draining",
    "goaway",
    "connection refused",
    "socket closed",
    "connect failed",
    "dns resolution failed",
    "connection reset",
    "no route to host",
)


def classify(exc: grpc.aio.AioRpcError, method: str, timeout: float, cap: int) -> NodeError:
    """A gRPC failure as an operator-facing NodeError."""
    code = exc.code()
    # The node's own words are untrusted: capped here, escaped where shown.
    details = (exc.details() or "").strip()[:MAX_DETAIL_CHARS]
    lowered = details.lower()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return NodeError(
            "DEADLINE_EXCEEDED", f"no answer to {method} within {timeout:g} s", reachable=False
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        if any(marker in lowered for marker in _SERVER_GONE) or not details:
            return NodeError(
                "UNAVAILABLE",
                f"unreachable: {details or 'connection failed'}",
                reachable=False,
                detail=details,
            )
        if method == "GetKeyVizMatrix":
            return NodeError(
                "UNAVAILABLE", f"KeyViz disabled on this node ({details})", detail=details
            )
        return NodeError("UNAVAILABLE", f"unavailable: {details}", detail=details)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return NodeError("UNIMPLEMENTED", f"{method} is not supported by this node", detail=details)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return NodeError(
            "UNAUTHENTICATED", f"the node rejected the portal's token ({details})", detail=details
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in lowered:
        return NodeError(
            "OVERSIZED",
            f"{method} response is larger than the {cap // (1024 * 1024)} MiB cap "
            f"(ELASTICKV_ADMIN_MAX_RECEIVE_BYTES)",
            detail=details,
        )
    if code == grpc.StatusCode.INTERNAL and "deserializ" in lowered:
        return NodeError("MALFORMED", f"{method} response could not be decoded", detail=details)
    return NodeError(code.name, f"{method} failed: {code.name} {details}".rstrip(), detail=details)
