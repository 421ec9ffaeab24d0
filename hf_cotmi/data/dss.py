"""Load the Distilling Step-by-Step release (``datasets/<name>/...``) as a ``DatasetDict``.

The release (Hsieh et al., 2023) ships, per dataset, the task records as JSON Lines and PaLM 540B's raw
chain-of-thought outputs as JSON arrays under ``llm/``. :func:`load_dss_dataset` reads both, checks that they
align, formats the inputs as DSS did, parses PaLM's rationale and label with the DSS rules
(:mod:`hf_cotmi.data.parsing`) and carves a validation split where the release has none.

Examples:
    >>> from hf_cotmi import load_dss_dataset
    >>> data = load_dss_dataset("svamp", "datasets/")  # doctest: +SKIP
    >>> data["train"].column_names  # doctest: +SKIP
    ['input', 'label', 'rationale', 'llm_label']
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, overload

from ..tasks import NLI_LABELS, TASKS
from .jsonfiles import DataFormatError, llm_output_files, read_jsonl, read_llm_outputs
from .parsing import PARSERS
from .report import DSSLoadReport, DSSSplitReport

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset, DatasetDict

__all__ = ["DSSDatasetSpec", "DSS_DATASETS", "DSS_SPLITS", "NLI_LABELS", "load_dss_dataset"]

logger = logging.getLogger(__name__)

DSS_SPLITS: tuple[str, ...] = ("train", "valid", "test")
"""Split names of the release files ``<name>_<split>.json`` (and of the returned ``DatasetDict``)."""


DEFAULT_NLI_SEPARATOR = "</s>"


@dataclass(frozen=True)
class DSSDatasetSpec:
    """How one dataset of the DSS release is laid out and used.

    Attributes:
        name: folder and file prefix, e.g. ``"svamp"``.
        record_fields: fields every record of ``<name>_<split>.json`` must have.
        has_valid_split: whether the release has ``<name>_valid.json`` (else one is carved from train).
        is_nli: premise/hypothesis pairs (the returned data keeps ``premise`` and ``hypothesis`` columns).
        task: the metric family: ``"text"`` (exact match) or ``"equation"`` (value of an arithmetic
            expression); pass it to :func:`hf_cotmi.build_compute_metrics`.
        extra_columns: columns returned besides ``input, label, rationale, llm_label``.

    Examples:
        >>> DSS_DATASETS["svamp"].task
        'equation'
    """

    name: str
    record_fields: tuple[str, ...]
    has_valid_split: bool
    is_nli: bool
    task: str
    extra_columns: tuple[str, ...] = ()


_NLI_FIELDS = ("premise", "hypothesis", "label")

DSS_DATASETS: Mapping[str, DSSDatasetSpec] = MappingProxyType(
    {
        "svamp": DSSDatasetSpec(
            "svamp", ("input", "label"), has_valid_split=False, is_nli=False, task=TASKS["svamp"].metric
        ),
        "cqa": DSSDatasetSpec(
            "cqa",
            ("question", "choices", "answer"),
            has_valid_split=False,
            is_nli=False,
            task=TASKS["cqa"].metric,
            extra_columns=("choices",),
        ),
        "esnli": DSSDatasetSpec(
            "esnli",
            _NLI_FIELDS,
            has_valid_split=True,
            is_nli=True,
            task=TASKS["esnli"].metric,
            extra_columns=_NLI_FIELDS[:2],
        ),
        "anli1": DSSDatasetSpec(
            "anli1",
            _NLI_FIELDS,
            has_valid_split=True,
            is_nli=True,
            task=TASKS["anli1"].metric,
            extra_columns=_NLI_FIELDS[:2],
        ),
    }
)
"""The datasets :func:`load_dss_dataset` knows: name -> :class:`DSSDatasetSpec` (read-only)."""

_CHOICE_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _expected_layout(root: Path, spec: DSSDatasetSpec) -> str:
    fields = ", ".join(spec.record_fields)
    splits = DSS_SPLITS if spec.has_valid_split else ("train", "test")
    lines = ["expected the Distilling Step-by-Step release layout:", f"  {root}/", f"    {spec.name}/"]
    lines += [f"      {spec.name}_{split}.json   (JSON Lines; fields {fields})" for split in splits]
    lines += ["      llm/"]
    lines += [
        f"        {split}_CoT_0.json, {split}_CoT_1.json, ...   (JSON arrays of strings)" for split in splits
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- record formatting


def _text_field(record: dict, key: str, where: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise DataFormatError(
            f"{where}: field {key!r} must be a string, got {type(value).__name__} {value!r}"
        )
    return value


def _svamp_columns(record: dict, where: str, separator: str) -> dict[str, Any]:
    return {"input": _text_field(record, "input", where), "label": _text_field(record, "label", where)}


def format_cqa_input(question: str, choices: Sequence[str]) -> str:
    """Format a CommonsenseQA question as DSS did: the question, then the lettered answer choices.

    Examples:
        >>> print(format_cqa_input("Where do fish live?", ["sea", "tree"]))
        Where do fish live?
        Answer Choices:
        (a) sea
        (b) tree
    """
    lines = [question, "Answer Choices:"]
    lines += [f"({letter}) {choice}" for letter, choice in zip(_CHOICE_LETTERS, choices)]
    return "\n".join(lines)


def _cqa_columns(record: dict, where: str, separator: str) -> dict[str, Any]:
    question = _text_field(record, "question", where)
    choices = record["choices"]
    if (
        not isinstance(choices, list)
        or not 0 < len(choices) <= len(_CHOICE_LETTERS)
        or not all(isinstance(c, str) for c in choices)
    ):
        raise DataFormatError(
            f"{where}: field 'choices' must be a list of answer strings (5 in CQA), got {choices!r}"
        )
    return {
        "input": format_cqa_input(question, choices),
        "label": _text_field(record, "answer", where),
        "choices": choices,
    }


def nli_label_text(label: Any) -> str | None:
    """Map an NLI label 0/1/2 (or its text) to ``entailment`` / ``neutral`` / ``contradiction``; else None.

    Examples:
        >>> nli_label_text(2), nli_label_text("neutral"), nli_label_text(7)
        ('contradiction', 'neutral', None)
    """
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(NLI_LABELS):
        return NLI_LABELS[label]
    if isinstance(label, str) and label in NLI_LABELS:
        return label
    return None


def _nli_columns(record: dict, where: str, separator: str) -> dict[str, Any]:
    premise = _text_field(record, "premise", where)
    hypothesis = _text_field(record, "hypothesis", where)
    label = nli_label_text(record["label"])
    if label is None:
        raise DataFormatError(
            f"{where}: field 'label' must be 0, 1 or 2 (or one of {list(NLI_LABELS)}), "
            f"got {record['label']!r}"
        )
    return {
        "input": f"{premise}{separator}{hypothesis}",
        "label": label,
        "premise": premise,
        "hypothesis": hypothesis,
    }


_FORMATTERS: dict[str, Callable[[dict, str, str], dict[str, Any]]] = {
    "svamp": _svamp_columns,
    "cqa": _cqa_columns,
    "esnli": _nli_columns,
    "anli1": _nli_columns,
}


# --------------------------------------------------------------------------- reading one split


def _features(spec: DSSDatasetSpec) -> Any:
    from datasets import Features, List, Value

    columns: dict[str, Any] = {name: Value("string") for name in ("input", "label", "rationale", "llm_label")}
    for name in spec.extra_columns:
        columns[name] = List(Value("string")) if name == "choices" else Value("string")
    return Features(columns)


def _read_split(spec: DSSDatasetSpec, folder: Path, split: str, separator: str) -> Dataset:
    from datasets import Dataset

    path = folder / f"{spec.name}_{split}.json"
    records = read_jsonl(path)
    llm_dir = folder / "llm"
    files = llm_output_files(llm_dir, split)
    if not files:
        raise FileNotFoundError(
            f"{llm_dir / f'{split}_CoT_0.json'} not found: the split {split!r} ({path}) needs PaLM's outputs "
            f"in {llm_dir}/{split}_CoT_0.json, {split}_CoT_1.json, ...\n"
            + _expected_layout(folder.parent, spec)
        )
    arrays = read_llm_outputs(files)
    outputs = [text for texts in arrays.values() for text in texts]
    if len(outputs) != len(records):
        per_file = ", ".join(f"{p.name}: {len(texts)}" for p, texts in arrays.items())
        raise DataFormatError(
            f"{path} has {len(records)} records but the llm/ arrays for split {split!r} hold {len(outputs)} "
            f"strings ({per_file}); expected one PaLM output per record, in the same order"
        )

    formatter, parser = _FORMATTERS[spec.name], PARSERS[spec.name]
    columns: dict[str, list[Any]] = {name: [] for name in _features(spec)}
    for (line_number, record), output in zip(records, outputs):
        where = f"{path}, line {line_number}"
        missing = [key for key in spec.record_fields if key not in record]
        if missing:
            raise DataFormatError(
                f"{where}: record has no field {missing[0]!r}; expected fields {list(spec.record_fields)}, "
                f"found {sorted(record)}"
            )
        row = formatter(record, where, separator)
        parsed = parser(output)
        row["rationale"], row["llm_label"] = parsed.rationale, parsed.label
        for name, values in columns.items():
            values.append(row[name])
    return Dataset.from_dict(columns, features=_features(spec), split=split)


# --------------------------------------------------------------------------- the loader


def _resolve_folder(name: str, data_dir: str | os.PathLike[str], spec: DSSDatasetSpec) -> Path:
    base = Path(data_dir)
    if not base.is_dir():
        raise FileNotFoundError(
            f"data_dir {str(base)!r} does not exist or is not a folder; " + _expected_layout(base, spec)
        )
    if (base / name).is_dir():
        return base / name
    if base.name == name or any((base / f"{name}_{split}.json").is_file() for split in DSS_SPLITS):
        return base  # data_dir is the dataset folder itself
    raise FileNotFoundError(f"no folder {str(base / name)!r}; " + _expected_layout(base, spec))


def _count_empty(dataset: Dataset, column: str) -> int:
    return sum(1 for value in dataset[column] if not value)


@overload
def load_dss_dataset(
    name: str,
    data_dir: str | os.PathLike[str],
    *,
    label_source: str = ...,
    valid_fraction: float = ...,
    seed: int = ...,
    splits: Sequence[str] | None = ...,
    drop_unparsed: bool | Collection[str] = ...,
    nli_separator: str = ...,
    llm_label_splits: Sequence[str] = ...,
    return_report: Literal[False] = ...,
) -> DatasetDict: ...


@overload
def load_dss_dataset(
    name: str,
    data_dir: str | os.PathLike[str],
    *,
    label_source: str = ...,
    valid_fraction: float = ...,
    seed: int = ...,
    splits: Sequence[str] | None = ...,
    drop_unparsed: bool | Collection[str] = ...,
    nli_separator: str = ...,
    llm_label_splits: Sequence[str] = ...,
    return_report: Literal[True],
) -> tuple[DatasetDict, DSSLoadReport]: ...


def load_dss_dataset(
    name: str,
    data_dir: str | os.PathLike[str],
    *,
    label_source: str = "gt",
    valid_fraction: float = 0.1,
    seed: int = 0,
    splits: Sequence[str] | None = None,
    drop_unparsed: bool | Collection[str] = False,
    nli_separator: str = DEFAULT_NLI_SEPARATOR,
    llm_label_splits: Sequence[str] = ("train",),
    return_report: bool = False,
) -> DatasetDict | tuple[DatasetDict, DSSLoadReport]:
    """Load one dataset of the Distilling Step-by-Step release, with PaLM's rationales and labels.

    Reads ``<data_dir>/<name>/<name>_<split>.json`` (JSON Lines) and
    ``<data_dir>/<name>/llm/<split>_CoT_<i>.json`` (JSON arrays of PaLM's raw outputs, concatenated in numeric
    order of ``i`` and aligned with the records). ``data_dir`` may also be the ``<name>`` folder itself.

    Columns of every split:

    - ``input``: formatted as DSS formatted it. SVAMP: the question. CQA: the question, then
      ``\\nAnswer Choices:\\n(a) ...`` through ``(e) ...``. e-SNLI / ANLI: ``premise + nli_separator +
      hypothesis`` (DSS joined them with T5's ``</s>``).
    - ``label``: the ground-truth answer as text (SVAMP: an equation such as ``( 84.0 / 2.0 )``; CQA: the
      answer text, not the letter; NLI: ``entailment`` / ``neutral`` / ``contradiction``). With
      ``label_source="llm"`` the training split's ``label`` (``llm_label_splits``, default ``train``) is
      PaLM's label instead; the other splits keep the ground truth.
    - ``rationale``, ``llm_label``: PaLM's rationale and label, parsed with the DSS rules
      (:mod:`hf_cotmi.data.parsing`). An output that does not parse has an empty ``llm_label``.
    - CQA also keeps ``choices`` (the 5 answer strings); e-SNLI and ANLI keep ``premise`` and ``hypothesis``,
      from which :func:`hf_cotmi.prepare_dss_features` rebuilds the input with the tokenizer's own separator.

    CQA and SVAMP have no validation file: ``valid`` is carved from ``train`` with
    ``Dataset.train_test_split(test_size=valid_fraction, seed=seed)``, as DSS did (10%, seed 0), so ``train``
    is what remains whether or not ``valid`` is requested. ``valid_fraction=0`` keeps all of ``train`` and
    gives no ``valid`` split.

    Parse failures are never dropped silently: they are counted per split, logged as a warning on the
    ``hf_cotmi`` logger and returned in the report (``return_report=True``). ``drop_unparsed`` removes them.

    Args:
        name: one of ``DSS_DATASETS`` (``"svamp"``, ``"cqa"``, ``"esnli"``, ``"anli1"``).
        data_dir: the release's ``datasets/`` folder (holding ``<name>/``), or the ``<name>/`` folder.
        label_source: ``"gt"`` (ground truth) or ``"llm"`` (PaLM's labels for the train split).
        valid_fraction: share of train carved off as ``valid`` where the release has no validation file
            (0 <= valid_fraction < 1).
        seed: seed of that split.
        splits: the splits to return (from ``train``, ``valid``, ``test``); None returns every split whose
            files are present. A split named here whose files are missing is an error.
        drop_unparsed: drop records whose PaLM output gave no label: True for every split, or a collection of
            split names (e.g. ``{"train"}``). The valid split is carved before dropping.
        nli_separator: the text between premise and hypothesis in the NLI ``input`` column.
        llm_label_splits: the splits whose ``label`` is PaLM's with ``label_source="llm"``: the ones you train
            on (``("valid",)`` for the e-SNLI copy without a train file, as ``hf-cotmi train --train-split
            valid`` passes it).
        return_report: also return a :class:`~hf_cotmi.data.report.DSSLoadReport` with the counts per split.

    Returns:
        A ``DatasetDict`` with the splits in the order train, valid, test; or ``(DatasetDict, DSSLoadReport)``
        when ``return_report`` is True.

    Raises:
        ValueError: an unknown dataset name, split name or option value.
        FileNotFoundError: ``data_dir``, the dataset folder, a requested split's file or its ``llm/`` files
            are missing (the message shows the expected layout).
        hf_cotmi.data.jsonfiles.DataFormatError: (a ``ValueError``) a malformed JSON line (file and line), a
            record without an expected field, or a record count that differs between ``<name>_<split>.json``
            and the ``llm/`` arrays.

    Examples:
        >>> data, report = load_dss_dataset("svamp", "datasets/", return_report=True)  # doctest: +SKIP
        >>> {split: data[split].num_rows for split in data}  # doctest: +SKIP
        {'train': 720, 'valid': 80, 'test': 200}
        >>> report.splits["train"].unparsed  # doctest: +SKIP
        12
    """
    spec = DSS_DATASETS.get(name)
    if spec is None:
        raise ValueError(f"unknown DSS dataset {name!r}; known datasets: {', '.join(DSS_DATASETS)}")
    if label_source not in ("gt", "llm"):
        raise ValueError(f"label_source={label_source!r} is not supported; expected 'gt' or 'llm'")
    llm_splits = set(_split_names(llm_label_splits, "llm_label_splits", as_set=True))
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction={valid_fraction!r} must be at least 0 and below 1")
    if splits is not None:
        splits = _split_names(splits, "splits")
        if not splits:
            raise ValueError(
                f"splits=[] names no split; give some of {list(DSS_SPLITS)}, or None for every one"
            )
    if isinstance(drop_unparsed, bool):
        drop_splits = set(DSS_SPLITS) if drop_unparsed else set()
    else:
        drop_splits = set(_split_names(drop_unparsed, "drop_unparsed", as_set=True, also="True, False or "))

    folder = _resolve_folder(name, data_dir, spec)
    file_splits = [s for s in DSS_SPLITS if (folder / f"{name}_{s}.json").is_file()]
    carve = (
        not spec.has_valid_split
        and "valid" not in file_splits
        and "train" in file_splits
        and valid_fraction > 0
    )
    available = [s for s in DSS_SPLITS if s in file_splits or (s == "valid" and carve)]
    if not available:
        raise FileNotFoundError(
            f"no {name}_<split>.json file in {str(folder)!r}; " + _expected_layout(folder.parent, spec)
        )
    requested = [s for s in DSS_SPLITS if s in (splits if splits is not None else available)]
    missing = [s for s in requested if s not in available]
    if missing:
        split = missing[0]
        if split == "valid" and not spec.has_valid_split:
            why = f"{name} has no validation file and valid_fraction={valid_fraction} carves none from train"
            if "train" not in file_splits:
                train_file = folder / f"{name}_train.json"
                why = f"{name} has no validation file and {train_file}, to carve one from, is missing"
        else:
            why = f"{folder / f'{name}_{split}.json'} not found (present: {file_splits or 'none'})"
        raise FileNotFoundError(
            f"split {split!r} requested but not available: {why}; " + _expected_layout(folder.parent, spec)
        )

    to_read = [
        s
        for s in DSS_SPLITS
        if s in file_splits and (s in requested or (carve and s == "train" and "valid" in requested))
    ]
    loaded: dict[str, Dataset] = {s: _read_split(spec, folder, s, nli_separator) for s in to_read}
    if carve and "train" in loaded:
        parts = loaded["train"].train_test_split(test_size=valid_fraction, seed=seed)
        loaded["train"], loaded["valid"] = parts["train"], parts["test"]

    from datasets import DatasetDict

    report = DSSLoadReport(dataset=name, directory=str(folder), label_source=label_source)
    result = {}
    for split in requested:
        dataset = loaded[split]
        counts = DSSSplitReport(
            records=dataset.num_rows,
            unparsed=_count_empty(dataset, "llm_label"),
            empty_rationales=_count_empty(dataset, "rationale"),
        )
        teacher_labels = label_source == "llm" and split in llm_splits
        if teacher_labels:
            dataset = dataset.map(
                lambda batch: {"label": batch["llm_label"]}, batched=True, desc="llm labels"
            )
        if split in drop_splits and counts.unparsed:
            dataset = dataset.filter(
                lambda labels: [bool(x) for x in labels], input_columns="llm_label", batched=True
            )
            counts.dropped = counts.records - dataset.num_rows
        _warn(name, split, counts, teacher_labels)
        report.splits[split] = counts
        result[split] = dataset
    data = DatasetDict(result)
    logger.info("loaded %s", report)
    return (data, report) if return_report else data


def _split_names(
    value: str | Collection[str], argument: str, *, as_set: bool = False, also: str = ""
) -> list[str]:
    """A split-name argument (one name or several) as a list; unknown names are a ``ValueError`` naming the
    argument (listed sorted for a set-like argument, else in the order given)."""
    names = [value] if isinstance(value, str) else list(value)
    unknown = [s for s in names if s not in DSS_SPLITS]
    if unknown:
        shown = sorted(set(unknown)) if as_set else unknown
        raise ValueError(
            f"unknown split(s) {shown} in {argument}=; expected {also}names from {list(DSS_SPLITS)}"
        )
    return names


def _warn(name: str, split: str, counts: DSSSplitReport, teacher_labels: bool) -> None:
    if counts.unparsed:
        if counts.dropped:
            fate = f"dropped {counts.dropped} (drop_unparsed)"
        else:
            fate = "kept with an empty llm_label"
            if teacher_labels:
                fate += " and, with label_source='llm', an empty training label"
            fate += "; pass drop_unparsed=True to drop them"
        logger.warning(
            "%s %s: %d of %d PaLM outputs did not parse (no label); %s",
            name,
            split,
            counts.unparsed,
            counts.records,
            fate,
        )
    if counts.empty_rationales:
        logger.warning(
            "%s %s: %d of %d PaLM outputs gave an empty rationale",
            name,
            split,
            counts.empty_rationales,
            counts.records,
        )
