import datetime

from cynode.controlplane.v1 import nodes_pb2 as _nodes_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class DrainNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class DrainNodeResponse(_message.Message):
    __slots__ = ("node_id", "drained")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    drained: bool
    def __init__(self, node_id: _Optional[str] = ..., drained: _Optional[bool] = ...) -> None: ...

class DisableNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class DisableNodeResponse(_message.Message):
    __slots__ = ("node_id", "disabled", "requeued")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    REQUEUED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    disabled: bool
    requeued: int
    def __init__(self, node_id: _Optional[str] = ..., disabled: _Optional[bool] = ..., requeued: _Optional[int] = ...) -> None: ...

class EnableNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class EnableNodeResponse(_message.Message):
    __slots__ = ("node_id", "enabled")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    enabled: bool
    def __init__(self, node_id: _Optional[str] = ..., enabled: _Optional[bool] = ...) -> None: ...

class RefreshNodeConfigRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class RefreshNodeConfigResponse(_message.Message):
    __slots__ = ("node_id", "config_version")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    config_version: str
    def __init__(self, node_id: _Optional[str] = ..., config_version: _Optional[str] = ...) -> None: ...

class NodeSummary(_message.Message):
    __slots__ = ("node_id", "node_slug", "status", "last_heartbeat_at", "inference_supported", "max_concurrency", "running_jobs", "config_version", "config_status", "capability", "admin_state")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_SLUG_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_AT_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_SUPPORTED_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_STATUS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    node_slug: str
    status: str
    last_heartbeat_at: _timestamp_pb2.Timestamp
    inference_supported: bool
    max_concurrency: int
    running_jobs: int
    config_version: str
    config_status: str
    capability: _nodes_pb2.CapabilityReport
    admin_state: str
    def __init__(self, node_id: _Optional[str] = ..., node_slug: _Optional[str] = ..., status: _Optional[str] = ..., last_heartbeat_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., inference_supported: _Optional[bool] = ..., max_concurrency: _Optional[int] = ..., running_jobs: _Optional[int] = ..., config_version: _Optional[str] = ..., config_status: _Optional[str] = ..., capability: _Optional[_Union[_nodes_pb2.CapabilityReport, _Mapping]] = ..., admin_state: _Optional[str] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeSummary]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeSummary, _Mapping]]] = ...) -> None: ...
