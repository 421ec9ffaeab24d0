"""Every public name of ``hf_cotmi``, ``hf_cotmi.teacher`` and the ``hf_cotmi.data`` modules has a docstring
with an example and type hints on every parameter and return value, its public methods included (the
examples themselves run as doctests: pyproject's ``--doctest-modules`` over ``hf_cotmi``)."""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

DATA_MODULES = "causal custom dss features jsonfiles parsing report synthetic textfiles".split()


def public_names() -> Iterator[tuple[str, Any]]:
    """``(qualified name, object)`` of each function and class a user imports."""
    modules = ["hf_cotmi", "hf_cotmi.teacher", *(f"hf_cotmi.data.{name}" for name in DATA_MODULES)]
    for module_name in modules:
        module = importlib.import_module(module_name)
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


# the modules an API page documents all of: each function and class of their __all__ has its ``:::`` entry
DOCUMENTED_MODULES = {
    "hf_cotmi.calibration": "calibration.md",
    "hf_cotmi.confidence": "calibration.md",
    "hf_cotmi.plotting": "calibration.md",
}


@pytest.mark.parametrize("module_name", sorted(DOCUMENTED_MODULES))
def test_every_public_function_and_class_of_a_documented_module_is_on_its_api_page(module_name):
    page = Path(__file__).parent.parent / "docs" / "api" / DOCUMENTED_MODULES[module_name]
    entries = set(re.findall(r"^::: ([\w.]+)$", page.read_text(encoding="utf-8"), re.MULTILINE))
    module = importlib.import_module(module_name)
    names = [
        name
        for name in module.__all__
        if inspect.isfunction(getattr(module, name)) or inspect.isclass(getattr(module, name))
    ]
    assert names, module_name
    missing = [name for name in names if f"{module_name}.{name}" not in entries]
    assert not missing, f"{page.name} has no '::: {module_name}.NAME' for {missing}"
