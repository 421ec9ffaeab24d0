"""One spec per task: the single home of task policy (metric, correctness, candidates, confidence, baseline).

Every consumer (the compute_metrics builder, :class:`~hf_cotmi.ECECallback`, the CLI, evaluation and the
benchmarks) reads a :class:`TaskSpec` instead of re-deriving these facts from a dataset name.

Examples:
    >>> spec = get_task("esnli")
    >>> spec.metric, spec.label_candidates, spec.confidence, spec.baseline
    ('text', ('entailment', 'neutral', 'contradiction'), 'candidates', 'majority')
    >>> get_task("svamp").is_correct("(84 / 2)", "( 42.0 * 1.0 )")
    True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from .confidence import CONFIDENCE_MODES, check_candidates_mode
from .metrics import METRICS, equation_accuracy, normalize_text, safe_eval_arithmetic, text_accuracy

__all__ = [
    "NLI_LABELS",
    "METRICS",
    "BASELINES",
    "SYNTHETIC_TASK",
    "TaskSpec",
    "TASKS",
    "get_task",
    "correctness_function",
    "answer_key_function",
]

NLI_LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")
"""Text of the NLI labels 0, 1, 2 in e-SNLI and ANLI."""

BASELINES: tuple[str, ...] = ("majority", "chance")
"""``majority``: always answer the most frequent training label; ``chance``: 1/len(candidates)."""

SYNTHETIC_TASK = "synthetic"
"""Name of the generated arithmetic task (:mod:`hf_cotmi.data.synthetic`)."""

Metric = Literal["text", "equation"]
Baseline = Literal["majority", "chance"]


def correctness_function(metric: str) -> Callable[[str, str], bool]:
    """``is_correct(prediction, gold)`` that agrees with the accuracy metric ``metric``.

    Raises:
        ValueError: ``metric`` is not ``"text"`` or ``"equation"``.

    Examples:
        >>> correctness_function("equation")("(84 / 2)", "( 42.0 * 1.0 )")
        True
        >>> correctness_function("text")("Neutral.", "neutral")
        True
    """
    if metric not in METRICS:
        raise ValueError(f"task metric {metric!r} is not supported; expected one of {', '.join(METRICS)}")
    score = equation_accuracy if metric == "equation" else text_accuracy

    def is_correct(prediction: str, gold: str) -> bool:
        return score([prediction], [gold]) == 1.0

    return is_correct


def answer_key_function(metric: str) -> Callable[[str], str | float | None]:
    """``answer_key(label)``: what the accuracy metric ``metric`` compares, so equal answers share a key.

    ``text``: the normalised text (None when it is empty); ``equation``: the value, to 12 significant
    digits (None when the equation does not evaluate). None marks an answer the metric never counts as
    right. Used to count answers, e.g. for the majority baseline, where "Yes", "yes." and "YES" are one
    answer.

    Raises:
        ValueError: ``metric`` is not ``"text"`` or ``"equation"``.

    Examples:
        >>> answer_key_function("text")("Yes.")
        'yes'
        >>> answer_key_function("equation")("( 14.0 / 2.0 )")
        7.0
    """
    if metric not in METRICS:
        raise ValueError(f"task metric {metric!r} is not supported; expected one of {', '.join(METRICS)}")
    if metric == "text":
        return _text_key

    def equation_value(label: str) -> float | None:
        value = safe_eval_arithmetic(label)
        return None if value is None else float(f"{value:.12g}")

    return equation_value


def _text_key(label: str) -> str | None:
    return normalize_text(label) or None


@dataclass(frozen=True)
class TaskSpec:
    """What every consumer needs to know about a task.

    Attributes:
        name: the task's name (``svamp``, ``cqa``, ``esnli``, ``anli1``, ``synthetic`` or your own).
        metric: ``"text"`` (normalised exact match) or ``"equation"`` (arithmetic value).
        label_candidates: a fixed label set shared by all examples (NLI's three labels), or ``None``.
        candidates_column: the column holding each example's own candidates (CQA's ``choices``), or ``None``.
        confidence: the default confidence mode for the ECE (one of ``CONFIDENCE_MODES``).
        baseline: ``"majority"`` (most frequent training label) or ``"chance"`` (1/len(candidates)).

    Examples:
        >>> TaskSpec("mine", metric="text", label_candidates=("yes", "no"), confidence="candidates").baseline
        'majority'
    """

    name: str
    metric: Metric = "text"
    label_candidates: tuple[str, ...] | None = None
    candidates_column: str | None = None
    confidence: str = "sequence"
    baseline: Baseline = "majority"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"task {self.name!r}: metric {self.metric!r} is not one of {', '.join(METRICS)}")
        if self.confidence not in CONFIDENCE_MODES:
            raise ValueError(
                f"task {self.name!r}: confidence {self.confidence!r} is not one of {', '.join(CONFIDENCE_MODES)}"
            )
        if self.baseline not in BASELINES:
            raise ValueError(
                f"task {self.name!r}: baseline {self.baseline!r} is not one of {', '.join(BASELINES)}"
            )
        if self.label_candidates is not None and self.candidates_column is not None:
            raise ValueError(f"task {self.name!r}: give label_candidates or candidates_column, not both")
        if self.label_candidates is not None and not self.label_candidates:
            raise ValueError(f"task {self.name!r}: label_candidates is empty; expected at least one label")
        if self.confidence == "candidates" and self.candidates is None:
            raise ValueError(
                f"task {self.name!r}: candidates confidence needs label_candidates or candidates_column"
            )
        if self.baseline == "chance" and self.candidates is None:
            raise ValueError(
                f"task {self.name!r}: a chance baseline needs label_candidates or candidates_column"
            )

    @classmethod
    def custom(
        cls,
        name: str = "custom",
        *,
        metric: str = "text",
        label_candidates: Sequence[str] | None = None,
        candidates_column: str | None = None,
        confidence: str | None = None,
        baseline: str | None = None,
    ) -> TaskSpec:
        """A spec for your own data, from options; the confidence follows the candidates when not given.

        Examples:
            >>> spec = TaskSpec.custom(label_candidates=["yes", "no"])
            >>> spec.confidence, spec.label_candidates, spec.baseline
            ('candidates', ('yes', 'no'), 'majority')
            >>> TaskSpec.custom(candidates_column="options").baseline
            'chance'
        """
        fixed = (
            tuple(dict.fromkeys(str(c) for c in label_candidates)) if label_candidates is not None else None
        )
        has_candidates = fixed is not None or candidates_column is not None
        return cls(
            name=name,
            metric=metric,  # type: ignore[arg-type]
            label_candidates=fixed,
            candidates_column=candidates_column,
            confidence=confidence or ("candidates" if has_candidates else "sequence"),
            baseline=baseline or ("chance" if candidates_column is not None else "majority"),  # type: ignore[arg-type]
        )

    @property
    def candidates(self) -> list[str] | str | None:
        """What :func:`hf_cotmi.label_confidences` takes as ``label_candidates``: a list, a column name or None.

        Examples:
            >>> get_task("cqa").candidates, get_task("svamp").candidates
            ('choices', None)
        """
        if self.label_candidates is not None:
            return list(self.label_candidates)
        return self.candidates_column

    def confidence_for(
        self, confidence: str | None = None, label_candidates: Sequence[str] | str | None = None
    ) -> tuple[str, list[str] | str | None]:
        """The confidence mode and candidates of a call given ``task=``: the caller's, else this task's.

        A given ``confidence`` wins (candidates mode takes the given candidates, else this task's); given
        candidates alone mean candidates mode; with neither, this task's mode (``sequence`` when it is
        candidates mode and the task has no candidates). :class:`hf_cotmi.ECECallback` and
        :func:`hf_cotmi.evaluate_calibration` use it, so the two agree.

        Returns:
            ``(mode, candidates)``, candidates None unless the mode is ``"candidates"``.

        Raises:
            ValueError: candidates given beside a generation ``confidence`` (``sequence``, ``first_token``),
                which would ignore them.

        Examples:
            >>> get_task("esnli").confidence_for()
            ('candidates', ['entailment', 'neutral', 'contradiction'])
            >>> get_task("esnli").confidence_for("sequence")
            ('sequence', None)
            >>> TaskSpec.custom(confidence="first_token").confidence_for()
            ('first_token', None)
            >>> get_task("svamp").confidence_for(label_candidates=["1", "2"])
            ('candidates', ['1', '2'])
        """
        check_candidates_mode(confidence, label_candidates, "confidence")
        if confidence is None:
            if label_candidates is not None:
                confidence = "candidates"
            elif self.confidence == "candidates" and self.candidates is None:
                confidence = "sequence"
            else:
                confidence = self.confidence
        if confidence != "candidates":
            return confidence, None
        if label_candidates is None:
            return confidence, self.candidates
        return confidence, label_candidates if isinstance(label_candidates, str) else list(label_candidates)

    def is_correct(self, prediction: str, gold: str) -> bool:
        """Whether ``prediction`` is right, by this task's metric.

        Examples:
            >>> get_task("cqa").is_correct("Bank.", "bank")
            True
        """
        return correctness_function(self.metric)(prediction, gold)

    @property
    def baseline_description(self) -> str:
        """How the baseline accuracy is obtained, in words (printed next to it).

        Examples:
            >>> get_task("cqa").baseline_description
            'chance over the choices'
        """
        if self.baseline == "chance":
            return f"chance over the {self.candidates_column or 'candidates'}"
        return "always answering the most frequent training label"

    def baseline_accuracy(self, train: Any, test: Any) -> float:
        """The baseline's accuracy on ``test`` (NaN when a split is missing or empty).

        ``majority``: the most frequent training answer (labels the metric counts as one answer counted
        together), scored with :meth:`is_correct`. ``chance``: the
        mean of ``1/len(candidates)`` over the test examples (their column, or the fixed set).

        Examples:
            >>> get_task("cqa").baseline_accuracy(None, {"choices": [["a", "b"], ["a", "b", "c", "d"]]})
            0.375
            >>> get_task("synthetic").baseline_accuracy({"label": ["3", "3", "4"]}, {"label": ["3", "5"]})
            0.5
        """
        rows = _num_rows(test)
        if rows == 0:
            return float("nan")
        if self.baseline == "chance":
            if self.candidates_column is not None:
                sizes = [len(set(choices or ())) for choices in test[self.candidates_column]]
                if 0 in sizes:
                    raise ValueError(
                        f"test example {sizes.index(0)} has no {self.candidates_column!r}: chance over its "
                        "choices is undefined; every multiple-choice example needs its choices"
                    )
            else:
                sizes = [len(self.label_candidates or ())] * rows
            return sum(1.0 / size for size in sizes) / rows
        if _num_rows(train) == 0:
            return float("nan")
        # counted by what the metric compares ("Yes" and "yes." are one answer, "(3 + 4)" and "7" one value)
        key = answer_key_function(self.metric)
        first_label: dict[Any, str] = {}
        counts: Counter[Any] = Counter()
        for label in train["label"]:
            answer = key(label)
            if answer is not None:
                first_label.setdefault(answer, label)
                counts[answer] += 1
        if not counts:  # no training label the metric can score: the majority answer is never right
            return 0.0
        majority = first_label[counts.most_common(1)[0][0]]
        return sum(self.is_correct(majority, gold) for gold in test["label"]) / rows

    def resolve_confidence(
        self, mode: str | None = None, candidates: str | None = None, columns: Sequence[str] = ()
    ) -> tuple[str, list[str] | str | None]:
        """The confidence mode and label candidates, from the options where given, else from this spec.

        Args:
            mode: ``--confidence`` (None: this task's default; ``sequence`` when its candidates are missing).
            candidates: ``--label-candidates``: comma-separated labels or a column name in ``columns``.
            columns: the evaluation data's columns.

        Returns:
            ``(mode, candidates)`` for :func:`hf_cotmi.label_confidences`.

        Raises:
            ValueError: an unknown mode, candidates naming no label or only one (that is no column), or
                candidates mode without candidates.

        Examples:
            >>> get_task("esnli").resolve_confidence()
            ('candidates', ['entailment', 'neutral', 'contradiction'])
            >>> get_task("cqa").resolve_confidence(columns=["input", "choices"])
            ('candidates', 'choices')
            >>> get_task("synthetic").resolve_confidence(candidates="yes,no")
            ('candidates', ['yes', 'no'])
        """
        given: list[str] | str | None = None
        if candidates:
            if candidates in columns:
                given = candidates
            else:
                given = [c.strip() for c in candidates.split(",") if c.strip()]
                if not given:
                    raise ValueError(f"--label-candidates {candidates!r} names no label")
                if len(given) == 1:  # one candidate: always confidence 1 (a misspelt column name?)
                    raise ValueError(
                        f"--label-candidates {candidates!r} is not a column of the evaluation data (its columns: "
                        f"{list(columns)}) and, read as labels, names only one, which would always get "
                        "confidence 1; expected a column name or two or more comma-separated labels"
                    )
        # the API's rule (confidence_for), so the CLI and evaluate_calibration / ECECallback agree
        resolved_mode, resolved = self.confidence_for(mode, given)
        if resolved_mode not in CONFIDENCE_MODES:
            raise ValueError(
                f"--confidence {resolved_mode!r} is not supported; expected one of {', '.join(CONFIDENCE_MODES)}"
            )
        if given is None and isinstance(resolved, str) and resolved not in columns:
            if mode is None:  # this task's candidates column is not in the data: its default falls back
                return "sequence", None
            resolved = None
        if resolved_mode == "candidates" and resolved is None:
            raise ValueError("--confidence candidates needs --label-candidates (labels or a column name)")
        return resolved_mode, resolved


def _num_rows(split: Any) -> int:
    if split is None:
        return 0
    if isinstance(split, Mapping):
        return len(next(iter(split.values()), []))
    return int(split.num_rows)


TASKS: Mapping[str, TaskSpec] = MappingProxyType(
    {
        SYNTHETIC_TASK: TaskSpec(SYNTHETIC_TASK, metric="text"),
        "svamp": TaskSpec("svamp", metric="equation"),
        "cqa": TaskSpec(
            "cqa", metric="text", candidates_column="choices", confidence="candidates", baseline="chance"
        ),
        "esnli": TaskSpec("esnli", metric="text", label_candidates=NLI_LABELS, confidence="candidates"),
        "anli1": TaskSpec("anli1", metric="text", label_candidates=NLI_LABELS, confidence="candidates"),
    }
)
"""The built-in tasks: name -> :class:`TaskSpec` (read-only)."""


def get_task(name: str) -> TaskSpec:
    """The built-in :class:`TaskSpec` called ``name``.

    Raises:
        ValueError: an unknown name; the message lists the known ones.

    Examples:
        >>> get_task("cqa").candidates_column
        'choices'
        >>> get_task("nope")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown task 'nope'; expected one of synthetic, svamp, cqa, esnli, anli1 (or ...)
    """
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(
            f"unknown task {name!r}; expected one of {', '.join(TASKS)} (or TaskSpec.custom(...) for your own data)"
        ) from None
