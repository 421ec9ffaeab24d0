"""Fail when README.md links to a relative path: PyPI shows the README as the project page, where a relative
link leads nowhere. Link to https://github.com/hf-cotmi/hf-cotmi/blob/main/PATH instead.

    python .ci/check_readme_links.py [README.md]
"""

from __future__ import annotations

import re
import sys
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "README.md")
    found = relative_links(path.read_text(encoding="utf-8"))
    for number, target in found:
        print(
            f"{path}:{number}: relative link {target!r} (it breaks on PyPI; use an https:// link)",
            file=sys.stderr,
        )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
