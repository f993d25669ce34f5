#!/usr/bin/python3
"""cynode-prompt FILE: send the prompt in FILE to the node's model, print the reply.

Runs inside the sandbox of a prompt job (python3 stdlib only). The prompt is read from a
file and sent as data in a JSON body; it is never run or expanded by a shell.

Where:  $OLLAMA_BASE_URL (http://localhost:11434 in an inference pod), else
        $INFERENCE_PROXY_URL (http+unix://<url-encoded socket path>).
Model:  $CYNODE_MODEL, else the first model the proxy lists at /api/tags.
Tuning: $CYNODE_NUM_PREDICT (max tokens), $CYNODE_PROMPT_TIMEOUT (seconds, default 600).
The reply streams to stdout as the model produces it (/api/chat, stream true).
Exit codes: 0 answered; 1 the model service failed or could not be reached; 2 bad usage.

The image build installs this file as /usr/local/bin/cynode-prompt (tools/build_images.sh);
it must keep to the standard library of the image's python3 (Debian's 3.11).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

NAME = "cynode-prompt"


class Failure(Exception):
    """One readable line for stderr."""


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def connection(timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection to the model service, and where it goes (for messages)."""
    base = os.environ.get("OLLAMA_BASE_URL", "").strip()
    if base:
        parts = urlsplit(base)
        if parts.scheme != "http" or not parts.hostname:
            raise Failure(f"OLLAMA_BASE_URL must be http://host:port, got {base!r}")
        return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout), base
    proxy = os.environ.get("INFERENCE_PROXY_URL", "").strip()
    if proxy.startswith("http+unix://"):
        path = unquote(proxy[len("http+unix://") :].split("/", 1)[0])
        return UnixHTTPConnection(path, timeout), proxy
    raise Failure("no model service: set OLLAMA_BASE_URL or INFERENCE_PROXY_URL")


def request(
    timeout: float, method: str, path: str, body: bytes | None = None
) -> http.client.HTTPResponse:
    """Open one request; the response (status 200) for the caller to read."""
    conn, where = connection(timeout)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        raise Failure(f"cannot reach the model service at {where}: {exc}") from None
    if response.status != 200:
        detail = response.read(2000).decode("utf-8", "replace").strip()
        with contextlib.suppress(ValueError, AttributeError):  # not Ollama's JSON error
            detail = json.loads(detail).get("error", detail)
        raise Failure(f"model service answered {response.status} on {path}: {detail}")
    return response


def pick_model(timeout: float) -> str:
    model = os.environ.get("CYNODE_MODEL", "").strip()
    if model:
        return model
    response = request(timeout, "GET", "/api/tags")
    try:
        models = json.loads(response.read()).get("models") or []
        return str(models[0].get("name") or models[0]["model"])
    except (ValueError, AttributeError, IndexError, KeyError, TypeError):
        raise Failure("the model service lists no models (/api/tags)") from None


def ask(prompt: str, model: str, timeout: float) -> None:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
    }
    num_predict = os.environ.get("CYNODE_NUM_PREDICT", "").strip()
    if num_predict:
        body["options"] = {"num_predict": int(num_predict)}
    response = request(timeout, "POST", "/api/chat", json.dumps(body).encode())
    out = sys.stdout
    wrote_any = False
    ended_with_newline = True
    done = False
    try:
        for raw in response:
            line = raw.strip()
            if not line:
                continue
            try:
                frame = json.loads(line)
            except ValueError:
                raise Failure("model service sent a line that is not JSON") from None
            if frame.get("error"):
                raise Failure(f"model error: {frame['error']}")
            text = (frame.get("message") or {}).get("content") or frame.get("response") or ""
            if text:
                out.write(text)
                out.flush()
                wrote_any = True
                ended_with_newline = text.endswith("\n")
            if frame.get("done"):
                done = True
                break
    except (OSError, http.client.HTTPException) as exc:
        raise Failure(f"the reply stream broke: {exc}") from None
    if wrote_any and not ended_with_newline:
        out.write("\n")
    if not done:
        raise Failure("the reply stream ended before the model was done")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        sys.stderr.write(f"usage: {NAME} PROMPT_FILE\n")
        return 2
    try:
        prompt = Path(argv[1]).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        sys.stderr.write(f"{NAME}: cannot read {argv[1]}: {exc.strerror}\n")
        return 2
    if not prompt.strip():
        sys.stderr.write(f"{NAME}: the prompt is empty\n")
        return 2
    try:
        timeout = float(os.environ.get("CYNODE_PROMPT_TIMEOUT", "600"))
        model = pick_model(timeout)
        ask(prompt, model, timeout)
    except Failure as exc:
        sys.stdout.flush()
        sys.stderr.write(f"{NAME}: {exc}\n")
        return 1
    except ValueError as exc:
        sys.stderr.write(f"{NAME}: bad setting: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
