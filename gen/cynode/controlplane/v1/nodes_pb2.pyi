import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeIdentity(_message.Message):
    __slots__ = ("node_slug", "name", "labels")
    NODE_SLUG_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    node_slug: str
    name: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_slug: _Optional[str] = ..., name: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class Platform(_message.Message):
    __slots__ = ("os", "arch", "distro", "kernel_version")
    OS_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    DISTRO_FIELD_NUMBER: _ClassVar[int]
    KERNEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    os: str
    arch: str
    distro: str
    kernel_version: str
    def __init__(self, os: _Optional[str] = ..., arch: _Optional[str] = ..., distro: _Optional[str] = ..., kernel_version: _Optional[str] = ...) -> None: ...

class ContainerRuntime(_message.Message):
    __slots__ = ("runtime", "version")
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    runtime: str
    version: str
    def __init__(self, runtime: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class Compute(_message.Message):
    __slots__ = ("cpu_cores", "ram_mb", "storage_free_mb")
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    RAM_MB_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FREE_MB_FIELD_NUMBER: _ClassVar[int]
    cpu_cores: int
    ram_mb: int
    storage_free_mb: int
    def __init__(self, cpu_cores: _Optional[int] = ..., ram_mb: _Optional[int] = ..., storage_free_mb: _Optional[int] = ...) -> None: ...

class Gpu(_message.Message):
    __slots__ = ("present",)
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    present: bool
    def __init__(self, present: _Optional[bool] = ...) -> None: ...

class SandboxCapability(_message.Message):
    __slots__ = ("supported", "features", "max_concurrency", "warm_sandboxes")
    SUPPORTED_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    WARM_SANDBOXES_FIELD_NUMBER: _ClassVar[int]
    supported: bool
    features: _containers.RepeatedScalarFieldContainer[str]
    max_concurrency: int
    warm_sandboxes: _containers.RepeatedCompositeFieldContainer[WarmSandboxClass]
    def __init__(self, supported: _Optional[bool] = ..., features: _Optional[_Iterable[str]] = ..., max_concurrency: _Optional[int] = ..., warm_sandboxes: _Optional[_Iterable[_Union[WarmSandboxClass, _Mapping]]] = ...) -> None: ...

class WarmSandboxClass(_message.Message):
    __slots__ = ("sandbox_class", "image", "size", "ready")
    SANDBOX_CLASS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    sandbox_class: str
    image: str
    size: int
    ready: int
    def __init__(self, sandbox_class: _Optional[str] = ..., image: _Optional[str] = ..., size: _Optional[int] = ..., ready: _Optional[int] = ...) -> None: ...

class InferenceCapability(_message.Message):
    __slots__ = ("supported", "mode", "existing_service", "running", "models", "max_concurrency")
    SUPPORTED_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    EXISTING_SERVICE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    supported: bool
    mode: str
    existing_service: bool
    running: bool
    models: _containers.RepeatedScalarFieldContainer[str]
    max_concurrency: int
    def __init__(self, supported: _Optional[bool] = ..., mode: _Optional[str] = ..., existing_service: _Optional[bool] = ..., running: _Optional[bool] = ..., models: _Optional[_Iterable[str]] = ..., max_concurrency: _Optional[int] = ...) -> None: ...

class WorkerApi(_message.Message):
    __slots__ = ("base_url",)
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    base_url: str
    def __init__(self, base_url: _Optional[str] = ...) -> None: ...

class CapabilityReport(_message.Message):
    __slots__ = ("version", "reported_at", "node", "platform", "container_runtime", "compute", "gpu", "sandbox", "inference", "worker_api")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_RUNTIME_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_FIELD_NUMBER: _ClassVar[int]
    WORKER_API_FIELD_NUMBER: _ClassVar[int]
    version: int
    reported_at: _timestamp_pb2.Timestamp
    node: NodeIdentity
    platform: Platform
    container_runtime: ContainerRuntime
    compute: Compute
    gpu: Gpu
    sandbox: SandboxCapability
    inference: InferenceCapability
    worker_api: WorkerApi
    def __init__(self, version: _Optional[int] = ..., reported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., node: _Optional[_Union[NodeIdentity, _Mapping]] = ..., platform: _Optional[_Union[Platform, _Mapping]] = ..., container_runtime: _Optional[_Union[ContainerRuntime, _Mapping]] = ..., compute: _Optional[_Union[Compute, _Mapping]] = ..., gpu: _Optional[_Union[Gpu, _Mapping]] = ..., sandbox: _Optional[_Union[SandboxCapability, _Mapping]] = ..., inference: _Optional[_Union[InferenceCapability, _Mapping]] = ..., worker_api: _Optional[_Union[WorkerApi, _Mapping]] = ...) -> None: ...

class RegisterNodeRequest(_message.Message):
    __slots__ = ("psk", "capability")
    PSK_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    psk: str
    capability: CapabilityReport
    def __init__(self, psk: _Optional[str] = ..., capability: _Optional[_Union[CapabilityReport, _Mapping]] = ...) -> None: ...

class OrchestratorEndpoints(_message.Message):
    __slots__ = ("control_plane_grpc", "control_plane_rest")
    CONTROL_PLANE_GRPC_FIELD_NUMBER: _ClassVar[int]
    CONTROL_PLANE_REST_FIELD_NUMBER: _ClassVar[int]
    control_plane_grpc: str
    control_plane_rest: str
    def __init__(self, control_plane_grpc: _Optional[str] = ..., control_plane_rest: _Optional[str] = ...) -> None: ...

class OrchestratorInfo(_message.Message):
    __slots__ = ("base_url", "endpoints")
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    base_url: str
    endpoints: OrchestratorEndpoints
    def __init__(self, base_url: _Optional[str] = ..., endpoints: _Optional[_Union[OrchestratorEndpoints, _Mapping]] = ...) -> None: ...

class NodeAuth(_message.Message):
    __slots__ = ("node_jwt", "expires_at")
    NODE_JWT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    node_jwt: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, node_jwt: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RegisterNodeResponse(_message.Message):
    __slots__ = ("version", "issued_at", "orchestrator", "auth", "initial_config_version", "node_id")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    ORCHESTRATOR_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    INITIAL_CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    version: int
    issued_at: _timestamp_pb2.Timestamp
    orchestrator: OrchestratorInfo
    auth: NodeAuth
    initial_config_version: str
    node_id: str
    def __init__(self, version: _Optional[int] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., orchestrator: _Optional[_Union[OrchestratorInfo, _Mapping]] = ..., auth: _Optional[_Union[NodeAuth, _Mapping]] = ..., initial_config_version: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class ReportCapabilityRequest(_message.Message):
    __slots__ = ("capability", "version", "reported_at", "node", "platform", "container_runtime", "compute", "gpu", "sandbox", "inference", "worker_api")
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_RUNTIME_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_FIELD_NUMBER: _ClassVar[int]
    WORKER_API_FIELD_NUMBER: _ClassVar[int]
    capability: CapabilityReport
    version: int
    reported_at: _timestamp_pb2.Timestamp
    node: NodeIdentity
    platform: Platform
    container_runtime: ContainerRuntime
    compute: Compute
    gpu: Gpu
    sandbox: SandboxCapability
    inference: InferenceCapability
    worker_api: WorkerApi
    def __init__(self, capability: _Optional[_Union[CapabilityReport, _Mapping]] = ..., version: _Optional[int] = ..., reported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., node: _Optional[_Union[NodeIdentity, _Mapping]] = ..., platform: _Optional[_Union[Platform, _Mapping]] = ..., container_runtime: _Optional[_Union[ContainerRuntime, _Mapping]] = ..., compute: _Optional[_Union[Compute, _Mapping]] = ..., gpu: _Optional[_Union[Gpu, _Mapping]] = ..., sandbox: _Optional[_Union[SandboxCapability, _Mapping]] = ..., inference: _Optional[_Union[InferenceCapability, _Mapping]] = ..., worker_api: _Optional[_Union[WorkerApi, _Mapping]] = ...) -> None: ...

class ReportCapabilityResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    def __init__(self, accepted: _Optional[bool] = ...) -> None: ...

class GetNodeConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SandboxTimeouts(_message.Message):
    __slots__ = ("default_seconds", "max_seconds")
    DEFAULT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    default_seconds: int
    max_seconds: int
    def __init__(self, default_seconds: _Optional[int] = ..., max_seconds: _Optional[int] = ...) -> None: ...

class SandboxLimits(_message.Message):
    __slots__ = ("memory_mb", "cpus", "pids")
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    memory_mb: int
    cpus: float
    pids: int
    def __init__(self, memory_mb: _Optional[int] = ..., cpus: _Optional[float] = ..., pids: _Optional[int] = ...) -> None: ...

class SandboxConfig(_message.Message):
    __slots__ = ("default_image", "timeouts", "limits", "max_output_bytes")
    DEFAULT_IMAGE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    default_image: str
    timeouts: SandboxTimeouts
    limits: SandboxLimits
    max_output_bytes: int
    def __init__(self, default_image: _Optional[str] = ..., timeouts: _Optional[_Union[SandboxTimeouts, _Mapping]] = ..., limits: _Optional[_Union[SandboxLimits, _Mapping]] = ..., max_output_bytes: _Optional[int] = ...) -> None: ...

class InferenceConfig(_message.Message):
    __slots__ = ("enabled", "upstream", "allowed_models", "default_model")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    upstream: str
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    default_model: str
    def __init__(self, enabled: _Optional[bool] = ..., upstream: _Optional[str] = ..., allowed_models: _Optional[_Iterable[str]] = ..., default_model: _Optional[str] = ...) -> None: ...

class NodeConstraints(_message.Message):
    __slots__ = ("max_request_bytes", "max_job_timeout_seconds")
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_JOB_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    max_request_bytes: int
    max_job_timeout_seconds: int
    def __init__(self, max_request_bytes: _Optional[int] = ..., max_job_timeout_seconds: _Optional[int] = ...) -> None: ...

class GetNodeConfigResponse(_message.Message):
    __slots__ = ("version", "config_version", "issued_at", "node_slug", "sandbox", "inference", "constraints")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    NODE_SLUG_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    version: int
    config_version: str
    issued_at: _timestamp_pb2.Timestamp
    node_slug: str
    sandbox: SandboxConfig
    inference: InferenceConfig
    constraints: NodeConstraints
    def __init__(self, version: _Optional[int] = ..., config_version: _Optional[str] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., node_slug: _Optional[str] = ..., sandbox: _Optional[_Union[SandboxConfig, _Mapping]] = ..., inference: _Optional[_Union[InferenceConfig, _Mapping]] = ..., constraints: _Optional[_Union[NodeConstraints, _Mapping]] = ...) -> None: ...

class AckNodeConfigRequest(_message.Message):
    __slots__ = ("version", "node_slug", "config_version", "ack_at", "status", "error")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_SLUG_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACK_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    version: int
    node_slug: str
    config_version: str
    ack_at: _timestamp_pb2.Timestamp
    status: str
    error: str
    def __init__(self, version: _Optional[int] = ..., node_slug: _Optional[str] = ..., config_version: _Optional[str] = ..., ack_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class AckNodeConfigResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    def __init__(self, accepted: _Optional[bool] = ...) -> None: ...
