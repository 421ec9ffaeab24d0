"""Fail when the PyPI page links to a relative path, which leads nowhere there.

    python .ci/check_readme_links.py dist/hf_cotmi-X-py3-none-any.whl    # the page PyPI will show
    python .ci/check_readme_links.py README.md

The page is the wheel's long description: README.md with its links made absolute by setup.py.
"""

from __future__ import annotations

import re
import sys
import zipfile
from email.parser import HeaderParser
from pathlib import Path

# [text](target) and ![alt](target), <a href="target">, <img src="target">, and [label]: target definitions
LINKS = re.compile(r"\]\(\s*<?([^)\s>]+)|(?:href|src)\s*=\s*[\"']([^\"']+)|^\s*\[[^\]]+\]:\s*(\S+)", re.M)
ABSOLUTE = ("http://", "https://", "mailto:", "#")


def relative_links(text: str) -> list[tuple[int, str]]:
    """``(line, target)`` of every link whose target is not an absolute URL or a fragment; code is skipped."""
    found = []
    in_fence = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        line = re.sub(r"`[^`]*`", "", line)
        for match in LINKS.finditer(line):
            target = next(group for group in match.groups() if group)
            if not target.startswith(ABSOLUTE):
                found.append((number, target))
    return found


def long_description(wheel: Path) -> str:
    """The long description (the PyPI page) in a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode("utf-8")
    return HeaderParser().parsestr(metadata).get_payload()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "README.md")
    text = long_description(path) if path.suffix == ".whl" else path.read_text(encoding="utf-8")
    found = relative_links(text)
    for number, target in found:
        print(
            f"{path}:{number}: relative link {target!r} (it leads nowhere on PyPI)",
            file=sys.stderr,
        )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
