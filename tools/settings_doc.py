"""Writes docs/settings.md from the settings dataclasses (`make settings-doc`), and
cynork's `Settings.SETTINGS`.

Every settable field carries its key, env variable and meaning as field metadata
(`metadata={"setting": Setting(...)}`, one small `Setting` per package, since the
packages may not import each other); this file renders them, grouped by process. The
defaults come from the dataclasses themselves, so the page cannot drift from the code:
`--check` (run by `make gen-check`, and by tests/test_settings_doc.py) fails when the
committed page differs from what the code says.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "settings.md"
SETTING = "setting"


class SettingMeta(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def env(self) -> str: ...
    @property
    def help(self) -> str: ...
    @property
    def shown_default(self) -> str: ...


@dataclass(frozen=True)
class Section:
    title: str
    intro: str
    key_header: str
    cls: type


def sections() -> list[Section]:
    # Imported here: the tool is also imported by a test that only needs `render`.
    from cynode.node.config import NodeConfig
    from cynode.orchestrator.config import CONFIG_ENV, ControlPlaneOptions, Settings
    from cynode.proxy._config import ProxyConfig
    from cynork._config import Settings as CynorkSettings

    return [
        Section(
            "Orchestrator (`cynode-orchestrator serve`)",
            "YAML file: `--config FILE`, else the file `$"
            + CONFIG_ENV
            + "` names. Precedence: default < YAML < environment < command-line flags "
            "(`--dev`, `--insecure`, `--host`, `--rest-port`, `--grpc-port`).",
            "YAML key",
            Settings,
        ),
        Section(
            "Control plane (same process and YAML file: the node config it issues, scheduling)",
            "Dotted keys are YAML sections: `sandbox: {memory_mb: 512}` sets "
            "`sandbox.memory_mb`. The orchestrator sends the `sandbox.*`, `inference.*` and "
            "`constraints.*` values to every node as its node config. Settings are read at "
            "start: after the orchestrator restarts, each node gets the changed config (a new "
            "`config_version`) when it reconnects.",
            "YAML key",
            ControlPlaneOptions,
        ),
        Section(
            "Node (`cynode-node run`, `cynode-node doctor`)",
            "YAML file: `-c FILE`, else `$CYNODE_NODE_CONFIG`, else `/etc/cynode/node.yaml` "
            "when it exists. An environment variable set to a non-empty value wins over the "
            "file. Sandbox limits and timeouts are not set here: they come from the "
            "orchestrator (control plane above).",
            "YAML key",
            NodeConfig,
        ),
        Section(
            "Inference proxy (`cynode-proxy`)",
            "The node starts it as the sidecar of each inference pod and as its relay; run by "
            "hand it takes flags, which win over the environment.",
            "flag",
            ProxyConfig,
        ),
        Section(
            "cynork",
            "Config file `~/.config/cynork/config.yaml` (`$XDG_CONFIG_HOME/cynork/`). "
            "Precedence, highest first: flag, environment, config file, default.",
            "config key",
            CynorkSettings,
        ),
    ]


def _default(f: dataclasses.Field[Any], meta: SettingMeta) -> str:
    if meta.shown_default:
        return meta.shown_default
    if f.default is not dataclasses.MISSING:
        value: Any = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if value is None or value in ("", ()):
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def rows(cls: type) -> Iterator[tuple[str, str, str, str]]:
    if not dataclasses.is_dataclass(cls):
        # cynork's Settings, a plain class (its start builds no dataclass), lists its
        # settings in `SETTINGS`, each with the default it shows.
        for meta in cls.SETTINGS:  # type: ignore[attr-defined]
            env = f"`{meta.env}`" if meta.env else "—"
            yield f"`{meta.key}`", env, f"`{meta.shown_default}`", _cell(meta.help)
        return
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(SETTING)
        if meta is None:
            continue
        env = f"`{meta.env}`" if meta.env else "—"
        yield f"`{meta.key}`", env, f"`{_default(f, meta)}`", _cell(meta.help)


def render(parts: list[Section]) -> str:
    lines = [
        "# Settings",
        "",
        "<!-- Generated by `make settings-doc` (tools/settings_doc.py) from the settings",
        "     dataclasses; do not edit by hand. CI fails when it is stale. -->",
        "",
        "Every setting an operator can reach, by process: its config-file key, its",
        "environment variable, its default and what it does. Each comes from the field",
        "metadata the loaders read, so this page, the loaders and `--help` agree.",
        "A value that cannot be used stops the process with a message naming the setting.",
        "",
    ]
    for part in parts:
        lines += [f"## {part.title}", "", part.intro, ""]
        lines += [f"| {part.key_header} | environment | default | meaning |", "|---|---|---|---|"]
        lines += [f"| {' | '.join(row)} |" for row in rows(part.cls)]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when docs/settings.md is stale")
    args = parser.parse_args(argv)
    text = render(sections())
    if args.check:
        if not DOC.is_file() or DOC.read_text() != text:
            print(f"{DOC.relative_to(ROOT)} is stale: run `make settings-doc`", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
