"""CyNode from Python over gRPC with the generated stubs (gen/, made by `make gen`).

Logs in, creates a commands task, watches it to the end over the WatchTask server
stream, then prints the result. Exit 0 when the task completed.

    export CYNODE_GRPC=127.0.0.1:12081 CYNODE_PASSWORD=...
    .venv/bin/python examples/python/client.py 'echo hi'
"""

from __future__ import annotations

import os
import sys

import grpc

from cynode.gateway.v1 import auth_pb2, auth_pb2_grpc, tasks_pb2, tasks_pb2_grpc


def run(target: str, handle: str, password: str, commands: list[str]) -> int:
    with grpc.insecure_channel(target) as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)  # type: ignore[no-untyped-call]
        login = auth.Login(auth_pb2.LoginRequest(handle=handle, password=password))
        metadata = (("authorization", f"Bearer {login.access_token}"),)
        tasks = tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]
        created = tasks.CreateTask(
            tasks_pb2.CreateTaskRequest(input_mode="commands", commands=commands),
            metadata=metadata,
        )
        print(f"task_id={created.task_id} status={created.status}")
        watch = tasks_pb2.WatchTaskRequest(task_id=created.task_id)
        for event in tasks.WatchTask(watch, metadata=metadata):
            if event.chunk:
                print(f"[{event.stream}] {event.chunk}", end="")
            else:
                print(f"status={event.status}")
        result = tasks.GetTaskResult(
            tasks_pb2.GetTaskResultRequest(task_id=created.task_id), metadata=metadata
        )
        print(f"result status={result.status}")
        print(f"stdout:\n{result.stdout}", end="")
        return 0 if result.status == "completed" else 1


def main() -> int:
    password = os.environ.get("CYNODE_PASSWORD") or os.environ.get("ADMIN_PASSWORD")
    if not password:
        print("error: set CYNODE_PASSWORD (or ADMIN_PASSWORD)", file=sys.stderr)
        return 2
    target = os.environ.get("CYNODE_GRPC", "127.0.0.1:12081")
    handle = os.environ.get("CYNODE_HANDLE", "admin")
    try:
        return run(target, handle, password, sys.argv[1:] or ["echo hello from python"])
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
