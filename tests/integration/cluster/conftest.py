"""Fixtures for the cluster pages and API against a devcluster, served in-process.

- `portal(seeds, **config)` (tests/conftest.py): the in-process portal pointed at those seeds,
  as a Django AsyncClient signed in as a viewer.
- `grpc_proxy(target, rewrite=...)`: a gRPC pass-through in front of a node that counts
  calls per method and may rewrite chosen responses (malformed data, membership changes).
- `truth(cluster)`: the nodes' own answers over gRPC (the ground truth the tests compare to).
- `parse_html(text)`: the page's tables as rows of cells and data attributes.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import grpc
import pytest

from devcluster import DevCluster
from proto import admin_pb2, admin_pb2_grpc, distribution_pb2, distribution_pb2_grpc

# -- ground truth: the nodes' own answers ----------------------------------------------------


@dataclass
class Truth:
    cluster: DevCluster
    channels: list[grpc.Channel] = field(default_factory=list)
    _supports: dict[str, dict[str, str]] = field(default_factory=dict)

    def _channel(self, address: str) -> grpc.Channel:
        channel = grpc.insecure_channel(address)
        self.channels.append(channel)
        return channel

    def admin(self, node_id: str, method: str, request: Any = None) -> Any:
        info = self.cluster.node(node_id)
        stub = admin_pb2_grpc.AdminStub(self._channel(info.address))
        request = request or getattr(admin_pb2, f"{method}Request")()
        return getattr(stub, method)(
            request, metadata=self.cluster.auth_metadata(node_id), timeout=5
        )

    def admin_code(self, node_id: str, method: str, request: Any = None) -> grpc.StatusCode:
        try:
            self.admin(node_id, method, request)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code
        return grpc.StatusCode.OK

    def supports(self, node_id: str) -> dict[str, str]:
        """Which optional RPCs the node serves, asked directly (once per node)."""
        if node_id not in self._supports:
            self._supports[node_id] = self._ask_supports(node_id)
        return dict(self._supports[node_id])

    def _ask_supports(self, node_id: str) -> dict[str, str]:
        keyviz = self.admin_code(
            node_id, "GetKeyVizMatrix", admin_pb2.GetKeyVizMatrixRequest(rows=1)
        )
        summary = self.admin_code(node_id, "GetAdapterSummary")
        detail = self.admin_code(
            node_id, "GetRouteDetail", admin_pb2.GetRouteDetailRequest(bucket_id="")
        )
        info = self.cluster.node(node_id)
        stream = admin_pb2_grpc.AdminStub(self._channel(info.address)).StreamEvents(
            admin_pb2.StreamEventsRequest(),
            metadata=self.cluster.auth_metadata(node_id),
            timeout=0.3,
        )
        try:
            for _ in stream:
                break
            stream_code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            stream_code = exc.code()
        finally:
            stream.cancel()
        unimplemented = grpc.StatusCode.UNIMPLEMENTED
        return {
            "GetRaftGroups": "yes",
            "GetKeyVizMatrix": {grpc.StatusCode.OK: "yes", unimplemented: "no"}.get(
                keyviz, "disabled"
            ),
            "GetAdapterSummary": "no" if summary == unimplemented else "yes",
            "GetRouteDetail": "no" if detail == unimplemented else "yes",
            "StreamEvents": {unimplemented: "no", grpc.StatusCode.UNAVAILABLE: "disabled"}.get(
                stream_code, "yes"
            ),
        }

    def raft_groups(self, node_id: str) -> list[Any]:
        return list(self.admin(node_id, "GetRaftGroups").groups)

    def list_routes(self, node_id: str = "n1") -> Any:
        stub = distribution_pb2_grpc.DistributionStub(
            self._channel(self.cluster.node(node_id).address)
        )
        return stub.ListRoutes(distribution_pb2.ListRoutesRequest(), timeout=5)

    def close(self) -> None:
        for channel in self.channels:
            channel.close()


@pytest.fixture
def truth() -> Iterator[Callable[[DevCluster], Truth]]:
    made: list[Truth] = []

    def make(cluster: DevCluster) -> Truth:
        made.append(Truth(cluster))
        return made[-1]

    yield make
    for t in made:
        t.close()


# -- a pass-through gRPC proxy ----------------------------------------------------------------

Rewrite = Callable[[bytes], bytes]


class GrpcProxy:
    """Forwards every Admin and Distribution call (with its authorization) to ``target``."""

    def __init__(self, target: str, rewrite: dict[str, Rewrite] | None = None) -> None:
        self.target = target
        self.rewrite = dict(rewrite or {})
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(target)
        self._server = grpc.server(futures.ThreadPoolExecutor(16))
        self._server.add_generic_rpc_handlers([_Handler(self)])
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        self._server.start()

    def count(self, method: str) -> int:
        with self._lock:
            return self.calls[method]

    def _metadata(self, context: grpc.ServicerContext) -> tuple[tuple[str, str | bytes], ...]:
        return tuple((k, v) for k, v in context.invocation_metadata() if k == "authorization")

    def unary(self, path: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        method = path.rsplit("/", 1)[-1]

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            with self._lock:
                self.calls[method] += 1
            remaining = context.time_remaining()
            try:
                forward: grpc.UnaryUnaryMultiCallable[bytes, bytes]
                forward = self._channel.unary_unary(path, None, None)
                answer = forward(request, metadata=self._metadata(context), timeout=remaining)
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details() or "")
            rewrite = self.rewrite.get(method)
            return rewrite(answer) if rewrite else answer

        return handle

    def stream(self, path: str) -> Callable[[bytes, grpc.ServicerContext], Iterator[bytes]]:
        method = path.rsplit("/", 1)[-1]

        def handle(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            with self._lock:
                self.calls[method] += 1
            forward: grpc.UnaryStreamMultiCallable[bytes, bytes]
            forward = self._channel.unary_stream(path, None, None)
            call = forward(
                request, metadata=self._metadata(context), timeout=context.time_remaining()
            )

            def cancel() -> None:
                call.cancel()

            context.add_callback(cancel)
            try:
                context.send_initial_metadata(())
                yield from call
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.CANCELLED:
                    context.abort(exc.code(), exc.details() or "")

        return handle

    def stop(self) -> None:
        self._server.stop(None).wait()
        self._channel.close()


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, proxy: GrpcProxy) -> None:
        self.proxy = proxy

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes]:
        path = handler_call_details.method
        if path.endswith("/StreamEvents"):
            return grpc.unary_stream_rpc_method_handler(self.proxy.stream(path))
        return grpc.unary_unary_rpc_method_handler(self.proxy.unary(path))


@pytest.fixture
def grpc_proxy() -> Iterator[Callable[..., GrpcProxy]]:
    proxies: list[GrpcProxy] = []

    def make(target: str, rewrite: dict[str, Rewrite] | None = None) -> GrpcProxy:
        proxies.append(GrpcProxy(target, rewrite))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.stop()


# -- reading pages ----------------------------------------------------------------------------

VOID = frozenset({"br", "input", "meta", "link", "img", "hr", "source", "col", "wbr"})


@dataclass(eq=False)
class Element:
    """A light DOM node: tag, attributes, children (elements and text)."""

    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    @property
    def words(self) -> str:
        """The text with whitespace collapsed."""
        return " ".join(self.text.split())

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """Descendants with that tag and attributes (data_node= means data-node=; class_=
        matches one of the element's classes)."""
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        found: list[Element] = []
        for child in self.children:
            if isinstance(child, str):
                continue
            if (tag is None or child.tag == tag) and all(
                v in child.attrs.get(k, "").split() if k == "class" else child.attrs.get(k) == v
                for k, v in wanted.items()
            ):
                found.append(child)
            found.extend(child.find_all(tag, **attrs))
        return found

    def find(self, tag: str | None = None, **attrs: str) -> Element:
        found = self.find_all(tag, **attrs)
        if not found:
            raise AssertionError(f"no <{tag or '*'} {attrs}> in the page")
        return found[0]

    def has(self, tag: str | None = None, **attrs: str) -> bool:
        return bool(self.find_all(tag, **attrs))

    def field(self, name: str) -> str:
        """Words of the descendant with data-field=name."""
        return self.find(data_field=name).words


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.root = Element("#document", {})
        self._stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs})
        self._stack[-1].children.append(el)
        if tag not in VOID:
            self._stack.append(el)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._stack) - 1, 0, -1):
            if self._stack[i].tag == tag:
                del self._stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self._stack[-1].children.append(data)


@pytest.fixture
def parse_html() -> Callable[[str], Element]:
    def parse(html: str) -> Element:
        builder = _Builder()
        builder.feed(html)
        builder.close()
        return builder.root

    return parse
