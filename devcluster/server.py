"""One simulated node's gRPC server: Admin (when registered) and Distribution on one port.

Handlers read the shared ClusterSim under the cluster lock and answer as CONTRACT.md says
real nodes do; faults (delay, error, malformed, oversized) wrap them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, MutableSequence
from concurrent import futures
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, NoReturn, TypeVar

import grpc
import numpy as np
from google.protobuf.message import Message

from devcluster.adapters import summaries
from devcluster.auth import TokenFile, bearer_failure
from devcluster.simulation import ClusterError, ClusterSim, EventQueue, Profile, SimNode
from proto import admin_pb2, distribution_pb2, distribution_pb2_grpc
from proto.wire import KeyVizMatrixWire, Ragged, RowHeader, encode_keyviz_matrix

log = logging.getLogger(__name__)

# Streams hold a worker each; a portal opens one per node, tests a few more.
MAX_WORKERS = 16
# Padding for oversized responses goes in a field number no contract message uses, so it
# parses as an unknown field: only the size changes.
_PAD_FIELD = 15_000

M = TypeVar("M", bound=Message)
RowsOf = Callable[[M], tuple[MutableSequence[admin_pb2.KeyVizRow], int] | None]


class Malformation(StrEnum):
    """Ways a faulty node breaks the KeyViz shape rules (DESIGN.md: mark the node failed)."""

    VALUES_LENGTH = "values_length"  # a row's values longer than column_unix_ms
    PARTIAL_GROUP_IDS = "partial_raft_group_ids"  # raft_group_ids neither empty nor len(values)


@dataclass(frozen=True, slots=True)
class Fault:
    delay_s: float = 0.0
    error: grpc.StatusCode | None = None
    malformed: Malformation | None = None
    oversized: int | None = None  # serialized responses grow past this many bytes
    methods: frozenset[str] | None = None  # e.g. {"GetKeyVizMatrix", "ListRoutes"}; None: all

    def applies(self, method: str) -> bool:
        return self.methods is None or method in self.methods


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _padding(current: int, size: int) -> bytes:
    """An unknown field that takes a `current`-byte message past `size` bytes."""
    body = max(0, size - current) + 1
    return _varint(_PAD_FIELD << 3 | 2) + _varint(body) + bytes(body)


def pad_beyond(message: Message, size: int) -> None:
    """Grow `message` with an unknown field until it serializes to more than `size` bytes."""
    message.MergeFromString(_padding(message.ByteSize(), size))


def pad_bytes_beyond(data: bytes, size: int) -> bytes:
    """pad_beyond for a serialized message (protobuf writes unknown fields last)."""
    return data + _padding(len(data), size)


def malform_rows(
    rows: MutableSequence[admin_pb2.KeyVizRow], columns: int, kind: Malformation
) -> None:
    if not rows:
        zeros = [0] * columns
        rows.append(
            admin_pb2.KeyVizRow(
                bucket_id="route:0",
                route_count=1,
                values=zeros,
                raft_group_ids=zeros,
                leader_terms=zeros,
            )
        )
    row = rows[0]
    if kind is Malformation.VALUES_LENGTH:
        row.values.append(1)
    elif row.raft_group_ids:
        del row.raft_group_ids[-1]
    else:
        row.raft_group_ids.append(1)


def _grow_first_row(lists: Ragged, value: int) -> Ragged:
    flat = np.insert(lists.flat.astype(np.uint64), int(lists.counts[0]), np.uint64(value))
    counts = lists.counts.copy()
    counts[0] += 1
    return Ragged(flat, counts)


def _shrink_first_row(lists: Ragged) -> Ragged:
    flat = np.delete(lists.flat, int(lists.counts[0]) - 1)
    counts = lists.counts.copy()
    counts[0] -= 1
    return Ragged(flat, counts)


def malform_matrix(matrix: KeyVizMatrixWire, kind: Malformation) -> KeyVizMatrixWire:
    """malform_rows for a matrix about to be encoded from arrays: the same broken response."""
    if not matrix.rows:
        zeros = Ragged.dense(np.zeros((1, matrix.column_unix_ms.shape[0]), dtype=np.uint64))
        matrix = replace(
            matrix,
            rows=(RowHeader(bucket_id="route:0", route_count=1),),
            values=zeros,
            soft_columns=Ragged.empty(1),
            raft_group_ids=zeros,
            leader_terms=zeros,
        )
    if kind is Malformation.VALUES_LENGTH:
        return replace(matrix, values=_grow_first_row(matrix.values, 1))
    groups = matrix.raft_group_ids
    if groups.counts[0]:
        return replace(matrix, raft_group_ids=_shrink_first_row(groups))
    return replace(matrix, raft_group_ids=_grow_first_row(groups, 1))


def _wait_while_active(context: grpc.ServicerContext, seconds: float) -> None:
    # Ends early when the call is cancelled (client deadline, server stop).
    done = threading.Event()
    if context.add_callback(done.set):
        done.wait(seconds)


class NodeServer:
    """The gRPC endpoint of one simulated node; restartable on the same port."""

    def __init__(
        self,
        node_id: str,
        *,
        host: str,
        port: int,
        sim: ClusterSim,
        lock: threading.RLock,
        addresses: Mapping[str, str],
        token_file: TokenFile | None,
        insecure_no_auth: bool,
    ) -> None:
        self.node_id = node_id
        self.host = host
        self.port = port
        self.sim = sim
        self.lock = lock
        self.addresses = addresses
        self.token_file = token_file
        self.insecure_no_auth = insecure_no_auth
        # A real node started with neither flag does not register Admin at all.
        self.admin_registered = token_file is not None or insecure_no_auth
        self.fault: Fault | None = None
        # Incoming calls per method, so tests can assert how often the portal asks.
        self.calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._started = False

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def serving(self) -> bool:
        return self._started

    def bind(self) -> None:
        """Claim the port (a free one when port is 0) without serving yet."""
        executor = futures.ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix=self.node_id)
        # Without SO_REUSEPORT a taken port fails loudly instead of being shared.
        server = grpc.server(executor, options=[("grpc.so_reuseport", 0)])
        if self.admin_registered:
            _add_admin_servicer(AdminServicer(self), server)
        distribution_pb2_grpc.add_DistributionServicer_to_server(DistributionServicer(self), server)
        try:
            self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError:
            executor.shutdown(wait=False)
            raise ClusterError(f"node {self.node_id} cannot listen on {self.address}") from None
        self._server, self._executor = server, executor

    def start(self) -> None:
        if self._server is None:
            self.bind()
        assert self._server is not None
        self._server.start()
        self._started = True

    def stop(self) -> None:
        server, executor = self._server, self._executor
        self._server = self._executor = None
        if server is not None:
            if not self._started:
                server.start()  # grpc releases a bound port only from a started server
            server.stop(grace=None).wait()
        self._started = False
        if executor is not None:
            executor.shutdown(wait=True)

    # -- helpers shared by the servicers -----------------------------------------------------

    def guard(self, method: str, context: grpc.ServicerContext, *, admin: bool) -> Fault | None:
        """Apply delay and error faults, then (Admin only) authenticate. Returns the fault."""
        with self._calls_lock:
            self.calls[method] += 1
        fault = self.fault if self.fault is not None and self.fault.applies(method) else None
        if fault is not None:
            if fault.delay_s > 0:
                _wait_while_active(context, fault.delay_s)
            if fault.error is not None:
                context.abort(fault.error, f"devcluster fault on {self.node_id}: {method}")
        if admin and not self.insecure_no_auth:
            assert self.token_file is not None  # Admin is registered only with one of the two
            failure = bearer_failure(context.invocation_metadata(), self.token_file.token())
            if failure is not None:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, failure)
        return fault

    def deliver(self, response: M, fault: Fault | None, rows: RowsOf[M] | None = None) -> M:
        """Apply malformed/oversized faults to a response about to be sent; `rows` finds
        the KeyViz rows (and column count) a malformed fault breaks."""
        if fault is None:
            return response
        found = rows(response) if rows is not None and fault.malformed is not None else None
        if found is not None and fault.malformed is not None:
            malform_rows(*found, fault.malformed)
        if fault.oversized is not None:
            pad_beyond(response, fault.oversized)
        return response

    def node(self) -> SimNode:
        return self.sim.node(self.node_id)

    def call_counts(self, *, reset: bool = False) -> dict[str, int]:
        with self._calls_lock:
            counts = dict(self.calls)
            if reset:
                self.calls.clear()
            return counts


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _unimplemented(context: grpc.ServicerContext, method: str) -> NoReturn:
    context.abort(grpc.StatusCode.UNIMPLEMENTED, f"method {method} not implemented")


def _require_keyviz(context: grpc.ServicerContext, node: SimNode) -> None:
    # Real nodes answer UNAVAILABLE when they run without their sampler.
    if not node.keyviz_enabled:
        context.abort(grpc.StatusCode.UNAVAILABLE, "keyviz sampler is not enabled on this node")


class AdminServicer:
    """The `Admin` service; method names are the wire names the generated module binds."""

    def __init__(self, server: NodeServer) -> None:
        self._s = server

    def GetClusterOverview(
        self, request: admin_pb2.GetClusterOverviewRequest, context: grpc.ServicerContext
    ) -> admin_pb2.GetClusterOverviewResponse:
        s = self._s
        fault = s.guard("GetClusterOverview", context, admin=True)
        with s.lock:
            sim = s.sim
            response = admin_pb2.GetClusterOverviewResponse(
                self=admin_pb2.NodeIdentity(node_id=s.node_id, grpc_address=s.address),
                # Members come from the Raft configuration: every other node, up or down.
                members=[
                    admin_pb2.NodeIdentity(node_id=n, grpc_address=s.addresses[n])
                    for n in sim.nodes
                    if n != s.node_id
                ],
                group_leaders=[
                    admin_pb2.GroupLeader(
                        raft_group_id=g.group_id, leader_node_id=g.leader, leader_term=g.term
                    )
                    for g in sorted(sim.groups.values(), key=lambda g: g.group_id)
                ],
                aggregate_qps=0,
                capabilities={"feature_s3_blob_offload": False},
            )
        return s.deliver(response, fault)

    def GetRaftGroups(
        self, request: admin_pb2.GetRaftGroupsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.GetRaftGroupsResponse:
        s = self._s
        fault = s.guard("GetRaftGroups", context, admin=True)
        now = _now_ms()
        with s.lock:
            response = admin_pb2.GetRaftGroupsResponse(
                groups=[
                    admin_pb2.RaftGroupState(
                        raft_group_id=g.group_id,
                        leader_node_id=g.leader,
                        leader_term=g.term,
                        commit_index=g.commit_index,
                        applied_index=g.commit_index,
                        last_contact_unix_ms=s.sim.last_contact_ms(g, s.node_id, now),
                    )
                    for g in sorted(s.sim.groups.values(), key=lambda g: g.group_id)
                ]
            )
        return s.deliver(response, fault)

    def GetAdapterSummary(
        self, request: admin_pb2.GetAdapterSummaryRequest, context: grpc.ServicerContext
    ) -> admin_pb2.GetAdapterSummaryResponse:
        s = self._s
        fault = s.guard("GetAdapterSummary", context, admin=True)
        if s.sim.profile is Profile.UPSTREAM:
            _unimplemented(context, "GetAdapterSummary")
        with s.lock:
            response = admin_pb2.GetAdapterSummaryResponse(
                summaries=summaries([s.node().adapter_stats])
            )
        return s.deliver(response, fault)

    def GetKeyVizMatrix(
        self, request: admin_pb2.GetKeyVizMatrixRequest, context: grpc.ServicerContext
    ) -> bytes:
        """The serialized response: encoded from arrays, sent as is (see _add_admin_servicer)."""
        s = self._s
        fault = s.guard("GetKeyVizMatrix", context, admin=True)
        with s.lock:
            node = s.node()
            _require_keyviz(context, node)
            try:
                matrix = node.sampler.matrix_wire(
                    request.series, request.from_unix_ms, request.to_unix_ms, request.rows
                )
            except ValueError as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        # The arrays are the call's own copies: encoding needs no lock.
        if fault is not None and fault.malformed is not None:
            matrix = malform_matrix(matrix, fault.malformed)
        data = encode_keyviz_matrix(matrix)
        if fault is not None and fault.oversized is not None:
            data = pad_bytes_beyond(data, fault.oversized)
        return data

    def GetRouteDetail(
        self, request: admin_pb2.GetRouteDetailRequest, context: grpc.ServicerContext
    ) -> admin_pb2.GetRouteDetailResponse:
        s = self._s
        fault = s.guard("GetRouteDetail", context, admin=True)
        if s.sim.profile is Profile.UPSTREAM:
            _unimplemented(context, "GetRouteDetail")
        with s.lock:
            node = s.node()
            _require_keyviz(context, node)
            bucket = node.sampler.bucket(request.bucket_id)
            if bucket is None:
                context.abort(
                    grpc.StatusCode.NOT_FOUND, f"no bucket {request.bucket_id!r} on this node"
                )
            row = node.sampler.detail_row(bucket, request.from_unix_ms, request.to_unix_ms)
            stats = [node.route_stats[r] for r in bucket.route_ids if r in node.route_stats]
            response = admin_pb2.GetRouteDetailResponse(
                row=row, per_adapter=summaries(stats, adapter=bucket.label)
            )
        return s.deliver(response, fault, lambda r: ([r.row], len(r.row.values)))

    def StreamEvents(
        self, request: admin_pb2.StreamEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[admin_pb2.StreamEventsEvent]:
        s = self._s
        fault = s.guard("StreamEvents", context, admin=True)
        if s.sim.profile is Profile.UPSTREAM:
            _unimplemented(context, "StreamEvents")
        events: EventQueue = queue.SimpleQueue()
        with s.lock:
            node = s.node()
            _require_keyviz(context, node)
            node.subscribers.add(events)
        context.add_callback(lambda: events.put(None))
        # Headers go out once subscribed, so a client that waits for them misses no event.
        context.send_initial_metadata(())
        try:
            while (event := events.get()) is not None:
                yield s.deliver(event, fault, _event_rows)
        finally:
            with s.lock:
                node.subscribers.discard(events)
        if context.is_active():  # woken by the node going down, not by the client leaving
            context.abort(grpc.StatusCode.UNAVAILABLE, "node is shutting down")


def _event_rows(
    event: admin_pb2.StreamEventsEvent,
) -> tuple[MutableSequence[admin_pb2.KeyVizRow], int] | None:
    if event.WhichOneof("event") != "keyviz_column":
        return None
    return event.keyviz_column.rows, 1


# Methods whose servicer returns the response already serialized.
_PRE_ENCODED = frozenset({"GetKeyVizMatrix"})


def _as_is(data: bytes) -> bytes:
    return data


def _add_admin_servicer(servicer: AdminServicer, server: grpc.Server) -> None:
    """admin_pb2_grpc.add_AdminServicer_to_server, except that the _PRE_ENCODED methods
    send the bytes their handler returns instead of serializing a message."""
    service = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request = getattr(admin_pb2, method.input_type.name)
        response = getattr(admin_pb2, method.output_type.name)
        serialize = _as_is if method.name in _PRE_ENCODED else response.SerializeToString
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=request.FromString,
            response_serializer=serialize,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("Admin", handlers),))
    server.add_registered_method_handlers("Admin", handlers)


class DistributionServicer:
    """`Distribution.ListRoutes`; never token-gated."""

    def __init__(self, server: NodeServer) -> None:
        self._s = server

    def ListRoutes(
        self, request: distribution_pb2.ListRoutesRequest, context: grpc.ServicerContext
    ) -> distribution_pb2.ListRoutesResponse:
        s = self._s
        fault = s.guard("ListRoutes", context, admin=False)
        with s.lock:
            catalog = s.sim.catalog
            response = distribution_pb2.ListRoutesResponse(
                catalog_version=catalog.version,
                routes=[
                    distribution_pb2.RouteDescriptor(
                        route_id=r.route_id,
                        start=r.start,
                        end=r.end,
                        raft_group_id=r.group_id,
                        state=distribution_pb2.ROUTE_STATE_ACTIVE,
                        parent_route_id=r.parent_route_id,
                        split_at_hlc=r.split_at_hlc,
                    )
                    for r in catalog.routes
                ],
            )
        return s.deliver(response, fault)
