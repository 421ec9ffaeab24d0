"""The Configuration tables of README.md and docs/getting-started.md list every DSS + MI field of
``DSSMITrainingArguments`` with the default it really has."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from transformers import Seq2SeqTrainingArguments

from hf_cotmi import DSSMITrainingArguments

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| `(?P<name>[a-z_]+)` \| (?P<default>[^|]+) \|", re.M)


def configuration_rows(page: Path) -> dict[str, str]:
    """``{argument: default as written}`` of the ``| argument | default | meaning |`` table under the page's
    ``## Configuration`` heading (the table ends at the next heading)."""
    text = page.read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n#", 1)[0]
    return {match["name"]: match["default"].strip() for match in ROW.finditer(section)}


def dss_defaults() -> dict[str, object]:
    """The fields ``DSSMITrainingArguments`` adds to ``Seq2SeqTrainingArguments``, with their defaults."""
    base = {field.name for field in dataclasses.fields(Seq2SeqTrainingArguments)}
    return {
        field.name: field.default
        for field in dataclasses.fields(DSSMITrainingArguments)
        if field.name not in base
    }


@pytest.mark.parametrize("page", ["README.md", "docs/getting-started.md"])
def test_the_configuration_table_lists_every_dss_field_with_its_default(page):
    rows = configuration_rows(ROOT / page)
    defaults = dss_defaults()
    assert sorted(rows) == sorted(defaults), (
        f"{page}: table rows differ from the DSSMITrainingArguments fields"
    )
    for name, written in rows.items():
        assert written.strip("`") == str(defaults[name]), (
            f"{page}: {name} default {written} != {defaults[name]!r}"
        )
