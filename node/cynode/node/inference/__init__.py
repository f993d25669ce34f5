"""The host side of inference on the node, by `inference.mode` (none, existing, container).

    setup.py             NodeInference: brings the mode's parts up in order, gives the job
                         runner its InferencePodSettings, closes them at node stop
    check.py             check_inference: does the model service answer /api/tags, and with
                         which models (the `inference` start-up step and `doctor`)
    ollama_container.py  OllamaContainer: mode container, Ollama in a Podman container
    relay.py             InferenceRelay: the UDS the pods' sidecars forward to, relayed on
                         to Ollama

What runs inside an inference pod (pod, proxy sidecar) is the job runtime's
(`cynode.node.runtime.inference_pod`, `proxy_sidecar`); the development model that
stands in for Ollama is `cynode.node.devinference`, a server of its own.
"""

from .check import InferenceUnavailable, check_inference
from .ollama_container import OllamaContainer
from .relay import InferenceRelay
from .setup import NodeInference

__all__ = [
    "InferenceRelay",
    "InferenceUnavailable",
    "NodeInference",
    "OllamaContainer",
    "check_inference",
]
