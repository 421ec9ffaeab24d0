"""The benchmark report's statistics and bookkeeping, on hand-made run records and folders (no training).

``examples/benchmarks/sweep_report.py`` (means, sample std, paired differences DSS + MI - DSS),
``replicate.py --report-only`` (which runs it reads) and ``restore_runs.py``. The figures are checked
against numpy (``ddof=1``) and ``statistics``, written out independently here.
"""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "examples" / "benchmarks"


def _load(name: str) -> Any:
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bookkeeping_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(method: str, seed: int, accuracy: Any, ece: Any = 0.1, **extra: Any) -> dict[str, Any]:
    return {
        "method": method, "seed": seed, "test_accuracy": accuracy, "test_ece": ece, "test_avg_confidence": 0.8,
        "steps_trained": 10, "best_step": 10, "train_seconds": 60.0, "valid_history": [], **extra,
    }  # fmt: skip


def _settings(fractions: list[float] | None = None) -> dict[str, Any]:
    split = {"examples": 40, "split": "valid"}
    settings = {
        "student": "runs/student", "max_steps": 10, "eval_steps": 5, "patience": 0, "batch_size": 8,
        "gradient_accumulation_steps": 1, "learning_rate": 1e-4,
        "data": {"dataset": "esnli", "train": split, "valid": split, "test": split},
    }  # fmt: skip
    if fractions:
        settings["train_fractions"] = fractions
    return settings


def _write_done(folder: Path, record: dict[str, Any] | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "done.json"
    done.write_text(record if isinstance(record, str) else json.dumps(record))
    return done


# ------------------------------------------------------------------------------------------ the statistics


def test_means_stds_and_pairs_match_numpy_with_a_seed_missing_for_one_method() -> None:
    report = _load("sweep_report")
    dss = {0: 0.701, 1: 0.655, 2: 0.689, 3: 0.612}
    masked = {0: 0.722, 1: 0.671, 3: 0.640}  # seed 2 unfinished
    ece = {("dss", s): 0.05 + 0.01 * s for s in dss} | {("dss_mi_masked", s): 0.04 + 0.02 * s for s in masked}
    records = [_run("dss", s, a, ece[("dss", s)]) for s, a in dss.items()]
    records += [_run("dss_mi_masked", s, a, ece[("dss_mi_masked", s)]) for s, a in masked.items()]
    summary = report.summarise(records, ["dss", "dss_mi_masked"])
    for name, values in (("dss", dss), ("dss_mi_masked", masked)):
        assert summary[name]["seeds"] == sorted(values)
        assert summary[name]["accuracy_mean"] == pytest.approx(np.mean(list(values.values())))
        assert summary[name]["accuracy_std"] == pytest.approx(np.std(list(values.values()), ddof=1))
    entry = report.paired_differences(records, ["dss", "dss_mi_masked"])["dss_mi_masked - dss"]
    shared = [0, 1, 3]
    gaps = np.array([masked[s] - dss[s] for s in shared])
    ece_gaps = np.array([ece[("dss_mi_masked", s)] - ece[("dss", s)] for s in shared])
    assert entry["seeds"] == shared and entry["ece_seeds"] == 3
    assert entry["accuracy_diff_mean"] == pytest.approx(gaps.mean())
    assert entry["accuracy_diff_std"] == pytest.approx(gaps.std(ddof=1))
    assert entry["ece_diff_mean"] == pytest.approx(ece_gaps.mean())
    assert entry["ece_diff_std"] == pytest.approx(ece_gaps.std(ddof=1))
    assert entry["ahead_by_more_than_one_std"] is bool(gaps.mean() > gaps.std(ddof=1))
    row = report.paired_table({"dss_mi_masked - dss": entry}).splitlines()[2]
    expected = f"| dss_mi_masked - dss | 3 | {100 * gaps.mean():+.2f} ± {100 * gaps.std(ddof=1):.2f} |"
    assert row.startswith(expected), row


def test_a_rerun_of_one_method_and_seed_is_refused_not_counted_twice() -> None:
    """Two records of dss seed 0 (a rerun): averaging both counts the seed twice, pairing kept one silently."""
    report = _load("sweep_report")
    records = [_run("dss", 0, 0.70), _run("dss", 0, 0.50), _run("dss", 1, 0.60)]
    records += [_run("dss_mi_masked", 0, 0.72), _run("dss_mi_masked", 1, 0.63)]
    with pytest.raises(ValueError, match=r"2 records of dss seed 0 .*keep one"):
        report.summarise(records, ["dss", "dss_mi_masked"])
    with pytest.raises(ValueError, match=r"2 records of dss seed 0 .*keep one"):
        report.paired_differences(records, ["dss", "dss_mi_masked"])


def test_runs_of_two_train_fractions_are_never_paired_across_them(tmp_path: Path) -> None:
    report = _load("sweep_report")
    accuracy = {(0.5, "dss", 0): 0.50, (0.5, "dss", 1): 0.54, (0.5, "dss_mi_masked", 0): 0.55,
                (0.5, "dss_mi_masked", 1): 0.53, (1.0, "dss", 0): 0.70, (1.0, "dss", 1): 0.71,
                (1.0, "dss_mi_masked", 0): 0.74, (1.0, "dss_mi_masked", 1): 0.76}  # fmt: skip
    # the 1.0 runs of DSS listed first: keyed by (method, seed) alone, MI at 0.5 met DSS at 1.0
    order = sorted(accuracy, key=lambda key: (key[1], -key[0] if key[1] == "dss" else key[0]))
    records = [_run(m, s, accuracy[(f, m, s)], train_fraction=f) for f, m, s in order]
    with pytest.raises(
        ValueError, match=r"2 records of dss seed 0 .*train fractions 0\.5, 1.*one fraction at a time"
    ):
        report.paired_differences(records, ["dss", "dss_mi_masked"])
    # the report keeps them apart: each fraction's pairs are its own runs'
    report.write_report(tmp_path, records, ["dss", "dss_mi_masked"], [0, 1], _settings(), [0.5, 1.0])
    results = json.loads((tmp_path / "results.json").read_text())
    for key, fraction in (("0.5", 0.5), ("1", 1.0)):
        gaps = [accuracy[(fraction, "dss_mi_masked", s)] - accuracy[(fraction, "dss", s)] for s in (0, 1)]
        entry = results["fractions"][key]["paired_differences"]["dss_mi_masked - dss"]
        assert entry["per_seed_accuracy_diff"] == pytest.approx({"0": gaps[0], "1": gaps[1]})
        assert entry["accuracy_diff_std"] == pytest.approx(statistics.stdev(gaps))
        summary = results["fractions"][key]["summary"]["dss"]
        dss = [accuracy[(fraction, "dss", s)] for s in (0, 1)]
        assert summary["accuracy_std"] == pytest.approx(statistics.stdev(dss))


@pytest.mark.parametrize("accuracy", [None, math.nan, "0.7", 72.0])
def test_a_run_without_a_usable_test_accuracy_is_named_not_averaged(accuracy: Any) -> None:
    """None was left out of the mean but counted in the seeds, NaN gave "nan ± nan" and "ahead: no"."""
    report = _load("sweep_report")
    records = [_run("dss", 0, 0.70), _run("dss", 1, accuracy, train_fraction=0.5), _run("dss", 2, 0.60)]
    records += [_run("dss_mi_masked", s, 0.7) for s in range(3)]
    message = r"dss seed 1 \(train fraction 0\.5\): test_accuracy is .*expected a number in \[0, 1\]"
    with pytest.raises(ValueError, match=message):
        report.summarise(records, ["dss", "dss_mi_masked"])
    with pytest.raises(ValueError, match=message):
        report.paired_differences(records, ["dss", "dss_mi_masked"])


def test_a_nan_ece_is_refused_and_a_missing_one_is_left_out_and_counted() -> None:
    report = _load("sweep_report")
    records = [_run("dss", s, 0.7, 0.1) for s in range(3)]
    bad = [*records, *(_run("dss_mi_masked", s, 0.7, math.nan if s == 1 else 0.1) for s in range(3))]
    with pytest.raises(
        ValueError, match=r"dss_mi_masked seed 1: test_ece is nan; expected a number in \[0, 1\] or null"
    ):
        report.paired_differences(bad, ["dss", "dss_mi_masked"])
    missing = [
        *records,
        *(_run("dss_mi_masked", s, 0.7, None if s == 1 else 0.08 + 0.01 * s) for s in range(3)),
    ]
    entry = report.paired_differences(missing, ["dss", "dss_mi_masked"])["dss_mi_masked - dss"]
    assert entry["seeds"] == [0, 1, 2] and entry["ece_seeds"] == 2
    assert entry["ece_diff_mean"] == pytest.approx(statistics.mean([0.08 - 0.1, 0.10 - 0.1]))


def test_the_paired_ece_cell_says_over_how_many_seeds_it_was_measured() -> None:
    """The accuracy difference covers 3 seeds, the ECE one 2: the table said "3" for both."""
    report = _load("sweep_report")
    records = [_run("dss", s, 0.7, 0.1) for s in range(3)]
    records += [_run("dss_mi_masked", s, 0.72 + 0.01 * s, (0.08, 0.07, None)[s]) for s in range(3)]
    table = report.paired_table(report.paired_differences(records, ["dss", "dss_mi_masked"]))
    row = table.splitlines()[2]
    assert row.startswith("| dss_mi_masked - dss | 3 | +3.00 ± 1.00 |"), row
    ece = [100 * (0.08 - 0.1), 100 * (0.07 - 0.1)]
    cell = f"{statistics.mean(ece):+.2f} ± {statistics.stdev(ece):.2f} (2 of 3 seeds)"
    assert row.endswith(f"| {cell} | yes |"), row


# ------------------------------------------------------------------------------------ --report-only, done.json


def _size_folder(out: Path) -> dict[tuple[float, str, int], float]:
    accuracy = {(0.5, "dss", 0): 0.50, (0.5, "dss", 1): 0.52, (0.5, "dss_mi_masked", 0): 0.55,
                (0.5, "dss_mi_masked", 1): 0.51, (1.0, "dss", 0): 0.70, (1.0, "dss", 1): 0.72,
                (1.0, "dss_mi_masked", 0): 0.74}  # fmt: skip
    out.mkdir(parents=True)
    (out / "protocol.json").write_text(json.dumps(_settings([0.5, 1.0])))
    replicate = _load("replicate")
    for (fraction, method, seed), value in accuracy.items():
        _write_done(
            replicate.run_folder(out, method, seed, fraction),
            _run(method, seed, value, train_fraction=fraction),
        )
    # dss_mi_masked seed 1 at the full set: killed mid-way, a checkpoint and no done.json
    (replicate.run_folder(out, "dss_mi_masked", 1, 1.0) / "checkpoint-5").mkdir(parents=True)
    return accuracy


def test_report_only_reports_the_finished_runs_and_counts_the_unfinished_one(tmp_path: Path) -> None:
    replicate = _load("replicate")
    out = tmp_path / "sizes"
    accuracy = _size_folder(out)
    replicate.main(["--report-only", "--output-dir", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert (results["finished_runs"], results["expected_runs"]) == (7, 8)
    assert "7/8 runs finished" in (out / "results.md").read_text()
    full = results["fractions"]["1"]
    assert (
        full["summary"]["dss_mi_masked"]["seeds"] == [0]
        and full["summary"]["dss_mi_masked"]["accuracy_std"] is None
    )
    assert full["paired_differences"]["dss_mi_masked - dss"]["seeds"] == [0]
    half = results["fractions"]["0.5"]["summary"]["dss"]
    assert half["accuracy_mean"] == pytest.approx(
        statistics.mean([accuracy[(0.5, "dss", s)] for s in (0, 1)])
    )


def test_report_only_from_a_results_json_keeps_to_the_fractions_asked(tmp_path: Path) -> None:
    """Without run folders the runs come from results.json: all fractions' were counted ("7/4 runs")."""
    import shutil

    replicate = _load("replicate")
    full = tmp_path / "sizes"
    _size_folder(full)
    replicate.main(["--report-only", "--output-dir", str(full)])
    out = tmp_path / "copy"
    out.mkdir()
    shutil.copy(full / "results.json", out / "results.json")
    replicate.main(["--report-only", "--output-dir", str(out), "--train-fractions", "0.5"])
    results = json.loads((out / "results.json").read_text())
    assert (results["finished_runs"], results["expected_runs"]) == (4, 4)
    assert {run["train_fraction"] for run in results["runs"]} == {0.5}
    assert "4/4 runs finished" in (out / "results.md").read_text()


def test_a_report_refuses_runs_of_a_fraction_it_does_not_cover(tmp_path: Path) -> None:
    report = _load("sweep_report")
    records = [_run("dss", 0, 0.5, train_fraction=0.5), _run("dss", 0, 0.7, train_fraction=1.0)]
    with pytest.raises(
        ValueError,
        match=r"dss seed 0 \(train fraction 1\).* not one of the report's train fractions \[0\.5\]",
    ):
        report.write_report(tmp_path, records, ["dss"], [0], _settings([0.5]), [0.5])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"method": "dss", "seed"', "is not a finished run's record"),
        ("[1, 2]", "is not a finished run's record"),
        (json.dumps(_run("dss", 1, 0.7)), "holds dss seed 1, not dss seed 0"),
        (json.dumps(_run("dss", 0, None)), "test_accuracy is None"),
    ],
)
def test_a_done_json_that_is_not_this_runs_whole_record_is_named(
    tmp_path: Path, content: str, problem: str
) -> None:
    replicate = _load("replicate")
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "protocol.json").write_text(json.dumps(_settings()))
    done = _write_done(replicate.run_folder(out, "dss", 0), content)
    with pytest.raises(SystemExit) as raised:
        replicate.collect_records(out, ["dss"], [0])
    assert raised.value.code == 2
    with pytest.raises(SystemExit):
        replicate.main(["--report-only", "--output-dir", str(out)])
    assert not (out / "results.json").exists()  # nothing reported from it
    # the message names the file and the problem (printed by replicate.py's error helper)
    message = replicate.done_problem(done, "dss", 0, None)
    assert str(done) in message and problem in message


def test_restore_runs_refuses_a_report_that_holds_one_run_twice(tmp_path: Path) -> None:
    restore = _load("restore_runs")
    results = tmp_path / "results.json"
    runs = [_run("dss", 0, 0.7), _run("dss", 1, 0.6), _run("dss", 0, 0.5)]
    results.write_text(json.dumps({"protocol": _settings(), "runs": runs}))
    with pytest.raises(SystemExit, match=r"runs 0 and 2 are both dss seed 0"):
        restore.restore_runs(results, tmp_path / "out")
    assert not (tmp_path / "out" / "runs").exists()
