"""The compiled descriptors match every wire fact in shared/CONTRACT.md."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from proto import admin_pb2, admin_pb2_grpc, distribution_pb2, distribution_pb2_grpc

T = FieldDescriptor
REPEATED = "repeated"

# message -> [(number, name, type, label or "", message/enum type name or "")]
CONTRACT: dict[str, list[tuple[int, str, int, str, str]]] = {
    "NodeIdentity": [
        (1, "node_id", T.TYPE_STRING, "", ""),
        (2, "grpc_address", T.TYPE_STRING, "", ""),
    ],
    "GroupLeader": [
        (1, "raft_group_id", T.TYPE_UINT64, "", ""),
        (2, "leader_node_id", T.TYPE_STRING, "", ""),
        (3, "leader_term", T.TYPE_UINT64, "", ""),
    ],
    "GetClusterOverviewRequest": [],
    "GetClusterOverviewResponse": [
        (1, "self", T.TYPE_MESSAGE, "", "NodeIdentity"),
        (2, "members", T.TYPE_MESSAGE, REPEATED, "NodeIdentity"),
        (3, "group_leaders", T.TYPE_MESSAGE, REPEATED, "GroupLeader"),
        (4, "aggregate_qps", T.TYPE_UINT64, "", ""),
        (
            5,
            "capabilities",
            T.TYPE_MESSAGE,
            REPEATED,
            "GetClusterOverviewResponse.CapabilitiesEntry",
        ),
    ],
    "RaftGroupState": [
        (1, "raft_group_id", T.TYPE_UINT64, "", ""),
        (2, "leader_node_id", T.TYPE_STRING, "", ""),
        (3, "leader_term", T.TYPE_UINT64, "", ""),
        (4, "commit_index", T.TYPE_UINT64, "", ""),
        (5, "applied_index", T.TYPE_UINT64, "", ""),
        (6, "last_contact_unix_ms", T.TYPE_INT64, "", ""),
    ],
    "GetRaftGroupsRequest": [],
    "GetRaftGroupsResponse": [(1, "groups", T.TYPE_MESSAGE, REPEATED, "RaftGroupState")],
    "AdapterSummary": [
        (1, "adapter", T.TYPE_STRING, "", ""),
        (2, "operation", T.TYPE_STRING, "", ""),
        (3, "requests", T.TYPE_UINT64, "", ""),
        (4, "in_flight", T.TYPE_UINT64, "", ""),
        (5, "bytes_in", T.TYPE_UINT64, "", ""),
        (6, "bytes_out", T.TYPE_UINT64, "", ""),
        (7, "p50_ns", T.TYPE_DOUBLE, "", ""),
        (8, "p95_ns", T.TYPE_DOUBLE, "", ""),
        (9, "p99_ns", T.TYPE_DOUBLE, "", ""),
    ],
    "GetAdapterSummaryRequest": [],
    "GetAdapterSummaryResponse": [(1, "summaries", T.TYPE_MESSAGE, REPEATED, "AdapterSummary")],
    "KeyVizRow": [
        (1, "bucket_id", T.TYPE_STRING, "", ""),
        (2, "start", T.TYPE_BYTES, "", ""),
        (3, "end", T.TYPE_BYTES, "", ""),
        (4, "label", T.TYPE_STRING, "", ""),
        (5, "aggregate", T.TYPE_BOOL, "", ""),
        (6, "route_ids", T.TYPE_UINT64, REPEATED, ""),
        (7, "route_ids_truncated", T.TYPE_BOOL, "", ""),
        (8, "route_count", T.TYPE_UINT64, "", ""),
        (9, "sample_roles", T.TYPE_ENUM, REPEATED, "SampleRole"),
        (10, "lineage_id", T.TYPE_STRING, "", ""),
        (11, "values", T.TYPE_UINT64, REPEATED, ""),
        (12, "soft_columns", T.TYPE_BOOL, REPEATED, ""),
        (13, "raft_group_ids", T.TYPE_UINT64, REPEATED, ""),
        (14, "leader_terms", T.TYPE_UINT64, REPEATED, ""),
    ],
    "GetKeyVizMatrixRequest": [
        (1, "series", T.TYPE_ENUM, "", "KeyVizSeries"),
        (2, "from_unix_ms", T.TYPE_INT64, "", ""),
        (3, "to_unix_ms", T.TYPE_INT64, "", ""),
        (4, "rows", T.TYPE_UINT32, "", ""),
    ],
    "GetKeyVizMatrixResponse": [
        (1, "column_unix_ms", T.TYPE_INT64, REPEATED, ""),
        (2, "rows", T.TYPE_MESSAGE, REPEATED, "KeyVizRow"),
    ],
    "GetRouteDetailRequest": [
        (1, "bucket_id", T.TYPE_STRING, "", ""),
        (2, "from_unix_ms", T.TYPE_INT64, "", ""),
        (3, "to_unix_ms", T.TYPE_INT64, "", ""),
    ],
    "GetRouteDetailResponse": [
        (1, "row", T.TYPE_MESSAGE, "", "KeyVizRow"),
        (2, "per_adapter", T.TYPE_MESSAGE, REPEATED, "AdapterSummary"),
    ],
    "StreamEventsRequest": [],
    "StreamEventsEvent": [
        (1, "route_transition", T.TYPE_MESSAGE, "", "RouteTransition"),
        (2, "keyviz_column", T.TYPE_MESSAGE, "", "KeyVizColumn"),
    ],
    "RouteTransition": [
        (1, "parent_route_id", T.TYPE_UINT64, "", ""),
        (2, "child_route_ids", T.TYPE_UINT64, REPEATED, ""),
        (3, "lineage_id", T.TYPE_STRING, "", ""),
        (4, "unix_ms", T.TYPE_INT64, "", ""),
    ],
    "KeyVizColumn": [
        (1, "column_unix_ms", T.TYPE_INT64, "", ""),
        (2, "series", T.TYPE_ENUM, "", "KeyVizSeries"),
        (3, "rows", T.TYPE_MESSAGE, REPEATED, "KeyVizRow"),
    ],
}

DISTRIBUTION_CONTRACT: dict[str, list[tuple[int, str, int, str, str]]] = {
    "RouteDescriptor": [
        (1, "route_id", T.TYPE_UINT64, "", ""),
        (2, "start", T.TYPE_BYTES, "", ""),
        (3, "end", T.TYPE_BYTES, "", ""),
        (4, "raft_group_id", T.TYPE_UINT64, "", ""),
        (5, "state", T.TYPE_ENUM, "", "RouteState"),
        (6, "parent_route_id", T.TYPE_UINT64, "", ""),
        (7, "split_at_hlc", T.TYPE_UINT64, "", ""),
    ],
    "ListRoutesRequest": [],
    "ListRoutesResponse": [
        (1, "catalog_version", T.TYPE_UINT64, "", ""),
        (2, "routes", T.TYPE_MESSAGE, REPEATED, "RouteDescriptor"),
    ],
}

ENUMS = {
    (admin_pb2, "KeyVizSeries"): [
        "KEYVIZ_SERIES_UNSPECIFIED",
        "KEYVIZ_SERIES_READS",
        "KEYVIZ_SERIES_WRITES",
        "KEYVIZ_SERIES_READ_BYTES",
        "KEYVIZ_SERIES_WRITE_BYTES",
    ],
    (admin_pb2, "SampleRole"): [
        "SAMPLE_ROLE_UNSPECIFIED",
        "SAMPLE_ROLE_LEADER_WRITE",
        "SAMPLE_ROLE_LEADER_READ",
        "SAMPLE_ROLE_FOLLOWER_READ",
    ],
    (distribution_pb2, "RouteState"): [
        "ROUTE_STATE_UNSPECIFIED",
        "ROUTE_STATE_ACTIVE",
        "ROUTE_STATE_WRITE_FENCED",
        "ROUTE_STATE_MIGRATING_SOURCE",
        "ROUTE_STATE_MIGRATING_TARGET",
    ],
}


def _fields(descriptor: Descriptor) -> list[tuple[int, str, int, str, str]]:
    out = []
    for f in sorted(descriptor.fields, key=lambda f: f.number):
        label = REPEATED if f.is_repeated else ""
        typed = f.message_type or f.enum_type
        type_name = typed.full_name if typed is not None else ""
        out.append((f.number, f.name, f.type, label, type_name))
    return out


@pytest.mark.parametrize(
    ("module", "name", "expected"),
    [(admin_pb2, n, e) for n, e in CONTRACT.items()]
    + [(distribution_pb2, n, e) for n, e in DISTRIBUTION_CONTRACT.items()],
)
def test_message_fields_match_the_contract(module, name, expected):
    descriptor = module.DESCRIPTOR.message_types_by_name[name]
    assert _fields(descriptor) == expected


def test_every_message_in_the_files_is_in_the_contract():
    assert set(admin_pb2.DESCRIPTOR.message_types_by_name) == set(CONTRACT)
    assert set(distribution_pb2.DESCRIPTOR.message_types_by_name) == set(DISTRIBUTION_CONTRACT)


def test_capabilities_is_a_string_to_bool_map():
    field = admin_pb2.GetClusterOverviewResponse.DESCRIPTOR.fields_by_name["capabilities"]
    entry = field.message_type
    assert entry is not None
    assert entry.GetOptions().map_entry
    assert [(f.name, f.type) for f in entry.fields] == [
        ("key", T.TYPE_STRING),
        ("value", T.TYPE_BOOL),
    ]


def test_stream_event_is_a_oneof_named_event():
    oneofs = admin_pb2.StreamEventsEvent.DESCRIPTOR.oneofs_by_name
    assert [f.name for f in oneofs["event"].fields] == ["route_transition", "keyviz_column"]


@pytest.mark.parametrize(("key", "values"), ENUMS.items())
def test_enum_values_match_the_contract(key, values):
    module, name = key
    enum = module.DESCRIPTOR.enum_types_by_name[name]
    assert [(v.name, v.number) for v in enum.values] == [(v, i) for i, v in enumerate(values)]


def test_files_declare_no_package_so_service_names_are_bare():
    assert admin_pb2.DESCRIPTOR.package == ""
    assert distribution_pb2.DESCRIPTOR.package == ""
    assert admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name == "Admin"
    assert distribution_pb2.DESCRIPTOR.services_by_name["Distribution"].full_name == "Distribution"


ADMIN_METHODS = {
    "GetClusterOverview": ("GetClusterOverviewRequest", "GetClusterOverviewResponse", False),
    "GetRaftGroups": ("GetRaftGroupsRequest", "GetRaftGroupsResponse", False),
    "GetAdapterSummary": ("GetAdapterSummaryRequest", "GetAdapterSummaryResponse", False),
    "GetKeyVizMatrix": ("GetKeyVizMatrixRequest", "GetKeyVizMatrixResponse", False),
    "GetRouteDetail": ("GetRouteDetailRequest", "GetRouteDetailResponse", False),
    "StreamEvents": ("StreamEventsRequest", "StreamEventsEvent", True),
}


def test_admin_service_methods_and_streaming_match_the_contract():
    service = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
    got = {
        m.name: (m.input_type.full_name, m.output_type.full_name, m.server_streaming)
        for m in service.methods
    }
    assert got == ADMIN_METHODS
    assert not any(m.client_streaming for m in service.methods)


def test_distribution_service_has_list_routes():
    service = distribution_pb2.DESCRIPTOR.services_by_name["Distribution"]
    method = service.methods_by_name["ListRoutes"]
    assert (method.input_type.full_name, method.output_type.full_name) == (
        "ListRoutesRequest",
        "ListRoutesResponse",
    )


class _RecordingChannel:
    """Captures the method paths a generated stub registers."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def _record(self, path: str, *args: object, **kwargs: object) -> None:
        self.paths.append(path)

    unary_unary = unary_stream = stream_unary = stream_stream = _record


def test_generated_stubs_use_bare_method_paths():
    channel = _RecordingChannel()
    admin_pb2_grpc.AdminStub(channel)
    distribution_pb2_grpc.DistributionStub(channel)
    assert sorted(channel.paths) == sorted(
        [f"/Admin/{m}" for m in ADMIN_METHODS] + ["/Distribution/ListRoutes"]
    )
