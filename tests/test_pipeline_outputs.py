"""What train and evaluate write and read back: strict JSON files, the recorded data and confidence, the card."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import training_arguments

from hf_cotmi.cli import main
from hf_cotmi.model_card import DSSModelCardData, render_model_card
from hf_cotmi.pipeline import (
    SIDECAR_NAME,
    CLIUsageError,
    DataArguments,
    EvaluationArguments,
    ModelArguments,
    run_evaluation,
    run_prediction,
    run_training,
)


def _strict_json(path: Path) -> dict:
    """Parse as a strict JSON reader does: NaN and Infinity are errors."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{path.name} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _write_rows(path: Path, start: int, stop: int) -> str:
    rows = [
        {"input": f"q {i} ?", "label": "yes" if i % 2 else "no", "rationale": f"because {i}"}
        for i in range(start, stop)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def own_files_run(tiny_student_dir, tmp_path_factory) -> tuple[Path, Path, Path]:
    """A run trained on your own train and test files with first_token confidence: (output, train, test)."""
    folder = tmp_path_factory.mktemp("own-files")
    train = _write_rows(folder / "train.jsonl", 0, 8)
    test = _write_rows(folder / "test.jsonl", 8, 12)
    out = folder / "out"
    run_training(
        ModelArguments(model_name_or_path=tiny_student_dir),
        DataArguments(train_file=train, test_file=test),
        EvaluationArguments(confidence="first_token", num_examples_to_show=0),
        training_arguments(out, max_steps=1),
        print_fn=lambda text: None,
    )
    return out, Path(train), Path(test)


def test_results_json_is_strict_json_when_the_baseline_is_not_a_number(tiny_student_dir, tmp_path):
    # no test split: no metrics and no baseline (NaN in Python), which JSON can only hold as null
    out = tmp_path / "out"
    results = run_training(
        ModelArguments(model_name_or_path=tiny_student_dir),
        DataArguments(train_file=_write_rows(tmp_path / "train.jsonl", 0, 8)),
        EvaluationArguments(),
        training_arguments(out, max_steps=1),
        print_fn=lambda text: None,
    )
    assert results["baseline"] != results["baseline"]  # the Python result keeps NaN
    saved = _strict_json(out / "results.json")
    assert saved["baseline"] is None and saved["majority_baseline"] is None
    assert saved["metrics"] == {} and saved["baseline_kind"] == "majority"


def test_evaluate_output_file_is_strict_json(own_files_run, tmp_path, capsys):
    out, _, _ = own_files_run
    metrics = tmp_path / "metrics.json"
    assert main(["evaluate", "--model", str(out), "--output-file", str(metrics)]) == 0, (
        capsys.readouterr().err
    )
    assert _strict_json(metrics)["num_examples"] == 4


def test_evaluate_refuses_label_source_rather_than_ignore_it(tmp_path):
    # evaluate reads held-out splits, whose labels are the ground truth whatever --label-source says
    with pytest.raises(CLIUsageError, match=r"--label-source is not used by evaluate"):
        run_evaluation(str(tmp_path), DataArguments(label_source="llm"), EvaluationArguments())


def test_evaluate_reads_only_the_recorded_file_of_its_split(own_files_run, tmp_path):
    out, train, test = own_files_run
    moved = tmp_path / "train.jsonl"
    shutil.move(train, moved)
    try:  # the training file is gone: the test split is still evaluated
        report = run_evaluation(
            str(out), DataArguments(), EvaluationArguments(), plot_file=str(tmp_path / "d.png")
        )
        assert report["num_examples"] == 4 and report["split"] == "test"
        shutil.move(test, tmp_path / "test.jsonl")
        try:  # the test file is gone: the error says where that path came from and what to give instead
            with pytest.raises(CLIUsageError) as raised:
                run_evaluation(str(out), DataArguments(), EvaluationArguments())
            message = str(raised.value)
            assert SIDECAR_NAME in message and str(test) in message and "--test-file" in message
            assert "--train-file" not in message
        finally:
            shutil.move(tmp_path / "test.jsonl", test)
    finally:
        shutil.move(moved, train)


def test_evaluate_and_predict_default_to_the_confidence_the_run_used(own_files_run, tmp_path, capsys):
    out, _, _ = own_files_run
    assert json.loads((out / SIDECAR_NAME).read_text())["confidence"] == "first_token"
    report = run_evaluation(
        str(out), DataArguments(), EvaluationArguments(), plot_file=str(tmp_path / "d.png")
    )
    assert report["confidence_mode"] == "first_token"
    given = run_evaluation(
        str(out),
        DataArguments(),
        EvaluationArguments(confidence="sequence"),
        plot_file=str(tmp_path / "e.png"),
    )
    assert given["confidence_mode"] == "sequence"  # a flag given still wins
    texts = ["q 3 ?", "q 10 ?"]
    default = [row["confidence"] for row in run_prediction(str(out), texts)]
    first_token = [row["confidence"] for row in run_prediction(str(out), texts, confidence="first_token")]
    sequence = [row["confidence"] for row in run_prediction(str(out), texts, confidence="sequence")]
    assert default == pytest.approx(first_token) and default != pytest.approx(sequence)


def test_model_card_of_standard_fine_tuning_does_not_claim_a_rationale_task():
    settings = {"label_loss_weight": 1.0, "rationale_loss_weight": 0.0, "mi_loss_weight": 0.0}
    text = render_model_card(DSSModelCardData("m", loss_settings=settings))
    assert "standard fine-tuning" in text
    assert "trained on two tasks" not in text and "trained on one task" in text
    dss = render_model_card(DSSModelCardData("m", loss_settings={**settings, "rationale_loss_weight": 0.5}))
    assert "trained on two tasks" in dss


def _train_own_files(student: str, folder: Path, **training: object) -> dict:
    return run_training(
        ModelArguments(model_name_or_path=student),
        DataArguments(
            train_file=_write_rows(folder / "train.jsonl", 0, 8),
            test_file=_write_rows(folder / "test.jsonl", 8, 10),
        ),
        EvaluationArguments(num_examples_to_show=0),
        training_arguments(folder / "out", max_steps=1, **training),
        print_fn=lambda text: None,
    )


@pytest.fixture
def offline_push(monkeypatch) -> list[set[str]]:
    """The two Hub calls of ``push_to_hub`` replaced: each upload records the names in its folder."""
    from huggingface_hub import HfApi, RepoUrl

    uploaded: list[set[str]] = []

    def upload_folder(api, *, folder_path, **kwargs):
        uploaded.append(set(os.listdir(folder_path)))

    monkeypatch.setattr(
        HfApi, "create_repo", lambda api, repo_id, *a, **k: RepoUrl(f"https://hf.co/{repo_id}")
    )
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return uploaded


@pytest.mark.parametrize("push", [False, True], ids=["saved", "pushed"])
def test_a_failed_model_save_leaves_no_results_json(
    tiny_student_dir, tmp_path, monkeypatch, offline_push, push
):
    from hf_cotmi import DSSMITrainer

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DSSMITrainer, "save_model", disk_full)
    hub = {"push_to_hub": True, "hub_model_id": "me/student"} if push else {}
    with pytest.raises(OSError, match="No space left"):
        _train_own_files(tiny_student_dir, tmp_path, **hub)
    out = tmp_path / "out"
    assert not (out / "results.json").exists() and not (out / SIDECAR_NAME).exists()
    assert offline_push == []  # nothing was uploaded either


def test_a_finished_run_has_the_model_and_results_json(tiny_student_dir, tmp_path):
    results = _train_own_files(tiny_student_dir, tmp_path)
    out = tmp_path / "out"
    assert {"results.json", SIDECAR_NAME, "config.json", "README.md"} <= set(results["files"])
    assert any(name.endswith(".safetensors") for name in results["files"])
    assert _strict_json(out / "results.json")["total_seconds"] >= 0
    assert not [name for name in results["files"] if name.endswith(".tmp")]


def test_the_push_uploads_a_folder_with_model_and_results_json(tiny_student_dir, tmp_path, offline_push):
    results = _train_own_files(tiny_student_dir, tmp_path, push_to_hub=True, hub_model_id="me/student")
    # the trainer handed back is as it was before the final push: its own save_model, the sidecar callback
    trainer = results["trainer"]
    assert "save_model" not in vars(trainer)
    assert "_SidecarInCheckpoints" in [type(c).__name__ for c in trainer.callback_handler.callbacks]
    assert len(offline_push) == 1
    assert {"results.json", SIDECAR_NAME, "config.json"} <= offline_push[0]
    assert any(name.endswith(".safetensors") for name in offline_push[0])


def test_write_json_is_public_and_replaces_a_file_whole(tmp_path, monkeypatch):
    from hf_cotmi import pipeline

    assert "write_json" in pipeline.__all__
    path = tmp_path / "deep" / "m.json"
    assert pipeline.write_json(str(path), {"ece": float("nan"), "n": 2}) == str(path)
    assert _strict_json(path) == {"ece": None, "n": 2}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.write_json(str(path), {"ece": 0.5, "n": 3})
    assert _strict_json(path) == {"ece": None, "n": 2}  # the old file, whole
    assert os.listdir(path.parent) == ["m.json"]  # no partial file left beside it
