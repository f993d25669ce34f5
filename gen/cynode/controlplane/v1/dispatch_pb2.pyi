import datetime

from cynode.jobs.v1 import job_pb2 as _job_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HeldJob(_message.Message):
    __slots__ = ("job_id", "attempt", "has_result")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    HAS_RESULT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    has_result: bool
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., has_result: _Optional[bool] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("node_slug", "held_jobs", "config_version", "accepts_batches")
    NODE_SLUG_FIELD_NUMBER: _ClassVar[int]
    HELD_JOBS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_BATCHES_FIELD_NUMBER: _ClassVar[int]
    node_slug: str
    held_jobs: _containers.RepeatedCompositeFieldContainer[HeldJob]
    config_version: str
    accepts_batches: bool
    def __init__(self, node_slug: _Optional[str] = ..., held_jobs: _Optional[_Iterable[_Union[HeldJob, _Mapping]]] = ..., config_version: _Optional[str] = ..., accepts_batches: _Optional[bool] = ...) -> None: ...

class Ready(_message.Message):
    __slots__ = ("free_slots", "warm_ready")
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    WARM_READY_FIELD_NUMBER: _ClassVar[int]
    free_slots: int
    warm_ready: int
    def __init__(self, free_slots: _Optional[int] = ..., warm_ready: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("at", "running")
    AT_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    running: _containers.RepeatedCompositeFieldContainer[HeldJob]
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., running: _Optional[_Iterable[_Union[HeldJob, _Mapping]]] = ...) -> None: ...

class JobStarted(_message.Message):
    __slots__ = ("job_id", "attempt", "started_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class OutputChunk(_message.Message):
    __slots__ = ("job_id", "attempt", "stream", "data", "offset")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    stream: str
    data: bytes
    offset: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., stream: _Optional[str] = ..., data: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...

class ConnectRequest(_message.Message):
    __slots__ = ("hello", "ready", "heartbeat", "job_started", "output_chunk", "job_result", "batch")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    JOB_STARTED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_CHUNK_FIELD_NUMBER: _ClassVar[int]
    JOB_RESULT_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    ready: Ready
    heartbeat: Heartbeat
    job_started: JobStarted
    output_chunk: OutputChunk
    job_result: _job_pb2.JobResult
    batch: RequestBatch
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., ready: _Optional[_Union[Ready, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., job_started: _Optional[_Union[JobStarted, _Mapping]] = ..., output_chunk: _Optional[_Union[OutputChunk, _Mapping]] = ..., job_result: _Optional[_Union[_job_pb2.JobResult, _Mapping]] = ..., batch: _Optional[_Union[RequestBatch, _Mapping]] = ...) -> None: ...

class RequestBatch(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ConnectRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[ConnectRequest, _Mapping]]] = ...) -> None: ...

class HelloAck(_message.Message):
    __slots__ = ("node_id", "lease_seconds", "heartbeat_seconds", "accepts_batches")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_BATCHES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    lease_seconds: int
    heartbeat_seconds: int
    accepts_batches: bool
    def __init__(self, node_id: _Optional[str] = ..., lease_seconds: _Optional[int] = ..., heartbeat_seconds: _Optional[int] = ..., accepts_batches: _Optional[bool] = ...) -> None: ...

class JobAssignment(_message.Message):
    __slots__ = ("spec", "lease_expires_at")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    spec: _job_pb2.JobSpec
    lease_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, spec: _Optional[_Union[_job_pb2.JobSpec, _Mapping]] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CancelJob(_message.Message):
    __slots__ = ("job_id", "attempt", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ResultAck(_message.Message):
    __slots__ = ("job_id", "attempt")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class ConfigChanged(_message.Message):
    __slots__ = ("config_version",)
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    config_version: str
    def __init__(self, config_version: _Optional[str] = ...) -> None: ...

class ConnectResponse(_message.Message):
    __slots__ = ("hello_ack", "assignment", "cancel", "result_ack", "config_changed", "batch")
    HELLO_ACK_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    RESULT_ACK_FIELD_NUMBER: _ClassVar[int]
    CONFIG_CHANGED_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    hello_ack: HelloAck
    assignment: JobAssignment
    cancel: CancelJob
    result_ack: ResultAck
    config_changed: ConfigChanged
    batch: ResponseBatch
    def __init__(self, hello_ack: _Optional[_Union[HelloAck, _Mapping]] = ..., assignment: _Optional[_Union[JobAssignment, _Mapping]] = ..., cancel: _Optional[_Union[CancelJob, _Mapping]] = ..., result_ack: _Optional[_Union[ResultAck, _Mapping]] = ..., config_changed: _Optional[_Union[ConfigChanged, _Mapping]] = ..., batch: _Optional[_Union[ResponseBatch, _Mapping]] = ...) -> None: ...

class ResponseBatch(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ConnectResponse]
    def __init__(self, items: _Optional[_Iterable[_Union[ConnectResponse, _Mapping]]] = ...) -> None: ...
