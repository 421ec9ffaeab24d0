"""Build script. The metadata lives in setup.cfg; only the PyPI page is made here.

PyPI shows README.md as the project page, where its relative links (``docs/cli.md``) lead nowhere: the long
description is the README with each relative link made absolute, to the file on GitHub's ``main``.
"""

from __future__ import annotations

import re
from pathlib import Path

REPOSITORY = "https://github.com/hf-cotmi/hf-cotmi"
# [text](target) and ![alt](target); the target ends at whitespace or ")"
MARKDOWN_LINK = re.compile(r"(!?)\[([^\]]*)\]\(\s*([^)\s]+)")
HTML_LINK = re.compile(r"""\b(href|src)\s*=\s*(["'])([^"']+)\2""")
ABSOLUTE = ("http://", "https://", "mailto:", "#", "/")


def _absolute(target: str, image: bool) -> str:
    if target.startswith(ABSOLUTE):
        return target
    kind = "raw" if image else "blob"
    return f"{REPOSITORY}/{kind}/main/{target.removeprefix('./')}"


def pypi_description(readme: str) -> str:
    """``readme`` with its relative links and image paths made absolute; fenced code is left alone.

    Examples:
        >>> pypi_description("See [the CLI](docs/cli.md), [PyPI](https://pypi.org).")
        'See [the CLI](https://github.com/hf-cotmi/hf-cotmi/blob/main/docs/cli.md), [PyPI](https://pypi.org).'
    """
    lines = []
    in_fence = False
    for line in readme.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence:
            line = MARKDOWN_LINK.sub(lambda m: f"{m[1]}[{m[2]}]({_absolute(m[3], image=bool(m[1]))}", line)
            line = HTML_LINK.sub(lambda m: f"{m[1]}={m[2]}{_absolute(m[3], m[1] == 'src')}{m[2]}", line)
        lines.append(line)
    return "".join(lines)


if __name__ == "__main__":
    from setuptools import setup

    readme = Path(__file__).resolve().with_name("README.md").read_text(encoding="utf-8")
    setup(long_description=pypi_description(readme), long_description_content_type="text/markdown")
