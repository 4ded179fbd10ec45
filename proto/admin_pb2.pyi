from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyVizSeries(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEYVIZ_SERIES_UNSPECIFIED: _ClassVar[KeyVizSeries]
    KEYVIZ_SERIES_READS: _ClassVar[KeyVizSeries]
    KEYVIZ_SERIES_WRITES: _ClassVar[KeyVizSeries]
    KEYVIZ_SERIES_READ_BYTES: _ClassVar[KeyVizSeries]
    KEYVIZ_SERIES_WRITE_BYTES: _ClassVar[KeyVizSeries]

class SampleRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLE_ROLE_UNSPECIFIED: _ClassVar[SampleRole]
    SAMPLE_ROLE_LEADER_WRITE: _ClassVar[SampleRole]
    SAMPLE_ROLE_LEADER_READ: _ClassVar[SampleRole]
    SAMPLE_ROLE_FOLLOWER_READ: _ClassVar[SampleRole]
KEYVIZ_SERIES_UNSPECIFIED: KeyVizSeries
KEYVIZ_SERIES_READS: KeyVizSeries
KEYVIZ_SERIES_WRITES: KeyVizSeries
KEYVIZ_SERIES_READ_BYTES: KeyVizSeries
KEYVIZ_SERIES_WRITE_BYTES: KeyVizSeries
SAMPLE_ROLE_UNSPECIFIED: SampleRole
SAMPLE_ROLE_LEADER_WRITE: SampleRole
SAMPLE_ROLE_LEADER_READ: SampleRole
SAMPLE_ROLE_FOLLOWER_READ: SampleRole

class NodeIdentity(_message.Message):
    __slots__ = ("node_id", "grpc_address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    grpc_address: str
    def __init__(self, node_id: _Optional[str] = ..., grpc_address: _Optional[str] = ...) -> None: ...

class GroupLeader(_message.Message):
    __slots__ = ("raft_group_id", "leader_node_id", "leader_term")
    RAFT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_TERM_FIELD_NUMBER: _ClassVar[int]
    raft_group_id: int
    leader_node_id: str
    leader_term: int
    def __init__(self, raft_group_id: _Optional[int] = ..., leader_node_id: _Optional[str] = ..., leader_term: _Optional[int] = ...) -> None: ...

class GetClusterOverviewRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetClusterOverviewResponse(_message.Message):
    __slots__ = ("self", "members", "group_leaders", "aggregate_qps", "capabilities")
    class CapabilitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    SELF_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    GROUP_LEADERS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_QPS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    self: NodeIdentity
    members: _containers.RepeatedCompositeFieldContainer[NodeIdentity]
    group_leaders: _containers.RepeatedCompositeFieldContainer[GroupLeader]
    aggregate_qps: int
    capabilities: _containers.ScalarMap[str, bool]
    def __init__(self_, self: _Optional[_Union[NodeIdentity, _Mapping]] = ..., members: _Optional[_Iterable[_Union[NodeIdentity, _Mapping]]] = ..., group_leaders: _Optional[_Iterable[_Union[GroupLeader, _Mapping]]] = ..., aggregate_qps: _Optional[int] = ..., capabilities: _Optional[_Mapping[str, bool]] = ...) -> None: ...

class RaftGroupState(_message.Message):
    __slots__ = ("raft_group_id", "leader_node_id", "leader_term", "commit_index", "applied_index", "last_contact_unix_ms")
    RAFT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_CONTACT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    raft_group_id: int
    leader_node_id: str
    leader_term: int
    commit_index: int
    applied_index: int
    last_contact_unix_ms: int
    def __init__(self, raft_group_id: _Optional[int] = ..., leader_node_id: _Optional[str] = ..., leader_term: _Optional[int] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., last_contact_unix_ms: _Optional[int] = ...) -> None: ...

class GetRaftGroupsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRaftGroupsResponse(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[RaftGroupState]
    def __init__(self, groups: _Optional[_Iterable[_Union[RaftGroupState, _Mapping]]] = ...) -> None: ...

class AdapterSummary(_message.Message):
    __slots__ = ("adapter", "operation", "requests", "in_flight", "bytes_in", "bytes_out", "p50_ns", "p95_ns", "p99_ns")
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    P50_NS_FIELD_NUMBER: _ClassVar[int]
    P95_NS_FIELD_NUMBER: _ClassVar[int]
    P99_NS_FIELD_NUMBER: _ClassVar[int]
    adapter: str
    operation: str
    requests: int
    in_flight: int
    bytes_in: int
    bytes_out: int
    p50_ns: float
    p95_ns: float
    p99_ns: float
    def __init__(self, adapter: _Optional[str] = ..., operation: _Optional[str] = ..., requests: _Optional[int] = ..., in_flight: _Optional[int] = ..., bytes_in: _Optional[int] = ..., bytes_out: _Optional[int] = ..., p50_ns: _Optional[float] = ..., p95_ns: _Optional[float] = ..., p99_ns: _Optional[float] = ...) -> None: ...

class GetAdapterSummaryRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetAdapterSummaryResponse(_message.Message):
    __slots__ = ("summaries",)
    SUMMARIES_FIELD_NUMBER: _ClassVar[int]
    summaries: _containers.RepeatedCompositeFieldContainer[AdapterSummary]
    def __init__(self, summaries: _Optional[_Iterable[_Union[AdapterSummary, _Mapping]]] = ...) -> None: ...

class KeyVizRow(_message.Message):
    __slots__ = ("bucket_id", "start", "end", "label", "aggregate", "route_ids", "route_ids_truncated", "route_count", "sample_roles", "lineage_id", "values", "soft_columns", "raft_group_ids", "leader_terms")
    BUCKET_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_IDS_FIELD_NUMBER: _ClassVar[int]
    ROUTE_IDS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    ROUTE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ROLES_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_ID_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SOFT_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    RAFT_GROUP_IDS_FIELD_NUMBER: _ClassVar[int]
    LEADER_TERMS_FIELD_NUMBER: _ClassVar[int]
    bucket_id: str
    start: bytes
    end: bytes
    label: str
    aggregate: bool
    route_ids: _containers.RepeatedScalarFieldContainer[int]
    route_ids_truncated: bool
    route_count: int
    sample_roles: _containers.RepeatedScalarFieldContainer[SampleRole]
    lineage_id: str
    values: _containers.RepeatedScalarFieldContainer[int]
    soft_columns: _containers.RepeatedScalarFieldContainer[bool]
    raft_group_ids: _containers.RepeatedScalarFieldContainer[int]
    leader_terms: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, bucket_id: _Optional[str] = ..., start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., label: _Optional[str] = ..., aggregate: _Optional[bool] = ..., route_ids: _Optional[_Iterable[int]] = ..., route_ids_truncated: _Optional[bool] = ..., route_count: _Optional[int] = ..., sample_roles: _Optional[_Iterable[_Union[SampleRole, str]]] = ..., lineage_id: _Optional[str] = ..., values: _Optional[_Iterable[int]] = ..., soft_columns: _Optional[_Iterable[bool]] = ..., raft_group_ids: _Optional[_Iterable[int]] = ..., leader_terms: _Optional[_Iterable[int]] = ...) -> None: ...

class GetKeyVizMatrixRequest(_message.Message):
    __slots__ = ("series", "from_unix_ms", "to_unix_ms", "rows")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    FROM_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TO_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    series: KeyVizSeries
    from_unix_ms: int
    to_unix_ms: int
    rows: int
    def __init__(self, series: _Optional[_Union[KeyVizSeries, str]] = ..., from_unix_ms: _Optional[int] = ..., to_unix_ms: _Optional[int] = ..., rows: _Optional[int] = ...) -> None: ...

class GetKeyVizMatrixResponse(_message.Message):
    __slots__ = ("column_unix_ms", "rows")
    COLUMN_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    column_unix_ms: _containers.RepeatedScalarFieldContainer[int]
    rows: _containers.RepeatedCompositeFieldContainer[KeyVizRow]
    def __init__(self, column_unix_ms: _Optional[_Iterable[int]] = ..., rows: _Optional[_Iterable[_Union[KeyVizRow, _Mapping]]] = ...) -> None: ...

class GetRouteDetailRequest(_message.Message):
    __slots__ = ("bucket_id", "from_unix_ms", "to_unix_ms")
    BUCKET_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TO_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    bucket_id: str
    from_unix_ms: int
    to_unix_ms: int
    def __init__(self, bucket_id: _Optional[str] = ..., from_unix_ms: _Optional[int] = ..., to_unix_ms: _Optional[int] = ...) -> None: ...

class GetRouteDetailResponse(_message.Message):
    __slots__ = ("row", "per_adapter")
    ROW_FIELD_NUMBER: _ClassVar[int]
    PER_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    row: KeyVizRow
    per_adapter: _containers.RepeatedCompositeFieldContainer[AdapterSummary]
    def __init__(self, row: _Optional[_Union[KeyVizRow, _Mapping]] = ..., per_adapter: _Optional[_Iterable[_Union[AdapterSummary, _Mapping]]] = ...) -> None: ...

class StreamEventsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RouteTransition(_message.Message):
    __slots__ = ("parent_route_id", "child_route_ids", "lineage_id", "unix_ms")
    PARENT_ROUTE_ID_FIELD_NUMBER: _ClassVar[int]
    CHILD_ROUTE_IDS_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_ID_FIELD_NUMBER: _ClassVar[int]
    UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    parent_route_id: int
    child_route_ids: _containers.RepeatedScalarFieldContainer[int]
    lineage_id: str
    unix_ms: int
    def __init__(self, parent_route_id: _Optional[int] = ..., child_route_ids: _Optional[_Iterable[int]] = ..., lineage_id: _Optional[str] = ..., unix_ms: _Optional[int] = ...) -> None: ...

class KeyVizColumn(_message.Message):
    __slots__ = ("column_unix_ms", "series", "rows")
    COLUMN_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    column_unix_ms: int
    series: KeyVizSeries
    rows: _containers.RepeatedCompositeFieldContainer[KeyVizRow]
    def __init__(self, column_unix_ms: _Optional[int] = ..., series: _Optional[_Union[KeyVizSeries, str]] = ..., rows: _Optional[_Iterable[_Union[KeyVizRow, _Mapping]]] = ...) -> None: ...

class StreamEventsEvent(_message.Message):
    __slots__ = ("route_transition", "keyviz_column")
    ROUTE_TRANSITION_FIELD_NUMBER: _ClassVar[int]
    KEYVIZ_COLUMN_FIELD_NUMBER: _ClassVar[int]
    route_transition: RouteTransition
    keyviz_column: KeyVizColumn
    def __init__(self, route_transition: _Optional[_Union[RouteTransition, _Mapping]] = ..., keyviz_column: _Optional[_Union[KeyVizColumn, _Mapping]] = ...) -> None: ...
