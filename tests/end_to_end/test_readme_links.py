"""The README's links into docs/ reach a page and a heading there (mkdocs build --strict checks
the links between the pages, not the README's, which GitHub shows)."""

from __future__ import annotations

import re
from pathlib import Path

from markdown.extensions.toc import slugify

REPO = Path(__file__).resolve().parents[2]


def anchors(page: Path) -> set[str]:
    """The ids MkDocs gives the headings of ``page`` (outside code blocks)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    return {slugify(re.sub(r"[`*]", "", heading), "-") for heading in headings}


def test_the_readme_links_reach_their_pages_and_headings():
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#\s]*)(?:#([^)\s]+))?\)", readme)
    assert len(links) >= 10, links
    for path, anchor in links:
        target = REPO / path
        assert target.exists(), f"README.md links {path}, which does not exist"
        if anchor:
            assert anchor in anchors(target), f"README.md links {path}#{anchor}: no such heading"
