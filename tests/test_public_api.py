"""Every public name of every module of ``hf_cotmi`` (the package's ``__all__`` and each module's) has a
docstring with an example and type hints on every parameter and return value, its public methods included
(the examples themselves run as doctests: pyproject's ``--doctest-modules`` over ``hf_cotmi``), and an entry
on an API reference page (``docs/api/*.md``)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import hf_cotmi

API_PAGES = Path(__file__).resolve().parent.parent / "docs" / "api"


def public_modules() -> dict[str, ModuleType]:
    """Each module of the package that declares its public names in ``__all__``, by name."""
    names = ["hf_cotmi", *(info.name for info in pkgutil.walk_packages(hf_cotmi.__path__, "hf_cotmi."))]
    modules = {name: importlib.import_module(name) for name in names}
    return {name: module for name, module in modules.items() if hasattr(module, "__all__")}


MODULES = public_modules()


def public_names() -> Iterator[tuple[str, Any]]:
    """``(qualified name, object)`` of each function and class a user imports."""
    for module_name, module in MODULES.items():
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isfunction(value) or inspect.isclass(value):
                yield f"{module_name}.{name}", value


def own_functions(value: Any) -> Iterator[tuple[str, Callable[..., Any]]]:
    """The function itself, or a class's ``__init__`` and public methods written in the class (not the
    ``__init__`` that ``typing.Protocol`` puts there)."""
    if inspect.isfunction(value):
        yield "", value
        return
    for name, member in vars(value).items():
        written_here = inspect.isfunction(member) and member.__qualname__ == f"{value.__qualname__}.{name}"
        if written_here and (name == "__init__" or not name.startswith("_")):
            yield f".{name}", member


def missing_hints(function: Callable[..., Any]) -> list[str]:
    signature = inspect.signature(function)
    missing = [
        name
        for name, parameter in signature.parameters.items()
        if name not in ("self", "cls") and parameter.annotation is inspect.Parameter.empty
    ]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


PUBLIC = dict(public_names())


def test_the_public_names_are_found():
    assert {"hf_cotmi.DSSMITrainer", "hf_cotmi.teacher.generate_rationales"} <= set(PUBLIC)
    assert "hf_cotmi.data.custom.load_cot_dataset" in PUBLIC


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_a_public_name_has_a_docstring_with_an_example(name):
    assert ">>>" in (inspect.getdoc(PUBLIC[name]) or ""), f"{name}: no docstring with an example"


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_a_public_name_has_type_hints_everywhere(name):
    gaps = {
        f"{name}{suffix}": missing
        for suffix, function in own_functions(PUBLIC[name])
        if (missing := missing_hints(function))
    }
    assert not gaps, f"parameters or return values without a type hint: {gaps}"


ENTRY = re.compile(r"^::: ([\w.]+)[ \t]*\n((?:[ \t]+\S.*\n)*)", re.MULTILINE)


def api_entries() -> dict[str, list[str] | None]:
    """``{identifier: members}`` for each ``::: identifier`` of the API pages: ``members`` is None where the
    entry renders every public member (mkdocstrings' default), else the members its options list (``[]`` for
    ``members: false``)."""
    entries: dict[str, list[str] | None] = {}
    for page in sorted(API_PAGES.glob("*.md")):
        for match in ENTRY.finditer(page.read_text(encoding="utf-8")):
            options = match.group(2)
            listed = re.search(r"^\s*members:[ \t]*(\S*)[ \t]*\n((?:\s*- .*\n)*)", options, re.MULTILINE)
            if listed is None:
                entries[match.group(1)] = None
            elif listed.group(1) == "false":
                entries[match.group(1)] = []
            else:
                entries[match.group(1)] = re.findall(r"- (\w+)", listed.group(2))
    return entries


def resolve(identifier: str) -> Any:
    """The object a ``:::`` identifier names: the longest importable module, then attributes."""
    parts = identifier.split(".")
    for end in range(len(parts), 0, -1):
        try:
            value: Any = importlib.import_module(".".join(parts[:end]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[end:]:
            value = getattr(value, attribute)
        return value
    raise AssertionError(f"docs/api has '::: {identifier}', which names nothing importable")


def documented() -> set[tuple[str, int]]:
    """``(name, id(object))`` of each object an API page renders: named by its own entry, or a member of a
    module entry that renders its members. A name imported from elsewhere (``hf_cotmi.DSSMITrainer``) is
    documented by the entry of the module that defines it."""
    found = set()
    for identifier, members in api_entries().items():
        value = resolve(identifier)
        found.add((identifier.rsplit(".", 1)[-1], id(value)))
        if inspect.ismodule(value):
            default = getattr(value, "__all__", [name for name in vars(value) if not name.startswith("_")])
            found.update(
                (name, id(getattr(value, name))) for name in (default if members is None else members)
            )
    return found


DOCUMENTED = documented()


def test_the_api_pages_entries_and_their_members_options_are_read():
    entries = api_entries()
    assert entries["hf_cotmi.data.report"] is None  # a module entry rendering its members
    assert entries["hf_cotmi.teacher.store"] == []  # members: false
    assert entries["hf_cotmi.trainer.DSSMITrainer"][:2] == ["compute_loss", "student_type"]
    assert entries["hf_cotmi.losses.mutual_information_loss"] is None


@pytest.mark.parametrize("module_name", sorted(MODULES))
def test_every_public_name_of_a_module_has_an_entry_on_an_api_page(module_name):
    module = MODULES[module_name]
    names = [name for name in module.__all__ if not name.startswith("__")]  # __version__
    missing = [name for name in names if (name, id(getattr(module, name))) not in DOCUMENTED]
    assert not missing, (
        f"no docs/api page has '::: {module_name}.NAME' (or an entry in the module that defines NAME) for "
        f"{missing}: add one to the page where it belongs, or make the name private"
    )
