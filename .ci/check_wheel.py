"""Check a built wheel, and the hf-cotmi installed from it, against the source tree.

Run with the Python of a virtual environment that has the wheel installed, from a directory outside the
checkout:

    python /path/to/checkout/.ci/check_wheel.py --source /path/to/checkout --wheel dist/hf_cotmi-X-py3-none-any.whl

What the package expects is read from the checkout, not from a list kept here: the ``[options.package_data]``
patterns of ``setup.cfg``, matched against the source tree, plus every module of every package. The check
fails when

- a file the patterns (or the packages) name is missing from the wheel or from the installed package;
- a data file lies in a package folder of the source tree but matches no ``package_data`` pattern (it would
  be left out of the wheel without a word);
- ``import hf_cotmi`` resolves into the checkout instead of the installed wheel, ``hf_cotmi.__version__``
  differs from the wheel's version, or the packaged ``evaluate`` ECE module does not load and compute.
"""

from __future__ import annotations

import argparse
import configparser
import sys
import zipfile
from pathlib import Path, PurePosixPath

# files of a package folder that are never package data
IGNORED_PARTS = {"__pycache__", ".ipynb_checkpoints"}
IGNORED_SUFFIXES = {".pyc", ".pyo"}


def package_data_patterns(setup_cfg: Path) -> dict[str, list[str]]:
    """``{package: [pattern, ...]}`` from ``[options.package_data]`` of ``setup_cfg``."""
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    if not parser.has_section("options.package_data"):
        return {}
    patterns = {}
    for package, value in parser.items("options.package_data"):
        patterns[package] = [p.strip() for p in value.replace("\n", ",").split(",") if p.strip()]
    return patterns


def source_packages(source: Path, top: str) -> list[str]:
    """Dotted names of ``top`` and its sub-packages (folders with ``__init__.py``) in the source tree."""
    return sorted(
        ".".join(init.parent.relative_to(source).parts)
        for init in (source / top).rglob("__init__.py")
        if not IGNORED_PARTS & set(init.parts)
    )


def _package_files(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not IGNORED_PARTS & set(path.relative_to(folder).parts)
        and path.suffix not in IGNORED_SUFFIXES
    )


def expected_files(
    source: Path, top: str, patterns: dict[str, list[str]]
) -> tuple[set[str], set[str], set[str]]:
    """The wheel paths of the modules and of the package data, and the data files no pattern matches.

    Modules: every ``.py`` file directly in a package folder. Data: what each package's patterns glob,
    relative to the package folder, as setuptools does (a pattern for ``""`` or ``"*"`` applies to every
    package). A file under a package folder that is neither is reported as unmatched.
    """
    packages = source_packages(source, top)
    package_folders = {source.joinpath(*package.split(".")) for package in packages}
    for package in patterns:
        if package not in ("", "*") and package not in packages:
            raise SystemExit(f"setup.cfg [options.package_data] names {package!r}, which is not a package")
    data: set[Path] = set()
    for package in packages:
        folder = source.joinpath(*package.split("."))
        for pattern in patterns.get(package, []) + patterns.get("", []) + patterns.get("*", []):
            matched = [path for path in folder.glob(pattern) if path.is_file()]
            if not matched and package in patterns:
                raise SystemExit(
                    f"setup.cfg [options.package_data] pattern {pattern!r} of {package!r} matches no file"
                )
            data.update(matched)
    modules: set[str] = set()
    data_files: set[str] = set()
    unmatched: set[str] = set()
    for path in _package_files(source / top):
        wheel_path = path.relative_to(source).as_posix()
        if path.suffix == ".py" and path.parent in package_folders:
            modules.add(wheel_path)
        elif path in data:
            data_files.add(wheel_path)
        else:
            unmatched.add(wheel_path)
    return modules, data_files, unmatched


def wheel_version(wheel: Path) -> str:
    """The version in a wheel's file name (``name-VERSION-py3-none-any.whl``)."""
    return wheel.name.split("-")[1]


def check_ece_module(path: str) -> None:
    """Load the packaged ``evaluate`` ECE module from its path and compare one result with the formula."""
    import evaluate

    ece = evaluate.load(path)
    confidences, correct = [0.95, 0.65, 0.85, 0.35], [1, 0, 1, 1]
    result = ece.compute(predictions=confidences, references=correct)
    # by hand, 10 equal-width bins: each example alone in its bin, so ECE = mean |correct - confidence|
    by_hand = sum(abs(c - p) for p, c in zip(confidences, correct)) / len(confidences)
    if abs(result["ece"] - by_hand) > 1e-9:
        raise SystemExit(f"the packaged ECE module computed {result['ece']}, expected {by_hand}")
    print(f"evaluate ECE module loads from {path}: ece {result['ece']:.4f} (by hand {by_hand:.4f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="the checkout the wheel was built from")
    parser.add_argument("--wheel", type=Path, required=True, help="the built .whl")
    parser.add_argument("--package", default="hf_cotmi", help="top-level package (default hf_cotmi)")
    args = parser.parse_args(argv)
    source = args.source.resolve()

    modules, data, unmatched = expected_files(
        source, args.package, package_data_patterns(source / "setup.cfg")
    )
    expected = modules | data
    if unmatched:
        raise SystemExit(
            "data files in the source tree that no setup.cfg [options.package_data] pattern ships: "
            + ", ".join(sorted(unmatched))
        )
    with zipfile.ZipFile(args.wheel) as archive:
        in_wheel = {name for name in archive.namelist() if not name.endswith("/")}
    missing = sorted(expected - in_wheel)
    if missing:
        raise SystemExit(f"{args.wheel.name} lacks {len(missing)} file(s): {', '.join(missing)}")
    print(
        f"{args.wheel.name}: {len(in_wheel)} files, all {len(expected)} expected ones; package data: {sorted(data)}"
    )

    import hf_cotmi

    installed = Path(hf_cotmi.__file__).resolve().parent
    if installed == source / args.package:
        raise SystemExit(f"import hf_cotmi found the checkout ({installed}), not the installed wheel")
    absent = sorted(name for name in expected if not (installed.parent / PurePosixPath(name)).is_file())
    if absent:
        raise SystemExit(f"the installed package at {installed} lacks: {', '.join(absent)}")
    if hf_cotmi.__version__ != wheel_version(args.wheel):
        raise SystemExit(f"hf_cotmi.__version__ is {hf_cotmi.__version__}, the wheel is {args.wheel.name}")
    print(f"import hf_cotmi: {installed}, version {hf_cotmi.__version__}")
    check_ece_module(hf_cotmi.ece_metric_path())
    return 0


if __name__ == "__main__":
    sys.exit(main())
