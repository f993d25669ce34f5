"""The user gateway's REST surface as plain method calls.

`GatewayClient` takes a `cynork._http.Transport`, so tests hand it a `MockTransport`
instead of patching internals; by default it speaks HTTP/1.1 itself (`cynork._http`).
It maps every non-2xx answer and every transport failure to a `CynorkError` with the
right exit code, refreshes the session once on a 401, and refuses to put a password
or token on plain http to a host other than loopback.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from cynork._api import LOG_STREAMS, TASK_STATUSES, TERMINAL_STATUSES, JSONDict
from cynork._errors import (
    AuthError,
    ConflictError,
    GatewayError,
    NotFoundError,
    UsageError,
    ValidationError,
)
from cynork._http import (
    ConnectError,
    HTTPTransport,
    Request,
    Response,
    TimeoutException,
    Transport,
    TransportError,
    default_ssl_context,
    encode_json,
    encode_query,
    quote_segment,
    split_url,
)

# The gateway's largest page (SPEC §2.5).
MAX_PAGE = 200
# The longest one artifact listing is held by the gateway (SPEC §2.11, wait_seconds).
MAX_ARTIFACT_WAIT = 10

TokenSaver = Callable[[str, str], None]
# Named here too (their home is cynork._api), for callers of the client alone.
__all__ = ["LOG_STREAMS", "TASK_STATUSES", "TERMINAL_STATUSES", "GatewayClient", "JSONDict"]

_LOGIN_HINT = "run `cynork auth login`"
# A chat may wait in the gateway's fair queue before the first token; allow for it.
CHAT_S = 600.0


def _octet(part: str) -> bool:
    """A part of a dotted quad as ipaddress reads one: 0-255, no leading zero."""
    return (
        part.isdigit() and part.isascii() and int(part) <= 255 and (part == "0" or part[0] != "0")
    )


def is_loopback_host(host: str) -> bool:
    host = host.lower().strip("[]")
    if host == "localhost" or host == "::1":
        return True
    quad = host.split(".")
    if len(quad) == 4 and all(_octet(part) for part in quad):
        return quad[0] == "127"  # what ipaddress says of a dotted quad, without its import
    import ipaddress  # only for other addresses: ~1 ms the usual gateway URLs skip

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _problem_text(resp: Response) -> tuple[str, str]:
    """(title, detail) from a problem+json body, or the best a plain body offers."""
    title = resp.reason_phrase or f"HTTP {resp.status_code}"
    detail = ""
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError):
        detail = resp.text.strip()[:200]
    else:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            # An OpenAI error object, what the gateway's /v1/chat/... door answers.
            detail = str(body["error"].get("message") or "")
        elif isinstance(body, dict):
            title = str(body.get("title") or title)
            detail = str(body.get("detail") or "")
        else:
            detail = str(body)[:200]
    return title, detail


def _retry_after(resp: Response) -> str | None:
    value = resp.headers.get("retry-after", "").strip()
    return value or None


def raise_for_status(resp: Response, what: str | None = None) -> None:
    """Turns an error answer into the `CynorkError` whose exit code the spec names."""
    if resp.is_success:
        return
    status = resp.status_code
    title, detail = _problem_text(resp)
    said = f"{title}: {detail}" if detail and detail != title else title
    if status == 401:
        raise AuthError(f"not authorized ({said}); {_LOGIN_HINT}")
    if status == 403:
        raise AuthError(f"forbidden: {said}")
    if status == 404:
        raise NotFoundError(f"{what} not found" if what else f"not found: {said}")
    if status == 413:
        raise ValidationError(f"request too large: {said}")
    if status in (400, 422):
        raise ValidationError(f"the gateway refused the request: {said}")
    if status == 429:
        # The title is "Too many requests" again; the detail says what was limited.
        wait = _retry_after(resp)
        hint = f"retry after {wait} seconds" if wait else "retry later"
        raise GatewayError(f"too many requests: {detail or title} ({hint})")
    if status == 409:
        raise ConflictError(f"conflict: {said}")
    raise GatewayError(f"gateway error {status}: {said}")


def _json_body(resp: Response) -> JSONDict:
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise GatewayError(
            f"the gateway sent something that is not JSON (HTTP {resp.status_code})"
        ) from exc
    if not isinstance(body, dict):
        raise GatewayError("the gateway sent JSON that is not an object")
    return body


def _task_path(task_id: str, suffix: str = "") -> str:
    return f"/v1/tasks/{quote_segment(task_id)}{suffix}"


def _ref_path(kind: str, ref: str, action: str = "") -> str:
    return f"/v1/{kind}/{quote_segment(ref)}" + (f"/{action}" if action else "")


class GatewayClient:
    """One session against the user gateway's REST surface."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        refresh_token: str | None = None,
        transport: Transport | None = None,
        on_tokens: TokenSaver | None = None,
        ca_file: str | None = None,
        insecure: bool = False,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.refresh_token = refresh_token
        self._on_tokens = on_tokens
        self._insecure = insecure
        self._timeout = timeout
        context = None
        if ca_file:
            # Read now, as the user named it: a bad file is a usage error at once.
            try:
                made = default_ssl_context(ca_file)
            except OSError as exc:  # ssl.SSLError among them
                raise UsageError(f"cannot use CA file {ca_file}: {exc}") from exc
            context = lambda: made  # noqa: E731
        # Without a CA file, the default trust is loaded on the first https connection.
        self._transport: Transport = transport or HTTPTransport(ssl_context=context)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------

    def _guard_credentials(self) -> None:
        parts = split_url(self.base_url)
        host = parts.hostname or ""
        if parts.scheme == "http" and not is_loopback_host(host) and not self._insecure:
            raise UsageError(
                f"refusing to send credentials over plain http to {host}: anyone on the "
                "network could read them; use an https:// gateway URL, or --insecure to "
                "accept that risk"
            )

    def _describe_transport_error(self, exc: TransportError) -> str:
        if isinstance(exc, TimeoutException):
            return f"the gateway at {self.base_url} did not answer in time"
        if isinstance(exc, ConnectError):
            reason = str(exc) or type(exc).__name__
            return f"cannot reach the gateway at {self.base_url}: {reason}"
        return f"talking to the gateway at {self.base_url} failed: {exc or type(exc).__name__}"

    def _build(
        self,
        method: str,
        path: str,
        json_body: Mapping[str, Any] | None,
        params: Mapping[str, str | int] | None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Request:
        url = self.base_url + path
        if params:
            url += "?" + encode_query(params)
        all_headers = {"accept": "application/json", **(headers or {})}
        content = b""
        if json_body is not None:
            content = encode_json(json_body)
            all_headers["content-type"] = "application/json"
        return Request(
            method,
            url,
            headers=all_headers,
            content=content,
            timeout=timeout or self._timeout,
        )

    def _send(self, request: Request, *, stream: bool = False) -> Response:
        try:
            resp = self._transport.handle_request(request)
            if not stream:
                resp.read()
        except TransportError as exc:
            raise GatewayError(self._describe_transport_error(exc)) from exc
        return resp

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str | int] | None = None,
        authed: bool = True,
        stream: bool = False,
        timeout: float | None = None,
    ) -> Response:
        """Sends one call; with `authed`, refreshes once on a 401 and retries."""
        if not authed:
            return self._send(self._build(method, path, json_body, params), stream=stream)
        if not self.token:
            if not self.refresh_token:
                raise AuthError(f"not logged in; {_LOGIN_HINT}")
            self.refresh()
        self._guard_credentials()
        resp = self._send(
            self._authed_request(method, path, json_body, params, timeout), stream=stream
        )
        if resp.status_code == 401 and self.refresh_token:
            resp.close()
            self.refresh()
            resp = self._send(
                self._authed_request(method, path, json_body, params, timeout), stream=stream
            )
        if resp.status_code == 401:
            resp.close()
            raise AuthError(f"your session has expired or was revoked; {_LOGIN_HINT}")
        return resp

    def _authed_request(
        self,
        method: str,
        path: str,
        json_body: Mapping[str, Any] | None,
        params: Mapping[str, str | int] | None,
        timeout: float | None = None,
    ) -> Request:
        auth = {"authorization": f"Bearer {self.token}"}
        return self._build(method, path, json_body, params, auth, timeout)

    def _store_tokens(self, body: JSONDict) -> None:
        access = body.get("access_token")
        refresh = body.get("refresh_token")
        if not isinstance(access, str) or not isinstance(refresh, str) or not access:
            raise GatewayError("the gateway's token answer lacks access_token or refresh_token")
        self.token, self.refresh_token = access, refresh
        if self._on_tokens is not None:
            self._on_tokens(access, refresh)

    # -- health ------------------------------------------------------------------

    def _probe(self, path: str) -> tuple[bool, str]:
        resp = self._request("GET", path, authed=False)
        if resp.is_success:
            return True, resp.text.strip() or "ok"
        title, detail = _problem_text(resp)
        return False, detail or title

    def healthz(self) -> tuple[bool, str]:
        """(ok, text) of GET /healthz; transport failures raise GatewayError."""
        return self._probe("/healthz")

    def readyz(self) -> tuple[bool, str]:
        """(ready, text) of GET /readyz; a 503 names what is missing."""
        return self._probe("/readyz")

    def server_version(self) -> str | None:
        """The gateway's version from its OpenAPI document, or None when it has none."""
        resp = self._request("GET", "/openapi.json", authed=False)
        if not resp.is_success:
            return None
        try:
            info = _json_body(resp).get("info")
        except GatewayError:
            return None
        version = info.get("version") if isinstance(info, dict) else None
        return str(version) if version else None

    # -- auth --------------------------------------------------------------------

    def login(self, handle: str, password: str) -> JSONDict:
        self._guard_credentials()
        resp = self._request(
            "POST",
            "/v1/auth/login",
            json_body={"handle": handle, "password": password},
            authed=False,
        )
        if resp.status_code == 401:
            raise AuthError("login failed: wrong user or password")
        raise_for_status(resp)
        body = _json_body(resp)
        self._store_tokens(body)
        return body

    def refresh(self) -> JSONDict:
        if not self.refresh_token:
            raise AuthError(f"no refresh token stored; {_LOGIN_HINT}")
        self._guard_credentials()
        resp = self._request(
            "POST",
            "/v1/auth/refresh",
            json_body={"refresh_token": self.refresh_token},
            authed=False,
        )
        if resp.status_code == 401:
            raise AuthError(f"your session has expired or was revoked; {_LOGIN_HINT}")
        raise_for_status(resp)
        body = _json_body(resp)
        self._store_tokens(body)
        return body

    def logout(self) -> None:
        """Revokes the session; a session the gateway already forgot counts as done."""
        if not self.refresh_token:
            return
        self._guard_credentials()
        resp = self._request(
            "POST",
            "/v1/auth/logout",
            json_body={"refresh_token": self.refresh_token},
            authed=False,
        )
        if resp.status_code != 401:
            raise_for_status(resp)

    def whoami(self) -> JSONDict:
        resp = self._request("GET", "/v1/users/me")
        raise_for_status(resp)
        return _json_body(resp)

    # -- tasks -------------------------------------------------------------------

    def create_task(self, body: Mapping[str, Any]) -> JSONDict:
        resp = self._request("POST", "/v1/tasks", json_body=body)
        raise_for_status(resp)
        return _json_body(resp)

    def get_task(self, task_id: str) -> JSONDict:
        resp = self._request("GET", _task_path(task_id))
        raise_for_status(resp, f"task {task_id}")
        task = _json_body(resp)
        wrapped = task.get("task")
        if "task_id" not in task and isinstance(wrapped, dict):
            # Gateways before FetchTask answered {"task": {...}}; SPEC §2 is the bare task.
            task = wrapped
        if not isinstance(task.get("task_id"), str):
            raise GatewayError("the gateway's task answer has no task_id")
        return task

    def list_tasks(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> JSONDict:
        params: dict[str, str | int] = {}
        if status:
            params["status"] = status
        if limit is not None:
            params["limit"] = limit
        if cursor:
            params["cursor"] = cursor
        resp = self._request("GET", "/v1/tasks", params=params)
        raise_for_status(resp)
        body = _json_body(resp)
        body.setdefault("tasks", [])
        body.setdefault("next_cursor", "")
        return body

    def skip_tasks(
        self, offset: int, *, status: str | None = None, cursor: str | None = None
    ) -> str | None:
        """The cursor just past the first `offset` tasks (from `cursor` on), walking
        pages of at most 200: the gateway pages by cursor only. None when fewer remain."""
        remaining = offset
        while remaining > 0:
            step = min(remaining, MAX_PAGE)
            page = self.list_tasks(status=status, limit=step, cursor=cursor)
            remaining -= len(page["tasks"])
            cursor = str(page["next_cursor"] or "")
            if not cursor:
                return None
        return cursor

    def task_result(self, task_id: str) -> JSONDict:
        resp = self._request("GET", _task_path(task_id, "/result"))
        raise_for_status(resp, f"task {task_id}")
        return _json_body(resp)

    def cancel_task(self, task_id: str) -> JSONDict:
        resp = self._request("POST", _task_path(task_id, "/cancel"), json_body={})
        raise_for_status(resp, f"task {task_id}")
        return _json_body(resp)

    def delete_task(self, task_id: str) -> JSONDict:
        resp = self._request("DELETE", _task_path(task_id))
        raise_for_status(resp, f"task {task_id}")
        return _json_body(resp)

    def task_logs(self, task_id: str, stream: str = "all") -> JSONDict:
        resp = self._request("GET", _task_path(task_id, "/logs"), params={"stream": stream})
        raise_for_status(resp, f"task {task_id}")
        body = _json_body(resp)
        body.setdefault("lines", [])
        return body

    def list_artifacts(self, task_id: str, *, wait: float = 0) -> JSONDict:
        """The task's artifacts; with `wait`, once the set is complete or after `wait`
        seconds: the gateway holds each call until the set is complete, up to
        MAX_ARTIFACT_WAIT seconds (?wait_seconds, SPEC §2.11), and this asks again
        until the time is up; nothing is polled."""
        clock = time.monotonic
        deadline = clock() + wait
        while True:
            left = deadline - clock()
            params = {"wait_seconds": min(math.ceil(left), MAX_ARTIFACT_WAIT)} if left > 0 else None
            asked = clock()
            resp = self._request("GET", _task_path(task_id, "/artifacts"), params=params)
            raise_for_status(resp, f"task {task_id}")
            body = _json_body(resp)
            body.setdefault("artifacts", [])
            if body.get("complete") or params is None or clock() >= deadline:
                return body
            if clock() - asked < params["wait_seconds"] - 0.5:
                # Answered before its time without the set: a gateway that does not
                # wait. One call a second then, not a tight loop.
                time.sleep(min(1.0, max(0.0, deadline - clock())))

    @contextmanager
    def artifact_stream(self, task_id: str, artifact_id: str) -> Iterator[Response]:
        """GET /v1/tasks/{id}/artifacts/{artifact_id}, its body not read yet."""
        path = _task_path(task_id, f"/artifacts/{quote_segment(artifact_id)}")
        with self._streaming(path, f"artifact {artifact_id} of task {task_id}") as resp:
            yield resp

    # -- administration (admins only: 403 is exit 3) ---------------------------------

    def _admin(
        self,
        method: str,
        path: str,
        what: str | None = None,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str | int] | None = None,
    ) -> JSONDict:
        resp = self._request(method, path, json_body=body, params=dict(params or {}))
        raise_for_status(resp, what)
        return _json_body(resp)

    def list_users(self, *, limit: int | None = None, cursor: str | None = None) -> JSONDict:
        params: dict[str, str | int] = {}
        if limit is not None:
            params["limit"] = limit
        if cursor:
            params["cursor"] = cursor
        page = self._admin("GET", "/v1/users", params=params)
        page.setdefault("users", [])
        page.setdefault("next_cursor", "")
        return page

    def get_user(self, user: str) -> JSONDict:
        return self._admin("GET", _ref_path("users", user), f"user {user}")

    def create_user(self, body: Mapping[str, Any]) -> JSONDict:
        return self._admin("POST", "/v1/users", body=body)

    def user_action(
        self, user: str, action: str, body: Mapping[str, Any] | None = None
    ) -> JSONDict:
        """POST /v1/users/{user}/{action}: disable, enable, reset_password, revoke_sessions."""
        return self._admin(
            "POST", _ref_path("users", user, action), f"user {user}", body=body or {}
        )

    def list_nodes(self) -> JSONDict:
        page = self._admin("GET", "/v1/nodes")
        page.setdefault("nodes", [])
        return page

    def get_node(self, node: str) -> JSONDict:
        return self._admin("GET", _ref_path("nodes", node), f"node {node}")

    def node_action(self, node: str, action: str) -> JSONDict:
        """POST /v1/nodes/{node}/{action}: drain, disable, enable, refresh_config."""
        return self._admin("POST", _ref_path("nodes", node, action), f"node {node}", body={})

    def list_audit(self, filters: Mapping[str, str | int]) -> JSONDict:
        page = self._admin("GET", "/v1/audit", params=filters)
        page.setdefault("events", [])
        page.setdefault("next_cursor", "")
        return page

    @contextmanager
    def _streaming(
        self, path: str, what: str, params: Mapping[str, str | int] | None = None
    ) -> Iterator[Response]:
        resp = self._request("GET", path, params=params, stream=True)
        try:
            if not resp.is_success:
                resp.read()
                raise_for_status(resp, what)
            yield resp
        finally:
            resp.close()

    def watch_task(self, task_id: str, *, include_result: bool = False) -> Iterator[JSONDict]:
        """Events of GET /v1/tasks/{id}/watch (NDJSON) until the terminal one; with
        `include_result`, the terminal one carries the task's result (`task_result`)."""
        params = {"include_result": "true"} if include_result else None
        with self._streaming(_task_path(task_id, "/watch"), f"task {task_id}", params) as resp:
            try:
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError as exc:
                        raise GatewayError(
                            "the gateway's watch stream sent a line that is not JSON"
                        ) from exc
                    # A failure after the stream began arrives as {"error": <problem>}.
                    if isinstance(event, dict) and isinstance(event.get("error"), dict):
                        problem = event["error"]
                        status = problem.get("status")
                        code = status if isinstance(status, int) and status >= 400 else 500
                        raise_for_status(Response(code, json=problem), f"task {task_id}")
                    # grpc-gateway style streams wrap each message in {"result": ...}.
                    if isinstance(event, dict) and isinstance(event.get("result"), dict):
                        event = event["result"]
                    if not isinstance(event, dict):
                        continue
                    yield event
                    if event.get("terminal"):
                        return
            except TransportError as exc:
                raise GatewayError(self._describe_transport_error(exc)) from exc

    # -- the models on the nodes (the gateway's OpenAI door, SPEC §10) ----------------

    def list_models(self) -> JSONDict:
        resp = self._request("GET", "/v1/models")
        raise_for_status(resp)
        return _json_body(resp)

    def chat(self, body: Mapping[str, Any]) -> JSONDict:
        """One chat completion, whole."""
        resp = self._request(
            "POST", "/v1/chat/completions", json_body={**body, "stream": False}, timeout=CHAT_S
        )
        raise_for_status(resp, f"model {body.get('model')!r}")
        return _json_body(resp)

    def chat_stream(self, body: Mapping[str, Any]) -> Iterator[JSONDict]:
        """The completion's chunks as they arrive (server-sent events), usage last."""
        resp = self._request(
            "POST",
            "/v1/chat/completions",
            json_body={**body, "stream": True, "stream_options": {"include_usage": True}},
            stream=True,
            timeout=CHAT_S,
        )
        try:
            if not resp.is_success:
                resp.read()
                raise_for_status(resp, f"model {body.get('model')!r}")
            for line in resp.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                if data.strip() == "[DONE]":
                    return
                try:
                    event = json.loads(data)
                except ValueError as exc:
                    raise GatewayError(
                        "the gateway's chat stream sent a line that is not JSON"
                    ) from exc
                if isinstance(event, dict) and isinstance(event.get("error"), dict):
                    raise GatewayError(f"the answer stopped: {event['error'].get('message')}")
                if isinstance(event, dict):
                    yield event
        except TransportError as exc:
            raise GatewayError(self._describe_transport_error(exc)) from exc
        finally:
            resp.close()
