"""The documentation's code, as the tests that follow its recipes literally read it (the
recipes of "Extending" live in docs/guides/extending.md, not in the README)."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def doc_block(section: str, language: str = "python", page: str = "guides/extending.md") -> str:
    """The first ``language`` code block after the heading ``section`` (of any level) of
    ``docs/<page>``."""
    text = (DOCS / page).read_text()
    heading = re.search(rf"^#+ {re.escape(section)}\n", text, re.M)
    assert heading, f"docs/{page} has no heading {section!r}"
    return re.search(rf"```{language}\n(.*?)```", text[heading.end():], re.S).group(1)
