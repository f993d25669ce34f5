from cynode.controlplane.v1 import nodes_pb2 as _nodes_pb2
from cynode.inference.v1 import chat_pb2 as _chat_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LinkHello(_message.Message):
    __slots__ = ("node_slug", "inference")
    NODE_SLUG_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_FIELD_NUMBER: _ClassVar[int]
    node_slug: str
    inference: _nodes_pb2.InferenceCapability
    def __init__(self, node_slug: _Optional[str] = ..., inference: _Optional[_Union[_nodes_pb2.InferenceCapability, _Mapping]] = ...) -> None: ...

class CallChunk(_message.Message):
    __slots__ = ("call_id", "chunk")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    chunk: _chat_pb2.ChatChunk
    def __init__(self, call_id: _Optional[str] = ..., chunk: _Optional[_Union[_chat_pb2.ChatChunk, _Mapping]] = ...) -> None: ...

class CallEmbeddings(_message.Message):
    __slots__ = ("call_id", "result")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    result: _chat_pb2.EmbeddingsResult
    def __init__(self, call_id: _Optional[str] = ..., result: _Optional[_Union[_chat_pb2.EmbeddingsResult, _Mapping]] = ...) -> None: ...

class CallFailed(_message.Message):
    __slots__ = ("call_id", "kind", "message")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    kind: str
    message: str
    def __init__(self, call_id: _Optional[str] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ServeRequest(_message.Message):
    __slots__ = ("hello", "chunk", "embeddings", "call_failed")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    CALL_FAILED_FIELD_NUMBER: _ClassVar[int]
    hello: LinkHello
    chunk: CallChunk
    embeddings: CallEmbeddings
    call_failed: CallFailed
    def __init__(self, hello: _Optional[_Union[LinkHello, _Mapping]] = ..., chunk: _Optional[_Union[CallChunk, _Mapping]] = ..., embeddings: _Optional[_Union[CallEmbeddings, _Mapping]] = ..., call_failed: _Optional[_Union[CallFailed, _Mapping]] = ...) -> None: ...

class LinkHelloAck(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class ChatCall(_message.Message):
    __slots__ = ("call_id", "chat")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    chat: _chat_pb2.ChatRequest
    def __init__(self, call_id: _Optional[str] = ..., chat: _Optional[_Union[_chat_pb2.ChatRequest, _Mapping]] = ...) -> None: ...

class EmbeddingsCall(_message.Message):
    __slots__ = ("call_id", "embeddings")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    embeddings: _chat_pb2.EmbeddingsRequest
    def __init__(self, call_id: _Optional[str] = ..., embeddings: _Optional[_Union[_chat_pb2.EmbeddingsRequest, _Mapping]] = ...) -> None: ...

class CancelCall(_message.Message):
    __slots__ = ("call_id",)
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    def __init__(self, call_id: _Optional[str] = ...) -> None: ...

class ServeResponse(_message.Message):
    __slots__ = ("hello_ack", "chat", "embeddings", "cancel")
    HELLO_ACK_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    hello_ack: LinkHelloAck
    chat: ChatCall
    embeddings: EmbeddingsCall
    cancel: CancelCall
    def __init__(self, hello_ack: _Optional[_Union[LinkHelloAck, _Mapping]] = ..., chat: _Optional[_Union[ChatCall, _Mapping]] = ..., embeddings: _Optional[_Union[EmbeddingsCall, _Mapping]] = ..., cancel: _Optional[_Union[CancelCall, _Mapping]] = ...) -> None: ...
