"""auth login/logout/whoami/refresh, token storage and refresh-on-401."""

from __future__ import annotations

import json
import stat

import pytest

from tests.cynork.conftest import Cy
from tests.cynork.fake_gateway import problem


def test_login_stores_tokens_in_a_private_file(cy: Cy) -> None:
    result = cy("auth", "login", "-u", "admin", "--password-stdin", input="s3cret\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("logged_in=true user=admin gateway_url=http://localhost:12080")
    config = cy.config()
    assert config["token"] in cy.gw.access
    assert config["refresh_token"] in cy.gw.refresh
    assert config["gateway_url"] == "http://localhost:12080"
    assert stat.S_IMODE(cy.config_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cy.config_dir.stat().st_mode) == 0o700
    assert cy.gw.bodies[0] == {"handle": "admin", "password": "s3cret"}
    assert "s3cret" not in cy.config_file.read_text()


def test_login_prompts_for_user_and_hidden_password(cy: Cy) -> None:
    result = cy("auth", "login", input="admin\ns3cret\n")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("User: ")
    assert "Password" in result.stderr
    assert "s3cret" not in result.output
    assert cy.config()["user"] == "admin"
    assert result.stdout.startswith("logged_in=true user=admin ")


def test_login_long_user_flag_and_the_old_handle_flag(cy: Cy) -> None:
    for flag in ("--user", "--handle"):
        result = cy("auth", "login", flag, "admin", "--password-stdin", input="s3cret\n")
        assert result.exit_code == 0, result.output
        assert "user=admin" in result.stdout


def test_there_is_no_password_flag(cy: Cy) -> None:
    result = cy("auth", "login", "-u", "admin", "--password", "s3cret")
    assert result.exit_code == 2
    assert "No such option '--password'" in result.stderr
    assert cy.gw.requests == []


def test_login_json_output(cy: Cy) -> None:
    result = cy("-o", "json", "auth", "login", "-u", "admin", "--password-stdin", input="s3cret\n")
    body = json.loads(result.stdout)
    assert body == {
        "logged_in": True,
        "user": "admin",
        "gateway_url": "http://localhost:12080",
        "expires_in": 900,
    }


def test_wrong_password_exits_3(cy: Cy) -> None:
    result = cy("auth", "login", "-u", "admin", "--password-stdin", input="nope\n")
    assert result.exit_code == 3
    assert result.stderr.strip() == "cynork: login failed: wrong user or password"
    assert not cy.config_file.exists()


@pytest.mark.parametrize(
    ("args", "stdin"),
    [(["--password-stdin"], "x\n"), (["-u", "admin", "--password-stdin"], "")],
)
def test_password_stdin_misuse_is_usage_error(cy: Cy, args: list[str], stdin: str) -> None:
    result = cy("auth", "login", *args, input=stdin)
    assert result.exit_code == 2
    assert cy.gw.requests == []


def test_login_throttled_shows_retry_after(cy: Cy) -> None:
    cy.gw.inject[("POST", "/v1/auth/login")] = problem(
        429, "Too Many Requests", "slow down", {"retry-after": "7"}
    )
    result = cy("auth", "login", "-u", "admin", "--password-stdin", input="s3cret\n")
    assert result.exit_code == 7
    assert result.stderr == "cynork: too many requests: slow down (retry after 7 seconds)\n"


def test_whoami_prints_id_and_user(cy: Cy) -> None:
    cy.login()
    result = cy("auth", "whoami")
    assert result.exit_code == 0
    assert result.stdout == "id=01HUSER user=admin is_active=true is_admin=true\n"
    as_json = json.loads(cy("auth", "whoami", "-o", "json").stdout)
    assert (as_json["id"], as_json["user"], as_json["handle"]) == ("01HUSER", "admin", "admin")
    assert list(as_json)[:2] == ["id", "user"]


def test_whoami_without_token_exits_3_without_request(cy: Cy) -> None:
    result = cy("auth", "whoami")
    assert result.exit_code == 3
    assert "not logged in" in result.stderr
    assert cy.gw.requests == []


def test_env_token_overrides_config(cy: Cy) -> None:
    access, _ = cy.gw.issue()
    cy.environ["CYNORK_TOKEN"] = access
    result = cy("auth", "whoami")
    assert result.exit_code == 0, result.output
    assert not cy.config_file.exists()


def test_expired_access_token_is_refreshed_once_and_saved(cy: Cy) -> None:
    cy.login()
    old = cy.config()
    cy.gw.expire_access_tokens()
    result = cy("auth", "whoami")
    assert result.exit_code == 0, result.output
    assert cy.gw.paths() == ["/v1/users/me", "/v1/auth/refresh", "/v1/users/me"]
    new = cy.config()
    assert new["token"] != old["token"]
    assert new["refresh_token"] != old["refresh_token"]
    assert new["token"] in cy.gw.access


def test_refresh_rejected_means_session_expired(cy: Cy) -> None:
    cy.login()
    cy.gw.expire_access_tokens()
    cy.gw.refresh.clear()
    result = cy("task", "list")
    assert result.exit_code == 3
    assert "session has expired" in result.stderr
    assert cy.gw.paths() == ["/v1/tasks", "/v1/auth/refresh"]


def test_still_401_after_refresh_exits_3(cy: Cy) -> None:
    cy.login()
    cy.gw.inject[("GET", "/v1/users/me")] = problem(401, "Unauthorized")
    result = cy("auth", "whoami")
    assert result.exit_code == 3
    assert cy.gw.paths() == ["/v1/users/me", "/v1/auth/refresh", "/v1/users/me"]


def test_refresh_token_alone_gets_an_access_token_first(cy: Cy) -> None:
    _, refresh = cy.gw.issue()
    cy.config_dir.mkdir(parents=True)
    cy.config_file.write_text(f"refresh_token: {refresh}\n")
    result = cy("auth", "whoami")
    assert result.exit_code == 0, result.output
    assert cy.gw.paths() == ["/v1/auth/refresh", "/v1/users/me"]


def test_auth_refresh_rotates(cy: Cy) -> None:
    cy.login()
    old = cy.config()["refresh_token"]
    result = cy("auth", "refresh")
    assert result.exit_code == 0
    assert result.stdout == "refreshed=true expires_in=900\n"
    assert cy.config()["refresh_token"] != old
    assert old not in cy.gw.refresh


def test_auth_refresh_without_refresh_token_exits_3(cy: Cy) -> None:
    result = cy("auth", "refresh")
    assert result.exit_code == 3
    assert cy.gw.requests == []


def test_logout_revokes_and_forgets(cy: Cy) -> None:
    cy.login()
    refresh = cy.config()["refresh_token"]
    result = cy("auth", "logout")
    assert result.exit_code == 0
    assert result.stdout == "logged_out=true\n"
    assert cy.gw.bodies == [{"refresh_token": refresh}]
    assert refresh not in cy.gw.refresh
    config = cy.config()
    assert "token" not in config
    assert "refresh_token" not in config
    assert cy("auth", "whoami").exit_code == 3


def test_logout_when_not_logged_in(cy: Cy) -> None:
    result = cy("auth", "logout")
    assert result.exit_code == 0
    assert "not logged in" in result.stderr
    assert cy.gw.requests == []


def test_logout_of_revoked_session_still_succeeds(cy: Cy) -> None:
    cy.login()
    cy.gw.refresh.clear()
    assert cy("auth", "logout").exit_code == 0
    assert "refresh_token" not in cy.config()


def test_logout_server_error_forgets_tokens_and_says_so(cy: Cy) -> None:
    cy.login()
    cy.gw.inject[("POST", "/v1/auth/logout")] = problem(500, "Internal Server Error", "db down")
    result = cy("auth", "logout")
    assert result.exit_code == 0
    assert result.stdout == "logged_out=true revoked=false\n"
    assert "did not revoke the session" in result.stderr
    assert "db down" in result.stderr
    assert "token" not in cy.config()


def test_logout_with_the_gateway_unreachable_forgets_the_tokens(cy: Cy) -> None:
    cy.login()
    cy.gw.unreachable.add("/v1/auth/logout")
    result = cy("-o", "json", "auth", "logout")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"logged_out": True, "revoked": False}
    assert "cannot reach the gateway" in result.stderr
    assert "token" not in cy.config() and "refresh_token" not in cy.config()


def test_plain_http_to_remote_host_is_refused(cy: Cy) -> None:
    args = ("--gateway-url", "http://10.0.0.7:12080", "auth", "login", "-u", "admin")
    result = cy(*args, "--password-stdin", input="s3cret\n")
    assert result.exit_code == 2
    assert "refusing to send credentials over plain http to 10.0.0.7" in result.stderr
    assert cy.gw.requests == []
    allowed = cy("--insecure", *args, "--password-stdin", input="s3cret\n")
    assert allowed.exit_code == 0, allowed.output


def test_plain_http_token_to_remote_host_is_refused(cy: Cy) -> None:
    cy.login()
    result = cy("--gateway-url", "http://gateway.example:12080", "task", "list")
    assert result.exit_code == 2
    assert cy.gw.requests == []
    assert cy("--gateway-url", "https://gateway.example", "task", "list").exit_code == 0
