"""Steps that drive the real `cynork` binary as a subprocess (see ../environment.py)."""

# behave ships no type hints, so its decorators are untyped.
# mypy: disable-error-code="untyped-decorator"

from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import signal
import socket
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml
from behave import given, then, use_step_matcher, when

from cynode.testing import free_port

RUN_TIMEOUT = 180.0
# How long a waiting command may take to show that it waits.
WAIT_TIMEOUT = 60.0


@dataclass
class Run:
    argv: list[str]
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"$ {shlex.join(self.argv)}\nexit {self.code}\n"
            f"--stdout--\n{self.stdout}--stderr--\n{self.stderr}"
        )


class ConnectionCounter:
    """A TCP listener that only counts who connects (proof that nothing was sent)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self.sock.close()


def _expand(context: Any, text: str) -> str:
    text = text.replace("{task_id}", context.task_id or "{task_id}")
    text = text.replace("{gateway_host}", urlsplit(context.gateway_url).netloc)
    return text.replace("{admin_password}", getattr(context, "admin_password", ""))


def _config_file(context: Any) -> Path:
    return Path(context.home) / ".config" / "cynork" / "config.yaml"


def _cynork_env(context: Any, gateway_url: str | None = None) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CYNORK_", "XDG_CONFIG_HOME"))
    }
    env.update(HOME=str(context.home), CYNORK_GATEWAY_URL=gateway_url or context.gateway_url)
    return env


def run_cynork(
    context: Any, command: str, *, stdin: str | None = None, gateway_url: str | None = None
) -> Run:
    words = shlex.split(_expand(context, command))
    assert words and words[0] == "cynork", f"not a cynork command: {command}"
    argv = [str(context.cynork_bin), *words[1:]]
    env = _cynork_env(context, gateway_url)
    done = subprocess.run(
        argv,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=env,
        # The scenario's HOME is also where relative paths (`-a notes/a.txt`) start.
        cwd=context.home,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    result = Run(argv, done.returncode, done.stdout, done.stderr)
    context.result = result
    return result


def _last(context: Any) -> Run:
    result = context.result
    assert isinstance(result, Run), "no cynork command ran yet"
    return result


# -- given -------------------------------------------------------------------------


@given("a running orchestrator")
def step_running_orchestrator(context: Any) -> None:
    resp = httpx.get(f"{context.gateway_url}/healthz", timeout=5.0)
    assert resp.status_code == 200, f"gateway /healthz answered {resp.status_code}"


@given("I am not logged in")
def step_not_logged_in(context: Any) -> None:
    assert not _config_file(context).exists()


@given("I am logged in as admin")
@when("I log in as admin")
def step_log_in(context: Any) -> None:
    run_cynork(
        context,
        "cynork auth login -u admin --password-stdin",
        stdin=f"{context.admin_password}\n",
    )


@given("I am not logged in anywhere")
def step_logged_out_here(context: Any) -> None:
    _config_file(context).unlink(missing_ok=True)


@given("a task that keeps running")
def step_long_task(context: Any) -> None:
    result = run_cynork(context, "cynork task create --command 'sleep 300'")
    assert result.code == 0, str(result)
    match = re.search(r"^task_id=(\S+)", result.stdout, re.MULTILINE)
    assert match, str(result)
    context.task_id = match.group(1)
    context.add_cleanup(_cancel_quietly, context.gateway_url, _config_file(context), match.group(1))


def _cancel_quietly(gateway_url: str, config: Path, task_id: str) -> None:
    """Frees the node's slot once the scenario is over: a `sleep 300` left running would
    hold it for five minutes and starve the @node scenarios after it."""
    try:
        token = yaml.safe_load(config.read_text())["token"]
        httpx.post(
            f"{gateway_url}/v1/tasks/{task_id}/cancel",
            json={},
            headers={"authorization": f"Bearer {token}"},
            timeout=10.0,
        )
    except (OSError, KeyError, TypeError, httpx.HTTPError):
        pass  # logged out, or the gateway of its own is gone: nothing holds a slot then


@given("the node is put back in service after this scenario")
def step_node_back_in_service(context: Any) -> None:
    """A drain a failed scenario left behind would starve every @node scenario after it."""
    config = _config_file(context)

    def enable() -> None:
        try:
            token = yaml.safe_load(config.read_text())["token"]
            httpx.post(
                f"{context.gateway_url}/v1/nodes/bdd-cynork-node/enable",
                json={},
                headers={"authorization": f"Bearer {token}"},
                timeout=10.0,
            )
        except (OSError, KeyError, TypeError, httpx.HTTPError):
            pass

    context.add_cleanup(enable)


@given("my session was revoked on the gateway")
def step_session_revoked(context: Any) -> None:
    # As `cynork auth logout` from another machine would: the refresh token's family is
    # revoked, and with it every access token issued to it.
    config = yaml.safe_load(_config_file(context).read_text())
    resp = httpx.post(
        f"{context.gateway_url}/v1/auth/logout",
        json={"refresh_token": config["refresh_token"]},
        timeout=10.0,
    )
    assert resp.status_code == 204, resp.text


@given("a listener that counts connections")
def step_listener(context: Any) -> None:
    context.listener = ConnectionCounter()


# -- when --------------------------------------------------------------------------


# Regular expressions here: the three forms share a prefix that `parse` finds ambiguous.
use_step_matcher("re")


@when(r'I run "(?P<command>[^"]+)"')
def step_run(context: Any, command: str) -> None:
    run_cynork(context, command)


@when(r'I run "(?P<command>[^"]+)" answering "(?P<answer>[^"]*)"')
def step_run_answering(context: Any, command: str, answer: str) -> None:
    run_cynork(context, command, stdin=f"{answer}\n")


@when(r'I run "(?P<command>[^"]+)" against the listener')
def step_run_against_listener(context: Any, command: str) -> None:
    run_cynork(context, command, gateway_url=f"http://127.0.0.1:{context.listener.port}")


@when(r'I run "(?P<command>[^"]+)" against a closed port')
def step_run_against_closed_port(context: Any, command: str) -> None:
    # Nothing listens on a free port, so the connection is refused.
    run_cynork(context, command, gateway_url=f"http://127.0.0.1:{free_port()}")


@when(r'I run "(?P<command>[^"]+)" and press Ctrl-C once it waits')
def step_run_and_interrupt(context: Any, command: str) -> None:
    words = shlex.split(_expand(context, command))
    argv = [str(context.cynork_bin), *words[1:]]
    out, err = Path(context.home) / "out.txt", Path(context.home) / "err.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            argv, env=_cynork_env(context), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
        )
        # Each command shows that it waits: `result -w` a status line on stderr, `watch`
        # one on stdout, `-o json task logs -F` the stream's first event. Ctrl-C comes
        # then, in the wait, not while Python is still importing.
        deadline = time.monotonic() + WAIT_TIMEOUT
        while not (out.stat().st_size or err.stat().st_size):
            assert proc.poll() is None, f"{command} ended before Ctrl-C:\n{err.read_text()}"
            assert time.monotonic() < deadline, f"{command} showed no sign of waiting"
            time.sleep(0.1)
        time.sleep(0.5)
        assert proc.poll() is None, f"{command} ended before Ctrl-C:\n{err.read_text()}"
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    context.result = Run(argv, code, out.read_text(), err.read_text())


@given(r'a gateway of its own with (?P<name>[A-Z_]+) set to "(?P<value>[^"]*)"')
def step_own_gateway_setting(context: Any, name: str, value: str) -> None:
    context.gateway_url = context.start_own_gateway({name: value})


@given(r"(?P<n>\d+) seconds have passed")
def step_seconds_pass(context: Any, n: str) -> None:
    time.sleep(int(n))


@given(r"a gateway of its own that throttles after (?P<n>\d+) failed logins")
def step_own_gateway(context: Any, n: str) -> None:
    # Its own process: the throttle would lock every other scenario's login out too.
    context.gateway_url = context.start_own_gateway({"CYNODE_LOGIN_MAX_FAILURES": n})


@when(r"I log in as admin with a wrong password (?P<n>\d+) times")
def step_wrong_logins(context: Any, n: str) -> None:
    for _ in range(int(n)):
        result = run_cynork(
            context, "cynork auth login -u admin --password-stdin", stdin="wrong password\n"
        )
        assert result.code == 3, str(result)


@when(r'I run "(?P<command>[^"]+)" with stdin "(?P<text>[^"]*)"')
def step_run_with_stdin(context: Any, command: str, text: str) -> None:
    run_cynork(context, command, stdin=_expand(context, text).replace("\\n", "\n"))


@given(r'a file "(?P<path>[^"]+)" containing "(?P<text>[^"]*)"')
def step_file(context: Any, path: str, text: str) -> None:
    target = Path(context.home) / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


@given(r"(?P<n>\d+) tasks that keep running")
def step_n_long_tasks(context: Any, n: str) -> None:
    context.task_ids = []
    for _ in range(int(n)):
        step_long_task(context)
        context.task_ids.append(context.task_id)


@when(r"I open the shell on a terminal and leave it")
def step_shell_on_a_pty(context: Any) -> None:
    """`cynork shell` on a real pseudo-terminal: waits for its prompt, then `exit`."""
    argv = [str(context.cynork_bin), "shell"]
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        argv,
        env={**_cynork_env(context), "TERM": "xterm"},
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        cwd=context.home,
        start_new_session=True,
    )
    os.close(secondary)
    screen = b""
    deadline = time.monotonic() + WAIT_TIMEOUT
    try:
        # The prompt's last space is drawn as a cursor move, so look for its `>`.
        while not re.search(rb"cynork \S*>", screen.split(b"Ctrl-D leaves.")[-1]):
            assert time.monotonic() < deadline, f"no prompt: {screen!r}"
            ready, _, _ = select.select([primary], [], [], 0.2)
            if ready:
                screen += os.read(primary, 4096)
        os.write(primary, b"exit\r")
        while proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.2)
            if ready:
                try:
                    screen += os.read(primary, 4096)
                except OSError:  # the terminal closed with the shell
                    break
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(primary)
    # Escape sequences (colours, cursor moves) out, so the text reads as the user saw it.
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[>=()][0-9A-Za-z]?|\r", "", screen.decode())
    context.result = Run(argv, code, text, "")


use_step_matcher("parse")


# -- then --------------------------------------------------------------------------


@then("the exit code is {code:d}")
def step_exit_code(context: Any, code: int) -> None:
    result = _last(context)
    assert result.code == code, f"expected exit {code}\n{result}"
    assert "Traceback" not in result.stderr, str(result)


@then('stdout contains "{text}"')
def step_stdout_contains(context: Any, text: str) -> None:
    result = _last(context)
    assert _expand(context, text) in result.stdout, str(result)


@then('stdout matches "{pattern}"')
def step_stdout_matches(context: Any, pattern: str) -> None:
    result = _last(context)
    assert re.search(_expand(context, pattern), result.stdout, re.MULTILINE), str(result)


@then("stdout is empty")
def step_stdout_empty(context: Any) -> None:
    result = _last(context)
    assert result.stdout == "", str(result)


@then('stderr is one line containing "{text}"')
def step_stderr_one_line(context: Any, text: str) -> None:
    result = _last(context)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, str(result)
    assert text in lines[0], str(result)


@then('stderr does not contain "{text}"')
def step_stderr_lacks(context: Any, text: str) -> None:
    result = _last(context)
    assert text not in result.stderr, str(result)


@then('stdout is one JSON object with keys "{keys}"')
def step_json_object(context: Any, keys: str) -> None:
    result = _last(context)
    assert result.code == 0, str(result)
    body = json.loads(result.stdout)
    assert isinstance(body, dict), str(result)
    missing = {k.strip() for k in keys.split(",")} - set(body)
    assert not missing, f"missing keys {sorted(missing)}\n{result}"
    if context.task_id and "task_id" in body and "create" not in result.argv:
        assert body["task_id"] == context.task_id, str(result)


@then("stdout holds the fields of the gateway's task object")
def step_json_is_gateway_task(context: Any) -> None:
    """`task get -o json` prints the REST answer's fields (SPEC §5), which is the bare
    task (SPEC §2), so no nested "task" object reaches the output."""
    result = _last(context)
    printed = json.loads(result.stdout)
    token = yaml.safe_load(_config_file(context).read_text())["token"]
    resp = httpx.get(
        f"{context.gateway_url}/v1/tasks/{context.task_id}",
        headers={"authorization": f"Bearer {token}"},
        timeout=10.0,
    )
    assert resp.status_code == 200, resp.text
    served = resp.json()
    assert "task" not in served and "task" not in printed, (served, printed)
    assert set(printed) == set(served), (printed, served)
    # status and updated_at may move on while the task starts; the rest may not.
    for key in ("task_id", "input_mode", "created_at", "user_id"):
        assert printed[key] == served[key], (key, printed, served)


@then('the last stderr line matches "{pattern}"')
def step_last_stderr_line(context: Any, pattern: str) -> None:
    result = _last(context)
    lines = result.stderr.strip().splitlines()
    assert lines and re.search(_expand(context, pattern), lines[-1]), str(result)


@given("I remember the stored tokens")
def step_remember_tokens(context: Any) -> None:
    assert _last(context).code == 0, str(_last(context))
    data = yaml.safe_load(_config_file(context).read_text())
    context.stored_tokens = (data["token"], data["refresh_token"])


@then("the stored tokens were rotated")
def step_tokens_rotated(context: Any) -> None:
    data = yaml.safe_load(_config_file(context).read_text())
    old_access, old_refresh = context.stored_tokens
    assert data["token"] != old_access and data["refresh_token"] != old_refresh, data
    assert stat.S_IMODE(_config_file(context).stat().st_mode) == 0o600


@then("the config file holds tokens and has mode 0600")
def step_config_private(context: Any) -> None:
    path = _config_file(context)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = yaml.safe_load(path.read_text())
    assert data.get("token") and data.get("refresh_token"), "tokens not stored"
    assert context.admin_password not in path.read_text()


@then("the config file holds no tokens")
def step_config_no_tokens(context: Any) -> None:
    data = yaml.safe_load(_config_file(context).read_text()) or {}
    assert "token" not in data and "refresh_token" not in data, data


@then("the task is not canceled")
def step_not_canceled(context: Any) -> None:
    saved = context.result
    result = run_cynork(context, "cynork -o json task get {task_id}")
    assert result.code == 0, str(result)
    assert json.loads(result.stdout)["status"] != "canceled", str(result)
    context.result = saved


@then("the listener saw no connection")
def step_no_connection(context: Any) -> None:
    assert context.listener.connections == 0, "cynork connected before checking its files"


@then('stderr contains "{text}"')
def step_stderr_contains(context: Any, text: str) -> None:
    result = _last(context)
    assert _expand(context, text) in result.stderr, str(result)


@then('stdout is exactly "{text}"')
def step_stdout_exactly(context: Any, text: str) -> None:
    result = _last(context)
    assert result.stdout == _expand(context, text).replace("\\n", "\n"), str(result)


@then("stdout is one compact JSON value")
def step_one_compact_json(context: Any) -> None:
    """Not a terminal: exactly one JSON value, on one line (SPEC §5.3)."""
    result = _last(context)
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1, str(result)
    json.loads(result.stdout)


@then('the JSON field "{field}" is {value}')
def step_json_field(context: Any, field: str, value: str) -> None:
    result = _last(context)
    body = json.loads(result.stdout)
    expected = json.loads(_expand(context, value))
    assert body.get(field) == expected, f"{field}: {body.get(field)!r} != {expected!r}\n{result}"


@then("stdout lists task {n:d} of those tasks, newest first, and nothing else")
def step_lists_nth(context: Any, n: int) -> None:
    result = _last(context)
    newest_first = list(reversed(context.task_ids))
    out = result.stdout.strip().splitlines()
    assert len(out) == 1 or (len(out) == 2 and out[1].startswith("next_cursor=")), str(result)
    assert out[0].startswith(f"task_id={newest_first[n - 1]} "), str(result)
