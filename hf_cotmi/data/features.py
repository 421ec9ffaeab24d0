"""Tokenise text columns into the two DSS tasks: ``predict:`` -> label and ``explain:`` -> rationale.

:func:`prepare_dss_features` turns a dataset with ``input``, ``label`` and ``rationale`` text columns (what
:func:`hf_cotmi.load_dss_dataset` and :func:`hf_cotmi.load_cot_dataset` return) into the columns
:class:`hf_cotmi.DSSDataCollator` pads:

======================  =========================================================
``input_ids``           ``predict_prefix + input``, tokenised
``attention_mask``      its attention mask
``labels``              the label, tokenised as a target (no ``-100``; the collator pads with it)
``expl_input_ids``      ``explain_prefix + input``, tokenised (with rationales only)
``expl_attention_mask`` its attention mask (with rationales only)
``rationale_labels``    the rationale, tokenised as a target (with rationales only)
======================  =========================================================

The text columns are kept. Truncation is counted per split and reported, never silent.

Examples:
    >>> from datasets import Dataset
    >>> from hf_cotmi.tiny import build_word_tokenizer
    >>> data = Dataset.from_dict({"input": ["tom has 3 apples"], "label": ["3"], "rationale": ["he has 3 ."]})
    >>> tok = build_word_tokenizer(["tom has 3 apples . he"])
    >>> features = prepare_dss_features(data, tok)
    >>> tok.decode(features[0]["expl_input_ids"])
    'explain : tom has 3 apples </s>'
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from ..prefixes import EXPLAIN_PREFIX, PREDICT_PREFIX
from ..student_types import check_chat_template_student, resolve_student_type
from .causal import encode_causal_task
from .report import FeaturesReport, FeaturesSplitReport

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset, DatasetDict

__all__ = [
    "FEATURE_COLUMNS",
    "EXPLAIN_COLUMNS",
    "EmptyRationaleError",
    "default_nli_separator",
    "prepare_dss_features",
    "student_input_texts",
    "is_nli_layout",
]

logger = logging.getLogger(__name__)

FEATURE_COLUMNS: tuple[str, ...] = ("input_ids", "attention_mask", "labels")
"""Columns of the label (``predict:``) task."""

EXPLAIN_COLUMNS: tuple[str, ...] = ("expl_input_ids", "expl_attention_mask", "rationale_labels")
"""Columns of the rationale (``explain:``) task."""

_EMPTY_RATIONALE_POLICIES = ("keep", "drop", "error")
_FLAG = "__hf_cotmi_{}"
_FLAGS = (
    "truncated_inputs",
    "truncated_labels",
    "truncated_rationales",
    "truncated_explain_inputs",
    "missing_rationales",
    "empty_labels",
    "empty_inputs",
)


def default_nli_separator(tokenizer: Any) -> str:
    """The text put between premise and hypothesis by default: the tokenizer's EOS token, else its SEP token.

    T5 gives ``</s>`` (what DSS used), BART ``</s>``, BERT ``[SEP]``.

    Raises:
        ValueError: the tokenizer has neither token.

    Examples:
        >>> from hf_cotmi.tiny import build_word_tokenizer
        >>> default_nli_separator(build_word_tokenizer(["a"]))
        '</s>'
    """
    for token in (getattr(tokenizer, "eos_token", None), getattr(tokenizer, "sep_token", None)):
        if token:
            return str(token)
    raise ValueError(
        "the tokenizer has neither an EOS nor a SEP token to join premise and hypothesis; pass nli_separator="
    )


def _encode(tokenizer: Any, texts: list[str], max_length: int, *, target: bool) -> tuple[Any, list[bool]]:
    """Tokenise without truncation, then re-tokenise the rows that are too long with truncation.

    Tokenising twice only the long rows keeps the special tokens the tokenizer adds on truncation (such as
    T5's closing ``</s>``) and tells exactly which rows were cut.
    """
    key = "text_target" if target else "text"
    encoded = tokenizer(**{key: texts}, verbose=False)
    too_long = [i for i, ids in enumerate(encoded["input_ids"]) if len(ids) > max_length]
    if too_long:
        cut = tokenizer(**{key: [texts[i] for i in too_long]}, truncation=True, max_length=max_length)
        for row, i in enumerate(too_long):
            encoded["input_ids"][i] = cut["input_ids"][row]
            encoded["attention_mask"][i] = cut["attention_mask"][row]
    flags = [False] * len(texts)
    for i in too_long:
        flags[i] = True
    return encoded, flags


def is_nli_layout(columns: Sequence[str]) -> bool:
    """Whether rows with these columns are NLI rows, their input built from ``premise`` and ``hypothesis``
    (the ``input`` column, if any, is then not what the student reads).

    Examples:
        >>> is_nli_layout(["premise", "hypothesis", "input", "label"]), is_nli_layout(["input", "label"])
        (True, False)
    """
    return "premise" in columns and "hypothesis" in columns


def _separator_for(columns: Sequence[str], tokenizer: Any, nli_separator: str | None) -> str | None:
    """The text between premise and hypothesis for NLI columns (``premise``, ``hypothesis``), else None."""
    if not is_nli_layout(columns):
        return None
    return nli_separator if nli_separator is not None else default_nli_separator(tokenizer)


def student_input_texts(dataset: Any, tokenizer: Any, nli_separator: str | None = None) -> list[Any]:
    """The input texts :func:`prepare_dss_features` puts after the prefixes, one per row of ``dataset``.

    The ``input`` column, except for NLI rows (``premise`` and ``hypothesis`` columns): those are joined
    with ``nli_separator`` (default :func:`default_nli_separator`, the tokenizer's EOS token), which is not
    always the ``</s>`` the ``input`` column of :func:`hf_cotmi.load_dss_dataset` holds. Use it to prompt
    a student with what it was trained on.

    Examples:
        >>> from hf_cotmi.tiny import build_word_tokenizer
        >>> tok = build_word_tokenizer(["a man sleeps"])
        >>> student_input_texts({"premise": ["a man"], "hypothesis": ["he sleeps"]}, tok)
        ['a man</s>he sleeps']
        >>> student_input_texts({"premise": ["a man"], "hypothesis": ["he sleeps"]}, tok, nli_separator=" | ")
        ['a man | he sleeps']
        >>> student_input_texts({"input": ["tom has 3 apples"]}, tok)
        ['tom has 3 apples']
    """
    columns = list(dataset.column_names if hasattr(dataset, "column_names") else dataset)
    separator = _separator_for(columns, tokenizer, nli_separator)
    wanted = ("premise", "hypothesis") if separator is not None else ("input",)
    return _input_texts({c: list(dataset[c]) for c in wanted}, separator)


def _input_texts(batch: dict[str, list], separator: str | None) -> list[Any]:
    if separator is not None:
        return [
            None if p is None or h is None else f"{p}{separator}{h}"
            for p, h in zip(batch["premise"], batch["hypothesis"])
        ]
    return batch["input"]


def _check_text(values: Sequence[Any], column: str, indices: Sequence[int], split: str) -> None:
    for value, index in zip(values, indices):
        if not isinstance(value, str):
            raise ValueError(
                f"split {split!r}, row {index}: column {column!r} is {value!r}; expected text "
                "(load the data with hf_cotmi.load_cot_dataset to check and convert it)"
            )


def _make_encoder(
    tokenizer: Any,
    *,
    split: str,
    separator: str | None,
    with_rationale: bool,
    max_input_length: int,
    max_label_length: int,
    max_rationale_length: int,
    predict_prefix: str,
    explain_prefix: str,
    layout: str = "seq2seq",
    chat_template: bool = False,
    row_numbers: Sequence[int] | None = None,
    max_sequence_length: int | None = None,
) -> Any:
    """The batched ``map`` function; ``row_numbers[i]`` is the row of the split as given (for messages) where
    rows were dropped before tokenising."""

    def encode_task(
        prompts: list[str], targets: list[str], max_target_length: int, names: list[str]
    ) -> tuple[list, list, list, list[bool], list[bool]]:
        """(input ids, attention mask, target ids or causal labels, truncated prompts, truncated targets);
        ``names`` are the rows as error messages call them."""
        if layout == "causal":
            enc = encode_causal_task(
                tokenizer,
                prompts,
                targets,
                max_prompt_length=max_input_length,
                max_target_length=max_target_length,
                chat_template=chat_template,
                max_length=max_sequence_length,
                row_names=names,
            )
            return enc.input_ids, enc.attention_mask, enc.labels, enc.truncated_prompts, enc.truncated_targets
        source, cut_source = _encode(tokenizer, prompts, max_input_length, target=False)
        target, cut_target = _encode(tokenizer, targets, max_target_length, target=True)
        return source["input_ids"], source["attention_mask"], target["input_ids"], cut_source, cut_target

    def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        if row_numbers is not None:
            indices = [row_numbers[i] for i in indices]
        inputs = _input_texts(batch, separator)
        _check_text(inputs, "input" if separator is None else "premise/hypothesis", indices, split)
        _check_text(batch["label"], "label", indices, split)
        ids, mask, labels, truncated_inputs, truncated_labels = encode_task(
            [predict_prefix + text for text in inputs],
            _blank_as_empty(batch["label"]),
            max_label_length,
            [f"split {split!r}, row {index}, label task (predict_prefix + input)" for index in indices],
        )
        out: dict[str, list] = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        flags = {
            "truncated_inputs": truncated_inputs,
            "truncated_labels": truncated_labels,
            "empty_labels": [not label.strip() for label in batch["label"]],
            # an NLI pair is joined with a separator, never blank: count a blank premise or hypothesis
            "empty_inputs": (
                [not p.strip() or not h.strip() for p, h in zip(batch["premise"], batch["hypothesis"])]
                if separator is not None
                else [not text.strip() for text in inputs]
            ),
        }
        if with_rationale:
            rationales = ["" if r is None else r for r in batch["rationale"]]
            _check_text(rationales, "rationale", indices, split)
            expl_ids, expl_mask, rationale_labels, truncated_explain, truncated_rationales = encode_task(
                [explain_prefix + text for text in inputs],
                _blank_as_empty(rationales),
                max_rationale_length,
                [
                    f"split {split!r}, row {index}, rationale task (explain_prefix + input)"
                    for index in indices
                ],
            )
            out.update(
                expl_input_ids=expl_ids, expl_attention_mask=expl_mask, rationale_labels=rationale_labels
            )
            flags.update(
                truncated_explain_inputs=truncated_explain,
                truncated_rationales=truncated_rationales,
                missing_rationales=[not r.strip() for r in rationales],
            )
        for name in _FLAGS:
            out[_FLAG.format(name)] = flags.get(name, [False] * len(inputs))
        return out

    return encode


def _blank_as_empty(targets: list[str]) -> list[str]:
    """Targets with the blank ones (counted as empty) made ``""``, so that each is tokenised as the empty
    target, end-of-sequence only, not as space tokens (which a byte-level tokenizer such as BART's keeps)."""
    return [target if target.strip() else "" for target in targets]


class EmptyRationaleError(ValueError):
    """:func:`prepare_dss_features`' refusal, with ``empty_rationale="error"``, of examples whose rationale is
    null, empty or blank. A ``ValueError``, as before it had a class.

    Attributes:
        split: the split holding them.
        count: how many examples of the split have no rationale.
        total: how many examples the split has.
        first_rows: the first (at most five) of their rows, counted from 0.

    Examples:
        >>> from datasets import Dataset, DatasetDict
        >>> from hf_cotmi.tiny import build_word_tokenizer
        >>> data = Dataset.from_dict({"input": ["a ?", "b ?"], "label": ["1", "2"], "rationale": ["c .", " "]})
        >>> tok = build_word_tokenizer(["a b c"])
        >>> try:
        ...     prepare_dss_features(DatasetDict(train=data), tok, empty_rationale="error")
        ... except EmptyRationaleError as error:
        ...     print(error.split, error.count, error.total, error.first_rows)
        ...     print(error.finding)
        train 1 2 [1]
        split 'train': 1 of 2 examples have no rationale (first rows: [1])
    """

    def __init__(self, split: str, count: int, total: int, first_rows: Sequence[int]) -> None:
        self.split, self.count, self.total, self.first_rows = split, count, total, list(first_rows)
        super().__init__(
            f"{self.finding}; keep them with empty_rationale='keep' (command line: --empty-rationale keep), "
            "drop them with 'drop' (--empty-rationale drop), or build predict-only features with "
            "with_rationale=False"
        )

    @property
    def finding(self) -> str:
        """What was found, without the ways on (the message's first part, which the CLI words in its flags).

        Examples:
            >>> EmptyRationaleError("train", 2, 9, [0, 4]).finding
            "split 'train': 2 of 9 examples have no rationale (first rows: [0, 4])"
        """
        return (
            f"split {self.split!r}: {self.count} of {self.total} examples have no rationale "
            f"(first rows: {self.first_rows})"
        )

    def __reduce__(self) -> tuple[type[EmptyRationaleError], tuple[str, int, int, list[int]], dict[str, Any]]:
        # pickled (between processes) and copied with its arguments, not the message its __init__ does not
        # take, and its attributes (those a subclass adds, add_note()'s notes)
        return type(self), (self.split, self.count, self.total, self.first_rows), self.__dict__


def _output_features(dataset: Dataset, with_rationale: bool) -> Any:
    from datasets import List, Value

    features = dataset.features.copy()
    ids, mask = List(Value("int32")), List(Value("int8"))
    features.update({"input_ids": ids, "attention_mask": mask, "labels": ids})
    if with_rationale:
        features.update({"expl_input_ids": ids, "expl_attention_mask": mask, "rationale_labels": ids})
    features.update({_FLAG.format(name): Value("bool") for name in _FLAGS})
    return features


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _prepare_split(
    dataset: Dataset,
    tokenizer: Any,
    split: str,
    *,
    with_rationale: bool,
    empty_rationale: str,
    nli_separator: str | None,
    batch_size: int,
    num_proc: int | None,
    lengths: dict[str, int],
    prefixes: dict[str, str],
    layout: str = "seq2seq",
    chat_template: bool = False,
) -> tuple[Dataset, FeaturesSplitReport]:
    columns = dataset.column_names
    required = (["premise", "hypothesis"] if is_nli_layout(columns) else ["input"]) + ["label"]
    if with_rationale:
        required.append("rationale")
    missing = [c for c in required if c not in columns]
    if missing:
        hint = "; pass with_rationale=False for predict-only features" if missing == ["rationale"] else ""
        raise ValueError(f"split {split!r} has no column {missing[0]!r}; it has {columns}{hint}")
    separator = _separator_for(columns, tokenizer, nli_separator)

    dropped = 0
    keep: list[int] | None = None
    if with_rationale and empty_rationale != "keep":
        blank = [i for i, r in enumerate(dataset["rationale"]) if _is_blank(r)]
        if blank and empty_rationale == "error":
            raise EmptyRationaleError(split, len(blank), dataset.num_rows, blank[:5])
        if blank:
            keep = sorted(set(range(dataset.num_rows)) - set(blank))
            dataset = dataset.select(keep)
            dropped = len(blank)

    encode = _make_encoder(
        tokenizer,
        split=split,
        separator=separator,
        with_rationale=with_rationale,
        max_input_length=lengths["input"],
        max_label_length=lengths["label"],
        max_rationale_length=lengths["rationale"],
        predict_prefix=prefixes["predict"],
        explain_prefix=prefixes["explain"],
        layout=layout,
        chat_template=chat_template,
        row_numbers=keep,
        max_sequence_length=lengths.get("context"),
    )
    output_features = _output_features(dataset, with_rationale)
    if dataset.num_rows == 0:
        # map() does not run on an empty split, so it would keep the input schema: build the output one.
        from datasets import Dataset

        encoded = Dataset.from_dict({name: [] for name in output_features}, features=output_features)
    else:
        encoded = dataset.map(
            encode,
            batched=True,
            with_indices=True,
            batch_size=batch_size,
            num_proc=num_proc,
            features=output_features,
            desc=f"Tokenising {split}",
        )
    flag_columns = [_FLAG.format(name) for name in _FLAGS]
    counts = {name: sum(1 for flag in encoded[_FLAG.format(name)] if flag) for name in _FLAGS}
    encoded = encoded.remove_columns(flag_columns)
    report = FeaturesSplitReport(
        examples=encoded.num_rows,
        truncated_inputs=counts["truncated_inputs"],
        truncated_labels=counts["truncated_labels"],
        truncated_rationales=counts["truncated_rationales"],
        truncated_explain_inputs=counts["truncated_explain_inputs"],
        missing_rationales=counts["missing_rationales"],
        dropped_rationales=dropped,
        empty_labels=counts["empty_labels"],
        empty_inputs=counts["empty_inputs"],
        with_rationale=with_rationale,
    )
    _warn(split, report, lengths)
    return encoded, report


def _warn(split: str, report: FeaturesSplitReport, lengths: dict[str, int]) -> None:
    n = report.examples
    input_limit = f"max_input_length={lengths['input']} tokens"
    if "context" in lengths:  # a decoder-only student's prompt is cut further where the target needs room
        input_limit += f" or fewer, to fit the target in the student's context of {lengths['context']} tokens"
    for count, what, limit in (
        (report.truncated_inputs, "predict inputs", input_limit),
        (report.truncated_explain_inputs, "explain inputs", input_limit),
        (report.truncated_labels, "labels", f"max_label_length={lengths['label']} tokens"),
        (report.truncated_rationales, "rationales", f"max_rationale_length={lengths['rationale']} tokens"),
    ):
        if count:
            logger.warning("%s: %d of %d %s were truncated to %s", split, count, n, what, limit)
    if report.missing_rationales:
        logger.warning(
            "%s: %d of %d examples have an empty rationale; their rationale target is only the "
            "end-of-sequence token (as in DSS); pass empty_rationale='drop' to drop them",
            split,
            report.missing_rationales,
            n,
        )
    if report.dropped_rationales:
        logger.warning(
            "%s: dropped %d examples without a rationale (empty_rationale='drop')",
            split,
            report.dropped_rationales,
        )
    if report.empty_labels:
        logger.warning("%s: %d of %d examples have an empty label", split, report.empty_labels, n)
    if report.empty_inputs:
        logger.warning(
            "%s: %d of %d examples have an empty input (the student sees only the task prefix)",
            split,
            report.empty_inputs,
            n,
        )


@overload
def prepare_dss_features(
    dataset: DatasetDict,
    tokenizer: Any,
    *,
    max_input_length: int = ...,
    max_label_length: int = ...,
    max_rationale_length: int = ...,
    predict_prefix: str = ...,
    explain_prefix: str = ...,
    with_rationale: bool = ...,
    empty_rationale: str = ...,
    nli_separator: str | None = ...,
    batch_size: int = ...,
    num_proc: int | None = ...,
    model: Any = ...,
    student_type: str | None = ...,
    chat_template: bool = ...,
    return_report: Literal[False] = ...,
) -> DatasetDict: ...


@overload
def prepare_dss_features(
    dataset: Dataset,
    tokenizer: Any,
    *,
    max_input_length: int = ...,
    max_label_length: int = ...,
    max_rationale_length: int = ...,
    predict_prefix: str = ...,
    explain_prefix: str = ...,
    with_rationale: bool = ...,
    empty_rationale: str = ...,
    nli_separator: str | None = ...,
    batch_size: int = ...,
    num_proc: int | None = ...,
    model: Any = ...,
    student_type: str | None = ...,
    chat_template: bool = ...,
    return_report: Literal[False] = ...,
) -> Dataset: ...


@overload
def prepare_dss_features(
    dataset: Dataset | DatasetDict,
    tokenizer: Any,
    *,
    max_input_length: int = ...,
    max_label_length: int = ...,
    max_rationale_length: int = ...,
    predict_prefix: str = ...,
    explain_prefix: str = ...,
    with_rationale: bool = ...,
    empty_rationale: str = ...,
    nli_separator: str | None = ...,
    batch_size: int = ...,
    num_proc: int | None = ...,
    model: Any = ...,
    student_type: str | None = ...,
    chat_template: bool = ...,
    return_report: Literal[True],
) -> tuple[Dataset | DatasetDict, FeaturesReport]: ...


def prepare_dss_features(
    dataset: Dataset | DatasetDict,
    tokenizer: Any,
    *,
    max_input_length: int = 1024,
    max_label_length: int = 256,
    max_rationale_length: int = 256,
    predict_prefix: str = PREDICT_PREFIX,
    explain_prefix: str = EXPLAIN_PREFIX,
    with_rationale: bool = True,
    empty_rationale: str = "keep",
    nli_separator: str | None = None,
    batch_size: int = 1000,
    num_proc: int | None = None,
    model: Any = None,
    student_type: str | None = None,
    chat_template: bool = False,
    return_report: bool = False,
) -> Dataset | DatasetDict | tuple[Dataset | DatasetDict, FeaturesReport]:
    """Tokenise ``input``, ``label`` and ``rationale`` into the columns of :class:`hf_cotmi.DSSDataCollator`.

    Adds ``input_ids`` and ``attention_mask`` (``predict_prefix + input``) and ``labels`` (the label,
    tokenised with ``tokenizer(text_target=...)``); with rationales also ``expl_input_ids`` and
    ``expl_attention_mask`` (``explain_prefix + input``) and ``rationale_labels`` (the rationale as a
    target). Every split, evaluation and test included, gets the rationale columns unless
    ``with_rationale=False``, because the evaluation loss covers both tasks. Existing columns (``input``,
    ``label``, ``rationale``, ``choices``, ...) are kept.

    The layout follows the student (:func:`hf_cotmi.student_types.resolve_student_type`: ``model``'s
    ``config.is_encoder_decoder``, or ``student_type``; seq2seq when neither is given). For a decoder-only
    (``"causal"``) student each task is one sequence ``[BOS] <prefix><input> <target> [EOS]``:
    ``input_ids``/``expl_input_ids`` hold prompt and target, and ``labels``/``rationale_labels`` have the
    same length with ``-100`` on every prompt token, so only the target and EOS carry loss. With
    ``chat_template=True`` the prompt is the user turn and the target the assistant turn of the
    tokenizer's chat template (see :mod:`hf_cotmi.data.causal`). Truncation cuts the input and keeps the
    target (within ``max_label_length``/``max_rationale_length``); ``max_input_length`` bounds the prompt.

    NLI: when a split has ``premise`` and ``hypothesis`` columns (as e-SNLI and ANLI from
    :func:`hf_cotmi.load_dss_dataset` do), the model input is rebuilt as
    ``premise + nli_separator + hypothesis`` and the ``input`` column is not used; the default separator is
    the tokenizer's EOS token, else its SEP token (T5: ``</s>``, as in DSS).

    Sequences longer than the limits are truncated (the tokenizer keeps its closing special token); how many
    inputs, labels and rationales were cut is counted per split, logged as a warning on the ``hf_cotmi``
    logger, and returned with ``return_report=True``.

    Args:
        dataset: a ``DatasetDict`` (each split is processed) or a single ``Dataset``.
        tokenizer: the student's tokenizer.
        max_input_length: token limit of both prefixed inputs.
        max_label_length: token limit of labels.
        max_rationale_length: token limit of rationales.
        predict_prefix: text put before the input for the label task.
        explain_prefix: text put before the input for the rationale task.
        with_rationale: False produces the label-task columns only (no ``rationale`` column needed).
        empty_rationale: what to do with examples whose rationale is empty or missing: ``"keep"`` (as in
            DSS: the target is only the end-of-sequence token; counted as ``missing_rationales``),
            ``"drop"`` (removed; counted as ``dropped_rationales``) or ``"error"``.
        nli_separator: text between premise and hypothesis; None uses :func:`default_nli_separator`.
        batch_size: examples per ``Dataset.map`` batch.
        num_proc: processes for ``Dataset.map``.
        model: the student; its ``config.is_encoder_decoder`` picks the layout.
        student_type: ``"seq2seq"`` or ``"causal"`` where no model is at hand (must agree with ``model``).
        chat_template: causal students only: build prompt and target with the tokenizer's chat template.
        return_report: also return a :class:`~hf_cotmi.data.report.FeaturesReport`.

    Returns:
        The same kind of object as ``dataset`` with the feature columns added (token ids as ``int32``,
        masks as ``int8``), or ``(result, FeaturesReport)`` when ``return_report`` is True. A single
        ``Dataset`` is reported under its ``split`` name, or ``"dataset"``.

    Raises:
        EmptyRationaleError: (a ``ValueError``) examples without a rationale, with ``empty_rationale="error"``.
        ValueError: a needed column is missing (the message lists the columns there are), a text value is
            not a string, or an unknown ``empty_rationale``.

    Examples:
        >>> from datasets import Dataset, DatasetDict
        >>> from hf_cotmi.tiny import build_word_tokenizer
        >>> data = DatasetDict({"train": Dataset.from_dict(
        ...     {"input": ["tom has 3 apples and 4 pears"], "label": ["7"], "rationale": ["3 + 4 = 7 ."]})})
        >>> tok = build_word_tokenizer(["tom has 3 apples and 4 pears . 3 + 4 = 7"])
        >>> features, report = prepare_dss_features(data, tok, max_input_length=6, return_report=True)
        >>> tok.decode(features["train"][0]["input_ids"])
        'predict : tom has 3 </s>'
        >>> report.splits["train"].truncated_inputs
        1
    """
    from datasets import Dataset, DatasetDict

    layout = resolve_student_type(model, student_type)
    if chat_template:
        check_chat_template_student(layout)
    if empty_rationale not in _EMPTY_RATIONALE_POLICIES:
        raise ValueError(
            f"empty_rationale={empty_rationale!r} is not supported; "
            f"expected one of {_EMPTY_RATIONALE_POLICIES}"
        )
    for name, value in (
        ("max_input_length", max_input_length),
        ("max_label_length", max_label_length),
        ("max_rationale_length", max_rationale_length),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if isinstance(dataset, DatasetDict):
        splits = dict(dataset)
    elif isinstance(dataset, Dataset):
        splits = {str(dataset.split) if dataset.split is not None else "dataset": dataset}
    else:
        raise TypeError(f"dataset must be a datasets.Dataset or DatasetDict, got {type(dataset).__name__}")

    lengths = {"input": max_input_length, "label": max_label_length, "rationale": max_rationale_length}
    if layout == "causal" and model is not None:
        from ..students import context_length

        context = context_length(model, tokenizer)
        if context is not None:  # prompt and target share a decoder-only student's context: prompts fit it
            lengths["context"] = context
    report = FeaturesReport(
        max_input_length=max_input_length,
        max_label_length=max_label_length,
        max_rationale_length=max_rationale_length,
    )
    results = {}
    for split, data in splits.items():
        results[split], report.splits[split] = _prepare_split(
            data,
            tokenizer,
            split,
            with_rationale=with_rationale,
            empty_rationale=empty_rationale,
            nli_separator=nli_separator,
            batch_size=batch_size,
            num_proc=num_proc,
            lengths=lengths,
            prefixes={"predict": predict_prefix, "explain": explain_prefix},
            layout=layout,
            chat_template=chat_template,
        )
    result: Dataset | DatasetDict = (
        DatasetDict(results) if isinstance(dataset, DatasetDict) else next(iter(results.values()))
    )
    return (result, report) if return_report else result
