"""Secrets in what users send a model (SPEC §10.5): tokens of known shapes are replaced
with SECRET_REDACTED before the text reaches a node, a model or a log. What was
replaced is counted by kind, never kept."""

from __future__ import annotations

import re
from collections import Counter

SECRET_REDACTED = "SECRET_REDACTED"

# Shapes issued by well-known providers, plus generic bearer tokens and key blocks.
# Each needs enough distinctive structure that ordinary prose never matches.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        (
            "private_key",
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        ),
        ("openai_key", r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"),
        ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
        ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
        ("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
        ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}"),
        ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
        ("bearer", r"(?i)(?<=\bbearer )[A-Za-z0-9._~+/-]{20,}=*"),
    )
)


def redact(text: str, found: Counter[str] | None = None) -> str:
    """`text` with every secret replaced; `found` counts replacements by kind."""
    for kind, pattern in _PATTERNS:
        text, n = pattern.subn(SECRET_REDACTED, text)
        if n and found is not None:
            found[kind] += n
    return text
