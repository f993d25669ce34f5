import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class User(_message.Message):
    __slots__ = ("id", "handle", "email", "is_active", "is_admin", "weight", "quotas", "limits", "usage", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    IS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    IS_ADMIN_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    handle: str
    email: str
    is_active: bool
    is_admin: bool
    weight: float
    quotas: UserQuotas
    limits: UserLimits
    usage: UserUsage
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., handle: _Optional[str] = ..., email: _Optional[str] = ..., is_active: _Optional[bool] = ..., is_admin: _Optional[bool] = ..., weight: _Optional[float] = ..., quotas: _Optional[_Union[UserQuotas, _Mapping]] = ..., limits: _Optional[_Union[UserLimits, _Mapping]] = ..., usage: _Optional[_Union[UserUsage, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UserQuotas(_message.Message):
    __slots__ = ("max_queued_tasks", "max_running_jobs", "max_task_timeout_seconds", "max_inference_requests")
    MAX_QUEUED_TASKS_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    MAX_TASK_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_INFERENCE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    max_queued_tasks: int
    max_running_jobs: int
    max_task_timeout_seconds: int
    max_inference_requests: int
    def __init__(self, max_queued_tasks: _Optional[int] = ..., max_running_jobs: _Optional[int] = ..., max_task_timeout_seconds: _Optional[int] = ..., max_inference_requests: _Optional[int] = ...) -> None: ...

class CreateUserRequest(_message.Message):
    __slots__ = ("handle", "password", "email", "is_admin")
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    IS_ADMIN_FIELD_NUMBER: _ClassVar[int]
    handle: str
    password: str
    email: str
    is_admin: bool
    def __init__(self, handle: _Optional[str] = ..., password: _Optional[str] = ..., email: _Optional[str] = ..., is_admin: _Optional[bool] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ("limit", "cursor")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    limit: int
    cursor: str
    def __init__(self, limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("users", "next_cursor")
    USERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[User]
    next_cursor: str
    def __init__(self, users: _Optional[_Iterable[_Union[User, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class UpdateUserRequest(_message.Message):
    __slots__ = ("user_id", "weight", "quotas")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    weight: float
    quotas: UserQuotas
    def __init__(self, user_id: _Optional[str] = ..., weight: _Optional[float] = ..., quotas: _Optional[_Union[UserQuotas, _Mapping]] = ...) -> None: ...

class DisableUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class DisableUserResponse(_message.Message):
    __slots__ = ("user_id", "disabled")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    disabled: bool
    def __init__(self, user_id: _Optional[str] = ..., disabled: _Optional[bool] = ...) -> None: ...

class EnableUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class EnableUserResponse(_message.Message):
    __slots__ = ("user_id", "enabled")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    enabled: bool
    def __init__(self, user_id: _Optional[str] = ..., enabled: _Optional[bool] = ...) -> None: ...

class ResetPasswordRequest(_message.Message):
    __slots__ = ("user_id", "password")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    password: str
    def __init__(self, user_id: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class ResetPasswordResponse(_message.Message):
    __slots__ = ("user_id", "password_reset")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_RESET_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    password_reset: bool
    def __init__(self, user_id: _Optional[str] = ..., password_reset: _Optional[bool] = ...) -> None: ...

class RevokeSessionsRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class RevokeSessionsResponse(_message.Message):
    __slots__ = ("user_id", "revoked")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    revoked: int
    def __init__(self, user_id: _Optional[str] = ..., revoked: _Optional[int] = ...) -> None: ...

class UserLimits(_message.Message):
    __slots__ = ("max_queued_tasks", "max_running_jobs", "max_task_timeout_seconds", "max_inference_requests")
    MAX_QUEUED_TASKS_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    MAX_TASK_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_INFERENCE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    max_queued_tasks: int
    max_running_jobs: int
    max_task_timeout_seconds: int
    max_inference_requests: int
    def __init__(self, max_queued_tasks: _Optional[int] = ..., max_running_jobs: _Optional[int] = ..., max_task_timeout_seconds: _Optional[int] = ..., max_inference_requests: _Optional[int] = ...) -> None: ...

class UserUsage(_message.Message):
    __slots__ = ("queued_tasks", "running_jobs")
    QUEUED_TASKS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    queued_tasks: int
    running_jobs: int
    def __init__(self, queued_tasks: _Optional[int] = ..., running_jobs: _Optional[int] = ...) -> None: ...
