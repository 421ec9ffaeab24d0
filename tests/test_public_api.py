"""Every public name of ``hf_cotmi``, ``hf_cotmi.teacher`` and the ``hf_cotmi.data`` modules has a docstring
with an example and type hints on every parameter and return value, its public methods included (the
examples themselves run as doctests: pyproject's ``--doctest-modules`` over ``hf_cotmi``)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
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
