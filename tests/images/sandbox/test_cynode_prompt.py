"""The sandbox's prompt runner against real HTTP servers standing in for the proxy: on TCP
(OLLAMA_BASE_URL) and on a Unix socket (INFERENCE_PROXY_URL), in-process so coverage
counts it, and once as a script on the system python3 with no site-packages."""

from __future__ import annotations

import ast
import http.server
import json
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

import cynode_prompt
from tests.sourcescan import parse_source

SOURCE = Path(cynode_prompt.__file__)
# The image's python3 is Debian's, like this host's; the venv's is not what the sandbox has.
SYSTEM_PYTHON = Path("/usr/bin/python3")


@dataclass
class Seen:
    method: str
    path: str
    content_type: str | None
    body: bytes


@dataclass
class ScriptedOllama:
    """Answers /api/tags with `models` and /api/chat with `status`/`error_body`, or else
    streams `frames` chunked the way Ollama does; `cut_stream` ends the connection in the
    middle of a chunk after the frames. Records every request."""

    models: list[dict[str, str]] = field(default_factory=lambda: [{"name": "tiny:1"}])
    frames: list[bytes] = field(default_factory=list)
    status: int = 200
    error_body: bytes = b""
    cut_stream: bool = False
    seen: list[Seen] = field(default_factory=list)

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        script = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a Unix socket peer has no address to log

            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                script.seen.append(
                    Seen(self.command, self.path, self.headers.get("Content-Type"), body)
                )

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._record()
                self._send(200, json.dumps({"models": script.models}).encode())

            def do_POST(self) -> None:
                self._record()
                if script.status != 200:
                    self._send(script.status, script.error_body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for frame in script.frames:
                    line = frame + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                if script.cut_stream:
                    self.wfile.write(b'40\r\n{"message":')  # a chunk that never ends
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(b"0\r\n\r\n")

        return Handler


class _QuietWhenCutOff:
    """The runner stops reading once the model says done (or a line is bad) and closes
    the connection while the scripted server may still be writing: socketserver would
    print that BrokenPipe/ConnectionReset to the test's captured stderr."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[misc]


class TCPServer(_QuietWhenCutOff, http.server.ThreadingHTTPServer):
    pass


class UnixHTTPServer(_QuietWhenCutOff, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def frame(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.fixture
def ollama() -> ScriptedOllama:
    return ScriptedOllama()


@pytest.fixture
def tcp_url(ollama: ScriptedOllama) -> Iterator[str]:
    server = TCPServer(("127.0.0.1", 0), ollama.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def socket_url(ollama: ScriptedOllama, tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "proxy.sock"
    server = UnixHTTPServer(str(path), ollama.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # The sidecar's form: the socket path URL-encoded as the authority.
    yield "http+unix://" + quote(str(path), safe="")
    server.shutdown()
    server.server_close()


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompt.txt"
    # Shell syntax in a prompt is data: it must reach the model as written.
    path.write_text("Say hi; $(touch /tmp/pwned) `id`\n")
    return path


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OLLAMA_BASE_URL",
        "INFERENCE_PROXY_URL",
        "CYNODE_MODEL",
        "CYNODE_NUM_PREDICT",
        "CYNODE_PROMPT_TIMEOUT",
    ):
        monkeypatch.delenv(name, raising=False)


def run(prompt: Path | str) -> int:
    return cynode_prompt.main(["cynode-prompt", str(prompt)])


def test_answers_over_tcp_with_the_first_listed_model(
    ollama: ScriptedOllama,
    tcp_url: str,
    prompt_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ollama.models = [{"name": "tiny:1"}, {"name": "other:2"}]
    ollama.frames = [
        frame(message={"content": "Hel"}),
        b"",  # keep-alive blank lines are skipped
        frame(message={"content": "lo"}),
        frame(done=True),
        frame(message={"content": "after done, never printed"}),
    ]
    monkeypatch.setenv("OLLAMA_BASE_URL", tcp_url)
    monkeypatch.setenv("CYNODE_NUM_PREDICT", "8")
    assert run(prompt_file) == 0
    out = capsys.readouterr()
    assert (out.out, out.err) == ("Hello\n", "")
    tags, chat = ollama.seen
    assert (tags.method, tags.path, tags.content_type) == ("GET", "/api/tags", None)
    assert (chat.method, chat.path, chat.content_type) == ("POST", "/api/chat", "application/json")
    assert json.loads(chat.body) == {
        "model": "tiny:1",
        "messages": [{"role": "user", "content": prompt_file.read_text()}],
        "stream": True,
        "options": {"num_predict": 8},
    }


def test_answers_over_the_proxy_socket_with_the_named_model(
    ollama: ScriptedOllama,
    socket_url: str,
    prompt_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # /api/generate-style frames ("response") are read too; a reply that ends with a
    # newline gets no second one.
    ollama.frames = [frame(response="one line\n"), frame(done=True)]
    monkeypatch.setenv("INFERENCE_PROXY_URL", socket_url)
    monkeypatch.setenv("CYNODE_MODEL", "named:3")
    assert run(prompt_file) == 0
    assert capsys.readouterr().out == "one line\n"
    (chat,) = ollama.seen  # a named model needs no /api/tags
    assert json.loads(chat.body)["model"] == "named:3"
    assert "options" not in json.loads(chat.body)


def test_models_from_the_model_field_when_there_is_no_name(
    ollama: ScriptedOllama, tcp_url: str, prompt_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ollama.models = [{"model": "bare:1"}]
    ollama.frames = [frame(done=True)]
    monkeypatch.setenv("OLLAMA_BASE_URL", tcp_url)
    assert run(prompt_file) == 0
    assert json.loads(ollama.seen[-1].body)["model"] == "bare:1"


@pytest.mark.parametrize(
    ("script", "stdout", "message"),
    [
        (
            ScriptedOllama(status=404, error_body=b'{"error": "model not found"}'),
            "",
            "model service answered 404 on /api/chat: model not found",
        ),
        (
            ScriptedOllama(status=502, error_body=b"bad gateway"),
            "",
            "model service answered 502 on /api/chat: bad gateway",
        ),
        (ScriptedOllama(models=[]), "", "the model service lists no models (/api/tags)"),
        (
            ScriptedOllama(frames=[frame(message={"content": "x"}), frame(error="out of memory")]),
            "x",
            "model error: out of memory",
        ),
        (ScriptedOllama(frames=[b"<html>"]), "", "model service sent a line that is not JSON"),
        (
            ScriptedOllama(frames=[frame(message={"content": "half"})]),
            "half\n",
            "the reply stream ended before the model was done",
        ),
        (
            ScriptedOllama(frames=[frame(message={"content": "cut"})], cut_stream=True),
            "cut",
            "the reply stream broke",
        ),
    ],
    ids=["json-error", "text-error", "no-models", "frame-error", "not-json", "no-done", "cut"],
)
def test_model_service_failures_are_one_line_and_exit_1(
    script: ScriptedOllama,
    stdout: str,
    message: str,
    prompt_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = TCPServer(("127.0.0.1", 0), script.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("OLLAMA_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
        assert run(prompt_file) == 1
    finally:
        server.shutdown()
        server.server_close()
    out = capsys.readouterr()
    assert out.out == stdout
    assert out.err.startswith(f"cynode-prompt: {message}") and out.err.count("\n") == 1


def test_an_unreachable_service_is_named(
    prompt_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"  # bound, never listening
        monkeypatch.setenv("OLLAMA_BASE_URL", url)
        monkeypatch.setenv("CYNODE_MODEL", "m")
        assert run(prompt_file) == 1
    assert capsys.readouterr().err.startswith(
        f"cynode-prompt: cannot reach the model service at {url}"
    )


@pytest.mark.parametrize(
    ("env", "argv", "code", "message"),
    [
        ({}, ["cynode-prompt"], 2, "usage: cynode-prompt PROMPT_FILE"),
        ({}, ["cynode-prompt", "--help"], 2, "usage: cynode-prompt PROMPT_FILE"),
        ({}, ["cynode-prompt", "a", "b"], 2, "usage: cynode-prompt PROMPT_FILE"),
        ({}, ["cynode-prompt", "{missing}"], 2, "cynode-prompt: cannot read"),
        ({}, ["cynode-prompt", "{empty}"], 2, "cynode-prompt: the prompt is empty"),
        ({}, ["cynode-prompt", "{prompt}"], 1, "cynode-prompt: no model service: set"),
        (
            {"OLLAMA_BASE_URL": "https://host:1"},
            ["cynode-prompt", "{prompt}"],
            1,
            "cynode-prompt: OLLAMA_BASE_URL must be http://host:port, got 'https://host:1'",
        ),
        (
            {"INFERENCE_PROXY_URL": "unix:///sock"},
            ["cynode-prompt", "{prompt}"],
            1,
            "cynode-prompt: no model service",
        ),
        (
            {"OLLAMA_BASE_URL": "http://h:1", "CYNODE_PROMPT_TIMEOUT": "soon"},
            ["cynode-prompt", "{prompt}"],
            2,
            "cynode-prompt: bad setting",
        ),
        (
            {"OLLAMA_BASE_URL": "http://h:1", "CYNODE_MODEL": "m", "CYNODE_NUM_PREDICT": "lots"},
            ["cynode-prompt", "{prompt}"],
            2,
            "cynode-prompt: bad setting",
        ),
    ],
    ids=[
        "no-file",
        "help",
        "two-files",
        "missing",
        "empty",
        "no-service",
        "https",
        "not-http-unix",
        "bad-timeout",
        "bad-num-predict",
    ],
)
def test_usage_and_settings_errors_say_what_is_wrong(
    env: dict[str, str],
    argv: list[str],
    code: int,
    message: str,
    tmp_path: Path,
    prompt_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "empty.txt").write_text(" \n\t")
    paths = {
        "{missing}": str(tmp_path / "absent.txt"),
        "{empty}": str(tmp_path / "empty.txt"),
        "{prompt}": str(prompt_file),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cynode_prompt.main([paths.get(arg, arg) for arg in argv]) == code
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith(message), out.err


def test_imports_only_the_standard_library() -> None:
    tree = parse_source(SOURCE.read_text())
    names = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    names |= {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert names and names <= set(sys.stdlib_module_names) | {"__future__"}, names


@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no system python3")
def test_runs_as_a_script_on_the_system_python_without_site_packages(
    ollama: ScriptedOllama, tcp_url: str, prompt_file: Path
) -> None:
    ollama.frames = [frame(message={"content": "from the script"}), frame(done=True)]
    done = subprocess.run(
        [str(SYSTEM_PYTHON), "-I", "-S", str(SOURCE), str(prompt_file)],
        env={"OLLAMA_BASE_URL": tcp_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "from the script\n", "")
