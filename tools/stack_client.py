"""A small REST client for a running stack, shared by the e2e, fault and security tests.

It speaks the user gateway's REST surface (SPEC §2) with httpx and nothing else, so a
test reads like what a user does: log in, create a task, wait for its result.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

TERMINAL = frozenset({"completed", "failed", "canceled"})


class GatewayClient:
    def __init__(self, base_url: str, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self.access_token = ""
        self.refresh_token = ""

    def close(self) -> None:
        self.http.close()

    def login(self, handle: str, password: str) -> dict[str, Any]:
        resp = self.http.post("/v1/auth/login", json={"handle": handle, "password": password})
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        self.access_token = str(body["access_token"])
        self.refresh_token = str(body["refresh_token"])
        return body

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.http.request(method, path, headers=headers, **kwargs)

    def create(self, **body: Any) -> str:
        """POST /v1/tasks; returns the task id (raises on any non-201)."""
        resp = self.request("POST", "/v1/tasks", json=body)
        if resp.status_code != 201:
            raise AssertionError(f"create task: {resp.status_code} {resp.text}")
        return str(resp.json()["task_id"])

    def commands(self, *commands: str, **extra: Any) -> str:
        return self.create(input_mode="commands", commands=list(commands), **extra)

    def task(self, task_id: str) -> dict[str, Any]:
        resp = self.request("GET", f"/v1/tasks/{task_id}")
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body

    def result(self, task_id: str) -> dict[str, Any]:
        resp = self.request("GET", f"/v1/tasks/{task_id}/result")
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body

    def cancel(self, task_id: str) -> httpx.Response:
        return self.request("POST", f"/v1/tasks/{task_id}/cancel")

    def nodes(self) -> list[dict[str, Any]]:
        resp = self.request("GET", "/v1/nodes")
        resp.raise_for_status()
        nodes: list[dict[str, Any]] = resp.json().get("nodes", [])
        return nodes

    def wait_status(
        self, task_id: str, statuses: frozenset[str] | set[str], timeout: float = 120.0
    ) -> dict[str, Any]:
        """Polls the result until the task's status is one of `statuses`. Transport
        errors are retried (the orchestrator may be restarting)."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.result(task_id)
            except (httpx.HTTPError, ValueError):
                time.sleep(0.3)
                continue
            if last.get("status") in statuses:
                return last
            time.sleep(0.2)
        raise AssertionError(f"task {task_id} not in {sorted(statuses)} after {timeout}s: {last}")

    def wait_done(self, task_id: str, timeout: float = 120.0) -> dict[str, Any]:
        return self.wait_status(task_id, TERMINAL, timeout)


def wait_gateway(client: GatewayClient, timeout: float = 60.0) -> None:
    """Until an authenticated call answers (the orchestrator came back)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.request("GET", "/v1/users/me").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the gateway at {client.base_url} did not come back in {timeout}s")
