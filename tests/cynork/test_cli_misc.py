"""version, status, completion, global options, config precedence and the main wrapper."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from cynork import __version__
from cynork._app import Seams
from cynork._http import ConnectError, MockTransport, Request, Response
from cynork.cli import cli, main
from cynork.commands import subcommands
from tests.cynork.conftest import Cy
from tests.cynork.fake_gateway import FakeGateway, problem


def _refusing(request: Request) -> Response:
    raise ConnectError("Connection refused")


def test_version_with_gateway(cy: Cy) -> None:
    result = cy("version")
    assert result.exit_code == 0
    assert result.stdout == f"version={__version__} gateway_version=9.8.7\n"
    assert json.loads(cy("version", "-o", "json").stdout) == {
        "version": __version__,
        "gateway_version": "9.8.7",
    }


def test_version_without_gateway(cy: Cy) -> None:
    cy.seams.transport = MockTransport(_refusing)
    result = cy("version")
    assert result.exit_code == 0
    assert "gateway_version=unreachable" in result.stdout


def test_version_gateway_without_openapi(cy: Cy) -> None:
    cy.gw.inject[("GET", "/openapi.json")] = problem(404, "Not Found")
    assert "gateway_version=unknown" in cy("version").stdout
    cy.gw.inject[("GET", "/openapi.json")] = (200, {}, b"not json")
    assert "gateway_version=unknown" in cy("version").stdout


def test_dash_v_prints_client_version(cy: Cy) -> None:
    assert cy("-V").stdout == f"cynork, version {__version__}\n"


def test_status_ok(cy: Cy) -> None:
    result = cy("status")
    assert result.exit_code == 0
    assert result.stdout == "gateway=ok ready=ok gateway_url=http://localhost:12080\n"
    assert cy.gw.paths() == ["/healthz", "/readyz"]
    body = json.loads(cy("-o", "json", "status").stdout)
    assert body == {"gateway": "ok", "ready": "ok", "gateway_url": "http://localhost:12080"}


def test_status_not_ready_exits_7(cy: Cy) -> None:
    cy.gw.ready = False
    result = cy("status")
    assert result.exit_code == 7
    assert 'gateway=ok ready="not ready: no inference path"' in result.stdout
    body = json.loads(cy("-o", "json", "status").stdout)
    assert body["gateway"] == "ok"
    assert body["ready"] == "not ready: no inference path"


def test_status_multiline_readyz_is_one_line(cy: Cy) -> None:
    cy.gw.inject[("GET", "/readyz")] = (
        503,
        {},
        b"not ready\nmissing: inference path\nmissing: db\n",
    )
    result = cy("status")
    assert result.exit_code == 7
    assert 'ready="not ready: missing: inference path; missing: db"' in result.stdout
    cy.gw.inject[("GET", "/readyz")] = (503, {}, b"not ready\n")
    assert 'ready="not ready" ' in cy("status").stdout


def test_status_unhealthy_problem_body(cy: Cy) -> None:
    cy.gw.inject[("GET", "/healthz")] = problem(500, "Internal Server Error", "broken")
    result = cy("status")
    assert result.exit_code == 7
    assert 'gateway="not ok: broken"' in result.stdout


def test_status_unreachable(cy: Cy) -> None:
    cy.seams.transport = MockTransport(_refusing)
    result = cy("status")
    assert result.exit_code == 7
    assert "gateway=unreachable ready=unreachable" in result.stdout
    assert "cannot reach the gateway at http://localhost:12080" in result.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(cy: Cy, shell: str) -> None:
    result = cy("completion", shell)
    assert result.exit_code == 0
    assert "_CYNORK_COMPLETE" in result.stdout
    assert cy.gw.requests == []


def test_completion_unknown_shell(cy: Cy) -> None:
    assert cy("completion", "tcsh").exit_code == 2


def test_bare_cynork_off_a_terminal_prints_help(cy: Cy) -> None:
    result = cy()
    assert result.exit_code == 0
    assert "Usage: cynork" in result.stdout


def test_unknown_command_is_usage_error(cy: Cy) -> None:
    assert cy("frobnicate").exit_code == 2
    assert cy("task", "create", "--bogus").exit_code == 2


@pytest.mark.parametrize(
    ("argv", "message", "help_of"),
    [
        (["frobnicate"], "No such command 'frobnicate'.", "cynork"),
        (["task", "bogus"], "No such command 'bogus'.", "cynork task"),
        (["task", "get"], "Missing argument 'ID'.", "cynork task get"),
        (["task", "create", "--bogus"], "No such option '--bogus'.", "cynork task create"),
        (["-o", "yaml", "task", "list"], "'yaml' is not one of 'table', 'json'.", "cynork"),
        (["task", "list", "-l", "0"], "0 is not in the range 1<=x<=200.", "cynork task list"),
    ],
)
def test_usage_errors_are_one_line(
    config_dir: Path,
    gw: FakeGateway,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
    help_of: str,
) -> None:
    # click alone prints a usage block, a hint and a blank line; SPEC §5 wants one line.
    assert main(argv, _seams(gw)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("cynork: ") and message in lines[0]
    assert lines[0].endswith(f"(see `{help_of} --help`)")
    assert gw.requests == []


def test_gateway_url_precedence(cy: Cy, tmp_path: Path) -> None:
    seen: list[str] = []
    inner = cy.gw.transport()

    def handler(request: Request) -> Response:
        seen.append(f"{request.scheme}://{request.host}:{request.port}")
        return inner.handle_request(request)

    cy.seams.transport = MockTransport(handler)
    config = tmp_path / "c.yaml"
    config.write_text("gateway_url: http://127.0.0.2:1000\n")
    cy("--config", str(config), "status")
    cy.environ["CYNORK_GATEWAY_URL"] = "http://127.0.0.3:2000/"
    cy("--config", str(config), "status")
    cy("--config", str(config), "--gateway-url", "http://127.0.0.4:3000", "status")
    assert seen == [
        "http://127.0.0.2:1000",
        "http://127.0.0.2:1000",
        "http://127.0.0.3:2000",
        "http://127.0.0.3:2000",
        "http://127.0.0.4:3000",
        "http://127.0.0.4:3000",
    ]


def test_config_option_is_where_login_writes(cy: Cy, tmp_path: Path) -> None:
    config = tmp_path / "elsewhere" / "cynork.yaml"
    result = cy(
        "--config",
        str(config),
        "auth",
        "login",
        "-u",
        "admin",
        "--password-stdin",
        input="s3cret\n",
    )
    assert result.exit_code == 0
    assert "refresh_token" in config.read_text()
    assert not cy.config_file.exists()
    assert cy("--config", str(config), "auth", "whoami").exit_code == 0


def test_bad_config_file_is_usage_error(cy: Cy, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("gateway_url: [unclosed\n")
    result = cy("--config", str(config), "status")
    assert result.exit_code == 2
    assert "is not valid YAML" in result.stderr


def test_bad_ca_file_is_usage_error(cy: Cy, tmp_path: Path) -> None:
    result = cy("--ca-file", str(tmp_path / "none.pem"), "status")
    assert result.exit_code == 2
    assert "cannot use CA file" in result.stderr


# -- main(): the console-script wrapper -------------------------------------------


def _seams(gw: FakeGateway) -> Seams:
    return Seams(transport=gw.transport(), sleep=lambda _: None, environ={})


def test_main_returns_exit_codes(
    config_dir: Path, gw: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status"], _seams(gw)) == 0
    assert main(["auth", "whoami"], _seams(gw)) == 3
    assert capsys.readouterr().err == "cynork: not logged in; run `cynork auth login`\n"
    assert main(["--help"], _seams(gw)) == 0
    assert main(["task", "create", "-s", "/nope"], _seams(gw)) == 2
    gw.ready = False
    assert main(["status"], _seams(gw)) == 7


def test_main_never_shows_a_traceback(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def boom(request: Request) -> Response:
        raise RuntimeError("surprise")

    assert main(["status"], Seams(transport=MockTransport(boom), environ={})) == 8
    err = capsys.readouterr().err
    assert err == "cynork: unexpected error: RuntimeError: surprise\n"


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (KeyboardInterrupt(), 130, "interrupted"),
        (BrokenPipeError(), 141, ""),
        (OSError(28, "No space left on device"), 8, "No space left on device"),
    ],
)
def test_main_maps_low_level_exceptions(
    config_dir: Path,
    capsys: pytest.CaptureFixture[str],
    exc: BaseException,
    code: int,
    message: str,
) -> None:
    def raising(request: Request) -> Response:
        raise exc

    assert main(["status"], Seams(transport=MockTransport(raising), environ={})) == code
    assert message in capsys.readouterr().err


def test_main_abort_at_a_prompt(
    config_dir: Path, gw: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    import click

    def abort(*args: object, **kwargs: object) -> str:
        raise click.exceptions.Abort()

    monkeypatch.setattr(click, "prompt", abort)
    assert main(["auth", "login", "-u", "admin"], _seams(gw)) == 130


def test_main_uses_sys_argv(
    config_dir: Path, gw: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.argv", ["cynork", "version"])
    assert main(None, _seams(gw)) == 0


# -- global flags ----------------------------------------------------------------------


def test_json_is_pretty_on_a_terminal_and_compact_in_a_pipe(cy: Cy) -> None:
    piped = cy("-o", "json", "version")
    assert piped.stdout == f'{{"version":"{__version__}","gateway_version":"9.8.7"}}\n'
    cy.seams.stdout_tty = True
    shown = cy("-o", "json", "version")
    assert shown.stdout == (
        f'{{\n  "version": "{__version__}",\n  "gateway_version": "9.8.7"\n}}\n'
    )
    assert "compact when it is not" in " ".join(cy("--help").stdout.split())


def test_short_config_flag(cy: Cy, tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("gateway_url: http://127.0.0.1:12999\n")
    result = cy("-c", str(other), "status")
    assert result.exit_code == 0
    assert "gateway_url=http://127.0.0.1:12999" in result.stdout


def test_an_unreadable_config_file_is_a_usage_error(cy: Cy, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("gateway_url: [unclosed\n")
    result = cy("--config", str(broken), "status")
    assert result.exit_code == 2
    assert "is not valid YAML" in result.stderr
    assert cy.gw.requests == []


def test_quiet_keeps_results_and_errors_but_drops_remarks(cy: Cy) -> None:
    remark = cy("auth", "logout")
    assert "not logged in" in remark.stderr
    quiet = cy("-q", "auth", "logout")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "logged_out=true\n", "")
    failing = cy("--quiet", "auth", "whoami")
    assert failing.exit_code == 3 and "not logged in" in failing.stderr


def test_quiet_wait_prints_no_progress(cy: Cy) -> None:
    cy.login()
    task_id = cy.gw.add_task()
    result = cy("-q", "task", "result", "-w", task_id)
    assert result.exit_code == 0
    assert result.stderr == ""
    loud = cy("task", "result", "-w", cy.gw.add_task())
    assert ": running" in loud.stderr


def test_no_color_and_NO_COLOR_turn_the_spinner_into_plain_lines(cy: Cy) -> None:
    cy.login()
    cy.seams.stderr_tty = True
    spinning = cy("task", "result", "-w", cy.gw.add_task())
    assert "\x1b[K" in spinning.stderr
    plain = cy("--no-color", "task", "result", "-w", cy.gw.add_task())
    assert "\x1b" not in plain.stderr and ": running" in plain.stderr
    cy.environ["NO_COLOR"] = "1"
    assert "\x1b" not in cy("task", "result", "-w", cy.gw.add_task()).stderr


@pytest.mark.parametrize(
    ("flag", "long"),
    [
        ("-y", "--yes"),
        ("-l", "--limit"),
        ("-p", "--prompt"),
        ("-t", "--task"),
        ("-f", "--task-file"),
        ("-s", "--script"),
        ("-a", "--attach"),
        ("-w", "--wait"),
        ("-F", "--follow"),
    ],
)
def test_every_long_flag_with_an_upstream_short_alias_has_it(flag: str, long: str) -> None:
    def walk(cmd: click.Command) -> list[click.Command]:
        if isinstance(cmd, click.Group):
            return [c for sub in subcommands(cmd).values() for c in walk(sub)]
        return [cmd]

    found = 0
    for cmd in walk(cli):
        for param in cmd.params:
            if isinstance(param, click.Option) and long in param.opts:
                assert flag in param.opts, f"{cmd.name}: {long} without {flag}"
                found += 1
    assert found >= 1, long
