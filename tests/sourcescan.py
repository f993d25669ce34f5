"""Parsing this repository's own sources for the tests that scan them (the one-home,
harness and prompt-runner checks)."""

from __future__ import annotations

import ast


def parse_source(source: str) -> ast.Module:
    """`ast.parse`, tried once more on CPython 3.11's spurious "AST constructor recursion
    depth mismatch" SystemError: the AST constructor's depth counter is shared by every
    thread of the process (python/cpython#106905, fixed in later releases), so a parse
    in another thread (pytest's assertion rewriting of a module imported there, say)
    can trip this one. A real syntax error is a SyntaxError and is never retried."""
    try:
        return ast.parse(source)
    except SystemError:
        return ast.parse(source)
