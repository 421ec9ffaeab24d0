from __future__ import annotations

import contextlib
import io
from dataclasses import fields

import pytest
from transformers import HfArgumentParser

from hf_cotmi import DSSMITrainingArguments

NEW_FIELDS = [
    "label_loss_weight",
    "rationale_loss_weight",
    "mi_loss_weight",
    "mi_reduction",
    "mi_divergence",
    "mi_variant",
    "predict_prefix",
    "explain_prefix",
    "output_rationale",
    "rationale_max_new_tokens",
]


def test_defaults_follow_the_paper_and_dss_needs():
    args = DSSMITrainingArguments("out", report_to="none")
    assert (args.label_loss_weight, args.rationale_loss_weight, args.mi_loss_weight) == (0.5, 0.5, 0.1)
    assert (args.mi_reduction, args.mi_divergence, args.mi_variant) == ("max", "ce", "paper")
    assert (args.predict_prefix, args.explain_prefix) == ("predict: ", "explain: ")
    assert args.remove_unused_columns is False and args.predict_with_generate is True
    assert args.output_rationale is False


def test_every_field_has_help_and_help_renders():
    for f in fields(DSSMITrainingArguments):
        if f.name in NEW_FIELDS:
            assert f.metadata.get("help"), f.name
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        HfArgumentParser(DSSMITrainingArguments).parse_args(["--help"])
    text = out.getvalue()
    for name in NEW_FIELDS:
        assert f"--{name}" in text
    assert "Weight of the mutual-information loss" in text


def test_command_line_parsing():
    (args,) = HfArgumentParser(DSSMITrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", "o", "--mi_loss_weight", "0.2", "--mi_variant", "masked", "--report_to", "none"]
    )
    assert args.mi_loss_weight == 0.2 and args.mi_variant == "masked"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"label_loss_weight": -0.1}, "label_loss_weight"),
        ({"rationale_loss_weight": float("nan")}, "rationale_loss_weight"),
        ({"mi_loss_weight": -1}, "mi_loss_weight"),
        ({"label_loss_weight": 0, "rationale_loss_weight": 0, "mi_loss_weight": 0}, "all 0"),
        ({"mi_reduction": "sum"}, "mi_reduction"),
        ({"mi_divergence": "js"}, "mi_divergence"),
        ({"mi_variant": "new"}, "mi_variant"),
        ({"rationale_max_new_tokens": 0}, "rationale_max_new_tokens"),
    ],
)
def test_post_init_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DSSMITrainingArguments("out", report_to="none", **kwargs)


def test_standard_fine_tuning_skips_the_rationale_pass():
    args = DSSMITrainingArguments("out", rationale_loss_weight=0, mi_loss_weight=0, report_to="none")
    assert not args.needs_rationale_pass
    assert DSSMITrainingArguments("out", mi_loss_weight=0, report_to="none").needs_rationale_pass
