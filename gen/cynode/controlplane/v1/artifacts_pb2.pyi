from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetUploadOffsetRequest(_message.Message):
    __slots__ = ("job_id", "attempt", "artifact_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    artifact_id: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., artifact_id: _Optional[str] = ...) -> None: ...

class GetUploadOffsetResponse(_message.Message):
    __slots__ = ("offset", "stored")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    offset: int
    stored: bool
    def __init__(self, offset: _Optional[int] = ..., stored: _Optional[bool] = ...) -> None: ...

class UploadArtifactHeader(_message.Message):
    __slots__ = ("job_id", "attempt", "artifact_id", "offset")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    artifact_id: str
    offset: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., artifact_id: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class UploadArtifactRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: UploadArtifactHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[UploadArtifactHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadArtifactResponse(_message.Message):
    __slots__ = ("offset", "stored")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    offset: int
    stored: bool
    def __init__(self, offset: _Optional[int] = ..., stored: _Optional[bool] = ...) -> None: ...
