"""How an operator reaches a dataclass field: its config-file key, its environment
variable, what it means, and the values it accepts.

Declared once, as field metadata (`field(default=..., metadata=setting(...))`), so the
loader (`config.load_settings`), `serve --help` and the generated `docs/settings.md`
(`tools/settings_doc.py`) all read the same names and cannot drift apart.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from dataclasses import Field, dataclass, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

# The metadata key every settable field carries (tools/settings_doc.py reads it too).
SETTING = "setting"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """A setting has a value the orchestrator cannot start with."""


@dataclass(frozen=True)
class Setting:
    key: str  # config-file key; dotted for a nested section (`sandbox.memory_mb`)
    env: str
    help: str
    # The default as the docs say it, when the field's own value is not what applies
    # (computed later, generated, or a secret).
    shown_default: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.key} ({self.env})"

    def check(self, value: Any) -> None:
        """Refuses a converted value outside what this setting accepts."""
        if self.choices and str(value).lower() not in self.choices:
            raise SettingsError(
                f"{self.where} must be one of {', '.join(self.choices)}, got {value!r}"
            )
        if not isinstance(value, int | float) or isinstance(value, bool):
            return
        low, high = self.minimum, self.maximum
        if low is not None and high is not None and not low <= value <= high:
            raise SettingsError(f"{self.where} must be between {low:g} and {high:g}, got {value}")
        if low is not None and value < low:
            if low == 1 and isinstance(value, int):
                raise SettingsError(f"{self.where} must be positive, got {value}")
            raise SettingsError(f"{self.where} must be at least {low:g}, got {value}")


def setting(
    key: str,
    env: str,
    help: str,
    *,
    shown_default: str = "",
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] = (),
) -> dict[str, Setting]:
    """Field metadata: `field(default=1, metadata=setting("a.b", "CYNODE_A_B", "..."))`."""
    return {SETTING: Setting(key, env, help, shown_default, minimum, maximum, choices)}


@dataclass(frozen=True)
class Settable:
    """One settable field of a dataclass, with its resolved type."""

    field: Field[Any]
    setting: Setting
    hint: Any


def settable(cls: type) -> Iterator[Settable]:
    hints = get_type_hints(cls)
    for f in fields(cls):
        meta = f.metadata.get(SETTING)
        if isinstance(meta, Setting):
            yield Settable(f, meta, hints[f.name])


def flatten(data: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """Nested YAML sections as dotted keys: {"sandbox": {"pids": 8}} -> {"sandbox.pids": 8}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(get_args(hint))
    return hint, False


def convert(hint: Any, raw: Any, where: str) -> Any:
    """A raw YAML or environment value as the field's type; `where` names the setting."""
    base, optional = _base_type(hint)
    if raw is None or (optional and raw == ""):
        if optional:
            return None
        raw = ""
    if base is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise SettingsError(f"{where} must be true or false, got {raw!r}")
    if base is int or base is float:
        if isinstance(raw, bool):
            # YAML reads `yes` as True; int(True) == 1 would hide the mistake.
            raise SettingsError(f"{where} must be a number, got {raw!r}")
        try:
            return base(raw)
        except (TypeError, ValueError):
            kind = "an integer" if base is int else "a number"
            raise SettingsError(f"{where} must be {kind}, got {raw!r}") from None
    if base is Path:
        return Path(str(raw)).expanduser() if raw != "" else None
    if get_origin(base) is tuple:
        if isinstance(raw, str):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if not isinstance(raw, list):
            raise SettingsError(f"{where} must be a list (or comma-separated), got {raw!r}")
        return tuple(str(item) for item in raw)
    return str(raw)
