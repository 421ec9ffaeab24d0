"""The report of a benchmark sweep: per-method means, paired differences, a row per run, plots, files.

Pure functions of the finished runs' records (the ``done.json`` that ``replicate.py`` writes per run):
:func:`summarise` (mean and sample std per method), :func:`paired_differences` (DSS + MI - DSS by seed),
the markdown tables, the plots, and :func:`write_report`, which writes ``results.json``, ``results.md``,
``accuracy.png`` (and ``accuracy_vs_size.png`` for a size sweep) into the sweep's folder.

Example:
    >>> from sweep_report import summarise
    >>> runs = [{"method": "dss", "seed": s, "test_accuracy": a, "test_ece": 0.1, "steps_trained": 10,
    ...          "best_step": 10, "train_seconds": 60.0} for s, a in ((0, .7), (1, .8))]
    >>> round(summarise(runs, ["dss"])["dss"]["accuracy_mean"], 2)
    0.75
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweep_methods import METHOD_TITLES, PAIRED_BASELINE

from hf_cotmi.data.textfiles import write_atomically, write_text_atomically


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON, atomically (``hf_cotmi.data.textfiles.write_text_atomically``).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "done.json"
        >>> write_json(path, {"seed": 0}); json.loads(path.read_text())
        {'seed': 0}
    """
    write_text_atomically(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def _save_figure(fig: Any, path: Path) -> None:
    """Save a figure as PNG, atomically (the temporary name has no ``.png`` to infer the format from)."""
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


def _patience_start_text(settings: dict[str, Any]) -> str:
    start = settings.get("patience_start", 0)
    return f" counted from step {start}" if start and settings["patience"] else ""


def fraction_key(fraction: float) -> str:
    """A training fraction as the size sweep names it (folders ``frac<key>``, ``results.json`` keys).

    Example:
        >>> fraction_key(0.125), fraction_key(1.0)
        ('0.125', '1')
    """
    return f"{fraction:g}"


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the std of one value is undefined: None (null in JSON).

    Example:
        >>> _mean_std([0.5, 0.7])[1] > 0, _mean_std([0.5])
        (True, (0.5, None))
    """
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return mean, std


def run_name(record: dict[str, Any]) -> str:
    """How the report's messages name a run: its method, seed and (in a size sweep) train fraction.

    Example:
        >>> run_name({"method": "dss", "seed": 2}), run_name({"method": "dss", "seed": 0, "train_fraction": 0.5})
        ('dss seed 2', 'dss seed 0 (train fraction 0.5)')
    """
    fraction = record.get("train_fraction")
    at = "" if fraction is None else f" (train fraction {fraction_key(fraction)})"
    return f"{record['method']} seed {record['seed']}{at}"


def _is_rate(value: Any) -> bool:
    """Whether ``value`` is a finite number in [0, 1] (an accuracy or an ECE as the runs record them)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= 1
    )


def record_problem(record: dict[str, Any]) -> str | None:
    """What keeps a run record out of the report's means (None: nothing).

    A record needs its ``method`` and ``seed``, a ``test_accuracy`` in [0, 1] and a ``test_ece`` in [0, 1]
    or null (a run whose confidence was not measured). A failed run writes no record; one with a missing,
    NaN or percent accuracy would shift a mean or hide in it.

    Examples:
        >>> record_problem({"method": "dss", "seed": 0, "test_accuracy": 0.7, "test_ece": None}) is None
        True
        >>> record_problem({"method": "dss", "seed": 1, "test_accuracy": float("nan")}).split(";")[0]
        'dss seed 1: test_accuracy is nan'
    """
    missing = [key for key in ("method", "seed") if key not in record]
    if missing:
        return f"a run record without {' and '.join(map(repr, missing))} (it has {sorted(record)})"
    accuracy = record.get("test_accuracy")
    if not _is_rate(accuracy):
        return (
            f"{run_name(record)}: test_accuracy is {accuracy!r}; expected a number in [0, 1] "
            "(a failed run has no record: leave it out or train it again)"
        )
    ece = record.get("test_ece")
    if ece is not None and not _is_rate(ece):
        return f"{run_name(record)}: test_ece is {ece!r}; expected a number in [0, 1] or null (not measured)"
    return None


def check_records(records: Sequence[dict[str, Any]]) -> None:
    """Refuse records that would make the means or the pairs wrong: a record with a :func:`record_problem`,
    and two records of one method and seed (a rerun kept beside its first run counts that seed twice in a
    mean, and a pair would take one of them; two train fractions' runs are summarised and paired apart).

    Raises:
        ValueError: naming the run and what was expected.

    Example:
        >>> runs = [{"method": "dss", "seed": 0, "test_accuracy": a, "test_ece": 0.1} for a in (0.7, 0.5)]
        >>> check_records(runs)
        Traceback (most recent call last):
        ...
        ValueError: 2 records of dss seed 0 (a rerun?): keep one, a run counts once
    """
    by_run: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for record in records:
        problem = record_problem(record)
        if problem:
            raise ValueError(problem)
        by_run.setdefault((record["method"], record["seed"]), []).append(record)
    for (method, seed), group in by_run.items():
        if len(group) == 1:
            continue
        fractions = sorted({r.get("train_fraction") for r in group}, key=lambda f: (f is None, f or 0))
        if len(fractions) > 1:
            where = ", ".join("none" if f is None else fraction_key(f) for f in fractions)
            raise ValueError(
                f"{len(group)} records of {method} seed {seed} at train fractions {where}: summarise and "
                "pair one fraction at a time"
            )
        raise ValueError(
            f"{len(group)} records of {run_name(group[0])} (a rerun?): keep one, a run counts once"
        )


def _error_bar(std: float | None) -> float:
    """An error bar in percent; NaN (no bar drawn) where the std is undefined (one run)."""
    return 100 * std if std is not None else math.nan


def _choice_accuracy(record: dict[str, Any]) -> float | None:
    """The arg-max candidate's accuracy (older records keep it as ``test_confidence_accuracy``)."""
    if "test_choice_accuracy" in record:
        return record["test_choice_accuracy"]
    if record.get("confidence_mode") == "candidates":
        return record.get("test_confidence_accuracy")
    return None


def summarise(records: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Mean and sample standard deviation (n - 1) per method of accuracy, ECE and average confidence.

    Runs without a measured ECE (a causal student without confidence support) are left out of the ECE
    and confidence means, and counted in ``ece_runs``. Records are checked first (:func:`check_records`: one
    per method and seed, each with a usable accuracy); a ValueError names the one that is not.

    Example:
        >>> rows = [{"method": "dss", "seed": s, "test_accuracy": a, "test_ece": 0.1, "test_avg_confidence": 0.8,
        ...          "steps_trained": 10, "best_step": 10, "train_seconds": 1.0} for s, a in ((0, 0.5), (1, 0.7))]
        >>> round(summarise(rows, ["dss"])["dss"]["accuracy_std"], 4)
        0.1414
    """
    check_records(records)
    summary: dict[str, dict[str, Any]] = {}
    for name in methods:
        runs = [r for r in records if r["method"] == name]
        if not runs:
            continue
        entry: dict[str, Any] = {
            "title": METHOD_TITLES.get(name, name),
            "seeds": sorted(r["seed"] for r in runs),
        }
        for key, metric in (
            ("accuracy", "test_accuracy"),
            ("ece", "test_ece"),
            ("avg_confidence", "test_avg_confidence"),
        ):
            values = [r[metric] for r in runs if r.get(metric) is not None]
            entry[f"{key}_mean"], entry[f"{key}_std"] = _mean_std(values) if values else (None, None)
        entry["ece_runs"] = sum(r.get("test_ece") is not None for r in runs)
        choices = [_choice_accuracy(r) for r in runs]
        if all(c is not None for c in choices):
            entry["choice_accuracy_mean"], entry["choice_accuracy_std"] = _mean_std(choices)
        entry["per_seed_accuracy"] = {str(r["seed"]): r["test_accuracy"] for r in runs}
        entry["steps_trained"] = [r["steps_trained"] for r in runs]
        entry["best_steps"] = [r["best_step"] for r in runs]
        # a run resumed from a checkpoint without a saved clock knows only the time after the resume
        timed = [r["train_seconds"] for r in runs if r.get("train_seconds_complete", not r.get("resumed"))]
        entry["train_minutes_mean"] = sum(timed) / len(timed) / 60 if timed else None
        entry["timed_runs"] = len(timed)
        summary[name] = entry
    return summary


def same_student_weights(first: str | None, second: str | None) -> bool:
    """Whether two runs' ``student_sha256`` fingerprints allow comparing them as the same student.

    False only when both are recorded and they differ: an unrecorded fingerprint (an older run, or a
    student loaded by Hub name) counts as the same, since nothing says otherwise.

    Examples:
        >>> same_student_weights("ab" * 32, "ab" * 32), same_student_weights("ab" * 32, "cd" * 32)
        (True, False)
        >>> same_student_weights(None, "cd" * 32)
        True
    """
    return first is None or second is None or first == second


def paired_differences(
    records: Sequence[dict[str, Any]], methods: Sequence[str], baseline: str = PAIRED_BASELINE
) -> dict[str, dict[str, Any]]:
    """Per DSS + MI method: the mean and sample std over seeds of (method - DSS), paired by seed.

    Runs of the same seed share the data order and the initial weights, so the per-seed difference
    removes what the seed does to both; its spread is what decides whether MI is ahead of DSS. Only seeds
    both methods finished count, and only on the same student: a seed whose two runs record different
    student weights (``student_sha256``, see :func:`same_student_weights`) is left out and listed under
    ``seeds_on_other_students``; a pair with no seed left stays, its figures None. ECE differences leave
    out seeds where either ECE is missing (``ece_seeds`` counts the others). The records are one train
    fraction's, one per method and seed (:func:`check_records`, a ValueError otherwise).

    Example:
        >>> rows = [{"method": m, "seed": s, "test_accuracy": a, "test_ece": e}
        ...         for m, s, a, e in (("dss", 0, .70, .1), ("dss", 1, .60, .1),
        ...                            ("dss_mi_masked", 0, .72, .1), ("dss_mi_masked", 1, .66, .05))]
        >>> d = paired_differences(rows, ["dss", "dss_mi_masked"])["dss_mi_masked - dss"]
        >>> round(d["accuracy_diff_mean"], 4), round(d["accuracy_diff_std"], 4), d["seeds"]
        (0.04, 0.0283, [0, 1])
        >>> d["ahead_by_more_than_one_std"], d["ece_lower_by_more_than_one_std"]
        (True, False)
    """
    check_records(records)  # one record per method and seed: a pair is never made across fractions
    by_seed = {(r["method"], r["seed"]): r for r in records}
    result: dict[str, dict[str, Any]] = {}
    for name in methods:
        if not name.startswith("dss_mi"):
            continue
        both = sorted(s for (m, s) in by_seed if m == name and (baseline, s) in by_seed)
        other_student = [
            s
            for s in both
            if not same_student_weights(
                by_seed[(name, s)].get("student_sha256"), by_seed[(baseline, s)].get("student_sha256")
            )
        ]
        seeds = [s for s in both if s not in other_student]
        if not both:
            continue
        pairs = [(by_seed[(name, s)], by_seed[(baseline, s)]) for s in seeds]
        accuracy = [a["test_accuracy"] - b["test_accuracy"] for a, b in pairs]
        entry: dict[str, Any] = {"method": name, "baseline": baseline, "seeds": seeds}
        if other_student:
            entry["seeds_on_other_students"] = other_student
        entry["per_seed_accuracy_diff"] = {str(s): d for s, d in zip(seeds, accuracy)}
        # no seed left (every shared seed on other weights): the pair stays, with n/a and its note
        entry["accuracy_diff_mean"], entry["accuracy_diff_std"] = (
            _mean_std(accuracy) if seeds else (None, None)
        )
        # the question: ahead by more than one standard deviation of the paired difference?
        entry["ahead_by_more_than_one_std"] = (
            entry["accuracy_diff_mean"] > entry["accuracy_diff_std"] if len(seeds) > 1 else None
        )
        ece = [
            a["test_ece"] - b["test_ece"]
            for a, b in pairs
            if a.get("test_ece") is not None and b.get("test_ece") is not None
        ]
        entry["ece_diff_mean"], entry["ece_diff_std"] = _mean_std(ece) if ece else (None, None)
        entry["ece_seeds"] = len(ece)
        # and the other half of it: is the ECE lower by more than one standard deviation of its difference?
        entry["ece_lower_by_more_than_one_std"] = (
            -entry["ece_diff_mean"] > entry["ece_diff_std"] if len(ece) > 1 else None
        )
        result[f"{name} - {baseline}"] = entry
    return result


def _train_minutes_text(entry: dict[str, Any]) -> str:
    if entry["train_minutes_mean"] is None:
        return "n/a"
    runs = len(entry["seeds"])
    timed = entry.get("timed_runs", runs)
    text = f"{entry['train_minutes_mean']:.1f}"
    return text if timed == runs else f"{text} ({timed} of {runs} runs timed)"


def _percent(mean: float | None, std: float | None, seeds: int = 2, signed: bool = False) -> str:
    """``mean ± std`` in percent (``signed``: percentage points with their sign); the mean alone for one
    seed (its sample std is undefined, not 0)."""
    if mean is None:
        return "n/a"
    value = f"{100 * mean:+.2f}" if signed else f"{100 * mean:.2f}"
    return value if seeds < 2 or std is None else f"{value} ± {100 * std:.2f}"


def _summary_cell(entry: dict[str, Any], key: str) -> str:
    """A summary cell over the runs that measured it: the ECE and confidence skip runs without an ECE."""
    runs = len(entry["seeds"])
    measured = entry.get("ece_runs", runs) if key in ("ece", "avg_confidence") else runs
    text = _percent(entry.get(f"{key}_mean"), entry.get(f"{key}_std"), measured)
    return (
        text
        if measured == runs or entry.get(f"{key}_mean") is None
        else f"{text} ({measured} of {runs} runs)"
    )


def markdown_table(summary: dict[str, dict[str, Any]], choice_ranking: bool = False) -> str:
    """The results as a markdown table (percentages, mean ± sample std over seeds).

    ``choice_ranking``: add the arg-max candidate's accuracy beside the generated label's (multiple choice).

    Example:
        >>> runs = [{"method": "dss", "seed": s, "test_accuracy": a, "test_ece": 0.1, "test_avg_confidence": 0.8,
        ...          "steps_trained": 20, "best_step": 20, "train_seconds": 60.0} for s, a in ((0, 0.70), (1, 0.74))]
        >>> print(markdown_table(summarise(runs, ["dss"])).splitlines()[-1])
        | DSS | 2 | 72.00 ± 2.83 | 10.00 ± 0.00 | 80.00 ± 0.00 | 20, 20 | 20, 20 | 1.0 |
    """
    choice_head, choice_rule = (" choice-ranking accuracy (%) |", "---|") if choice_ranking else ("", "")
    lines = [
        f"| method | seeds | test accuracy (%) |{choice_head} ECE (%) | avg confidence (%) | steps run | best step | "
        "train min/run |",
        f"|---|---|---|{choice_rule}---|---|---|---|---|",
    ]
    for entry in summary.values():
        choice = f" {_summary_cell(entry, 'choice_accuracy')} |" if choice_ranking else ""
        lines.append(
            f"| {entry['title']} | {len(entry['seeds'])} | {_summary_cell(entry, 'accuracy')} |{choice} "
            f"{_summary_cell(entry, 'ece')} | {_summary_cell(entry, 'avg_confidence')} | "
            f"{', '.join(map(str, entry['steps_trained']))} | {', '.join(map(str, entry['best_steps']))} | "
            f"{_train_minutes_text(entry)} |"
        )
    return "\n".join(lines) + "\n"


def paired_table(paired: dict[str, dict[str, Any]]) -> str:
    """The paired differences as a markdown table (percentage points, mean ± sample std over seeds).

    Example:
        >>> runs = [{"method": m, "seed": s, "test_accuracy": a, "test_ece": e}
        ...         for m, s, a, e in (("dss", 0, .70, .10), ("dss", 1, .60, .10),
        ...                            ("dss_mi_masked", 0, .72, .08), ("dss_mi_masked", 1, .66, .09))]
        >>> print(paired_table(paired_differences(runs, ["dss", "dss_mi_masked"])).splitlines()[-1])
        | dss_mi_masked - dss | 2 | +4.00 ± 2.83 | +2.00, +6.00 | yes | -1.50 ± 0.71 | yes |
    """
    if not paired:
        return ""
    lines = [
        "| difference (paired by seed) | seeds | accuracy (points) | per seed | ahead by > 1 sd | ECE (points) | "
        "ECE lower by > 1 sd |",
        "|---|---|---|---|---|---|---|",
    ]
    ahead_text = {True: "yes", False: "no", None: "n/a"}
    for key, entry in paired.items():
        seeds = len(entry["seeds"])
        per_seed = ", ".join(f"{100 * d:+.2f}" for d in entry["per_seed_accuracy_diff"].values())
        ahead = entry.get("ahead_by_more_than_one_std")
        ece_seeds = entry.get("ece_seeds", seeds)
        ece = _percent(entry["ece_diff_mean"], entry["ece_diff_std"], ece_seeds, signed=True)
        if entry["ece_diff_mean"] is not None and ece_seeds < seeds:
            ece += f" ({ece_seeds} of {seeds} seeds)"  # seeds where either run has no ECE are left out
        lines.append(
            f"| {key} | {seeds} | "
            f"{_percent(entry['accuracy_diff_mean'], entry['accuracy_diff_std'], seeds, signed=True)} | "
            f"{per_seed} | {ahead_text[ahead]} | {ece} | "
            f"{ahead_text[entry.get('ece_lower_by_more_than_one_std')]} |"
        )
    notes = [
        f"{key}: seed(s) {', '.join(map(str, entry['seeds_on_other_students']))} left out, the two runs were "
        "trained on different student weights (`student_sha256`)."
        for key, entry in paired.items()
        if entry.get("seeds_on_other_students")
    ]
    return "\n".join(lines) + "\n" + "".join(f"\n{note}\n" for note in notes)


def per_run_table(
    records: Sequence[dict[str, Any]], methods: Sequence[str], choice_ranking: bool = False
) -> str:
    """Every run as a row (percentages): the per-seed values behind the means, with each validation curve.

    Example:
        >>> run = {"method": "dss", "seed": 0, "test_accuracy": 0.75, "test_ece": 0.1, "best_step": 20,
        ...        "steps_trained": 20, "valid_history": [{"step": 10, "accuracy": 0.5}, {"step": 20, "accuracy": 0.7}]}
        >>> print(per_run_table([run], ["dss"]).splitlines()[-1])
        | DSS | 0 | 75.00 | 10.00 | 20 / 20 | 50.0, 70.0 |
    """
    choice_head, choice_rule = (" choice-ranking accuracy (%) |", "---|") if choice_ranking else ("", "")
    steps = sorted({h["step"] for r in records for h in r.get("valid_history") or []})
    at = ", ".join(map(str, steps[:3])) + (", ..." if len(steps) > 3 else "")
    lines = [
        f"| method | seed | test accuracy (%) |{choice_head} ECE (%) | best / steps run | "
        f"validation accuracy (%) at steps {at} |",
        f"|---|---|---|{choice_rule}---|---|---|",
    ]
    order = {name: i for i, name in enumerate(methods)}
    for r in sorted(records, key=lambda r: (order.get(r["method"], len(order)), r["seed"])):
        choice = f" {_percent(_choice_accuracy(r), None)} |" if choice_ranking else ""
        curve = ", ".join(f"{100 * h['accuracy']:.1f}" for h in r.get("valid_history") or [])
        lines.append(
            f"| {METHOD_TITLES.get(r['method'], r['method'])} | {r['seed']} | "
            f"{_percent(r['test_accuracy'], None)} |{choice} {_percent(r.get('test_ece'), None)} | "
            f"{r.get('best_step')} / {r.get('steps_trained')} | {curve or 'n/a'} |"
        )
    return "\n".join(lines) + "\n"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(summary: dict[str, dict[str, Any]], path: Path, title: str) -> bool:
    """Bar chart of test accuracy per method (mean, sample-std error bars, one dot per seed).

    Example:
        >>> import tempfile
        >>> summary = {"dss": {"title": "DSS", "accuracy_mean": 0.72, "accuracy_std": 0.03,
        ...                    "per_seed_accuracy": {"0": 0.70, "1": 0.74}}}
        >>> path = Path(tempfile.mkdtemp()) / "accuracy.png"
        >>> plot_accuracy(summary, path, "e-SNLI"), path.read_bytes()[1:4]
        (True, b'PNG')
    """
    plt = _pyplot()
    names = list(summary)
    means = [100 * summary[n]["accuracy_mean"] for n in names]
    stds = [_error_bar(summary[n]["accuracy_std"]) for n in names]
    spans = [0.0 if math.isnan(s) else s for s in stds]
    fig, ax = plt.subplots(figsize=(1.8 * len(names) + 2, 4))
    positions = range(len(names))
    ax.bar(positions, means, yerr=stds, capsize=6, color="#9ecae1", edgecolor="#3182bd")
    for i, name in enumerate(names):
        values = [100 * v for v in summary[name]["per_seed_accuracy"].values()]
        ax.scatter([i] * len(values), values, color="black", s=12, zorder=3)
    ax.set_xticks(list(positions))
    ax.set_xticklabels([summary[n]["title"] for n in names], rotation=15)
    ax.set_ylabel("test accuracy (%)")
    low = min(m - s for m, s in zip(means, spans)) if means else 0
    ax.set_ylim(max(0, low - 10), min(100, max(m + s for m, s in zip(means, spans)) + 5) if means else 100)
    ax.set_title(title)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return True


def plot_accuracy_vs_size(
    by_fraction: dict[str, dict[str, Any]], train_examples: int, path: Path, title: str
) -> bool:
    """Test accuracy against training-set size: one line per method, sample-std error bars.

    A fraction's size is its ``train_examples`` (the examples its runs trained on) where it has one, else
    the fraction of ``train_examples``.

    Example:
        >>> import tempfile
        >>> def at(accuracy):
        ...     return {"summary": {"dss": {"title": "DSS", "accuracy_mean": accuracy, "accuracy_std": 0.02}}}
        >>> path = Path(tempfile.mkdtemp()) / "accuracy_vs_size.png"
        >>> plot_accuracy_vs_size({"0.5": at(0.6), "1": at(0.7)}, 4000, path, "e-SNLI"), path.read_bytes()[1:4]
        (True, b'PNG')
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    methods = list(dict.fromkeys(name for entry in by_fraction.values() for name in entry["summary"]))
    all_sizes: set[int] = set()
    for position, name in enumerate(methods):
        points = [
            (float(key), entry.get("train_examples"), entry["summary"][name])
            for key, entry in by_fraction.items()
            if name in entry["summary"]
        ]
        points.sort(key=lambda p: p[0])
        sizes = [n if n is not None else max(1, round(f * train_examples)) for f, n, _ in points]
        all_sizes.update(sizes)
        # each method a little to the side of the size it ran at, so error bars at one size do not overlap
        dodge = 2 ** (0.04 * (position - (len(methods) - 1) / 2))
        ax.errorbar(
            [size * dodge for size in sizes],
            [100 * s["accuracy_mean"] for _, _, s in points],
            yerr=[_error_bar(s["accuracy_std"]) for _, _, s in points],
            marker="o",
            capsize=4,
            label=points[0][2]["title"],
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(all_sizes), [str(size) for size in sorted(all_sizes)])
    ax.minorticks_off()
    ax.set_xlabel("training examples (each method drawn a little to the side of its size)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return True


def train_examples_text(train: dict[str, Any], records: Sequence[dict[str, Any]]) -> str:
    """The training set as the report's header gives it: the examples selected (the protocol's count) and,
    where runs dropped examples without a rationale (``--empty-rationale drop``: the runs'
    ``train_dropped_rationales``), how many were dropped and how many trained on, by method when they differ.

    Examples:
        >>> train_examples_text({"examples": 30, "split": "valid"}, [{"method": "dss"}])
        '30 train (valid)'
        >>> runs = [{"method": "dss", "train_dropped_rationales": 9}]
        >>> train_examples_text({"examples": 30, "split": "valid"}, runs)
        '30 train (valid; 9 without a rationale dropped, 21 trained on)'
        >>> runs.append({"method": "single_task", "train_dropped_rationales": 0})
        >>> train_examples_text({"examples": 30, "split": "valid"}, runs)
        '30 train (valid; without a rationale dropped: 9 by dss (21 trained on), 0 by single_task (30 trained on))'
    """
    selected = train["examples"]
    methods_by_dropped: dict[int, list[str]] = {}
    for record in records:
        if "train_dropped_rationales" in record:
            methods = methods_by_dropped.setdefault(record["train_dropped_rationales"], [])
            methods.extend([record["method"]] if record["method"] not in methods else [])
    where = train["split"]
    if not any(methods_by_dropped):
        return f"{selected} train ({where})"
    if len(methods_by_dropped) == 1:
        (dropped,) = methods_by_dropped
        return f"{selected} train ({where}; {dropped} without a rationale dropped, {selected - dropped} trained on)"
    groups = ", ".join(
        f"{dropped} by {', '.join(methods)} ({selected - dropped} trained on)"
        for dropped, methods in sorted(methods_by_dropped.items(), reverse=True)
    )
    return f"{selected} train ({where}; without a rationale dropped: {groups})"


def _header(settings: dict[str, Any], records: Sequence[dict[str, Any]], expected: int) -> str:
    data = settings["data"]
    teacher = (
        " Trained on the teacher's labels; tested against gold."
        if settings.get("label_source") == "llm"
        else ""
    )
    finished = len(records)
    return (
        f"Student `{settings['student']}`; {data['dataset']}: {train_examples_text(data['train'], records)}, "
        f"{data['valid']['examples']} validation ({data['valid']['split']}), "
        f"{data['test']['examples']} test ({data['test']['split']}). Budget {settings['max_steps']} steps, "
        f"batch {settings['batch_size']}x{settings['gradient_accumulation_steps']}, lr {settings['learning_rate']}, "
        f"validation every {settings['eval_steps']} steps, patience {settings['patience']}"
        f"{_patience_start_text(settings)}. "
        f"{finished}/{expected} runs finished. Mean ± sample std over seeds; checkpoint selected on "
        f"validation accuracy; test touched once per run.{teacher}\n\n"
    )


def student_weights_text(records: Sequence[dict[str, Any]]) -> str:
    """A sentence on the student weights the runs were trained on (``student_sha256``), for the report.

    Empty when no run recorded them (older runs, Hub students); otherwise each fingerprint (its first 12
    hex digits) with its number of runs and their seeds, so a folder that mixes two builds of a student
    says so.

    Example:
        >>> runs = [{"seed": 0}, {"seed": 3, "student_sha256": "4318" + "0" * 60},
        ...         {"seed": 4, "student_sha256": "4318" + "0" * 60}]
        >>> student_weights_text(runs)
        'Student weights (sha256): `431800000000` for 2 runs (seeds 3, 4); not recorded for 1 run (seed 0).'
    """
    groups: dict[str | None, list[int]] = {}
    for record in records:
        groups.setdefault(record.get("student_sha256"), []).append(int(record["seed"]))
    if set(groups) <= {None}:
        return ""

    def runs_text(seeds: list[int]) -> str:
        distinct = sorted(set(seeds))
        label = "seed" if len(distinct) == 1 else "seeds"
        plural = "run" if len(seeds) == 1 else "runs"
        return f"{len(seeds)} {plural} ({label} {', '.join(map(str, distinct))})"

    parts = [f"`{sha[:12]}` for {runs_text(seeds)}" for sha, seeds in sorted(groups.items(), key=str) if sha]
    if None in groups:
        parts.append(f"not recorded for {runs_text(groups[None])}")
    return "Student weights (sha256): " + "; ".join(parts) + "."


def _is_multiple_choice(settings: dict[str, Any]) -> bool:
    from hf_cotmi.tasks import TASKS

    spec = TASKS.get(str(settings["data"].get("dataset")))
    return spec is not None and spec.candidates_column is not None


def _section(
    records: list[dict[str, Any]], methods: Sequence[str], choice_ranking: bool
) -> tuple[dict, dict, str]:
    summary = summarise(records, methods)
    paired = paired_differences(records, methods)
    text = markdown_table(summary, choice_ranking)
    if paired:
        text += "\nPaired differences (same seed, same data order; mean ± sample std over seeds):\n\n"
        text += paired_table(paired)
    if records:
        text += "\nPer run (validation accuracy at every evaluation; best: the checkpoint tested):\n\n"
        text += per_run_table(records, methods, choice_ranking)
    return summary, paired, text


def _fraction_examples(runs: Sequence[dict[str, Any]], fraction: float, selected: int) -> int:
    """The examples a fraction's runs trained on (their ``train_examples``, fewer than the fraction of the
    selection where examples without a rationale were dropped); the fraction of ``selected`` for runs that
    do not record it or disagree."""
    counts = {run.get("train_examples") for run in runs}
    if len(counts) == 1 and None not in counts:
        return int(counts.pop())
    return max(1, round(fraction * selected))


def write_report(
    out: Path,
    records: list[dict[str, Any]],
    methods: Sequence[str],
    seeds: Sequence[int],
    settings: dict,
    fractions: Sequence[float] | None = None,
) -> dict:
    """Write results.json, results.md and accuracy.png (and accuracy_vs_size.png); returns the summary.

    Without fractions the summary is keyed by method; with fractions, ``results.json`` holds a
    ``fractions`` entry keyed by fraction (each with its summary, paired differences and runs) and the
    summary returned is the one of the largest fraction.

    Raises:
        ValueError: a record :func:`check_records` refuses, or (with fractions) a run of another fraction.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> split = {"examples": 2, "split": "test"}
        >>> settings = {"student": "tiny", "data": {"dataset": "esnli", "train": split, "valid": split,
        ...             "test": split}, "max_steps": 20, "batch_size": 8, "gradient_accumulation_steps": 1,
        ...             "learning_rate": 1e-4, "eval_steps": 10, "patience": 0}
        >>> runs = [{"method": "dss", "seed": s, "test_accuracy": a, "test_ece": 0.1, "test_avg_confidence": 0.8,
        ...          "steps_trained": 20, "best_step": 20, "train_seconds": 60.0} for s, a in ((0, 0.5), (1, 1.0))]
        >>> round(write_report(out, runs, ["dss"], [0, 1], settings)["dss"]["accuracy_mean"], 2)
        0.75
        >>> sorted(p.name for p in out.iterdir())
        ['accuracy.png', 'results.json', 'results.md']
    """
    choice_ranking = _is_multiple_choice(settings)
    # a method, seed or fraction named twice (``--seeds 0 0 1``) is one
    methods, seeds = list(dict.fromkeys(methods)), list(dict.fromkeys(seeds))
    fractions = sorted(set(fractions)) if fractions else fractions
    expected = len(methods) * len(seeds) * len(fractions or [None])
    result: dict[str, Any] = {
        "protocol": settings,
        "methods": list(methods),
        "seeds": list(seeds),
        "finished_runs": len(records),
        "expected_runs": expected,
    }
    text = _header(settings, records, expected)
    weights = student_weights_text(records)
    if weights:
        text += weights + "\n\n"
    data = settings["data"]
    shown = ""  # which runs accuracy.png shows, when not all of them
    if fractions:
        outside = [r for r in records if r.get("train_fraction") not in fractions]
        if outside:  # counted as finished, yet in no fraction's table
            raise ValueError(
                f"{run_name(outside[0])}: not one of the report's train fractions {list(fractions)}; "
                "report it with its fraction or leave it out"
            )
        by_fraction: dict[str, dict[str, Any]] = {}
        for fraction in sorted(fractions):
            runs = [r for r in records if r.get("train_fraction") == fraction]
            summary, paired, section = _section(runs, methods, choice_ranking)
            examples = _fraction_examples(runs, fraction, data["train"]["examples"])
            by_fraction[fraction_key(fraction)] = {
                "train_examples": examples,
                "summary": summary,
                "paired_differences": paired,
                "runs": runs,
            }
            text += f"### Train fraction {fraction_key(fraction)} ({examples} examples)\n\n{section}\n"
        result["fractions"] = by_fraction
        largest = fraction_key(max(fractions))
        summary = by_fraction[largest]["summary"]
        shown = f" (train fraction {largest}, {by_fraction[largest]['train_examples']} examples)"
        result["summary"], result["runs"] = summary, records
        if any(entry["summary"] for entry in by_fraction.values()):
            plot_accuracy_vs_size(
                by_fraction,
                data["train"]["examples"],
                out / "accuracy_vs_size.png",
                f"{data['dataset']}: test accuracy vs training-set size",
            )
    else:
        summary, paired, section = _section(records, methods, choice_ranking)
        result["summary"], result["paired_differences"], result["runs"] = summary, paired, records
        text += section
    write_json(out / "results.json", result)
    write_text_atomically(out / "results.md", text)
    if summary:
        plot_accuracy(summary, out / "accuracy.png", f"{data['dataset']}: test accuracy over seeds{shown}")
    return summary
