from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RouteState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTE_STATE_UNSPECIFIED: _ClassVar[RouteState]
    ROUTE_STATE_ACTIVE: _ClassVar[RouteState]
    ROUTE_STATE_WRITE_FENCED: _ClassVar[RouteState]
    ROUTE_STATE_MIGRATING_SOURCE: _ClassVar[RouteState]
    ROUTE_STATE_MIGRATING_TARGET: _ClassVar[RouteState]
ROUTE_STATE_UNSPECIFIED: RouteState
ROUTE_STATE_ACTIVE: RouteState
ROUTE_STATE_WRITE_FENCED: RouteState
ROUTE_STATE_MIGRATING_SOURCE: RouteState
ROUTE_STATE_MIGRATING_TARGET: RouteState

class RouteDescriptor(_message.Message):
    __slots__ = ("route_id", "start", "end", "raft_group_id", "state", "parent_route_id", "split_at_hlc")
    ROUTE_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    RAFT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PARENT_ROUTE_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_AT_HLC_FIELD_NUMBER: _ClassVar[int]
    route_id: int
    start: bytes
    end: bytes
    raft_group_id: int
    state: RouteState
    parent_route_id: int
    split_at_hlc: int
    def __init__(self, route_id: _Optional[int] = ..., start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., raft_group_id: _Optional[int] = ..., state: _Optional[_Union[RouteState, str]] = ..., parent_route_id: _Optional[int] = ..., split_at_hlc: _Optional[int] = ...) -> None: ...

class ListRoutesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRoutesResponse(_message.Message):
    __slots__ = ("catalog_version", "routes")
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    catalog_version: int
    routes: _containers.RepeatedCompositeFieldContainer[RouteDescriptor]
    def __init__(self, catalog_version: _Optional[int] = ..., routes: _Optional[_Iterable[_Union[RouteDescriptor, _Mapping]]] = ...) -> None: ...
