"""The benchmark scripts run end to end and write their files (tiny model; no timing is checked)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import DSS_DATA

BENCHMARKS = Path(__file__).resolve().parents[1] / "examples" / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_replicate_smoke_writes_report_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    replicate = _load("replicate")
    out = tmp_path / "out"
    args = [
        "--smoke",
        "--output-dir",
        str(out),
        "--keep-checkpoints",
        "--max-steps",
        "2",
        "--eval-steps",
        "1",
    ]
    summary = replicate.main(args)
    assert set(summary) == {"finetune", "dss", "dss_mi_paper", "dss_mi_masked"}
    for name in ("results.json", "results.md", "accuracy.png", "protocol.json"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["finished_runs"] == results["expected_runs"] == 4
    assert "| DSS + MI (masked) | 1 |" in (out / "results.md").read_text()
    for run in results["runs"]:
        assert 0.0 <= run["test_accuracy"] <= 1.0 and 0.0 <= run["test_ece"] <= 1.0
        assert run["steps_trained"] == 2 and run["best_step"] in (1, 2)

    # an unfinished run (checkpoints, no done.json) continues from its last checkpoint; finished ones are skipped
    done = out / "runs" / "dss" / "seed0" / "done.json"
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed0/done.json") if p != done}
    done.unlink()

    def last_checkpoint_and_clock() -> tuple[Path, float]:
        checkpoint = max(done.parent.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        return checkpoint, json.loads((checkpoint / "train_seconds.json").read_text())["seconds"]

    last_checkpoint, clock = last_checkpoint_and_clock()
    assert clock > 0
    replicate.main(args)
    resumed = json.loads(done.read_text())
    assert resumed["resumed"] is True and resumed["train_seconds_complete"] is True
    # the time to reach the checkpoint counts, plus the (possibly zero) steps after it
    assert resumed["train_seconds"] >= round(clock, 1)
    assert {p: p.stat().st_mtime_ns for p in before} == before

    # the checkpoint resumed from may be rotated away during training (save_total_limit): its clock still counts
    done.unlink()
    last_checkpoint, clock = last_checkpoint_and_clock()
    make_clock = replicate.train_clock_callback

    def clock_whose_checkpoints_vanish(previous: float | None) -> object:
        callback = make_clock(previous)
        end = callback.on_train_end

        def on_train_end(args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN202
            shutil.rmtree(last_checkpoint)  # as a checkpoint rotation would
            return end(args, state, control, **kwargs)

        callback.on_train_end = on_train_end
        return callback

    monkeypatch.setattr(replicate, "train_clock_callback", clock_whose_checkpoints_vanish)
    replicate.main(args)
    resumed = json.loads(done.read_text())
    assert resumed["resumed"] is True and resumed["train_seconds_complete"] is True
    assert resumed["train_seconds"] >= round(clock, 1)
    monkeypatch.undo()

    # other settings in the same folder are refused
    with pytest.raises(SystemExit):
        replicate.main([*args[:-2], "--eval-steps", "2"])


def test_train_time_averages_only_runs_timed_from_the_start() -> None:
    replicate = _load("replicate")

    def run(seed: int, seconds: float, **extra: object) -> dict:
        return {"method": "dss", "seed": seed, "test_accuracy": 0.5, "test_ece": 0.1, "test_avg_confidence": 0.6,
                "steps_trained": 10, "best_step": 10, "train_seconds": seconds, **extra}  # fmt: skip

    records = [
        run(0, 600.0),
        run(1, 1200.0, resumed=True, train_seconds_complete=True),
        run(2, 60.0, resumed=True),  # an older record: resumed, clock not saved with the checkpoint
    ]
    entry = replicate.summarise(records, ["dss"])["dss"]
    assert entry["timed_runs"] == 2 and entry["train_minutes_mean"] == pytest.approx(15.0)
    assert "| 15.0 (2 of 3 runs timed) |" in replicate.markdown_table({"dss": entry})
    untimed = replicate.summarise([run(0, 60.0, resumed=True, train_seconds_complete=False)], ["dss"])
    assert untimed["dss"]["train_minutes_mean"] is None
    assert replicate.markdown_table(untimed).rstrip().endswith("| n/a |")


def test_throughput_smoke_prints_json_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    throughput = _load("throughput")
    throughput.main(["--smoke"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    for key in ("train_ratio", "train_ratio_with_mi", "eval_ratio"):
        assert result[key] > 0
    assert set(result["train_examples_per_s"]) == {"dssmi_dss", "dssmi_dss_mi", "original_dss"}


@pytest.mark.realdata
@pytest.mark.skipif(not (DSS_DATA / "esnli").is_dir(), reason="../shared/data/dss/esnli is not there")
def test_replicate_on_a_few_esnli_records(tmp_path: Path) -> None:
    replicate = _load("replicate")
    out = tmp_path / "esnli"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    replicate.main(
        [
            "--dataset", "esnli", "--data-dir", str(DSS_DATA), "--train-split", "valid",
            "--train-size", "24", "--valid-size", "8", "--test-size", "8", "--student", "tiny",
            "--methods", "dss_mi_paper", "--seeds", "0", "--max-steps", "2", "--eval-steps", "2",
            "--output-dir", str(out),
        ]
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"]["data"]["valid"]["split"] == "carved from valid"
    assert results["runs"][0]["confidence_mode"] == "candidates"
    assert (out / "accuracy.png").is_file()


def test_patience_counts_only_from_its_start_step() -> None:
    from transformers import TrainerControl, TrainerState

    from hf_cotmi import DSSMITrainingArguments

    replicate = _load("replicate")
    args = DSSMITrainingArguments(
        output_dir="unused",
        eval_strategy="steps",
        load_best_model_at_end=True,
        metric_for_best_model="eval_accuracy",
        greater_is_better=True,
        report_to="none",
    )

    def steps_run(start_step: int, accuracies: list[float]) -> int:
        callback = replicate.early_stopping_callback(2, start_step=start_step)
        state, control = TrainerState(), TrainerControl()
        for step, accuracy in enumerate(accuracies, start=1):
            state.global_step = step * 50
            callback.on_evaluate(args, state, control, {"eval_accuracy": accuracy})
            if state.best_metric is None or accuracy > state.best_metric:
                state.best_metric = accuracy  # what the Trainer does when it saves the best checkpoint
            if control.should_training_stop:
                return state.global_step
        return state.global_step

    plateau_then_learning = [0.33, 0.33, 0.33, 0.33, 0.5, 0.7, 0.7, 0.7, 0.7, 0.7]
    assert steps_run(0, plateau_then_learning) == 150  # plain patience ends the run on the plateau
    assert steps_run(200, plateau_then_learning) == 400  # two flat evaluations after the peak at 300
    callback = replicate.early_stopping_callback(2, start_step=200)
    restored = type(callback)(**callback.state()["args"])  # how the Trainer restores it on resume
    assert (restored.early_stopping_patience, restored.start_step) == (2, 200)


def test_replicate_bf16_runs_without_a_gpu(tmp_path: Path) -> None:
    # transformers refuses bf16=True without an accelerator unless use_cpu is set; the script sets it
    replicate = _load("replicate")
    out = tmp_path / "out"
    args = ["--smoke", "--bf16", "--methods", "dss_mi_masked", "--max-steps", "1", "--eval-steps", "1"]
    summary = replicate.main([*args, "--output-dir", str(out)])
    assert set(summary) == {"dss_mi_masked"}
    assert json.loads((out / "protocol.json").read_text())["bf16"] is True
