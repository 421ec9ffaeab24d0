"""The benchmark scripts run end to end and write their files (tiny model; no timing is checked)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
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


def test_replicate_smoke_writes_report_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
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
    # a newer checkpoint half-written by a killed process (no weights, no trainer state) is passed over
    half_written = done.parent / "checkpoint-99"
    half_written.mkdir()
    (half_written / "config.json").write_text("{}")
    capsys.readouterr()
    replicate.main(args)
    assert f"resuming from {last_checkpoint}" in capsys.readouterr().out
    shutil.rmtree(half_written, ignore_errors=True)  # (the rotation of checkpoints may have removed it)
    resumed = json.loads(done.read_text())
    assert resumed["resumed"] is True and resumed["train_seconds_complete"] is True
    assert resumed["stopped_seconds"] == 0.0  # never stopped with SIGSTOP
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
    report = _load("sweep_report")

    def run(seed: int, seconds: float, **extra: object) -> dict:
        return {"method": "dss", "seed": seed, "test_accuracy": 0.5, "test_ece": 0.1, "test_avg_confidence": 0.6,
                "steps_trained": 10, "best_step": 10, "train_seconds": seconds, **extra}  # fmt: skip

    records = [
        run(0, 600.0),
        run(1, 1200.0, resumed=True, train_seconds_complete=True),
        run(2, 60.0, resumed=True),  # an older record: resumed, clock not saved with the checkpoint
    ]
    entry = report.summarise(records, ["dss"])["dss"]
    assert entry["timed_runs"] == 2 and entry["train_minutes_mean"] == pytest.approx(15.0)
    assert "| 15.0 (2 of 3 runs timed) |" in report.markdown_table({"dss": entry})
    untimed = report.summarise([run(0, 60.0, resumed=True, train_seconds_complete=False)], ["dss"])
    assert untimed["dss"]["train_minutes_mean"] is None
    assert report.markdown_table(untimed).rstrip().endswith("| n/a |")
    # one seed has no sample std: the table shows its mean alone, not "± 0.00"
    assert "| DSS | 1 | 50.00 | 10.00 | 60.00 |" in report.markdown_table(untimed)
    assert "| 3 | 50.00 ± 0.00 | 10.00 ± 0.00 |" in report.markdown_table({"dss": entry})


def test_throughput_smoke_prints_json_ratios(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    throughput = _load("throughput")
    output = tmp_path / "figures" / "throughput.json"
    throughput.main(["--smoke", "--output", str(output)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    for key in ("train_ratio", "train_ratio_with_mi", "eval_ratio"):
        assert result[key] > 0
    assert set(result["train_examples_per_s"]) == {"dssmi_dss", "dssmi_dss_mi", "original_dss"}
    # --output: the printed result, with the command that gave it and the raw timings behind it
    stored = json.loads(output.read_text())
    assert stored["result"] == result
    assert stored["command"] == f"python examples/benchmarks/throughput.py --smoke --output {output}"
    assert stored["details"]["all"] and stored["machine"]["cpu_count"] == os.cpu_count()


# a causal student shape small enough for a smoke run of memory.py and mi_overhead.py: one step of each kind
TINY_CAUSAL_SHAPE = [
    "--vocab-size", "512", "--input-length", "16", "--rationale-length", "8", "--label-length", "4",
    "--batch-size", "2", "--num-layers", "1", "--timed-rounds", "1", "--warmup-steps", "0", "--memory-steps", "1",
]  # fmt: skip


def test_memory_smoke_prints_its_ratios_from_the_measured_figures(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """memory.py on a tiny causal shape: three fresh memory processes, one timed round per variant."""
    memory = _load("memory")
    output = tmp_path / "memory.json"
    result = memory.main(
        ["--shapes", "causal", *TINY_CAUSAL_SHAPE, "--chunk-size", "8", "--output", str(output)]
    )
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1]) == result
    figures = {}
    for variant in memory.VARIANTS:  # the printed lines: median step (ms) and peak memory (MiB)
        line = next(line for line in out.splitlines() if line.strip().startswith(f"{variant}:"))
        step_ms, peak_mib = (float(x) for x in re.findall(r"([0-9.]+) (?:ms|MiB)", line))
        assert step_ms > 0 and peak_mib > 0
        figures[variant] = (step_ms, peak_mib)
    # the ratios are those of the printed figures (rounded as printed)
    assert result["peak_memory_vs_unchunked"] == pytest.approx(
        figures["chunked"][1] / figures["unchunked"][1], abs=2e-3
    )
    assert result["time_vs_finetuning"] == pytest.approx(
        figures["chunked"][0] / figures["finetuning"][0], rel=2e-3
    )
    # --output keeps the result with the raw figures it is the ratio of
    stored = json.loads(output.read_text())
    assert stored["result"] == result and stored["command"].endswith(f"--output {output}")
    causal = stored["details"]["causal"]
    for variant, (step_ms, peak_mib) in figures.items():
        assert causal["median_step_s"][variant] * 1000 == pytest.approx(step_ms, abs=0.1)
        assert causal["peak_memory_mib"][variant] == pytest.approx(peak_mib, abs=0.1)
    assert causal["settings"]["vocab_size"] == 512


def test_mi_overhead_smoke_writes_the_ratios_of_its_raw_figures(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """mi_overhead.py on a tiny causal shape; ``--output`` holds the ratios and the figures they divide."""
    mi_overhead = _load("mi_overhead")
    output = tmp_path / "mi_overhead.json"
    result = mi_overhead.main(["--student", "causal", *TINY_CAUSAL_SHAPE, "--output", str(output)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    stored = json.loads(output.read_text())
    assert stored["result"] == result
    peaks, steps = stored["details"]["peak_memory_mib"], stored["details"]["median_step_s"]
    assert set(peaks) == set(steps) == {"dss", "hf_cotmi", "full_logits"}
    assert result["peak_memory_ratio"] == pytest.approx(peaks["hf_cotmi"] / peaks["dss"], abs=2e-3)
    assert result["time_ratio"] == pytest.approx(steps["hf_cotmi"] / steps["dss"], rel=0.01)


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
    callback.early_stopping_patience_counter = 1  # one flat evaluation before the checkpoint
    saved = callback.state()
    restored = type(callback)(**saved["args"])  # how the Trainer restores it on resume
    for name, value in saved["attributes"].items():
        setattr(restored, name, value)
    assert (restored.early_stopping_patience, restored.start_step) == (2, 200)
    assert restored.early_stopping_patience_counter == 1
    # and the Trainer does restore it: a run with patience asks for its callbacks' states on resume
    methods = replicate.build_methods()
    for patience, restores in (("0", False), ("2", True)):
        options = replicate.parse_args(["--smoke", "--patience", patience, "--output-dir", "unused"])
        made = replicate.run_training_arguments(methods["dss"], 0, options, Path("unused") / "dss")
        assert made.restore_callback_states_from_checkpoint is restores


def test_replicate_bf16_runs_without_a_gpu(tmp_path: Path) -> None:
    # transformers refuses bf16=True without an accelerator unless use_cpu is set; the script sets it
    replicate = _load("replicate")
    out = tmp_path / "out"
    args = ["--smoke", "--bf16", "--methods", "dss_mi_masked", "--max-steps", "1", "--eval-steps", "1"]
    summary = replicate.main([*args, "--output-dir", str(out)])
    assert set(summary) == {"dss_mi_masked"}
    assert json.loads((out / "protocol.json").read_text())["bf16"] is True


def _smoke(replicate, out: Path, *extra: str) -> dict:
    return replicate.main(
        ["--smoke", "--max-steps", "2", "--eval-steps", "1", "--output-dir", str(out), *extra]
    )


@pytest.mark.slow
def test_new_methods_run_with_their_loss_settings(tmp_path: Path) -> None:
    replicate = _load("replicate")
    out = tmp_path / "new"
    summary = _smoke(replicate, out, "--methods", "single_task", "dss_mi_mean", "dss_mi_kl", "dss")
    assert set(summary) == {"single_task", "dss_mi_mean", "dss_mi_kl", "dss"}
    assert summary["single_task"]["title"] == "Single-task (rationale + label)"
    results = json.loads((out / "results.json").read_text())
    runs = {r["method"]: r for r in results["runs"]}
    # the single target's label is parsed out of a generation; a task without label candidates (the
    # smoke task's answers are open numbers) takes the whole generated sequence's probability
    assert runs["single_task"]["confidence_mode"] == runs["dss"]["confidence_mode"] == "sequence"
    assert 0.0 <= runs["single_task"]["test_ece"] <= 1.0
    assert runs["single_task"]["single_task_order"] == "rationale_first"
    assert "| DSS + MI (KL) | 1 |" in (out / "results.md").read_text()

    # what each method trains with: the trainer arguments of one run
    options = replicate.parse_args(["--smoke", "--output-dir", str(tmp_path / "unused")])
    methods = replicate.build_methods()
    made = {n: replicate.run_training_arguments(methods[n], 3, options, tmp_path / n) for n in methods}
    assert (made["dss_mi_mean"].mi_reduction, made["dss_mi_mean"].mi_divergence) == ("mean", "ce")
    assert (made["dss_mi_kl"].mi_reduction, made["dss_mi_kl"].mi_divergence) == ("max", "kl")
    assert made["dss_mi_kl"].mi_loss_weight == 0.1 and made["dss"].mi_loss_weight == 0.0
    assert made["single_task"].rationale_loss_weight == 0.0 and made["single_task"].seed == 3
    assert made["single_task"].generation_max_length > made["dss"].generation_max_length

    # the single-task target holds rationale and label in the order asked for, training split only
    from datasets import Dataset, DatasetDict

    row = {"input": ["q"], "label": ["7"], "rationale": ["3 + 4 = 7 ."]}
    data = DatasetDict({s: Dataset.from_dict(row) for s in ("train", "valid", "test")})
    first = replicate.single_task_splits(data, "label_first")
    assert first["train"]["label"] == ["7 Explanation: 3 + 4 = 7 ."] and first["test"]["label"] == ["7"]
    assert replicate.single_task_splits(data, "rationale_first")["train"]["label"] == [
        "3 + 4 = 7 . So the answer is 7"
    ]


@pytest.mark.slow
def test_single_task_confidence_scores_each_candidate_in_the_label_slot(tmp_path: Path) -> None:
    replicate = _load("replicate")
    out = tmp_path / "slot"
    labels = ",".join(str(n) for n in range(28))  # every answer the smoke task's problems can have
    _smoke(replicate, out, "--methods", "single_task", "--label-candidates", labels)
    run = json.loads((out / "runs" / "single_task" / "seed0" / "done.json").read_text())
    assert run["confidence_mode"] == "candidates"
    assert run["test_choice_accuracy"] == run["test_confidence_accuracy"]
    # the confident prediction is a label (parsed out of the best candidate target), not a whole target
    assert {p["confident_prediction"] for p in run["first_test_predictions"]} <= set(labels.split(","))


def test_single_task_candidate_targets_keep_the_rationale_and_swap_the_label() -> None:
    replicate = _load("replicate")
    from datasets import Dataset

    raw = Dataset.from_dict({"choices": [["red", "blue"], ["a", "b", "c"]]})
    generations = ["blue explanation : the sky is blue .", "b"]
    assert replicate.single_task_candidate_targets(generations, "choices", raw, "label_first") == [
        ["red Explanation: the sky is blue .", "blue Explanation: the sky is blue ."],
        ["a Explanation:", "b Explanation:", "c Explanation:"],
    ]
    fixed = replicate.single_task_candidate_targets(
        ["so the answer is yes"], ["yes", "no"], None, "rationale_first"
    )
    assert fixed == [["So the answer is yes", "So the answer is no"]]
    with pytest.raises(ValueError, match="one generation per test example"):
        replicate.single_task_candidate_targets(["x"], "choices", raw, "label_first")


def test_single_task_order_is_part_of_the_protocol(tmp_path: Path) -> None:
    replicate = _load("replicate")
    out = tmp_path / "order"
    _smoke(
        replicate, out, "--methods", "single_task", "--single-task-order", "label_first", "--max-steps", "1"
    )
    run = json.loads((out / "runs" / "single_task" / "seed0" / "done.json").read_text())
    assert run["single_task_order"] == "label_first"
    with pytest.raises(SystemExit):  # the other order in the same folder is refused
        _smoke(replicate, out, "--methods", "single_task", "--max-steps", "1")


@pytest.mark.slow
def test_train_fractions_run_every_method_at_each_size_and_resume(tmp_path: Path) -> None:
    replicate = _load("replicate")
    out = tmp_path / "sizes"
    args = ["--methods", "finetune", "dss", "--max-steps", "1", "--train-fractions", "0.25", "1.0"]
    _smoke(replicate, out, *args)
    results = json.loads((out / "results.json").read_text())
    assert set(results["fractions"]) == {"0.25", "1"}
    assert results["finished_runs"] == results["expected_runs"] == 4
    for key, examples in (("0.25", 8), ("1", 32)):
        entry = results["fractions"][key]
        assert entry["train_examples"] == examples and set(entry["summary"]) == {"finetune", "dss"}
        assert {r["train_examples"] for r in entry["runs"]} == {examples}
    assert (out / "accuracy_vs_size.png").stat().st_size > 0
    assert "### Train fraction 0.25 (8 examples)" in (out / "results.md").read_text()
    assert (out / "runs" / "frac0.25" / "dss" / "seed0" / "done.json").is_file()
    done = {p: p.stat().st_mtime_ns for p in out.glob("runs/frac*/*/seed0/done.json")}
    assert len(done) == 4
    _smoke(replicate, out, *args)  # a rerun skips every finished run
    assert {p: p.stat().st_mtime_ns for p in done} == done
    rewritten = replicate.main(["--report-only", "--output-dir", str(out)])
    assert set(rewritten) == {"finetune", "dss"}
    assert set(json.loads((out / "results.json").read_text())["fractions"]) == {"0.25", "1"}


def test_paired_differences_match_a_naive_computation() -> None:
    import statistics

    report = _load("sweep_report")
    accuracy = {"dss": [0.70, 0.62, 0.66, 0.50], "dss_mi_masked": [0.73, 0.61, 0.70, None]}
    ece = {"dss": [0.10, 0.20, 0.15, 0.1], "dss_mi_masked": [0.05, 0.22, None, None]}
    records = [
        {"method": m, "seed": s, "test_accuracy": a, "test_ece": ece[m][s]}
        for m, values in accuracy.items()
        for s, a in enumerate(values)
        if a is not None
    ]
    paired = report.paired_differences(records, ["finetune", "dss", "dss_mi_masked"])
    assert list(paired) == ["dss_mi_masked - dss"]  # seed 3 has no MI run: left out
    entry = paired["dss_mi_masked - dss"]
    diffs = [0.73 - 0.70, 0.61 - 0.62, 0.70 - 0.66]
    assert entry["seeds"] == [0, 1, 2]
    assert entry["accuracy_diff_mean"] == pytest.approx(statistics.mean(diffs))
    assert entry["accuracy_diff_std"] == pytest.approx(statistics.stdev(diffs))
    ece_diffs = [0.05 - 0.10, 0.22 - 0.20]  # seed 2's MI run has no ECE
    assert entry["ece_diff_mean"] == pytest.approx(statistics.mean(ece_diffs))
    assert entry["ece_diff_std"] == pytest.approx(statistics.stdev(ece_diffs))
    table = report.paired_table(paired)
    assert entry["ahead_by_more_than_one_std"] is False and entry["ece_seeds"] == 2  # +2.00 < 2.65
    assert entry["ece_lower_by_more_than_one_std"] is False  # -1.50 points, but a sd of 4.95
    assert (
        "| dss_mi_masked - dss | 3 | +2.00 ± 2.65 | +3.00, -1.00, +4.00 | no | -1.50 ± 4.95 (2 of 3 seeds) | no |"
        in table
    )
    # an ECE that drops on every seed, by more than its spread
    steady = [
        {"method": m, "seed": s, "test_accuracy": 0.5, "test_ece": e}
        for m, eces in (("dss", (0.10, 0.12, 0.11)), ("dss_mi_paper", (0.05, 0.06, 0.06)))
        for s, e in enumerate(eces)
    ]
    lower = report.paired_differences(steady, ["dss", "dss_mi_paper"])["dss_mi_paper - dss"]
    ece_drops = [0.05 - 0.10, 0.06 - 0.12, 0.06 - 0.11]
    assert -statistics.mean(ece_drops) > statistics.stdev(ece_drops)
    assert lower["ece_lower_by_more_than_one_std"] is True
    one_seed = report.paired_differences([r for r in steady if r["seed"] == 0], ["dss", "dss_mi_paper"])
    assert one_seed["dss_mi_paper - dss"]["ece_lower_by_more_than_one_std"] is None  # no spread from one seed
    assert report.paired_table(one_seed).rstrip().endswith("| n/a | -5.00 | n/a |")


def test_one_run_has_no_spread_and_an_ece_cell_counts_the_runs_that_measured_it(tmp_path: Path) -> None:
    report = _load("sweep_report")

    def run(seed: int, accuracy: float, ece: float | None) -> dict:
        return {
            "method": "dss", "seed": seed, "test_accuracy": accuracy, "test_ece": ece,
            "test_avg_confidence": None if ece is None else 0.8, "steps_trained": 10, "best_step": 10,
            "train_seconds": 60.0,
        }  # fmt: skip

    lone = report.summarise([run(0, 0.7, 0.1)], ["dss"])["dss"]
    assert lone["accuracy_std"] is None and lone["ece_std"] is None  # undefined for one value, not 0
    assert report.plot_accuracy(
        lone and {"dss": lone}, tmp_path / "a.png", "one seed"
    )  # no error bar to draw
    by_size = {"0.5": {"summary": {"dss": lone}}, "1": {"summary": {"dss": lone}}}
    assert report.plot_accuracy_vs_size(by_size, 100, tmp_path / "s.png", "one seed")
    partial = report.summarise([run(0, 0.70, 0.1), run(1, 0.80, None)], ["dss"])
    row = report.markdown_table(partial).splitlines()[-1]
    assert row.startswith("| DSS | 2 | 75.00 ± 7.07 | 10.00 (1 of 2 runs) | 80.00 (1 of 2 runs) |"), row


def test_runs_on_different_student_weights_are_not_paired() -> None:
    import statistics

    report = _load("sweep_report")
    old, new = "a" * 64, "b" * 64
    # seed 0: neither run records its weights (older runs); seed 1: both on the same weights; seed 2: the
    # MI run on a rebuilt student; seed 3: only one run records them (unknown: still paired)
    students = {"dss": [None, new, old, None], "dss_mi_masked": [None, new, new, new]}
    accuracy = {"dss": [0.70, 0.60, 0.65, 0.61], "dss_mi_masked": [0.72, 0.63, 0.75, 0.60]}
    records = []
    for method, values in accuracy.items():
        for seed, value in enumerate(values):
            record = {"method": method, "seed": seed, "test_accuracy": value, "test_ece": 0.1}
            if students[method][seed] is not None:
                record["student_sha256"] = students[method][seed]
            records.append(record)
    entry = report.paired_differences(records, ["dss", "dss_mi_masked"])["dss_mi_masked - dss"]
    assert entry["seeds"] == [0, 1, 3] and entry["seeds_on_other_students"] == [2]
    diffs = [0.72 - 0.70, 0.63 - 0.60, 0.60 - 0.61]
    assert entry["accuracy_diff_mean"] == pytest.approx(statistics.mean(diffs))
    assert entry["accuracy_diff_std"] == pytest.approx(statistics.stdev(diffs))
    table = report.paired_table({"dss_mi_masked - dss": entry})
    assert "dss_mi_masked - dss: seed(s) 2 left out, the two runs were trained on different student" in table
    same = report.paired_differences([r for r in records if r["seed"] != 2], ["dss", "dss_mi_masked"])
    assert "seeds_on_other_students" not in same["dss_mi_masked - dss"]
    # every shared seed on other weights: the pair is still reported, with no seeds, n/a and its note
    only_two = report.paired_differences([r for r in records if r["seed"] == 2], ["dss", "dss_mi_masked"])
    lone = only_two["dss_mi_masked - dss"]
    assert lone["seeds"] == [] and lone["seeds_on_other_students"] == [2]
    assert lone["accuracy_diff_mean"] is None and lone["ahead_by_more_than_one_std"] is None
    lone_table = report.paired_table(only_two)
    assert "| dss_mi_masked - dss | 0 | n/a |" in lone_table and "seed(s) 2 left out" in lone_table


def test_smoke_results_hold_the_paired_differences(tmp_path: Path) -> None:
    replicate = _load("replicate")
    out = tmp_path / "paired"
    _smoke(replicate, out, "--methods", "dss", "dss_mi_masked", "--max-steps", "1", "--seeds", "0", "1")
    results = json.loads((out / "results.json").read_text())
    entry = results["paired_differences"]["dss_mi_masked - dss"]
    runs = {(r["method"], r["seed"]): r["test_accuracy"] for r in results["runs"]}
    for seed in (0, 1):
        expected = runs[("dss_mi_masked", seed)] - runs[("dss", seed)]
        assert entry["per_seed_accuracy_diff"][str(seed)] == pytest.approx(expected)
    assert "| dss_mi_masked - dss | 2 |" in (out / "results.md").read_text()


ASSETS = Path(__file__).resolve().parents[1] / "docs" / "assets" / "benchmarks"


@pytest.mark.parametrize("name", sorted(p.name for p in ASSETS.iterdir() if (p / "results.json").is_file()))
def test_report_only_reads_the_committed_results(tmp_path: Path, name: str) -> None:
    replicate = _load("replicate")
    out = tmp_path / name
    shutil.copytree(ASSETS / name, out)
    committed = (ASSETS / name / "results.md").read_text().splitlines()
    stored = json.loads((ASSETS / name / "results.json").read_text())
    summary = replicate.main(["--report-only", "--output-dir", str(out)])
    assert set(summary) == set(stored["summary"])
    for method, entry in stored["summary"].items():
        assert summary[method]["accuracy_mean"] == pytest.approx(entry["accuracy_mean"])
    rewritten = (out / "results.md").read_text().splitlines()
    first = next(i for i, line in enumerate(committed) if line.startswith("|"))
    end = next((i for i in range(first, len(committed)) if not committed[i].startswith("|")), len(committed))
    table = committed[first:end]
    assert rewritten[: len(table) + 2] == committed[: len(table) + 2]  # header and table as committed
    # a size sweep pairs within each size (its summary is the largest size's, which may have no MI run yet)
    summaries = [entry["summary"] for entry in stored.get("fractions", {}).values()] or [stored["summary"]]
    paired = [
        f"| {m} - dss |"
        for summary in summaries
        for m in summary
        if m.startswith("dss_mi") and "dss" in summary
    ]
    for start in paired:  # the paired differences follow the table (none without DSS and an MI method)
        assert any(line.startswith(start) for line in rewritten[len(table) + 2 :]), start
    assert bool(paired) == ("Paired differences" in (out / "results.md").read_text())
    # every run has its own row, with its validation curve (the per-seed values behind the means)
    titles = _load("sweep_methods").METHOD_TITLES
    for run in stored["runs"]:
        curve = ", ".join(f"{100 * h['accuracy']:.1f}" for h in run["valid_history"])
        row = f"| {titles[run['method']]} | {run['seed']} | {100 * run['test_accuracy']:.2f} |"
        assert any(line.startswith(row) and line.endswith(f"| {curve} |") for line in rewritten), row
    plot = "accuracy_vs_size.png" if stored.get("fractions") else "accuracy.png"  # a size sweep plots size
    assert (out / plot).stat().st_size > 0


@pytest.mark.parametrize("name", sorted(p.name for p in ASSETS.iterdir() if (p / "results.json").is_file()))
def test_restored_runs_give_the_committed_report_back(tmp_path: Path, name: str) -> None:
    restore = _load("restore_runs")
    replicate = _load("replicate")
    out = tmp_path / "sweep"
    stored = json.loads((ASSETS / name / "results.json").read_text())
    assert restore.main([str(ASSETS / name / "results.json"), str(out)]) == (len(stored["runs"]), 0, 0)
    done = sorted(out.glob("runs/**/done.json"))
    assert len(done) == len(stored["runs"])  # one folder a run, none overwritten by another
    assert json.loads((out / "protocol.json").read_text()) == stored["protocol"]
    # a report over the restored folder (done.json files only: no results.json there) is the committed one
    replicate.main(["--report-only", "--output-dir", str(out)])
    assert (out / "results.md").read_text() == (ASSETS / name / "results.md").read_text()
    assert restore.restore_runs(ASSETS / name / "results.json", out) == (0, len(stored["runs"]), 0)


def test_restore_runs_keeps_one_student_build_and_counts_the_rest(tmp_path: Path, capsys) -> None:
    restore = _load("restore_runs")
    results = ASSETS / "esnli-settle-cpu" / "results.json"
    runs = json.loads(results.read_text())["runs"]
    fingerprints = {run.get("student_sha256") for run in runs}
    build = next(f for f in fingerprints if f)  # the seeded build, recorded by the later runs
    on_build = [(run["method"], run["seed"]) for run in runs if run.get("student_sha256") == build]
    assert 0 < len(on_build) < len(runs)  # the report mixes builds: some runs recorded none
    out = tmp_path / "sweep"
    assert restore.main([str(results), str(out), "--student-sha256", build[:12].upper()]) == (
        len(on_build),
        0,
        len(runs) - len(on_build),
    )
    assert f"{len(runs) - len(on_build)} on another student left out" in capsys.readouterr().out
    restored = {
        (done.parent.parent.name, int(done.parent.name.removeprefix("seed")))
        for done in out.glob("runs/*/seed*/done.json")
    }
    assert restored == set(on_build)
    assert restore.restore_runs(results, tmp_path / "none", student_sha256="0000") == (0, 0, len(runs))
    with pytest.raises(SystemExit, match="--student-sha256 is empty"):
        restore.restore_runs(results, tmp_path / "none", student_sha256=" ")


def test_restore_runs_refuses_another_protocol_and_a_file_that_is_not_a_report(tmp_path: Path) -> None:
    restore = _load("restore_runs")
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"protocol": {"max_steps": 2}, "runs": [{"method": "dss", "seed": 0}]}))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "protocol.json").write_text(json.dumps({"max_steps": 3}))
    with pytest.raises(SystemExit, match="protocol.json differs from the protocol in"):
        restore.restore_runs(results, tmp_path / "out")
    assert not (tmp_path / "out" / "runs").exists()
    results.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="has no 'protocol' and 'runs'"):
        restore.restore_runs(results, tmp_path / "other")
    results.write_text(json.dumps({"protocol": {}, "runs": [{"seed": 0}]}))
    with pytest.raises(SystemExit, match="run 0 has no 'method' and 'seed'"):
        restore.restore_runs(results, tmp_path / "other")
    results.write_text("{not json")
    with pytest.raises(SystemExit, match="cannot read .* as a results.json"):
        restore.restore_runs(results, tmp_path / "other")


@pytest.mark.parametrize("seed_arguments", [[], ["--seeds", "0", "1", "2"]])
def test_report_only_reports_every_finished_run_after_parallel_jobs(tmp_path: Path, seed_arguments) -> None:
    """Each parallel job leaves a results.json of its own run; the report still covers every done.json.

    (Explicit ``--seeds 0 1 2``, the default's value, once fell back to the last job's seeds.)
    """
    replicate = _load("replicate")
    stored = json.loads((ASSETS / "esnli-minilm-h200" / "results.json").read_text())
    out = tmp_path / "out"
    for record in stored["runs"]:
        folder = out / "runs" / record["method"] / f"seed{record['seed']}"
        folder.mkdir(parents=True)
        (folder / "done.json").write_text(json.dumps(record))
    last_job = [r for r in stored["runs"] if r["method"] == "dss" and r["seed"] == 2]
    (out / "results.json").write_text(
        json.dumps({**stored, "runs": last_job, "methods": ["dss"], "seeds": [2]})
    )
    summary = replicate.main(["--report-only", "--output-dir", str(out), *seed_arguments])
    assert set(summary) == {r["method"] for r in stored["runs"]}
    for method, entry in summary.items():
        assert (
            entry["seeds"]
            == sorted({r["seed"] for r in stored["runs"] if r["method"] == method})
            == [0, 1, 2]
        )
    rewritten = json.loads((out / "results.json").read_text())
    assert len(rewritten["runs"]) == len(stored["runs"])


def test_a_report_in_progress_counts_its_finished_runs_against_the_sweeps_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A report written while a sweep is under way says how many of the planned runs finished.

    (It counted the methods and seeds seen among the finished runs: a 48-run size sweep with 7 runs of 2
    methods and 1 seed finished read "7/8 runs finished".)
    """
    replicate = _load("replicate")
    restore = _load("restore_runs")
    stored = json.loads((ASSETS / "esnli-minilm-h200" / "results.json").read_text())
    run = next(r for r in stored["runs"] if r["method"] == "dss" and r["seed"] == 0)
    out = tmp_path / "out"
    (out / "runs" / "dss" / "seed0").mkdir(parents=True)
    (out / "runs" / "dss" / "seed0" / "done.json").write_text(json.dumps(run))
    (out / "protocol.json").write_text(json.dumps(stored["protocol"]))
    replicate.main(["--report-only", "--output-dir", str(out)])
    assert "1/1 runs finished" in (out / "results.md").read_text()  # no plan: the finished run is all
    replicate.record_plan(out, ["finetune", "dss"], ["0", "1"])
    replicate.record_plan(out, ["dss_mi_masked"], [2])  # a later sweep adds to the plan
    assert replicate.read_plan(out) == (["finetune", "dss", "dss_mi_masked"], [0, 1, 2])
    replicate.main(["--report-only", "--output-dir", str(out)])
    report = json.loads((out / "results.json").read_text())
    assert (report["finished_runs"], report["expected_runs"]) == (1, 9)
    assert "1/9 runs finished" in (out / "results.md").read_text()
    # the report restored on a fresh machine counts against the same plan
    again = tmp_path / "again"
    assert restore.main([str(out / "results.json"), str(again)]) == (1, 0, 0)
    assert replicate.read_plan(again) == (["finetune", "dss", "dss_mi_masked"], [0, 1, 2])
    replicate.main(["--report-only", "--output-dir", str(again)])
    assert (again / "results.md").read_text() == (out / "results.md").read_text()
    (out / "sweep_plan.json").write_text('{"methods": ["dss"], "seeds": ["zero"]}')
    capsys.readouterr()
    with pytest.raises(SystemExit):
        replicate.main(["--report-only", "--output-dir", str(out)])
    assert "sweep_plan.json: expected {'methods': [names], 'seeds': [integers]}" in capsys.readouterr().err


def test_a_job_plans_its_whole_sweep_once_the_folder_accepts_its_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parallel_sweep.py job records the whole sweep as the folder's plan, after the settings check: a
    sweep that the folder refuses (other settings) must plan nothing there."""
    replicate = _load("replicate")
    sweep = _load("parallel_sweep")
    refused = tmp_path / "refused"
    refused.mkdir()
    (refused / "protocol.json").write_text(json.dumps({"dataset": "other"}))
    arguments = ["--smoke", "--max-steps", "2", "--eval-steps", "1", "--threads", "1"]
    assert (
        sweep.main(["--", *arguments, "--methods", "dss", "--seeds", "7", "--output-dir", str(refused)]) == 1
    )
    assert not (refused / "sweep_plan.json").exists()
    monkeypatch.setenv(
        replicate.SWEEP_PLAN_VARIABLE, json.dumps({"methods": ["finetune", "dss"], "seeds": [0, 3]})
    )
    out = tmp_path / "out"
    _smoke(replicate, out, "--methods", "dss", "--seeds", "0")
    assert replicate.read_plan(out) == (["finetune", "dss"], [0, 3])
    assert json.loads((out / "results.json").read_text())["expected_runs"] == 4


def test_a_workers_report_keeps_the_runs_other_workers_finished_in_the_folder(tmp_path: Path) -> None:
    """Parallel workers share one folder; each one's closing report covers every finished run there.

    (Each wrote the report of its own method and seed, so the folder's results.json lost the others' runs
    until the sweep's last report.)
    """
    replicate = _load("replicate")
    out = tmp_path / "out"
    _smoke(replicate, out, "--methods", "finetune", "--seeds", "1")
    summary = _smoke(replicate, out, "--methods", "dss", "--seeds", "0")
    assert set(summary) == {"finetune", "dss"}
    stored = json.loads((out / "results.json").read_text())
    assert sorted((r["method"], r["seed"]) for r in stored["runs"]) == [("dss", 0), ("finetune", 1)]
    assert stored["methods"] == ["finetune", "dss"] and stored["seeds"] == [0, 1]


def test_a_tiny_causal_student_runs_end_to_end(tmp_path: Path) -> None:
    from hf_cotmi import tiny

    if not hasattr(tiny, "build_tiny_causal_lm"):
        pytest.skip("this hf_cotmi has no causal students yet (hf_cotmi.tiny.build_tiny_causal_lm)")
    replicate = _load("replicate")
    out = tmp_path / "causal"
    summary = _smoke(replicate, out, "--student", "tiny-causal", "--methods", "finetune", "dss_mi_masked")
    assert set(summary) == {"finetune", "dss_mi_masked"}
    results = json.loads((out / "results.json").read_text())
    for run in results["runs"]:
        assert 0.0 <= run["test_accuracy"] <= 1.0 and run["steps_trained"] == 2
        # a confidence is measured, or its absence is recorded with the reason
        assert run["test_ece"] is not None or run["confidence_error"]
    assert results["protocol"]["student"] == "tiny-causal"


def test_a_causal_student_folder_loads_as_a_causal_lm(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_cotmi import build_word_tokenizer

    replicate = _load("replicate")
    tokenizer = build_word_tokenizer(["a b c entailment neutral"])
    config = GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=len(tokenizer))
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    model, _ = replicate.make_student(str(tmp_path / "gpt2"), [])
    assert type(model).__name__ == "GPT2LMHeadModel" and replicate.is_causal(model)
    seq2seq, _ = replicate.make_student("tiny", ["a b c"])
    assert not replicate.is_causal(seq2seq)


def test_old_flag_spellings_still_set_the_options(tmp_path: Path) -> None:
    replicate = _load("replicate")
    with pytest.raises(SystemExit):  # no default output folder: the flag is required, as it was
        replicate.parse_args(["--smoke"])
    options = replicate.parse_args(
        ["--student", "tiny", "--dataset", "synthetic", "--output-dir", str(tmp_path), "--batch-size", "4",
         "--eval-batch-size", "5", "--lr-scheduler", "constant", "--data-seed", "7", "--valid-split", "test",
         "--label-candidates", "yes", "no", "--patience", "2", "--patience-start", "30", "--max-steps", "9"]
    )  # fmt: skip
    training, run = options.training, options.run
    assert (training.per_device_train_batch_size, training.per_device_eval_batch_size) == (4, 5)
    assert str(getattr(training.lr_scheduler_type, "value", training.lr_scheduler_type)) == "constant"
    assert (run.subsample_seed, options.data.eval_split, options.evaluation.label_candidates) == (
        7,
        "test",
        "yes,no",
    )
    assert (run.patience, run.patience_start, training.max_steps, training.eval_steps) == (2, 30, 9, 100)
    assert options.data.max_input_length == 128 and options.methods == list(replicate.DEFAULT_METHODS)
    assert str(getattr(training.optim, "value", training.optim)) == "adamw_torch"


@pytest.mark.realdata
@pytest.mark.skipif(not (DSS_DATA / "esnli").is_dir(), reason="../shared/data/dss/esnli is not there")
def test_teacher_labels_train_and_gold_labels_test(tmp_path: Path) -> None:
    from hf_cotmi import load_dss_dataset

    replicate = _load("replicate")
    common = ["--dataset", "esnli", "--data-dir", str(DSS_DATA), "--train-split", "valid", "--train-size", "300",
              "--valid-size", "50", "--test-size", "50", "--student", "tiny",
              "--output-dir", str(tmp_path)]  # fmt: skip
    gold, _, _ = replicate.select_splits(replicate.parse_args(common))
    teacher, _, description = replicate.select_splits(
        replicate.parse_args([*common, "--label-source", "llm"])
    )
    release = load_dss_dataset("esnli", DSS_DATA)
    llm_of = dict(zip(release["valid"]["input"], release["valid"]["llm_label"]))
    gold_of = dict(zip(release["valid"]["input"], release["valid"]["label"]))
    assert teacher["train"]["label"] == [llm_of[x] for x in teacher["train"]["input"]]
    assert teacher["train"]["label"] != [gold_of[x] for x in teacher["train"]["input"]]  # PaLM errs sometimes
    for split in ("valid", "test"):  # selection and test stay gold
        assert teacher[split]["label"] == gold[split]["label"]
    assert description["train"]["examples"] + description["train"]["without_teacher_label"] == 300


@pytest.mark.realdata
@pytest.mark.skipif(not (DSS_DATA / "cqa").is_dir(), reason="../shared/data/dss/cqa is not there")
def test_multiple_choice_reports_generated_and_choice_ranking_accuracy(tmp_path: Path) -> None:
    replicate = _load("replicate")
    out = tmp_path / "cqa"
    replicate.main(
        ["--dataset", "cqa", "--data-dir", str(DSS_DATA), "--train-size", "24", "--valid-size", "8",
         "--test-size", "8", "--student", "tiny", "--methods", "dss", "--seeds", "0", "--max-steps", "1",
         "--eval-steps", "1", "--output-dir", str(out)]
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    run = results["runs"][0]
    assert run["confidence_mode"] == "candidates"
    assert 0.0 <= run["test_choice_accuracy"] <= 1.0 and 0.0 <= run["test_accuracy"] <= 1.0
    assert results["summary"]["dss"]["choice_accuracy_mean"] == run["test_choice_accuracy"]
    assert "choice-ranking accuracy (%)" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    "changed",
    [
        ["--n-bins", "15"],
        ["--confidence", "sequence"],
        ["--predict-prefix", "answer: "],
        ["--max-grad-norm", "0.5"],
    ],
)
def test_a_folder_is_not_continued_with_other_ece_or_training_settings(
    tmp_path: Path, changed, capsys
) -> None:
    """Settings that change a run's ECE or training are part of the protocol when they are not the default, so
    a folder made without them refuses them (the ECEs of two settings were averaged)."""
    replicate = _load("replicate")
    base = ["--smoke", "--output-dir", str(tmp_path)]
    plain = replicate.protocol(replicate.parse_args(base), {"dataset": "synthetic"})
    replicate.check_protocol(tmp_path, plain, force=False)
    other = replicate.protocol(replicate.parse_args([*base, *changed]), {"dataset": "synthetic"})
    assert other != plain and set(other) - set(plain)
    with pytest.raises(SystemExit):
        replicate.check_protocol(tmp_path, other, force=False)
    assert "holds runs made with other settings" in capsys.readouterr().err
    replicate.check_protocol(tmp_path, plain, force=False)  # the same settings continue


def test_the_documented_command_gives_the_committed_protocol() -> None:
    # a folder written by the earlier replicate.py (its protocol.json) is continued, not refused
    replicate = _load("replicate")
    stored = json.loads((ASSETS / "esnli-minilm-cpu" / "results.json").read_text())["protocol"]
    options = replicate.parse_args(
        ["--dataset", "esnli", "--data-dir", "unused", "--train-split", "valid", "--train-size", "4000",
         "--valid-size", "200", "--test-size", "500", "--student", "runs/student",
         "--max-input-length", "128", "--max-rationale-length", "48", "--max-steps", "1200", "--eval-steps", "100",
         "--patience", "2", "--patience-start", "700", "--batch-size", "8", "--learning-rate", "1.5e-4",
         "--warmup-steps", "50", "--seeds", "0", "1", "2", "--threads", "1", "--output-dir", "unused"]
    )  # fmt: skip
    settings = replicate.protocol(options, stored["data"])
    settings["task"] = "text"
    assert settings == stored


@pytest.mark.parametrize(
    "name",
    [
        "replicate",
        "parallel_sweep",
        "memory",
        "measurement_record",
        "mi_overhead",
        "throughput",
        "device_kit",
        "device_sweep",
        "stopped_time",
        "sweep_methods",
        "sweep_report",
        "build_student",
        "restore_runs",
    ],
)
def test_the_benchmark_scripts_docstring_examples_hold(name: str) -> None:
    import doctest

    module = _load(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


@pytest.mark.slow
def test_parallel_sweep_time_limit_stops_jobs_and_a_rerun_finishes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = _load("parallel_sweep")
    out = tmp_path / "limited"
    replicate_args = [
        "--smoke", "--max-steps", "2", "--eval-steps", "1", "--threads", "1",
        "--methods", "finetune", "dss", "--seeds", "0", "1", "--output-dir", str(out),
    ]  # fmt: skip
    # one second: the first two jobs are stopped while they start, the other two never start
    assert sweep.main(["--workers", "2", "--time-limit", "1", "--", *replicate_args]) == 3
    err = capsys.readouterr().err
    assert "time limit: 4 of 4 runs left" in err and "dss seed 1" in err
    assert not list(out.glob("runs/*/seed*/done.json"))
    assert sweep.main(["--workers", "2", "--", *replicate_args]) == 0
    assert len(list(out.glob("runs/*/seed*/done.json"))) == 4
    # a limit that has passed before any job is taken: finished runs are not "left"
    capsys.readouterr()
    assert sweep.main(["--workers", "2", "--time-limit", "1e-9", "--", *replicate_args]) == 0
    assert "runs left" not in capsys.readouterr().err
    # a job cut and run again keeps both sittings' output in its log (appended, one header each)
    log = (out / "logs" / "finetune_seed0.log").read_text()
    assert log.count("==== ") == 2 and "test accuracy" in log.split("==== ")[2]
    with pytest.raises(SystemExit):
        sweep.main(["--time-limit", "0", "--", *replicate_args])
    assert _load("replicate").read_plan(out) == (["finetune", "dss"], [0, 1])
    for wrong in (["--methods", "dss_mi_typo"], ["--seeds", "zero"]):  # refused before any job starts
        with pytest.raises(SystemExit):
            sweep.main(["--", *wrong, "--output-dir", str(tmp_path / "wrong")])
        assert not (tmp_path / "wrong").exists()


@pytest.mark.slow
def test_parallel_sweep_runs_each_method_and_seed_once_then_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two workers over 2 methods x 2 seeds of the tiny student; a rerun skips every finished run."""
    sweep = _load("parallel_sweep")
    out = tmp_path / "sweep"
    arguments = [
        "--workers", "2", "--", "--smoke", "--max-steps", "2", "--eval-steps", "1", "--threads", "1",
        "--methods", "finetune", "dss", "--seeds", "0", "1", "--output-dir", str(out),
    ]  # fmt: skip
    assert sweep.main(arguments) == 0
    results = json.loads((out / "results.json").read_text())
    assert sorted((r["method"], r["seed"]) for r in results["runs"]) == [
        ("dss", 0), ("dss", 1), ("finetune", 0), ("finetune", 1)
    ]  # fmt: skip
    assert sorted(p.name for p in (out / "logs").iterdir()) == [
        "dss_seed0.log", "dss_seed1.log", "finetune_seed0.log", "finetune_seed1.log"
    ]  # fmt: skip
    assert "left, about" in capsys.readouterr().out  # how long the rest takes, after the first job
    log = (out / "logs" / "dss_seed1.log").read_text()
    assert log.count("==== ") == 1 and "test accuracy" in log
    assert sweep.main(arguments) == 0  # resumable: the second time every job is finished, none is started
    printed = capsys.readouterr().out
    assert printed.count("(finished before this sweep)") == 4 and "start " not in printed
    assert (out / "logs" / "dss_seed1.log").read_text() == log
    # a later sweep of another method into the same folder reports every run there, paired with DSS
    later = [
        "--workers", "1", "--", "--smoke", "--max-steps", "2", "--eval-steps", "1", "--threads", "1",
        "--methods", "dss_mi_masked", "--seeds", "0", "--output-dir", str(out),
    ]  # fmt: skip
    assert sweep.main(later) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 5 and list(results["paired_differences"]) == ["dss_mi_masked - dss"]
    with pytest.raises(SystemExit):
        sweep.main(["--", "--methods", "dss"])  # no --output-dir


def test_parallel_sweep_workers_print_whole_lines(tmp_path: Path) -> None:
    """Eight workers starting 200 instant jobs: every printed line is one message (none run together)."""
    true = shutil.which("true")
    if true is None:
        pytest.skip("no `true` program to stand in for the jobs")
    script = tmp_path / "drive.py"
    script.write_text(
        "import importlib.util, sys\n"
        "from pathlib import Path\n"
        f"spec = importlib.util.spec_from_file_location('parallel_sweep', {str(BENCHMARKS / 'parallel_sweep.py')!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['parallel_sweep'] = module\n"
        "spec.loader.exec_module(module)\n"
        "jobs = [('dss', str(seed)) for seed in range(200)]\n"
        f"module.run_jobs([], jobs, 8, Path({str(tmp_path / 'logs')!r}), {true!r})\n"
    )
    printed = tmp_path / "printed.txt"
    with open(printed, "w") as handle:  # a file, not a pipe or a StringIO: where the lines ran together
        subprocess.run([sys.executable, str(script)], stdout=handle, check=True, timeout=120)
    lines = printed.read_text().splitlines()
    message = re.compile(
        r"(start dss seed \d+ \(log .*dss_seed\d+\.log\)|done dss seed \d+ \(\d+\.\d min\).*)"
    )
    assert len(lines) == 400 and all(message.fullmatch(line) for line in lines), [
        line for line in lines if not message.fullmatch(line)
    ][:3]


def test_where_the_question_stands_matches_the_committed_results() -> None:
    """Each row of benchmarks.md's summary table is recomputed from the results.json files it links to."""
    import statistics

    text = (ASSETS.parents[1] / "benchmarks.md").read_text()
    section = text.split("## Where the question stands", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| [") or line.startswith("| CPU")]
    assert len(rows) >= 4

    def runs_of(row: str) -> list[dict]:
        by_run: dict[tuple[str, int], dict] = {}
        for folder in re.findall(r"\(assets/benchmarks/([^/)]+)/results\.md\)", row):  # later ones replace
            for run in json.loads((ASSETS / folder / "results.json").read_text())["runs"]:
                by_run[(run["method"], run["seed"])] = run
        assert by_run, row
        return list(by_run.values())

    def cell(values: list[float]) -> str:  # written out again here: points, signed, ± sample std
        mean = f"{100 * statistics.mean(values):+.2f}"
        return mean if len(values) == 1 else f"{mean} ± {100 * statistics.stdev(values):.2f}"

    for row in rows:
        cells = [c.strip().replace("−", "-") for c in row.strip("|").split("|")]
        runs = runs_of(row)
        by_seed = {(r["method"], r["seed"]): r for r in runs}
        assert int(cells[2]) == {r["test_examples"] for r in runs}.pop(), row
        for method, column in (("dss_mi_paper", 3), ("dss_mi_masked", 4)):
            seeds = sorted(s for m, s in by_seed if m == method and ("dss", s) in by_seed)
            if not seeds:
                assert cells[column] == "not run", row
                continue
            accuracy = [
                by_seed[(method, s)]["test_accuracy"] - by_seed[("dss", s)]["test_accuracy"] for s in seeds
            ]
            assert cells[column].split(" (")[0] == cell(accuracy), (row, method)
            if method == "dss_mi_masked":
                ece = [by_seed[(method, s)]["test_ece"] - by_seed[("dss", s)]["test_ece"] for s in seeds]
                assert cells[5] == cell(ece), (row, "ECE")


def test_titled_paired_tables_match_the_results_their_section_links() -> None:
    """Each "DSS + MI (...) − DSS" row of benchmarks.md is recomputed from the results.json files its
    section links to: the seeds, the mean ± sample std, every per-seed difference and the ECE cell."""
    import statistics

    titles = {title: name for name, title in _load("sweep_methods").METHOD_TITLES.items()}
    text = (ASSETS.parents[1] / "benchmarks.md").read_text()
    checked = 0
    for section in re.split(r"\n### ", text):
        rows = [line for line in section.splitlines() if re.match(r"\| DSS \+ MI \(.*\) − DSS \|", line)]
        if not rows:
            continue
        by_run: dict[tuple[str, int], dict] = {}
        for folder in dict.fromkeys(
            re.findall(r"\(assets/benchmarks/([^/)]+)/results\.(?:md|json)\)", section)
        ):
            for run in json.loads((ASSETS / folder / "results.json").read_text())["runs"]:
                by_run[(run["method"], run["seed"])] = run
        assert by_run, section.splitlines()[0]
        for row in rows:
            title, seeds_cell, accuracy_cell, per_seed_cell, ece_cell = (
                cell.strip().replace("−", "-").replace("–", "-") for cell in row.strip("|").split("|")
            )
            method = titles[title.removesuffix(" - DSS")]
            first, _, last = seeds_cell.partition("-")
            seeds = (
                list(range(int(first), int(last) + 1)) if last else [int(s) for s in seeds_cell.split(",")]
            )
            assert seeds == sorted(s for m, s in by_run if m == method and ("dss", s) in by_run), row
            gaps = [
                100 * (by_run[(method, s)]["test_accuracy"] - by_run[("dss", s)]["test_accuracy"])
                for s in seeds
            ]
            eces = [100 * (by_run[(method, s)]["test_ece"] - by_run[("dss", s)]["test_ece"]) for s in seeds]
            assert accuracy_cell == f"{statistics.mean(gaps):+.2f} ± {statistics.stdev(gaps):.2f}", row
            assert per_seed_cell == ", ".join(f"{gap:+.2f}" for gap in gaps), row
            assert ece_cell == f"{statistics.mean(eces):+.2f} ± {statistics.stdev(eces):.2f}", row
            checked += 1
    assert checked >= 4


def test_parallel_sweep_counts_a_size_sweep_job_finished_only_at_every_fraction(tmp_path: Path) -> None:
    sweep = _load("parallel_sweep")
    fractions = sweep.fractions_of(["--train-fractions", "0.5", "1.0", "--output-dir", str(tmp_path)])
    assert fractions == [0.5, 1.0]
    assert not sweep.job_finished(tmp_path, "dss", "0", fractions)
    for name in ("frac0.5", "frac1"):
        done = tmp_path / "runs" / name / "dss" / "seed0" / "done.json"
        assert not sweep.job_finished(tmp_path, "dss", "0", fractions)  # not until the last fraction
        done.parent.mkdir(parents=True)
        done.write_text("{}")
    assert sweep.job_finished(tmp_path, "dss", "0", fractions)
    assert not sweep.job_finished(tmp_path, "dss", "0", None)  # the plain sweep's folder is another one


def _naive_weights_sha256(folder: Path) -> str:
    import hashlib

    blob = b""
    for name in sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")):
        blob += name.encode() + b"\0" + (folder / name).read_bytes()
    return hashlib.sha256(blob).hexdigest()


def test_student_weights_fingerprint_hashes_only_the_weight_files(tmp_path: Path) -> None:
    replicate = _load("replicate")
    (tmp_path / "model.safetensors").write_bytes(b"\x01" * 3000)
    (tmp_path / "extra.bin").write_bytes(b"\x02" * 10)
    (tmp_path / "config.json").write_text("{}")
    first = replicate.student_weights_sha256(str(tmp_path))
    assert first == _naive_weights_sha256(tmp_path)
    (tmp_path / "config.json").write_text('{"changed": true}')  # not a weight file
    assert replicate.student_weights_sha256(str(tmp_path)) == first
    (tmp_path / "model.safetensors").write_bytes(b"\x01" * 2999 + b"\x03")
    assert replicate.student_weights_sha256(str(tmp_path)) not in (None, first)
    assert replicate.student_weights_sha256(str(tmp_path / "missing")) is None
    assert replicate.student_weights_sha256("tiny") is None


@pytest.mark.slow
def test_runs_record_their_student_weights_and_a_rebuilt_student_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hf_cotmi.data.synthetic import arithmetic_vocabulary

    replicate = _load("replicate")
    folder, out = tmp_path / "student", tmp_path / "out"

    def build(seed: int) -> str:
        model, tokenizer = replicate.make_student("tiny", [" ".join(arithmetic_vocabulary())], seed=seed)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return _naive_weights_sha256(folder)

    first = build(0)
    _smoke(replicate, out, "--student", str(folder), "--methods", "dss", "--seeds", "0")
    done = json.loads((out / "runs" / "dss" / "seed0" / "done.json").read_text())
    assert done["student_sha256"] == first
    assert f"Student weights (sha256): `{first[:12]}` for 1 run (seed 0)." in (out / "results.md").read_text()

    second = build(1)  # the folder rebuilt with other weights between two sittings
    assert second != first
    capsys.readouterr()
    _smoke(replicate, out, "--student", str(folder), "--methods", "dss", "--seeds", "0", "1")
    printed = capsys.readouterr().out
    assert f"was trained on student weights {first[:12]}, this sweep's are {second[:12]}" in printed
    report = (out / "results.md").read_text()
    assert f"`{first[:12]}` for 1 run (seed 0)" in report and f"`{second[:12]}` for 1 run (seed 1)" in report


def test_build_student_seeds_the_build_so_a_rebuild_has_the_same_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = _load("build_student")
    tool = tmp_path / "make.py"
    # a builder that draws a "newly initialised" part from torch's global generator, as the shared tool does
    tool.write_text(
        "import sys, pathlib, torch\n"
        "out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)\n"
        "(out / 'model.safetensors').write_bytes(torch.rand(64).numpy().tobytes())\n"
    )
    first = build.main([str(tool), str(tmp_path / "a")])
    assert first == _naive_weights_sha256(tmp_path / "a")
    assert f"student weights sha256 {first}: {tmp_path / 'a'} (seed 0)" in capsys.readouterr().out
    assert build.main([str(tool), str(tmp_path / "b")]) == first
    assert build.main([str(tool), str(tmp_path / "c"), "--seed", "1"]) != first
    with pytest.raises(SystemExit, match="missing.py is not a file"):
        build.main([str(tmp_path / "missing.py"), str(tmp_path / "d")])


def test_a_repeated_seed_or_method_is_reported_once(tmp_path: Path) -> None:
    """``--report-only --seeds 0 0 1 2`` (or a method named twice) must not count a run twice."""
    import statistics

    restore, replicate = _load("restore_runs"), _load("replicate")
    out = tmp_path / "sweep"
    restore.restore_runs(ASSETS / "esnli-minilm-h200" / "results.json", out)
    stored = json.loads((ASSETS / "esnli-minilm-h200" / "results.json").read_text())
    dss = [r["test_accuracy"] for r in stored["runs"] if r["method"] == "dss"]
    argv = ["--report-only", "--output-dir", str(out), "--methods", "dss", "dss", "dss_mi_masked"]
    summary = replicate.main([*argv, "--seeds", "0", "0", "1", "2"])
    assert summary["dss"]["seeds"] == [0, 1, 2]
    assert summary["dss"]["accuracy_std"] == pytest.approx(statistics.stdev(dss))
    results = json.loads((out / "results.json").read_text())
    assert results["finished_runs"] == results["expected_runs"] == len(results["runs"]) == 6
    assert results["methods"] == ["dss", "dss_mi_masked"] and results["seeds"] == [0, 1, 2]
    assert results["paired_differences"]["dss_mi_masked - dss"]["seeds"] == [0, 1, 2]


def _size_sweep_folder(out: Path, fractions: list[float]) -> None:
    split = {"examples": 40, "split": "valid"}
    settings = {
        "student": "runs/student", "max_steps": 10, "eval_steps": 5, "patience": 0, "batch_size": 8,
        "gradient_accumulation_steps": 1, "learning_rate": 1e-4, "train_fractions": fractions,
        "data": {"dataset": "esnli", "train": split, "valid": split, "test": split},
    }  # fmt: skip
    out.mkdir(parents=True)
    (out / "protocol.json").write_text(json.dumps(settings))
    for fraction in fractions:
        for seed, accuracy in ((0, 0.5), (1, 0.7)):
            record = {
                "method": "dss", "seed": seed, "test_accuracy": accuracy * fraction, "test_ece": 0.1,
                "test_avg_confidence": 0.8, "steps_trained": 10, "best_step": 10, "train_seconds": 6.0,
                "train_fraction": fraction, "valid_history": [{"step": 10, "accuracy": 0.5}],
            }  # fmt: skip
            key = f"{fraction:g}"
            folder = out / "runs" / f"frac{key}" / "dss" / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "done.json").write_text(json.dumps(record))


def test_a_repeated_train_fraction_is_reported_once(tmp_path: Path) -> None:
    replicate = _load("replicate")
    out = tmp_path / "sizes"
    _size_sweep_folder(out, [0.5, 1.0])
    replicate.main(["--report-only", "--output-dir", str(out), "--train-fractions", "0.5", "0.5", "1.0"])
    results = json.loads((out / "results.json").read_text())
    assert results["finished_runs"] == results["expected_runs"] == 4
    assert results["fractions"]["0.5"]["summary"]["dss"]["seeds"] == [0, 1]
    assert (out / "results.md").read_text().count("### Train fraction 0.5 ") == 1


def test_a_size_sweeps_accuracy_plot_names_the_fraction_it_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """accuracy.png of a size sweep shows its largest fraction only: its title says which."""
    replicate = _load("replicate")
    report = sys.modules["sweep_report"]  # the module replicate.py reports with
    titles: list[str] = []
    monkeypatch.setattr(report, "plot_accuracy", lambda summary, path, title: titles.append(title) or True)
    out = tmp_path / "sizes"
    _size_sweep_folder(out, [0.25, 0.5])
    replicate.main(["--report-only", "--output-dir", str(out)])
    assert len(titles) == 1 and "(train fraction 0.5, 20 examples)" in titles[0], titles


def test_parallel_sweep_reads_the_output_dir_replicate_writes_to(tmp_path: Path) -> None:
    """An option given twice: ``replicate.py`` (argparse) takes the last value, so must the sweep, or it
    skips jobs as finished, and reports, by another folder than the one its jobs train in."""
    sweep = _load("parallel_sweep")
    replicate = _load("replicate")
    first, last = tmp_path / "first", tmp_path / "last"
    done = first / "runs" / "dss" / "seed0" / "done.json"
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    arguments = ["--smoke", "--output-dir", str(first), "--seeds", "0", "--output-dir", str(last)]
    assert replicate.parse_args(arguments).training.output_dir == str(last)
    assert sweep._output_dir(arguments) == last
    assert not sweep.job_finished(sweep._output_dir(arguments), "dss", "0", None)  # first's run: not this one
    assert sweep.argument_value(["--output-dir=a", "--output-dir", "b"], "--output-dir") == "b"


def test_results_md_and_plots_are_written_through_a_temporary_file_and_a_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parallel workers and the final report rewrite results.md: a reader never sees it half written."""
    report = _load("sweep_report")
    split = {"examples": 2, "split": "test"}
    settings = {"student": "tiny", "data": {"dataset": "esnli", "train": split, "valid": split, "test": split},
                "max_steps": 20, "batch_size": 8, "gradient_accumulation_steps": 1, "learning_rate": 1e-4,
                "eval_steps": 10, "patience": 0}  # fmt: skip
    runs = [{"method": "dss", "seed": 0, "test_accuracy": 0.5, "test_ece": 0.1, "steps_trained": 20,
             "best_step": 20, "train_seconds": 60.0}]  # fmt: skip
    (tmp_path / "results.md").write_text("the previous report\n")
    renamed: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def recording_replace(source, target) -> None:  # noqa: ANN001
        renamed.append((Path(source), Path(target)))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", recording_replace)
    report.write_report(tmp_path, runs, ["dss"], [0], settings)
    targets = {target.name: source for source, target in renamed}
    assert {"results.json", "results.md", "accuracy.png"} <= set(targets)
    for name in ("results.md", "accuracy.png"):
        assert targets[name].parent == tmp_path and targets[name].name != name
    assert "| DSS | 1 |" in (tmp_path / "results.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy.png", "results.json", "results.md"]

    # a report whose new results.md cannot be put in place leaves the previous one whole, and no temporary file
    (tmp_path / "results.md").write_text("the previous report\n")

    def failing_replace(source, target) -> None:  # noqa: ANN001
        if Path(target).name == "results.md":
            raise OSError("disk full")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        report.write_report(tmp_path, runs, ["dss"], [0], settings)
    monkeypatch.undo()
    assert (tmp_path / "results.md").read_text() == "the previous report\n"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_smoke_keeps_every_flag_typed_on_the_command_line_even_at_its_default(tmp_path: Path) -> None:
    replicate = _load("replicate")
    base = ["--smoke", "--output-dir", str(tmp_path)]
    smoke = replicate.parse_args(base)
    assert (smoke.training.max_steps, smoke.training.eval_steps, smoke.run.seeds) == (4, 2, [0])
    max_steps, eval_steps = replicate.DEFAULTS["max_steps"], replicate.DEFAULTS["eval_steps"]
    typed = replicate.parse_args(
        [*base, "--max-steps", str(max_steps), f"--eval_steps={eval_steps}", "--seeds", "0", "1", "2"]
    )
    assert typed.training.max_steps == max_steps and typed.training.eval_steps == eval_steps
    assert typed.run.seeds == [0, 1, 2]
    # a flag typed with another value, and the flags not typed, as before
    other = replicate.parse_args([*base, "--max-steps", "7"])
    assert (other.training.max_steps, other.training.eval_steps, other.run.seeds) == (7, 2, [0])
    assert (other.run.train_size, other.run.student, other.data.dataset) == (32, "tiny", "synthetic")


def _synthetic_files_with_empty_rationales(folder: Path) -> tuple[Path, Path, int]:
    """The synthetic task as files, every third training rationale blank; and how many are blank."""
    from hf_cotmi.data.synthetic import make_arithmetic_cot_dataset

    data = make_arithmetic_cot_dataset(n_train=40, n_test=6, n_valid=0, seed=3)
    rows = [
        dict(row, rationale="" if i % 3 == 0 else row["rationale"]) for i, row in enumerate(data["train"])
    ]
    train, test = folder / "train.jsonl", folder / "test.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    test.write_text("".join(json.dumps(row) + "\n" for row in data["test"]))
    return train, test, sum(1 for row in rows if not row["rationale"])


def test_dropped_empty_rationales_are_counted_and_the_report_gives_the_examples_trained_on(
    tmp_path: Path,
) -> None:
    replicate = _load("replicate")
    train, test, blank = _synthetic_files_with_empty_rationales(tmp_path)
    out = tmp_path / "out"
    args = ["--smoke", "--train-file", str(train), "--test-file", str(test), "--methods", "dss",
            "--train-size", "30", "--valid-size", "4", "--max-steps", "1", "--eval-steps", "1",
            "--output-dir", str(out)]  # fmt: skip
    replicate.main([*args, "--empty-rationale", "drop"])
    protocol = json.loads((out / "protocol.json").read_text())
    selected = protocol["data"]["train"]["examples"]
    assert selected == 30  # the selection, as recorded before: a folder made earlier still continues
    # the blank rationales among the 30 selected, counted here (not by the library's loader)
    selection, _, _ = replicate.select_splits(replicate.parse_args([*args, "--empty-rationale", "drop"]))
    dropped = sum(1 for rationale in selection["train"]["rationale"] if not (rationale or "").strip())
    assert 0 < dropped < blank
    done = json.loads((out / "runs" / "dss" / "seed0" / "done.json").read_text())
    assert done["train_dropped_rationales"] == dropped and done["train_examples"] == selected - dropped
    header = (out / "results.md").read_text().splitlines()[0]
    assert (
        f"{selected} train (train; {dropped} without a rationale dropped, {selected - dropped} trained on)"
        in (header)
    )
    # without dropping, the protocol, the run record and the header are as before
    kept = tmp_path / "kept"
    replicate.main([*args[:-1], str(kept)])
    assert protocol.pop("empty_rationale") == "drop"  # the one setting that differs
    assert json.loads((kept / "protocol.json").read_text()) == protocol
    done = json.loads((kept / "runs" / "dss" / "seed0" / "done.json").read_text())
    assert "train_dropped_rationales" not in done and done["train_examples"] == selected
    assert f"{selected} train (train), " in (kept / "results.md").read_text().splitlines()[0]
