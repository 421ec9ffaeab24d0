"""The release checks of .ci/ (floors, wheel contents, the PyPI page's links, an offline site), setup.py's
PyPI page, and the paths that examples/benchmarks/replicate.py writes into shared results files."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"release_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


floors = _load(ROOT / ".ci" / "floors.py")
check_wheel = _load(ROOT / ".ci" / "check_wheel.py")
check_readme_links = _load(ROOT / ".ci" / "check_readme_links.py")
check_site_offline = _load(ROOT / ".ci" / "check_site_offline.py")
setup_script = _load(ROOT / "setup.py")

SETUP_CFG = """\
[options]
install_requires =
    transformers>=5.19
    torch >= 2.7, <3
    sentencepiece

[options.extras_require]
peft = peft>=0.21.2
dev =
    pytest>=7
"""


# ------------------------------------------------------------------------------------------------ floors


def test_floors_pin_each_declared_minimum(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "setup.cfg"
    cfg.write_text(SETUP_CFG)
    assert floors.main(["--setup-cfg", str(cfg), "transformers", "torch", "peft"]) == 0
    assert capsys.readouterr().out.split() == ["transformers==5.19", "torch==2.7", "peft==0.21.2"]
    assert floors.main(["--setup-cfg", str(cfg), "--version-of", "torch"]) == 0
    assert capsys.readouterr().out.strip() == "2.7"


def test_floors_refuse_what_has_no_floor(tmp_path: Path) -> None:
    cfg = tmp_path / "setup.cfg"
    cfg.write_text(SETUP_CFG)
    with pytest.raises(SystemExit, match="'sentencepiece' without a '>=' floor"):
        floors.main(["--setup-cfg", str(cfg), "sentencepiece"])
    with pytest.raises(SystemExit, match="no requirement on 'numpy'"):
        floors.main(["--setup-cfg", str(cfg), "numpy"])


def test_the_project_declares_a_floor_for_every_version_ci_tests() -> None:
    requirements = floors.declared_requirements(ROOT / "setup.cfg")
    found = {name: floors.floor_of(name, requirements) for name in ("transformers", "torch", "datasets")}
    assert all(version[0].isdigit() for version in found.values()), found


# ------------------------------------------------------------------------------------------ wheel contents


def _package_tree(root: Path) -> Path:
    for path, text in {
        "pkg/__init__.py": "",
        "pkg/core.py": "",
        "pkg/py.typed": "",
        "pkg/metrics/__init__.py": "",
        "pkg/metrics/ece/ece.py": "",
        "pkg/metrics/ece/README.md": "",
        "pkg/templates/card.md.jinja": "",
        "pkg/__pycache__/core.cpython-311.pyc": "",
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def test_expected_files_follow_the_package_data_patterns(tmp_path: Path) -> None:
    source = _package_tree(tmp_path)
    patterns = {"pkg": ["metrics/*/*.py", "metrics/*/*.md", "py.typed", "templates/*.jinja"]}
    modules, data, unmatched = check_wheel.expected_files(source, "pkg", patterns)
    assert modules == {"pkg/__init__.py", "pkg/core.py", "pkg/metrics/__init__.py"}
    assert data == {
        "pkg/py.typed",
        "pkg/metrics/ece/ece.py",
        "pkg/metrics/ece/README.md",
        "pkg/templates/card.md.jinja",
    }
    assert unmatched == set()


def test_a_data_file_no_pattern_ships_is_reported(tmp_path: Path) -> None:
    source = _package_tree(tmp_path)
    _, _, unmatched = check_wheel.expected_files(source, "pkg", {"pkg": ["metrics/*/*.py", "py.typed"]})
    assert unmatched == {"pkg/metrics/ece/README.md", "pkg/templates/card.md.jinja"}


def test_a_pattern_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    source = _package_tree(tmp_path)
    with pytest.raises(SystemExit, match="'prompts/\\*.txt' of 'pkg' matches no file"):
        check_wheel.expected_files(source, "pkg", {"pkg": ["prompts/*.txt"]})
    with pytest.raises(SystemExit, match="names 'other', which is not a package"):
        check_wheel.expected_files(source, "pkg", {"other": ["*.md"]})


def test_a_wheel_without_a_packaged_file_fails(tmp_path: Path) -> None:
    source = _package_tree(tmp_path / "src")
    (source / "setup.cfg").write_text("[options.package_data]\npkg = templates/*.jinja, py.typed\n")
    (source / "pkg" / "metrics" / "ece" / "README.md").unlink()
    (source / "pkg" / "metrics" / "ece" / "ece.py").unlink()
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in ("pkg/__init__.py", "pkg/core.py", "pkg/metrics/__init__.py", "pkg/py.typed"):
            archive.writestr(name, "")
    with pytest.raises(SystemExit, match=r"lacks 1 file\(s\): pkg/templates/card.md.jinja"):
        check_wheel.main(["--source", str(source), "--wheel", str(wheel), "--package", "pkg"])


def test_every_data_file_of_hf_cotmi_is_shipped_by_a_pattern() -> None:
    patterns = check_wheel.package_data_patterns(ROOT / "setup.cfg")
    _, data, unmatched = check_wheel.expected_files(ROOT, "hf_cotmi", patterns)
    assert unmatched == set()
    assert {"hf_cotmi/evaluate_metrics/ece/README.md", "hf_cotmi/py.typed"} <= data


# ------------------------------------------------------------------------------------------ README links


def test_relative_readme_links_are_found_and_code_is_skipped() -> None:
    text = "\n".join(
        [
            "See [the CLI](docs/cli.md) and [PyPI](https://pypi.org/project/hf-cotmi/), [top](#install).",
            '<img src="docs/plot.png"> <a href="https://github.com/hf-cotmi/hf-cotmi">repo</a>',
            "Inline `[x](not/a/link.md)` is code.",
            "```",
            "[y](also/code.md)",
            "```",
            "[ref]: examples/README.md",
        ]
    )
    assert check_readme_links.relative_links(text) == [
        (1, "docs/cli.md"),
        (2, "docs/plot.png"),
        (7, "examples/README.md"),
    ]


def test_the_pypi_page_makes_the_readme_links_absolute() -> None:
    readme = "\n".join(
        [
            "[the CLI](docs/cli.md), [notebook](./examples/quickstart.ipynb), [top](#install), ![plot](docs/a.png)",
            '<img src="docs/b.png"> [PyPI](https://pypi.org/project/hf-cotmi/)',
            "```python",
            'features["train"](docs/not-a-link)',
            "```",
        ]
    )
    blob, raw = (
        "https://github.com/hf-cotmi/hf-cotmi/blob/main/",
        "https://github.com/hf-cotmi/hf-cotmi/raw/main/",
    )
    assert setup_script.pypi_description(readme).splitlines() == [
        f"[the CLI]({blob}docs/cli.md), [notebook]({blob}examples/quickstart.ipynb), [top](#install), "
        f"![plot]({raw}docs/a.png)",
        f'<img src="{raw}docs/b.png"> [PyPI](https://pypi.org/project/hf-cotmi/)',
        "```python",
        'features["train"](docs/not-a-link)',
        "```",
    ]


def test_the_readme_as_pypi_shows_it_has_only_absolute_links() -> None:
    readme = (ROOT / "README.md").read_text()
    assert check_readme_links.relative_links(setup_script.pypi_description(readme)) == []


def test_the_link_check_reads_the_page_from_a_wheel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    metadata = "Metadata-Version: 2.4\nName: pkg\nVersion: 1.0\n\nSee [the docs](docs/index.md).\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg-1.0.dist-info/METADATA", metadata)
    assert check_readme_links.main([str(wheel)]) == 1
    assert "pkg-1.0-py3-none-any.whl:1: relative link 'docs/index.md'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ offline site


def _site(root: Path, script: str) -> Path:
    (root / "concepts" / "mi-loss").mkdir(parents=True)
    (root / "assets" / "mathjax").mkdir(parents=True)
    (root / "assets" / "mathjax" / "tex-svg.js").write_text("")
    (root / "assets" / "style.css").write_text("body { background: url(img/bg.png) }")
    (root / "concepts" / "mi-loss" / "index.html").write_text(
        '<link rel="stylesheet" href="../../assets/style.css">'
        '<link rel="canonical" href="https://hf-cotmi.example/concepts/mi-loss/">'
        f'<script src="{script}"></script>'
        '<a href="https://arxiv.org/abs/2403.03348">paper</a>'
        '<span class="arithmatex">\\(x\\)</span>'
    )
    return root


def test_a_site_loading_only_its_own_files_passes(tmp_path: Path) -> None:
    site = _site(tmp_path, "../../assets/mathjax/tex-svg.js")
    problems, checked = check_site_offline.check_site(site)
    assert problems == [] and checked == 3
    assert check_site_offline.check_math_page(site, "concepts/mi-loss/index.html") == []


def test_a_cdn_script_and_a_missing_file_are_reported(tmp_path: Path) -> None:
    site = _site(tmp_path, "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js")
    (site / "assets" / "style.css").write_text("@import 'https://fonts.googleapis.com/css?family=Roboto';")
    (site / "index.html").write_text('<script src="assets/missing.js"></script>')
    problems, _ = check_site_offline.check_site(site)
    assert problems == [
        "concepts/mi-loss/index.html: <script> loads https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js "
        "from the network",
        "index.html: <script> loads assets/missing.js, which is not in the site",
        "assets/style.css: loads https://fonts.googleapis.com/css?family=Roboto from the network",
    ]
    assert check_site_offline.check_math_page(site, "concepts/mi-loss/index.html") == [
        "concepts/mi-loss/index.html does not load assets/mathjax/tex-svg.js"
    ]


# ------------------------------------------------------------------------------ paths replicate.py writes


@pytest.fixture()
def replicate():
    benchmarks = ROOT / "examples" / "benchmarks"
    sys.path.insert(0, str(benchmarks))
    try:
        yield _load(benchmarks / "replicate.py")
    finally:
        sys.path.remove(str(benchmarks))


def test_replicate_writes_no_absolute_path(
    replicate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    student = tmp_path / "runs" / "student"
    train_file = tmp_path / "data" / "train.jsonl"
    train_file.parent.mkdir()
    rows = [{"input": f"question {i}", "label": str(i % 3), "rationale": f"because {i}"} for i in range(24)]
    train_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    args = replicate.parse_args(
        ["--student", str(student), "--train-file", str(train_file), "--test-file", str(train_file)]
        + ["--valid-size", "4", "--output-dir", str(out)]
    )
    _, _, description = replicate.select_splits(args)
    settings = replicate.protocol(args, description)
    replicate.check_protocol(out, settings, force=False)

    written = (out / "protocol.json").read_text()
    assert str(tmp_path) not in written
    recorded = json.loads(written)
    assert recorded["student"] == os.path.join("runs", "student")
    assert recorded["data"]["dataset"] == os.path.join("data", "train.jsonl")
    # the recorded path still names the folder, from where the command ran
    assert Path(recorded["student"]).resolve() == student.resolve()


def test_portable_path_keeps_hub_names_and_relative_paths(replicate) -> None:
    assert replicate.portable_path("google-t5/t5-small") == "google-t5/t5-small"
    assert replicate.portable_path("runs/student") == "runs/student"
    assert replicate.portable_path(None) is None
    assert not os.path.isabs(replicate.portable_path(os.path.abspath("somewhere/student")))
