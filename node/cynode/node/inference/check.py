"""The inference step: is the model service the config names answering?"""

from __future__ import annotations

import httpx

from ..capability import InferenceStatus


class InferenceUnavailable(RuntimeError):
    pass


async def check_inference(
    mode: str, url: str, *, transport: httpx.AsyncBaseTransport | None = None
) -> InferenceStatus:
    """mode none: nothing to check. existing and container: GET <url>/api/tags must
    answer with Ollama's JSON (for container, `url` is where the node's container
    answers); the models it lists go into the capability report."""
    if mode == "none":
        return InferenceStatus(running=False)
    if mode not in ("existing", "container"):
        raise InferenceUnavailable(f"inference mode {mode!r} is not supported")
    endpoint = url.rstrip("/") + "/api/tags"
    try:
        async with httpx.AsyncClient(timeout=5.0, transport=transport) as client:
            response = await client.get(endpoint)
    except httpx.HTTPError as exc:
        raise InferenceUnavailable(f"{endpoint} unreachable: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise InferenceUnavailable(f"{endpoint} answered {response.status_code}")
    try:
        models = [str(m.get("name") or m.get("model")) for m in response.json().get("models", [])]
    except (ValueError, AttributeError):
        raise InferenceUnavailable(f"{endpoint} did not answer with Ollama's JSON") from None
    return InferenceStatus(running=True, models=models)
