import datetime

from cynode.jobs.v1 import job_pb2 as _job_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Task(_message.Message):
    __slots__ = ("task_id", "task_name", "status", "input_mode", "created_at", "updated_at", "use_inference", "reason", "user_id", "attachments")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    INPUT_MODE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    USE_INFERENCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    task_name: str
    status: str
    input_mode: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    use_inference: bool
    reason: str
    user_id: str
    attachments: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task_id: _Optional[str] = ..., task_name: _Optional[str] = ..., status: _Optional[str] = ..., input_mode: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., use_inference: _Optional[bool] = ..., reason: _Optional[str] = ..., user_id: _Optional[str] = ..., attachments: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateTaskRequest(_message.Message):
    __slots__ = ("task_name", "input_mode", "prompt", "script", "commands", "use_inference", "timeout_seconds", "image", "attachments")
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_MODE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SCRIPT_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    USE_INFERENCE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    task_name: str
    input_mode: str
    prompt: str
    script: str
    commands: _containers.RepeatedScalarFieldContainer[str]
    use_inference: bool
    timeout_seconds: int
    image: str
    attachments: _containers.RepeatedCompositeFieldContainer[_job_pb2.Attachment]
    def __init__(self, task_name: _Optional[str] = ..., input_mode: _Optional[str] = ..., prompt: _Optional[str] = ..., script: _Optional[str] = ..., commands: _Optional[_Iterable[str]] = ..., use_inference: _Optional[bool] = ..., timeout_seconds: _Optional[int] = ..., image: _Optional[str] = ..., attachments: _Optional[_Iterable[_Union[_job_pb2.Attachment, _Mapping]]] = ...) -> None: ...

class CreateTaskResponse(_message.Message):
    __slots__ = ("task_id", "task_name", "status", "attachments")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    task_name: str
    status: str
    attachments: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task_id: _Optional[str] = ..., task_name: _Optional[str] = ..., status: _Optional[str] = ..., attachments: _Optional[_Iterable[str]] = ...) -> None: ...

class FetchTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("status", "limit", "cursor")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    status: str
    limit: int
    cursor: str
    def __init__(self, status: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_cursor")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    next_cursor: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class GetTaskResultRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class Truncation(_message.Message):
    __slots__ = ("stdout", "stderr")
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    stdout: bool
    stderr: bool
    def __init__(self, stdout: _Optional[bool] = ..., stderr: _Optional[bool] = ...) -> None: ...

class JobView(_message.Message):
    __slots__ = ("id", "status", "exit_code", "stdout", "stderr", "truncated", "started_at", "ended_at", "node_id", "attempt", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: str
    exit_code: int
    stdout: str
    stderr: str
    truncated: Truncation
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    node_id: str
    attempt: int
    reason: str
    def __init__(self, id: _Optional[str] = ..., status: _Optional[str] = ..., exit_code: _Optional[int] = ..., stdout: _Optional[str] = ..., stderr: _Optional[str] = ..., truncated: _Optional[_Union[Truncation, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., node_id: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class GetTaskResultResponse(_message.Message):
    __slots__ = ("task_id", "task_name", "status", "jobs", "stdout", "stderr", "reason", "artifacts_complete", "artifact_count")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_COUNT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    task_name: str
    status: str
    jobs: _containers.RepeatedCompositeFieldContainer[JobView]
    stdout: str
    stderr: str
    reason: str
    artifacts_complete: bool
    artifact_count: int
    def __init__(self, task_id: _Optional[str] = ..., task_name: _Optional[str] = ..., status: _Optional[str] = ..., jobs: _Optional[_Iterable[_Union[JobView, _Mapping]]] = ..., stdout: _Optional[str] = ..., stderr: _Optional[str] = ..., reason: _Optional[str] = ..., artifacts_complete: _Optional[bool] = ..., artifact_count: _Optional[int] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class CancelTaskResponse(_message.Message):
    __slots__ = ("task_id", "canceled")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CANCELED_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    canceled: bool
    def __init__(self, task_id: _Optional[str] = ..., canceled: _Optional[bool] = ...) -> None: ...

class GetTaskLogsRequest(_message.Message):
    __slots__ = ("task_id", "stream")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    stream: str
    def __init__(self, task_id: _Optional[str] = ..., stream: _Optional[str] = ...) -> None: ...

class GetTaskLogsResponse(_message.Message):
    __slots__ = ("task_id", "stream", "lines", "task_name", "stdout", "stderr")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    stream: str
    lines: _containers.RepeatedScalarFieldContainer[str]
    task_name: str
    stdout: str
    stderr: str
    def __init__(self, task_id: _Optional[str] = ..., stream: _Optional[str] = ..., lines: _Optional[_Iterable[str]] = ..., task_name: _Optional[str] = ..., stdout: _Optional[str] = ..., stderr: _Optional[str] = ...) -> None: ...

class WatchTaskRequest(_message.Message):
    __slots__ = ("task_id", "include_result")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RESULT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    include_result: bool
    def __init__(self, task_id: _Optional[str] = ..., include_result: _Optional[bool] = ...) -> None: ...

class WatchTaskResponse(_message.Message):
    __slots__ = ("task_id", "status", "stream", "chunk", "terminal", "at", "task_result")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    TASK_RESULT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: str
    stream: str
    chunk: str
    terminal: bool
    at: _timestamp_pb2.Timestamp
    task_result: GetTaskResultResponse
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[str] = ..., stream: _Optional[str] = ..., chunk: _Optional[str] = ..., terminal: _Optional[bool] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., task_result: _Optional[_Union[GetTaskResultResponse, _Mapping]] = ...) -> None: ...

class ListTaskArtifactsRequest(_message.Message):
    __slots__ = ("task_id", "wait_seconds")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    wait_seconds: int
    def __init__(self, task_id: _Optional[str] = ..., wait_seconds: _Optional[int] = ...) -> None: ...

class ListTaskArtifactsResponse(_message.Message):
    __slots__ = ("task_id", "task_name", "artifacts", "complete", "truncated", "truncated_reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    task_name: str
    artifacts: _containers.RepeatedCompositeFieldContainer[_job_pb2.Artifact]
    complete: bool
    truncated: bool
    truncated_reason: str
    def __init__(self, task_id: _Optional[str] = ..., task_name: _Optional[str] = ..., artifacts: _Optional[_Iterable[_Union[_job_pb2.Artifact, _Mapping]]] = ..., complete: _Optional[bool] = ..., truncated: _Optional[bool] = ..., truncated_reason: _Optional[str] = ...) -> None: ...

class DownloadTaskArtifactRequest(_message.Message):
    __slots__ = ("task_id", "artifact_id", "offset", "length")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    artifact_id: str
    offset: int
    length: int
    def __init__(self, task_id: _Optional[str] = ..., artifact_id: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class DownloadTaskArtifactResponse(_message.Message):
    __slots__ = ("artifact", "data", "offset")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    artifact: _job_pb2.Artifact
    data: bytes
    offset: int
    def __init__(self, artifact: _Optional[_Union[_job_pb2.Artifact, _Mapping]] = ..., data: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...

class DeleteTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class DeleteTaskResponse(_message.Message):
    __slots__ = ("task_id", "deleted")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    deleted: bool
    def __init__(self, task_id: _Optional[str] = ..., deleted: _Optional[bool] = ...) -> None: ...
