from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Color(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLOR_UNSPECIFIED: _ClassVar[Color]
    COLOR_RED: _ClassVar[Color]
    COLOR_BLUE: _ClassVar[Color]
COLOR_UNSPECIFIED: Color
COLOR_RED: Color
COLOR_BLUE: Color

class Thing(_message.Message):
    __slots__ = ("thing_id", "name", "size", "tags", "color", "flag")
    THING_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    thing_id: str
    name: str
    size: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    color: Color
    flag: bool
    def __init__(self, thing_id: _Optional[str] = ..., name: _Optional[str] = ..., size: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., color: _Optional[_Union[Color, str]] = ..., flag: _Optional[bool] = ...) -> None: ...

class GetThingRequest(_message.Message):
    __slots__ = ("shelf", "thing_id", "limit", "tags", "verbose", "color")
    SHELF_FIELD_NUMBER: _ClassVar[int]
    THING_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    VERBOSE_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    shelf: str
    thing_id: str
    limit: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    verbose: bool
    color: Color
    def __init__(self, shelf: _Optional[str] = ..., thing_id: _Optional[str] = ..., limit: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., verbose: _Optional[bool] = ..., color: _Optional[_Union[Color, str]] = ...) -> None: ...

class GetThingResponse(_message.Message):
    __slots__ = ("thing", "shelf", "limit", "tags", "verbose", "color")
    THING_FIELD_NUMBER: _ClassVar[int]
    SHELF_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    VERBOSE_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    thing: Thing
    shelf: str
    limit: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    verbose: bool
    color: Color
    def __init__(self, thing: _Optional[_Union[Thing, _Mapping]] = ..., shelf: _Optional[str] = ..., limit: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., verbose: _Optional[bool] = ..., color: _Optional[_Union[Color, str]] = ...) -> None: ...

class CreateThingRequest(_message.Message):
    __slots__ = ("shelf", "thing")
    SHELF_FIELD_NUMBER: _ClassVar[int]
    THING_FIELD_NUMBER: _ClassVar[int]
    shelf: str
    thing: Thing
    def __init__(self, shelf: _Optional[str] = ..., thing: _Optional[_Union[Thing, _Mapping]] = ...) -> None: ...

class CreateThingResponse(_message.Message):
    __slots__ = ("shelf", "thing")
    SHELF_FIELD_NUMBER: _ClassVar[int]
    THING_FIELD_NUMBER: _ClassVar[int]
    shelf: str
    thing: Thing
    def __init__(self, shelf: _Optional[str] = ..., thing: _Optional[_Union[Thing, _Mapping]] = ...) -> None: ...

class UpdateThingRequest(_message.Message):
    __slots__ = ("thing", "note")
    THING_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    thing: Thing
    note: str
    def __init__(self, thing: _Optional[_Union[Thing, _Mapping]] = ..., note: _Optional[str] = ...) -> None: ...

class UpdateThingResponse(_message.Message):
    __slots__ = ("thing", "note")
    THING_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    thing: Thing
    note: str
    def __init__(self, thing: _Optional[_Union[Thing, _Mapping]] = ..., note: _Optional[str] = ...) -> None: ...

class DeleteThingRequest(_message.Message):
    __slots__ = ("thing_id",)
    THING_ID_FIELD_NUMBER: _ClassVar[int]
    thing_id: str
    def __init__(self, thing_id: _Optional[str] = ...) -> None: ...

class DeleteThingResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FailRequest(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class FailResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamThingsRequest(_message.Message):
    __slots__ = ("shelf", "count")
    SHELF_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    shelf: str
    count: int
    def __init__(self, shelf: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class StreamThingsResponse(_message.Message):
    __slots__ = ("thing",)
    THING_FIELD_NUMBER: _ClassVar[int]
    thing: Thing
    def __init__(self, thing: _Optional[_Union[Thing, _Mapping]] = ...) -> None: ...
