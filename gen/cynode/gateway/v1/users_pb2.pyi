from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class UserLimits(_message.Message):
    __slots__ = ("max_queued_tasks", "max_running_jobs", "max_task_timeout_seconds")
    MAX_QUEUED_TASKS_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    MAX_TASK_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    max_queued_tasks: int
    max_running_jobs: int
    max_task_timeout_seconds: int
    def __init__(self, max_queued_tasks: _Optional[int] = ..., max_running_jobs: _Optional[int] = ..., max_task_timeout_seconds: _Optional[int] = ...) -> None: ...

class UserUsage(_message.Message):
    __slots__ = ("queued_tasks", "running_jobs")
    QUEUED_TASKS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    queued_tasks: int
    running_jobs: int
    def __init__(self, queued_tasks: _Optional[int] = ..., running_jobs: _Optional[int] = ...) -> None: ...
