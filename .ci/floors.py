"""Print pip constraints that pin the declared minimum versions of setup.cfg (the lowest-versions CI step).

    python .ci/floors.py transformers torch datasets accelerate peft > floors.txt
    pip install torch==$(python .ci/floors.py --version-of torch)
    pip install -e ".[dev]" -c floors.txt

Each named requirement is looked up in ``install_requires`` and then in the extras; its ``>=`` bound becomes
an ``==`` pin. A name that is not declared, or is declared without a ``>=`` bound, is an error, so the
step cannot silently test something other than the floor.
"""

from __future__ import annotations

import argparse
import configparser
import re
import sys
from pathlib import Path

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$")


def declared_requirements(setup_cfg: Path) -> list[str]:
    """Every requirement line of ``install_requires`` and of each extra, in that order."""
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    lines = parser.get("options", "install_requires", fallback="").splitlines()
    if parser.has_section("options.extras_require"):
        for _, value in parser.items("options.extras_require"):
            lines += value.splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def floor_of(name: str, requirements: list[str]) -> str:
    """The ``>=`` version of the first requirement on ``name``."""
    wanted = name.lower().replace("_", "-")
    for line in requirements:
        match = REQUIREMENT.match(line)
        if match and match.group(1).lower().replace("_", "-") == wanted:
            bound = re.search(r">=\s*([0-9][^,;\s]*)", match.group(3))
            if bound is None:
                raise SystemExit(f"setup.cfg declares {line!r} without a '>=' floor")
            return bound.group(1)
    raise SystemExit(f"setup.cfg declares no requirement on {name!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="requirements to pin to their floor")
    parser.add_argument("--version-of", help="print only this requirement's floor version")
    parser.add_argument(
        "--setup-cfg", type=Path, default=Path(__file__).resolve().parent.parent / "setup.cfg"
    )
    args = parser.parse_args(argv)
    requirements = declared_requirements(args.setup_cfg)
    if args.version_of:
        print(floor_of(args.version_of, requirements))
        return 0
    for name in args.names:
        print(f"{name}=={floor_of(name, requirements)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
