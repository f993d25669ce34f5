"""Every "SPEC §N" citation in the repository names a section of docs/spec.md.

Code, protos, tests and docs cite the behaviour spec by section number. A citation that
points at a section the spec no longer has (renumbered, merged, never written) sends a
reader nowhere, so every tracked text file is scanned and each citation must match a
numbered heading: `## N.` for SPEC §N, `### N.M` for SPEC §N.M, and so on.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "docs" / "spec.md"

CITATION = re.compile(r"SPEC §(\d+(?:\.\d+)*)")
# "## 2. User gateway", "### 2.3 Auth": the number, then an optional dot, then a space.
HEADING = re.compile(r"^(#{2,6}) (\d+(?:\.\d+)*)\.? ", re.M)

# The top-level sections keep the shared spec's numbering, so that a citation written
# against it still lands on the same subject here.
KEPT_SECTIONS = {
    "1": "Ports and processes",
    "2": "User gateway",
    "3": "Control plane",
    "4": "Worker node",
    "5": "cynork",
    "6": "Acceptance suites",
}


class Citation(NamedTuple):
    path: str
    line: int
    section: str


def spec_sections(text: str) -> set[str]:
    """The section numbers the spec's headings define; a heading's depth must match its
    number (`##` one part, `###` two, ...), or it is not counted."""
    sections: set[str] = set()
    for hashes, number in HEADING.findall(text):
        if number.count(".") + 2 == len(hashes):
            sections.add(number)
    return sections


def citations(files: Iterable[tuple[str, str]]) -> Iterator[Citation]:
    """Every citation in (path, text) pairs, with its line number."""
    for path, text in files:
        for match in CITATION.finditer(text):
            yield Citation(path, text.count("\n", 0, match.start()) + 1, match.group(1))


def unresolved(sections: set[str], files: Iterable[tuple[str, str]]) -> list[Citation]:
    return [c for c in citations(files) if c.section not in sections]


def tracked_text_files() -> Iterator[tuple[str, str]]:
    """(path, text) of every tracked file that is text (UTF-8, no NUL byte)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    for name in listed.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file():
            continue  # deleted in the working tree, or a submodule
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            yield name, data.decode("utf-8")
        except UnicodeDecodeError:
            continue


def test_every_citation_in_the_repository_names_a_spec_section() -> None:
    sections = spec_sections(SPEC.read_text())
    found = list(citations(tracked_text_files()))
    # The scan must see the citations we know of, or it proves nothing.
    assert any(c.path == "buf.yaml" for c in found), "the scan missed buf.yaml's citation"
    missing = [c for c in found if c.section not in sections]
    assert not missing, "citations of sections docs/spec.md lacks:\n" + "\n".join(
        f"  {c.path}:{c.line}: SPEC \u00a7{c.section}" for c in missing
    )


def test_the_shared_spec_numbering_is_kept() -> None:
    text = SPEC.read_text()
    for number, title in KEPT_SECTIONS.items():
        assert re.search(rf"^## {number}\. {re.escape(title)}", text, re.M), (
            f"docs/spec.md must keep section {number} as '{title}'"
        )


def test_numbered_headings_are_unique_and_as_deep_as_their_number() -> None:
    headings = HEADING.findall(SPEC.read_text())
    numbers = [number for _, number in headings]
    assert len(numbers) == len(set(numbers)), "a section number is used twice"
    wrong = [f"{h} {n}" for h, n in headings if n.count(".") + 2 != len(h)]
    assert not wrong, f"headings whose depth does not match their number: {wrong}"


def test_a_citation_of_a_missing_section_is_reported() -> None:
    sign = "\u00a7"  # written as an escape, so this file holds no citation itself
    sections = spec_sections("## 2. User gateway\n\n### 2.3 Auth\n#### 2.3.1 Tokens\n")
    assert sections == {"2", "2.3", "2.3.1"}
    good = [("a.py", f"# SPEC {sign}2, SPEC {sign}2.3 and SPEC {sign}2.3.1's rule")]
    assert unresolved(sections, good) == []
    bad = [("b.py", f"one\n# see SPEC {sign}9\n# and SPEC {sign}2.4, not SPEC {sign}2.")]
    assert unresolved(sections, bad) == [Citation("b.py", 2, "9"), Citation("b.py", 3, "2.4")]


def test_a_heading_at_the_wrong_depth_defines_no_section() -> None:
    # "## 2.3" looks like a subsection but sits at the top level: a citation of 2.3 must
    # not be satisfied by it, or the numbering would drift without anyone noticing.
    assert spec_sections("## 2.3 Auth\n### 4 Worker\n") == set()
