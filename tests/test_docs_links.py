"""The README and docs/: every relative link lands on a file of this repository (and on a heading there when it
names one), no link leaves the repository, and the README stays short enough to read first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt  # pinned in requirements.lock (rich's Markdown parser)

ROOT = Path(__file__).resolve().parents[1]
README_MAX_CHARS = 12_500
# where users start: the two commands, the paper run's cost, comparing runs
README_COMMANDS = (
    "make demo",
    "make test",
    "restorebench --profile paper plan",
    "dvc metrics diff",
    "dvc params diff",
)
DOCS = [ROOT / "README.md", ROOT / "FIDELITY.md", *sorted((ROOT / "docs").glob("*.md"))]
WEB = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # https:, mailto:, ...: not a file of this repository


def _inline_text(token) -> str:
    """A heading's text as GitHub slugs it: plain text and inline code, without the markup."""
    return "".join(c.content for c in token.children or [] if c.type in ("text", "code_inline"))


def slug(text: str, seen: dict[str, int]) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped (letters, digits, '-', '_' and spaces kept),
    spaces to '-'; a repeated heading gets '-1', '-2', ..."""
    base = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
    n = seen.get(base, 0)
    seen[base] = n + 1
    return base if n == 0 else f"{base}-{n}"


def parse(path: Path) -> tuple[list[str], set[str]]:
    """(link targets, heading anchors) of one Markdown file; links inside code spans and blocks are not links."""
    tokens = MarkdownIt("commonmark").enable("table").parse(path.read_text(encoding="utf-8"))
    links, anchors, seen = [], set(), {}
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            anchors.add(slug(_inline_text(tokens[i + 1]), seen))
        for child in tok.children or []:
            if child.type == "link_open":
                links.append(str(child.attrGet("href")))
            elif child.type == "image":
                links.append(str(child.attrGet("src")))
    return links, anchors


def test_the_docs_exist_and_parse():
    names = {p.name for p in DOCS}
    assert {"README.md", "ARCHITECTURE.md", "running.md", "extending.md", "reliability.md"} <= names
    links, anchors = parse(ROOT / "docs" / "running.md")
    assert "comparing-runs" in anchors and links  # the slugger and the link walker see this file's structure


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(doc: Path):
    broken = []
    for href in parse(doc)[0]:
        if WEB.match(href):
            continue
        target, _, anchor = href.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        if not path.is_relative_to(ROOT):
            broken.append(f"{href}: outside the repository")
        elif not path.exists():
            broken.append(f"{href}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in parse(path)[1]:
            broken.append(f"{href}: no heading '{anchor}' in {path.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)}: {broken}"


def test_slug_matches_githubs_anchors():
    seen: dict[str, int] = {}
    assert slug("What `make install` does", seen) == "what-make-install-does"
    assert slug("Tests, lint and benchmarks", seen) == "tests-lint-and-benchmarks"
    assert slug("Disk: DVC's cache", seen) == "disk-dvcs-cache"
    assert slug("Tests, lint and benchmarks", seen) == "tests-lint-and-benchmarks-1"


def test_readme_is_short_and_keeps_the_user_facing_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text) <= README_MAX_CHARS, f"README.md is {len(text)} characters; move reference text to docs/"
    missing = [c for c in README_COMMANDS if c not in text]
    assert not missing, f"README.md no longer shows {missing}"
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # CI runs the README's test command
