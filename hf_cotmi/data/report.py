"""What the data functions counted: reports returned with ``return_report=True``.

Loading and tokenising never drop or alter records silently. Whatever is unusual (PaLM outputs that did not
parse, missing rationales, truncated sequences) is counted per split, logged as a warning on the
``hf_cotmi`` logger, and returned in one of these dataclasses when the caller passes ``return_report=True``:

- :class:`DSSLoadReport` from :func:`hf_cotmi.load_dss_dataset`,
- :class:`CoTLoadReport` from :func:`hf_cotmi.load_cot_dataset`,
- :class:`FeaturesReport` from :func:`hf_cotmi.prepare_dss_features`.

A report is a value, not an attribute of the dataset: ``DatasetDict`` operations (``map``, ``filter``,
indexing) return new objects and would lose anything attached to them.

Examples:
    >>> report = DSSLoadReport("svamp", "datasets/svamp", "gt", {"test": DSSSplitReport(200, 2, 2, 0)})
    >>> report.unparsed
    2
    >>> print(report)
    svamp (datasets/svamp, labels: gt): test: 200 records, 2 unparsed, 2 empty rationales, 0 dropped
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = [
    "DSSSplitReport",
    "DSSLoadReport",
    "CoTSplitReport",
    "CoTLoadReport",
    "FeaturesSplitReport",
    "FeaturesReport",
]


def _describe(counts: object, labels: dict[str, str]) -> str:
    return ", ".join(f"{getattr(counts, f.name)} {labels.get(f.name, f.name)}" for f in fields(counts))


@dataclass
class DSSSplitReport:
    """Counts for one split of a DSS release dataset.

    Attributes:
        records: records in the split, as loaded (after carving a validation split, before dropping).
        unparsed: PaLM outputs that gave no label (``llm_label`` is empty).
        empty_rationales: PaLM outputs that gave an empty rationale.
        dropped: records removed because of ``drop_unparsed``.

    Examples:
        >>> DSSSplitReport(records=720, unparsed=12, empty_rationales=12, dropped=12).kept
        708
    """

    records: int
    unparsed: int
    empty_rationales: int
    dropped: int = 0

    @property
    def kept(self) -> int:
        """Records in the returned split."""
        return self.records - self.dropped

    def __str__(self) -> str:
        return _describe(self, {"empty_rationales": "empty rationales"})


@dataclass
class DSSLoadReport:
    """What :func:`hf_cotmi.load_dss_dataset` read, per split.

    Attributes:
        dataset: the dataset name (``svamp``, ``cqa``, ``esnli``, ``anli1``).
        directory: the folder the files were read from.
        label_source: ``"gt"`` or ``"llm"`` (which labels the train split carries).
        splits: split name -> :class:`DSSSplitReport`.

    Examples:
        >>> splits = {"train": DSSSplitReport(10, 1, 0), "test": DSSSplitReport(5, 0, 0)}
        >>> r = DSSLoadReport("cqa", "d/cqa", "gt", splits)
        >>> r.unparsed, r.splits["train"].unparsed
        (1, 1)
    """

    dataset: str
    directory: str
    label_source: str
    splits: dict[str, DSSSplitReport] = field(default_factory=dict)

    @property
    def unparsed(self) -> int:
        """PaLM outputs without a label, all splits together."""
        return sum(s.unparsed for s in self.splits.values())

    @property
    def dropped(self) -> int:
        """Records dropped, all splits together."""
        return sum(s.dropped for s in self.splits.values())

    def __str__(self) -> str:
        parts = "; ".join(f"{name}: {counts}" for name, counts in self.splits.items())
        return f"{self.dataset} ({self.directory}, labels: {self.label_source}): {parts}"


@dataclass
class CoTSplitReport:
    """Counts for one split of a user's chain-of-thought dataset.

    Attributes:
        records: records in the split.
        missing_rationales: records whose rationale was missing (null) or empty/blank; null became ``""``.

    Examples:
        >>> str(CoTSplitReport(records=3, missing_rationales=1))
        '3 records, 1 missing rationales'
    """

    records: int
    missing_rationales: int

    def __str__(self) -> str:
        return _describe(self, {"missing_rationales": "missing rationales"})


@dataclass
class CoTLoadReport:
    """What :func:`hf_cotmi.load_cot_dataset` read, per split.

    Attributes:
        source: a description of where the data came from (a path, or the type of the dataset object).
        splits: split name -> :class:`CoTSplitReport`.

    Examples:
        >>> CoTLoadReport("data.jsonl", {"train": CoTSplitReport(3, 1)}).missing_rationales
        1
    """

    source: str
    splits: dict[str, CoTSplitReport] = field(default_factory=dict)

    @property
    def missing_rationales(self) -> int:
        """Missing or empty rationales, all splits together."""
        return sum(s.missing_rationales for s in self.splits.values())

    def __str__(self) -> str:
        parts = "; ".join(f"{name}: {counts}" for name, counts in self.splits.items())
        return f"{self.source}: {parts}"


@dataclass
class FeaturesSplitReport:
    """Counts for one split tokenised by :func:`hf_cotmi.prepare_dss_features`.

    Attributes:
        examples: examples tokenised.
        truncated_inputs: ``predict_prefix + input`` sequences cut to ``max_input_length``.
        truncated_labels: labels cut to ``max_label_length``.
        truncated_rationales: rationales cut to ``max_rationale_length``.
        truncated_explain_inputs: ``explain_prefix + input`` sequences cut to ``max_input_length``.
        missing_rationales: examples kept with an empty rationale (their rationale target is only EOS).
        dropped_rationales: examples removed for an empty rationale (``empty_rationale="drop"``).
        empty_labels: examples whose label is empty.
        empty_inputs: examples whose input is empty (or blank; an NLI pair whose premise or hypothesis is).
        with_rationale: whether explain features were produced for this split.

    Examples:
        >>> FeaturesSplitReport(examples=10, truncated_inputs=1).truncated
        1
    """

    examples: int
    truncated_inputs: int = 0
    truncated_labels: int = 0
    truncated_rationales: int = 0
    truncated_explain_inputs: int = 0
    missing_rationales: int = 0
    dropped_rationales: int = 0
    empty_labels: int = 0
    empty_inputs: int = 0
    with_rationale: bool = True

    @property
    def truncated(self) -> int:
        """Truncated sequences of every kind."""
        return (
            self.truncated_inputs
            + self.truncated_labels
            + self.truncated_rationales
            + self.truncated_explain_inputs
        )

    def __str__(self) -> str:
        text = (
            f"{self.examples} examples; truncated: {self.truncated_inputs} inputs, {self.truncated_labels} "
            f"labels, {self.truncated_rationales} rationales, {self.truncated_explain_inputs} explain inputs"
        )
        text += f"; {self.empty_labels} empty labels"
        if self.empty_inputs:
            text += f", {self.empty_inputs} empty inputs"
        if not self.with_rationale:
            return text + " (predict only)"
        return text + f"; {self.missing_rationales} empty rationales kept, {self.dropped_rationales} dropped"


@dataclass
class FeaturesReport:
    """What :func:`hf_cotmi.prepare_dss_features` counted, per split.

    Attributes:
        splits: split name -> :class:`FeaturesSplitReport`.
        max_input_length: the input limit used.
        max_label_length: the label limit used.
        max_rationale_length: the rationale limit used.

    Examples:
        >>> FeaturesReport({"train": FeaturesSplitReport(10, truncated_labels=2)}, 1024, 256, 256).truncated
        2
    """

    splits: dict[str, FeaturesSplitReport] = field(default_factory=dict)
    max_input_length: int = 1024
    max_label_length: int = 256
    max_rationale_length: int = 256

    @property
    def truncated(self) -> int:
        """Truncated sequences of every kind, all splits together."""
        return sum(s.truncated for s in self.splits.values())

    def __str__(self) -> str:
        return "; ".join(f"{name}: {counts}" for name, counts in self.splits.items())
