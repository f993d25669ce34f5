"""The config file read without yaml (`cynork._config.parse_flat`): what cynork itself
writes, read as yaml.safe_load reads it, and anything it is unsure of left to yaml.

The property: for every text, parse_flat answers None or exactly yaml.safe_load's
mapping. Checked on what `ConfigFile.save` writes for random tokens and URLs, and on
hand-picked values YAML reads as something other than a string."""

from __future__ import annotations

import random
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from cynork._config import ConfigFile, parse_flat

TRICKY = [
    "yes",
    "No",
    "TRUE",
    "off",
    "null",
    "Null",
    "~",
    "",
    "123",
    "0x1f",
    "0o17",
    "1_000",
    "1e5",
    "-1",
    "+1",
    "1.5",
    ".5",
    ".inf",
    "-.inf",
    ".nan",
    "12:30",
    "2001-12-14",
    "2001-12-14t21:59:43Z",
    "1:30:00",
    "=",
    "<<",
    "a:",
    "a: b",
    "a #b",
    "a#b",
    "-",
    "-x",
    "-1g",
    "7up",
    "1g",
    "_x",
    "x y",
    "'quoted'",
    "it's",
    "é",
    "a\tb",
    "@x",
    "%x",
    "`x",
    "http://localhost:12080",
    "https://gw.example:8443/base",
    "[1]",
    "{a: 1}",
    "*ref",
    "&anchor",
    "!tag",
    "|",
    ">",
    "?",
    "?x",
    "yEs",
    "nO",
    "y",
    "n",
]


def _roundtrip(data: dict[str, str]) -> None:
    text = yaml.safe_dump(data, default_flow_style=False, sort_keys=True)
    flat = parse_flat(text)
    assert flat is None or flat == yaml.safe_load(text), text


@pytest.mark.parametrize("value", TRICKY)
def test_a_value_is_read_as_yaml_reads_it_or_left_to_yaml(value: str) -> None:
    _roundtrip({"token": value})
    for text in (f"token: {value}\n", f"token: '{value}'\n", f"{value}: x\n"):
        flat = parse_flat(text)
        if flat is not None:
            assert flat == yaml.safe_load(text), text


def test_random_configs_as_cynork_writes_them() -> None:
    rng = random.Random(16)
    fast = 0
    for _ in range(2000):
        data = {
            "gateway_url": rng.choice(["http://localhost:12080", "https://gw.example/x"]),
            "token": secrets.token_urlsafe(rng.randint(1, 48)),
            "refresh_token": "".join(rng.choice("0123456789-_aeEx.:") for _ in range(8)),
            "user": rng.choice(TRICKY) or "admin",
        }
        _roundtrip(data)
        fast += parse_flat(yaml.safe_dump(data, default_flow_style=False)) is not None
    assert fast > 200  # the fast path is taken, not only ever declined


def test_what_is_not_a_flat_mapping_goes_to_yaml() -> None:
    for text in (
        "a: 1\na: 2\n",  # a duplicate key
        "nested:\n  key: value\n",
        "  indented: value\n",
        "# a comment\ntoken: x\n",
        "---\ntoken: x\n",
        "token:\n",
        "1key: x\n",
        "yes: x\n",
        "list: [a]\n",
    ):
        assert parse_flat(text) is None, text
    assert parse_flat("\n") == {}


def test_a_login_config_loads_without_yaml(tmp_path: Path) -> None:
    """What `cynork auth login` writes is read without importing yaml (~20 ms)."""
    path = tmp_path / "config.yaml"
    config = ConfigFile(path)
    config.update(
        {
            "gateway_url": "http://localhost:12080",
            "token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
            "refresh_token": "Zm9vYmFyYmF6-_qux",
            "user": "admin",
        }
    )
    code = textwrap.dedent(
        f"""
        import sys
        from cynork._config import ConfigFile
        data = ConfigFile.load(__import__("pathlib").Path({str(path)!r})).data
        print(sorted(data), "yaml" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert done.stdout == b"['gateway_url', 'refresh_token', 'token', 'user'] False\n"
