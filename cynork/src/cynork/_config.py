"""The config file (~/.config/cynork/config.yaml) and the settings resolved from it.

Precedence, highest first: command-line flag, environment (`CYNORK_GATEWAY_URL`,
`CYNORK_TOKEN`), config file, built-in default. The file holds tokens, so it is written
with mode 0600 inside a 0700 directory, atomically, so a crash never leaves half a file.

The classes here are plain classes, not dataclasses: every command builds them at start,
and `@dataclass` compiles each generated method from source when the class is made
(with `import dataclasses`, ~2 ms of a ~50 ms `task create` process; docs/fast-path.md §7b).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from cynork._errors import UsageError

DEFAULT_GATEWAY_URL = "http://localhost:12080"
ENV_GATEWAY_URL = "CYNORK_GATEWAY_URL"
ENV_TOKEN = "CYNORK_TOKEN"
ENV_CA_FILE = "CYNODE_CA_FILE"


# Paths are strings (os.path), not pathlib: pathlib imports fnmatch, ntpath and
# urllib.parse, ~1.5 ms of every start (docs/fast-path.md §7b).
def config_dir() -> str:
    """Where cynork keeps its config and shell history."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "cynork")


def default_config_path() -> str:
    return os.path.join(config_dir(), "config.yaml")


def history_path() -> str:
    return os.path.join(config_dir(), "history")


# What YAML 1.1 (PyYAML's safe_load) reads as a bool or null rather than a string.
_YAML_WORDS = frozenset({"yes", "no", "true", "false", "on", "off", "null"})
# The letters YAML's int, float and timestamp forms can hold (hex digits, 0x, 1e5, -.inf,
# .nan, 2001-12-14t21:59:43Z): a scalar with any other letter is a string.
_NUMERIC_LETTERS = frozenset("abcdefABCDEFxXtTZiInN")
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.~/%+=@:-")


def _flat_scalar(value: str) -> str | None:
    """`value` as the string YAML reads it, if it is surely one; None when unsure."""
    if len(value) >= 2 and value[0] == value[-1] == "'" and "'" not in value[1:-1]:
        return value[1:-1]  # single-quoted, no escapes inside
    if not value or not _PLAIN.issuperset(value) or value.endswith(":"):
        return None
    first = value[0]
    if first.isalpha() or first == "_":
        return None if value.lower() in _YAML_WORDS else value
    # A digit or a sign: a number or a date, unless a letter no such form holds is in it.
    numeric = first.isdigit() or first == "-"
    if numeric and any(ch.isalpha() and ch not in _NUMERIC_LETTERS for ch in value):
        return value
    return None


def parse_flat(text: str) -> dict[str, Any] | None:
    """The mapping a config file of plain `key: value` lines holds (what `save` writes:
    yaml.safe_dump of a flat mapping of strings), read without yaml; None for anything
    else, which yaml then reads. Returns only what yaml.safe_load would
    (tests/cynork/test_config_flat.py compares them)."""
    data: dict[str, Any] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(": ")
        scalar = _flat_scalar(value.strip(" "))
        if not (sep and key.isidentifier() and key.isascii()) or scalar is None:
            return None
        if key.lower() in _YAML_WORDS or key in data:
            return None
        data[key] = scalar
    return data


class ConfigFile:
    """The YAML file's content; unknown keys are kept so saving never drops them."""

    __slots__ = ("data", "path")

    def __init__(self, path: str | os.PathLike[str], data: dict[str, Any] | None = None) -> None:
        self.path = os.fspath(path)
        self.data: dict[str, Any] = {} if data is None else data

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ConfigFile:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return cls(path)
        except OSError as exc:
            raise UsageError(f"cannot read config file {path}: {exc.strerror}") from exc
        data = parse_flat(text)
        if data is None:
            # Imported here: most files are what cynork writes, which `parse_flat` reads,
            # and yaml is ~20 ms of CPU at start-up (docs/fast-path.md §7).
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise UsageError(f"config file {path} is not valid YAML") from exc
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise UsageError(f"config file {path} must hold a mapping of keys to values")
        return cls(path, data)

    def get(self, key: str) -> str | None:
        value = self.data.get(key)
        return str(value) if value not in (None, "") else None

    def update(self, values: Mapping[str, str | None]) -> None:
        """Sets (or, for None, removes) keys and writes the file."""
        for key, value in values.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        self.save()

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def save(self) -> None:
        directory, name = os.path.split(self.path)
        if directory and not os.path.exists(directory):
            os.makedirs(directory, mode=0o700)
        tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
        import yaml

        text = yaml.safe_dump(self.data, default_flow_style=False, sort_keys=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # The umask may have stripped bits we want, and a reused file may have more.
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


class Setting:
    """How a user reaches one Settings field, for docs/settings.md (tools/settings_doc.py)."""

    __slots__ = ("env", "field", "help", "key", "shown_default")

    def __init__(self, field: str, key: str, env: str, help: str, shown_default: str) -> None:
        self.field = field  # the Settings attribute
        self.key = key  # config file key, or the flag for what only a flag sets
        self.env = env
        self.help = help
        self.shown_default = shown_default


class Settings:
    """What one invocation talks to and with which credentials."""

    __slots__ = ("ca_file", "gateway_url", "insecure", "refresh_token", "token")

    # Declared once, in this order, for docs/settings.md.
    SETTINGS = (
        Setting(
            "gateway_url",
            "gateway_url",
            ENV_GATEWAY_URL,
            "the user gateway's REST URL (flag --gateway-url)",
            DEFAULT_GATEWAY_URL,
        ),
        Setting("token", "token", ENV_TOKEN, "access token; `cynork login` stores it", "(none)"),
        Setting(
            "refresh_token", "refresh_token", "", "refresh token `cynork login` stores", "(none)"
        ),
        Setting(
            "ca_file",
            "ca_file",
            ENV_CA_FILE,
            "CA (PEM) for an https gateway (flag --ca-file)",
            "(none)",
        ),
        Setting("insecure", "--insecure", "", "skip TLS certificate checks (flag only)", "false"),
    )

    def __init__(
        self,
        *,
        gateway_url: str,
        token: str | None,
        refresh_token: str | None,
        ca_file: str | None,
        insecure: bool,
    ) -> None:
        self.gateway_url = gateway_url
        self.token = token
        self.refresh_token = refresh_token
        self.ca_file = ca_file
        self.insecure = insecure


def resolve_settings(
    config: ConfigFile,
    *,
    gateway_url: str | None,
    ca_file: str | None,
    insecure: bool,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    env = os.environ if environ is None else environ
    url = (
        gateway_url or env.get(ENV_GATEWAY_URL) or config.get("gateway_url") or DEFAULT_GATEWAY_URL
    )
    return Settings(
        gateway_url=url.rstrip("/"),
        token=env.get(ENV_TOKEN) or config.get("token"),
        refresh_token=config.get("refresh_token"),
        ca_file=ca_file or env.get(ENV_CA_FILE) or config.get("ca_file"),
        insecure=insecure,
    )
