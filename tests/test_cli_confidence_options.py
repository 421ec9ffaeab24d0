"""``--label-candidates`` is used by candidates confidence only: with ``--confidence sequence`` or
``first_token`` it would be ignored (no choice ranking is scored in those modes), so it is refused."""

from __future__ import annotations

import pytest
from cli_runs import one_error_line, run

from hf_cotmi.pipeline import (
    CLIUsageError,
    DataArguments,
    EvaluationArguments,
    run_evaluation,
    run_prediction,
)

QUESTION = "tom has 2 apples . how many ?"


def _command(command: str, tmp_path, flags: list[str]) -> list[str]:
    """A command that would otherwise get past argument checking (its model folder does not exist)."""
    model = ["--model", str(tmp_path / "no-model")]
    output = ["--output-file", str(tmp_path / "new" / "out.json")]
    if command == "predict":
        return ["predict", *model, *output, *flags, QUESTION]
    if command == "evaluate":
        return ["evaluate", *model, *output, "--dataset", "synthetic", *flags]
    return [command, "--output-dir", str(tmp_path / "new"), "--dataset", "synthetic", "--use-cpu", *flags]


@pytest.mark.parametrize("command", ["predict", "evaluate", "train", "demo"])
@pytest.mark.parametrize("mode", ["sequence", "first_token"])
def test_label_candidates_with_a_generation_confidence_is_refused_naming_both_flags(
    tmp_path, capsys, command, mode
):
    argv = _command(command, tmp_path, ["--confidence", mode, "--label-candidates", "yes,no"])
    code, out, err = run(capsys, *argv)
    line = one_error_line(err, command)
    assert code == 2 and not out.strip(), out
    assert (
        f"--label-candidates is used only by --confidence candidates; --confidence {mode} would ignore it"
        in line
    )
    assert "drop --label-candidates, or use --confidence candidates" in line
    assert not (tmp_path / "new").exists()  # refused before any work: no output folder made


def test_the_same_check_guards_the_python_api(tmp_path):
    with pytest.raises(CLIUsageError, match="--confidence first_token would ignore it"):
        run_prediction(str(tmp_path), [QUESTION], confidence="first_token", label_candidates="yes,no")
    with pytest.raises(CLIUsageError, match="--confidence sequence would ignore it"):
        run_evaluation(
            str(tmp_path),
            DataArguments(dataset="synthetic"),
            EvaluationArguments(confidence="sequence", label_candidates="choices"),
        )


@pytest.mark.parametrize(
    "confidence,candidates",
    [(None, None), (None, "yes,no"), ("candidates", "yes,no"), ("sequence", None), ("first_token", None)],
)
def test_every_other_combination_passes_the_check(confidence, candidates):
    from hf_cotmi.pipeline import check_confidence_options

    assert check_confidence_options(confidence, candidates) is None
