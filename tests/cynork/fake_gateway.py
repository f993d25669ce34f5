"""A test double of the user gateway's REST surface (SPEC §2), small and stateful.

Used two ways: as a `cynork._http.MockTransport` handler for in-process tests, and behind a
real `http.server` on 127.0.0.1 for the shell tests that run `cynork` in tmux. The real
orchestrator is exercised by the behave suite in features/cynork.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cynork._http import ConnectError, MockTransport, Request, Response

TERMINAL = {"completed", "failed", "canceled"}
Reply = tuple[int, dict[str, str], bytes]


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    return (
        status,
        {"content-type": "application/json", **(headers or {})},
        json.dumps(body).encode(),
    )


def problem(
    status: int, title: str, detail: str = "", headers: dict[str, str] | None = None
) -> Reply:
    body = {"type": f"https://cynode.dev/problems/{status}", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return (
        status,
        {"content-type": "application/problem+json", **(headers or {})},
        json.dumps(body).encode(),
    )


@dataclass
class FakeGateway:
    password: str = "s3cret"
    ready: bool = True
    version: str = "9.8.7"
    # How many result polls a new task stays non-terminal (queued, then running).
    polls_to_finish: int = 2
    # The watch stream ends after the current status, without the terminal event (as a
    # cut stream does), and leaves the task as it is; else it runs the task to the end.
    watch_holds: bool = False
    # The terminal watch event carries the result when asked (`?include_result=true`),
    # as the real gateway does; False plays an older gateway that ignores the ask.
    watch_sends_result: bool = True
    stdout: str = "hello from the sandbox\n"
    stderr: str = ""
    requests: list[tuple[str, str]] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)
    inject: dict[tuple[str, str], Reply] = field(default_factory=dict)
    # Paths whose requests fail as a refused connection would.
    unreachable: set[str] = field(default_factory=set)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    access: set[str] = field(default_factory=set)
    refresh: set[str] = field(default_factory=set)
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- helpers for tests ---------------------------------------------------------

    def issue(self) -> tuple[str, str]:
        n = next(self._counter)
        access, refresh = f"acc-{n}", f"ref-{n}"
        self.access.add(access)
        self.refresh.add(refresh)
        return access, refresh

    def expire_access_tokens(self) -> None:
        self.access.clear()

    def add_task(self, status: str = "queued", name: str | None = None, **extra: Any) -> str:
        n = next(self._counter)
        task_id = f"01HTASK{n:019d}"
        self.tasks[task_id] = {
            "task_id": task_id,
            "task_name": name,
            "status": status,
            "input_mode": "prompt",
            "created_at": f"2025-01-01T00:00:{n % 60:02d}Z",
            "updated_at": f"2025-01-01T00:00:{n % 60:02d}Z",
            "polls": 0,
            **extra,
        }
        return task_id

    def paths(self) -> list[str]:
        return [p for _, p in self.requests]

    # -- the surface -------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        with self._lock:
            return self._handle(method, target, {k.lower(): v for k, v in headers.items()}, raw)

    def _handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        parts = urlsplit(target)
        path = parts.path
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.requests.append((method, path))
        body: Any = json.loads(raw) if raw else None
        self.bodies.append(body)
        if (method, path) in self.inject:
            return self.inject[(method, path)]
        if path == "/healthz":
            return 200, {"content-type": "text/plain"}, b"ok"
        if path == "/readyz":
            if self.ready:
                return 200, {"content-type": "text/plain"}, b"ready"
            return 503, {"content-type": "text/plain"}, b"no inference path"
        if path == "/openapi.json":
            return _json(
                200, {"openapi": "3.1.0", "info": {"title": "cynode", "version": self.version}}
            )
        if path == "/v1/auth/login" and method == "POST":
            if body.get("handle") != "admin" or body.get("password") != self.password:
                return problem(401, "Unauthorized", "wrong handle or password")
            access, refresh = self.issue()
            return _json(200, self._pair(access, refresh))
        if path == "/v1/auth/refresh" and method == "POST":
            old = body.get("refresh_token")
            if old not in self.refresh:
                return problem(401, "Unauthorized", "refresh token not valid")
            self.refresh.discard(old)
            return _json(200, self._pair(*self.issue()))
        if path == "/v1/auth/logout" and method == "POST":
            old = body.get("refresh_token")
            if old not in self.refresh:
                return problem(401, "Unauthorized")
            self.refresh.discard(old)
            return 204, {}, b""
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.access:
            return problem(401, "Unauthorized", "missing or expired token")
        if path == "/v1/users/me":
            return _json(
                200, {"id": "01HUSER", "handle": "admin", "is_active": True, "is_admin": True}
            )
        if path == "/v1/tasks" and method == "POST":
            return self._create(body)
        if path == "/v1/tasks" and method == "GET":
            return self._list(query)
        if path.startswith("/v1/tasks/"):
            return self._task_call(method, path[len("/v1/tasks/") :], query)
        return problem(404, "Not Found", f"no route {path}")

    def _pair(self, access: str, refresh: str) -> dict[str, Any]:
        return {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": 900,
        }

    def _create(self, body: dict[str, Any]) -> Reply:
        modes = [m for m in ("prompt", "script", "commands") if body.get(m)]
        if len(modes) != 1 or body.get("input_mode", "prompt") != modes[0]:
            return problem(400, "Bad Request", "exactly one input mode")
        name = body.get("task_name")
        names = [a["name"] for a in body.get("attachments", [])]
        task_id = self.add_task(name=name, input_mode=modes[0], attachments=names)
        reply = {"task_id": task_id, "task_name": name, "status": "queued", "attachments": names}
        return _json(201, reply)

    def _public(self, task: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in task.items() if k != "polls" and v is not None}

    def _list(self, query: dict[str, str]) -> Reply:
        items = [self._public(t) for t in reversed(self.tasks.values())]
        if query.get("status"):
            items = [t for t in items if t["status"] == query["status"]]
        start = int(query.get("cursor") or 0)
        limit = int(query.get("limit") or 50)
        page = items[start : start + limit]
        nxt = str(start + limit) if start + limit < len(items) else ""
        return _json(200, {"tasks": page, "next_cursor": nxt})

    def _find(self, ref: str) -> dict[str, Any] | None:
        ref = unquote(ref)
        if ref in self.tasks:
            return self.tasks[ref]
        return next((t for t in self.tasks.values() if t.get("task_name") == ref), None)

    def _advance(self, task: dict[str, Any]) -> None:
        if task["status"] in TERMINAL:
            return
        task["polls"] += 1
        if task["polls"] >= self.polls_to_finish:
            task["status"] = "completed"
        elif task["polls"] >= 1:
            task["status"] = "running"

    def _result(self, task: dict[str, Any]) -> dict[str, Any]:
        done = task["status"] in TERMINAL
        result = {
            "task_id": task["task_id"],
            "task_name": task.get("task_name"),
            "status": task["status"],
            "jobs": [{"id": "01HJOB", "status": task["status"], "exit_code": 0}],
            "stdout": self.stdout if done else "",
            "stderr": self.stderr if done else "",
        }
        return {k: v for k, v in result.items() if v is not None}

    def _task_call(self, method: str, rest: str, query: dict[str, str]) -> Reply:
        ref, _, action = rest.partition("/")
        task = self._find(ref)
        if task is None:
            return problem(404, "Not Found", f"task {unquote(ref)} not found")
        if action == "" and method == "GET":
            # SPEC §2: the task object itself, as the real gateway's FetchTask answers.
            return _json(200, self._public(task))
        if action == "result":
            self._advance(task)
            return _json(200, self._result(task))
        if action == "" and method == "DELETE":
            if task["status"] not in TERMINAL:
                return problem(409, "Conflict", "task is running; cancel it before deleting it")
            del self.tasks[task["task_id"]]
            return _json(200, {"task_id": task["task_id"], "deleted": True})
        if action == "cancel" and method == "POST":
            if task["status"] in TERMINAL:
                return problem(409, "Conflict", "task is terminal")
            task["status"] = "canceled"
            return _json(200, {"task_id": task["task_id"], "canceled": True})
        if action == "logs":
            stream = query.get("stream", "stdout")
            logs: dict[str, Any] = {"task_id": task["task_id"], "stream": stream}
            if task.get("task_name"):
                logs["task_name"] = task["task_name"]
            if stream == "all":
                lines = [*self.stdout.splitlines(), *self.stderr.splitlines()]
                logs.update(lines=lines, stdout=self.stdout, stderr=self.stderr)
            elif stream in ("stdout", "stderr"):
                logs["lines"] = (self.stdout if stream == "stdout" else self.stderr).splitlines()
            else:
                return problem(400, "Bad Request", "stream must be stdout, stderr or all")
            return _json(200, logs)
        if action == "watch" and self.watch_holds:
            event = {"task_id": task["task_id"], "status": task["status"]}
            return 200, {"content-type": "application/x-ndjson"}, json.dumps(event).encode() + b"\n"
        if action == "watch":
            events = [
                {"task_id": task["task_id"], "status": "running"},
                {
                    "task_id": task["task_id"],
                    "status": "running",
                    "stream": "stdout",
                    "chunk": self.stdout,
                },
                {
                    "task_id": task["task_id"],
                    "status": "running",
                    "stream": "stderr",
                    "chunk": "warn\n",
                },
                {"task_id": task["task_id"], "status": "completed", "terminal": True},
            ]
            task["status"] = "completed"
            if self.watch_sends_result and query.get("include_result") == "true":
                events[-1]["task_result"] = self._result(task)
            data = "".join(json.dumps(e) + "\n" for e in events).encode()
            return 200, {"content-type": "application/x-ndjson"}, data
        return problem(404, "Not Found", "no such task call")

    # -- adapters ------------------------------------------------------------------

    def transport(self) -> MockTransport:
        def handler(request: Request) -> Response:
            if request.path in self.unreachable:
                raise ConnectError("[Errno 111] Connection refused")
            status, headers, data = self.handle(
                request.method, request.target, dict(request.headers), request.read()
            )
            return Response(status, headers=headers, content=data)

        return MockTransport(handler)

    def serve(self) -> ThreadingHTTPServer:
        """A real HTTP server on 127.0.0.1 (ephemeral port) in a daemon thread."""
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, headers, data = gateway.handle(
                    self.command, self.path, dict(self.headers), raw
                )
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server
