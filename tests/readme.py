"""The README's code, as the tests that follow its recipes literally read it."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(section: str, language: str = "python") -> str:
    """The first ``language`` code block of the README's ``### <section>``."""
    text = README.read_text()
    body = text[text.index(f"### {section}\n"):]
    return re.search(rf"```{language}\n(.*?)```", body, re.S).group(1)
