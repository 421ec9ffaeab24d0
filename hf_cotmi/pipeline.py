"""The recipes behind ``hf-cotmi train``, ``evaluate``, ``predict`` and ``demo``, as a Python API.

Each step is a function of its own, usable alone: :func:`load_task_data` (the splits and the task's
:class:`~hf_cotmi.tasks.TaskSpec`), :func:`~hf_cotmi.students.load_student`, :func:`build_features`,
:func:`build_trainer`, :func:`evaluate_split`, :func:`predict_texts`; :func:`run_training`,
:func:`run_evaluation` and :func:`run_prediction` chain them. :mod:`hf_cotmi.cli` only parses arguments
into :mod:`hf_cotmi.run_arguments` and prints. Everything is offline unless a model name or
``push_to_hub`` asks for the Hub.

Examples:
    >>> from hf_cotmi.pipeline import DataArguments, load_task_data
    >>> data = load_task_data(DataArguments(dataset="synthetic", synthetic_train_size=8, synthetic_test_size=4))
    >>> data.splits["train"].num_rows, data.task, data.spec.baseline
    (8, 'text', 'majority')
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shlex
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from .data.custom import MissingColumnError
from .data.features import EmptyRationaleError
from .data.textfiles import InputRecord, write_text_atomically
from .generation import generate_texts, predict_texts
from .prefixes import EXPLAIN_PREFIX, PREDICT_PREFIX
from .run_arguments import (
    COLUMN_FIELDS,
    SPLIT_NAMES,
    CLIUsageError,
    DataArguments,
    EvaluationArguments,
    ModelArguments,
    plural,
)
from .student_types import resolve_student_type
from .students import (
    GenerationLengthError,
    HubFileUnreachable,
    Student,
    _model_source,
    check_model_folder,
    generation_prompt_limit,
    input_length_limit,
    load_student,
    model_file,
    peft_config,
    read_model_json,
)
from .tasks import METRICS, SYNTHETIC_TASK, TASKS, TaskSpec, get_task

logger = logging.getLogger("hf_cotmi")

__all__ = [
    "SIDECAR_NAME",
    "RELIABILITY_DIAGRAM",
    "CLIUsageError",
    "ModelArguments",
    "DataArguments",
    "EvaluationArguments",
    "LoadedData",
    "Student",
    "load_task_data",
    "task_spec",
    "TEACHER_LABEL_COLUMNS",
    "with_teacher_labels",
    "load_student",
    "build_features",
    "build_trainer",
    "evaluate_split",
    "generate_texts",
    "predict_texts",
    "run_training",
    "data_report_lines",
    "default_diagram_path",
    "run_evaluation",
    "run_prediction",
    "check_confidence_options",
    "label_new_tokens",
    "read_sidecar",
    "recorded_input_column",
    "json_safe",
    "write_json",
    "quiet_libraries",
]

SIDECAR_NAME = "hf_cotmi_config.json"
"""File written next to a trained student: prefixes, task and data source, read back by evaluate/predict."""

RELIABILITY_DIAGRAM = "reliability_diagram.png"
"""The reliability diagram a training run saves into its output folder."""


@contextlib.contextmanager
def quiet_libraries(enabled: bool = True) -> Iterator[None]:
    """Silence transformers/datasets warnings and progress bars (and ``hf_cotmi`` warnings) for a while.

    Everything is restored on exit, so calling code and other tests are not affected.

    Examples:
        >>> with quiet_libraries():
        ...     pass
    """
    if not enabled:
        yield
        return
    import transformers

    hf_logger = logging.getLogger("hf_cotmi")
    saved = transformers.logging.get_verbosity(), hf_logger.level
    transformers.logging.set_verbosity_error()
    hf_logger.setLevel(logging.ERROR)
    try:
        with _library_progress_bars(shown=False):
            yield
    finally:
        verbosity, level = saved
        transformers.logging.set_verbosity(verbosity)
        hf_logger.setLevel(level)


@contextlib.contextmanager
def _library_progress_bars(shown: bool) -> Iterator[None]:
    """Hide, unless ``shown``, the progress bars transformers and datasets draw for a while: loading and
    saving weights ("Loading weights", "Writing model shards"), the tokenisation's ``Dataset.map``
    ("Tokenising train"), downloads (huggingface_hub's). Their settings are restored on exit, each library's
    as it was.

    :func:`run_training` hides them with ``disable_tqdm``, as ``--disable-tqdm`` asks.

    Examples:
        >>> import datasets
        >>> with _library_progress_bars(shown=False):
        ...     datasets.is_progress_bar_enabled()
        False
    """
    if shown:
        yield
        return
    import datasets
    import huggingface_hub.utils
    import transformers

    # transformers' switch turns huggingface_hub's bars off and on with its own: each is saved and restored
    saved = (
        transformers.utils.logging.is_progress_bar_enabled(),
        datasets.is_progress_bar_enabled(),
        not huggingface_hub.utils.are_progress_bars_disabled(),
    )
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        transformers_bars, datasets_bars, hub_bars = saved
        if transformers_bars:
            transformers.utils.logging.enable_progress_bar()
        if datasets_bars:
            datasets.enable_progress_bars()
        # last, where it differs: enabling transformers' bars above enabled huggingface_hub's too
        hub = huggingface_hub.utils
        if hub.are_progress_bars_disabled() == hub_bars:
            hub.enable_progress_bars() if hub_bars else hub.disable_progress_bars()


# ------------------------------------------------------------------------------------------------- data


@dataclass
class LoadedData:
    """Text splits ready to tokenise, with what the model card and evaluate/predict need to know.

    Attributes:
        splits: ``"train"``, ``"eval"``, ``"test"`` -> ``datasets.Dataset`` with ``input``, ``label``,
            ``rationale`` (a split is absent when the source has none).
        name: dataset name for the model card (``None`` for your own files).
        task: the metric, ``"text"`` or ``"equation"`` (``spec.metric``).
        source: how to load the same data again (written to the sidecar file).
        spec: the task's :class:`~hf_cotmi.tasks.TaskSpec` (default: a custom spec with ``task`` as metric).
        report: what the loader counted (:class:`~hf_cotmi.data.report.DSSLoadReport` for a DSS dataset,
            :class:`~hf_cotmi.data.report.CoTLoadReport` for your files; None for the synthetic task).
        teacher_label_column: with ``label_source="llm"`` on your files, the column of the training file
            whose teacher labels replaced the training split's ``label`` (see :func:`with_teacher_labels`).

    Examples:
        >>> LoadedData(splits={}, name=None, task="text", source={}).spec.name
        'custom'
    """

    splits: dict[str, Any]
    name: str | None
    task: str
    source: dict[str, Any]
    spec: TaskSpec | None = None
    report: Any = None
    teacher_label_column: str | None = None

    def __post_init__(self) -> None:
        if self.spec is None:
            self.spec = TaskSpec.custom(metric=self.task)


def task_spec(args: DataArguments) -> TaskSpec:
    """The :class:`~hf_cotmi.tasks.TaskSpec` of the data ``args`` names; ``--task`` overrides its metric.

    Your own files get :meth:`TaskSpec.custom <hf_cotmi.tasks.TaskSpec.custom>` (``--label-candidates``
    then picks the confidence's candidates, see :meth:`~hf_cotmi.tasks.TaskSpec.resolve_confidence`).

    Examples:
        >>> task_spec(DataArguments(dataset="cqa")).baseline
        'chance'
        >>> task_spec(DataArguments(train_file="mine.jsonl", task="equation")).metric
        'equation'
    """
    if args.dataset:
        if args.dataset not in TASKS:
            raise CLIUsageError(
                f"unknown dataset {args.dataset!r}; expected one of {', '.join(TASKS)}, "
                "or your own data with --train-file/--test-file"
            )
        spec = get_task(args.dataset)
        return replace(spec, metric=args.task) if args.task else spec
    return TaskSpec.custom(metric=args.task or "text")


def _limit(dataset: Any, limit: int | None, option: str, split: str) -> Any:
    """The first ``limit`` rows of ``dataset`` (the split ``split``), all of them (with a warning) when it has
    fewer; ``None`` keeps all."""
    if limit is None:
        return dataset
    if limit < 1:
        raise CLIUsageError(f"{option} must be at least 1; got {limit}")
    if limit > dataset.num_rows:
        logger.warning(
            "%s %d is more than the %d examples of split %r: all %d are used",
            option,
            limit,
            dataset.num_rows,
            split,
            dataset.num_rows,
        )
        return dataset
    return dataset.select(range(limit))


_FILE_OPTIONS = {"train": "--train-file", "valid": "--validation-file", "test": "--test-file"}
_FILE_FIELDS = {"train": "train_file", "valid": "validation_file", "test": "test_file"}


class _MissingColumnError(CLIUsageError, MissingColumnError):
    """A column option (``--input-column``, ...) that names no column of a file of your own: the loader's
    :class:`~hf_cotmi.data.custom.MissingColumnError`, with its attributes and message, as a usage error too
    (the CLI prints it as one line); ``except MissingColumnError`` catches it as it catches the loader's."""


def _own_files(args: DataArguments, files: dict[str, str]) -> tuple[Any, dict[str, Any]]:
    from .data.custom import load_cot_dataset

    for split, path in files.items():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{_FILE_OPTIONS[split]} {path!r} does not exist or is not a file")
    columns = {name: getattr(args, name) for name in COLUMN_FIELDS}
    try:
        data, report = load_cot_dataset(files, return_report=True, **columns)
    except MissingColumnError as error:  # a column option to fix, not a data error
        raise _MissingColumnError(error.where, error.column, error.target, error.columns) from error
    source: dict[str, Any] = {_FILE_FIELDS[split]: os.path.abspath(path) for split, path in files.items()}
    return data, {**source, **columns}, report


def _synthetic(args: DataArguments) -> tuple[Any, dict[str, Any]]:
    from .data.synthetic import make_arithmetic_cot_dataset

    data = make_arithmetic_cot_dataset(
        args.synthetic_train_size,
        args.synthetic_test_size,
        n_valid=args.synthetic_valid_size,
        seed=args.synthetic_seed,
        min_steps=args.synthetic_steps,
        max_steps=args.synthetic_steps,
        max_number=args.synthetic_max_number,
    )
    options = {k: v for k, v in asdict(args).items() if k.startswith("synthetic_")}
    return data, {"dataset": SYNTHETIC_TASK, **options}, None


def _dss(args: DataArguments) -> tuple[Any, dict[str, Any]]:
    from .data.dss import DSS_SPLITS, load_dss_dataset

    if not args.data_dir:
        raise CLIUsageError(
            f"--dataset {args.dataset} needs --data-dir: the Distilling Step-by-Step release folder "
            f"holding {args.dataset}/"
        )
    data, report = load_dss_dataset(
        args.dataset,  # type: ignore[arg-type]
        args.data_dir,
        label_source=args.label_source,  # type: ignore[arg-type]
        llm_label_splits=(args.train_split,) if args.train_split in DSS_SPLITS else ("train",),
        return_report=True,
    )
    return data, {"dataset": args.dataset, "data_dir": os.path.abspath(args.data_dir)}, report


TEACHER_LABEL_COLUMNS: tuple[str, ...] = ("teacher_label", "llm_label")
"""Where ``--label-source llm`` finds the teacher's labels in your own training file, the first column
present: ``hf-cotmi generate-rationales`` writes ``teacher_label``, the DSS loaders ``llm_label``."""


def with_teacher_labels(dataset: Any, where: str) -> tuple[Any, str]:
    """``dataset`` with its ``label`` replaced by the teacher's labels (``label_source="llm"`` on your files),
    and the name of the column they came from (the first of :data:`TEACHER_LABEL_COLUMNS` it has).

    Args:
        dataset: a training split as :func:`hf_cotmi.load_cot_dataset` returns it.
        where: the file it came from, for messages.

    Raises:
        CLIUsageError: no teacher label column (the message lists the columns there are), or a record
            whose teacher label is null (named by its row).

    Examples:
        >>> from datasets import Dataset
        >>> rows = Dataset.from_dict({"input": ["q ?"], "label": ["gold"], "rationale": ["r ."],
        ...                           "teacher_label": ["teacher's"]})
        >>> relabelled, column = with_teacher_labels(rows, "train.jsonl")
        >>> relabelled["label"][0], column
        ("teacher's", 'teacher_label')
    """
    from .data.custom import as_text_column

    column = next((name for name in TEACHER_LABEL_COLUMNS if name in dataset.column_names), None)
    if column is None:
        expected = " or ".join(repr(name) for name in TEACHER_LABEL_COLUMNS)
        raise CLIUsageError(
            f"--label-source llm trains on the teacher's labels, and {where} has no column holding them "
            f"({expected}; hf-cotmi generate-rationales writes teacher_label); the columns are "
            f"{dataset.column_names}. Train on its label column with --label-source gt (the default)"
        )
    dataset = as_text_column(dataset, column, where)
    missing = next((row for row, label in enumerate(dataset[column]) if label is None), None)
    if missing is not None:
        raise CLIUsageError(
            f"{where}, row {missing}: {column!r} is missing (null); --label-source llm needs the teacher's "
            "label of every training record (rows count from 0)"
        )
    relabelled = dataset.map(
        lambda labels: {"label": labels}, input_columns=column, batched=True, desc="teacher labels"
    )
    return relabelled, column


def _check_split_names(args: DataArguments) -> None:
    """Refuse a ``--train-split`` / ``--eval-split`` / ``--test-split`` that is no split name at all (an empty
    one, as ``evaluate`` passes, means none): such a split used to be left out without a word."""
    for option in ("train_split", "eval_split", "test_split"):
        name = getattr(args, option)
        if name and name not in SPLIT_NAMES:
            raise CLIUsageError(
                f"--{option.replace('_', '-')} {name!r} is not a split name; expected one of "
                f"{', '.join(repr(n) for n in SPLIT_NAMES)}"
            )


def _pick_splits(data: Any, args: DataArguments, need_train: bool) -> dict[str, Any]:
    _check_split_names(args)
    splits: dict[str, Any] = {}
    if args.train_split in data:
        train = data[args.train_split]
        splits["train"] = _limit(train, args.max_train_samples, "--max-train-samples", args.train_split)
    elif need_train:
        raise CLIUsageError(
            f"no training split {args.train_split!r}: the data has {list(data)}; pick one with --train-split"
        )
    if args.eval_split in data and args.eval_split != args.train_split:
        evaluated = data[args.eval_split]
        splits["eval"] = _limit(evaluated, args.max_eval_samples, "--max-eval-samples", args.eval_split)
    if args.test_split in data and args.test_split != args.train_split:
        tested = data[args.test_split]
        splits["test"] = _limit(tested, args.max_test_samples, "--max-test-samples", args.test_split)
    return splits


def load_task_data(args: DataArguments, *, need_train: bool = True) -> LoadedData:
    """Load the data ``args`` names, pick the train, eval and test splits, and find the task's spec.

    Args:
        args: the data arguments.
        need_train: raise when there is no training split (False for ``evaluate``).

    Returns:
        A :class:`LoadedData`.

    Raises:
        CLIUsageError: no data named, both a dataset and files, an unknown dataset, ``--data-dir`` missing,
            or a split that is not there; with ``label_source="llm"``, a training file of your own without
            the teacher's labels (:func:`with_teacher_labels`). A column option that names no column of a
            file of your own is both a ``CLIUsageError`` and a :class:`~hf_cotmi.data.custom.MissingColumnError`.
        FileNotFoundError: a file or folder that does not exist.

    Examples:
        >>> data = load_task_data(DataArguments(dataset="synthetic", synthetic_train_size=4, synthetic_test_size=2))
        >>> sorted(data.splits)
        ['test', 'train']
    """
    files = {split: getattr(args, name) for split, name in _FILE_FIELDS.items()}
    files = {split: path for split, path in files.items() if path}
    if files and args.dataset:
        raise CLIUsageError(
            f"give either --dataset ({args.dataset}) or your own files (--train-file, --validation-file, "
            "--test-file), not both"
        )
    if not files and not args.dataset:
        raise CLIUsageError(
            f"no data given: use --dataset NAME ({SYNTHETIC_TASK}, or "
            f"{'/'.join(t for t in TASKS if t != SYNTHETIC_TASK)} with --data-dir DIR) or --train-file/--test-file"
        )
    spec = task_spec(args)
    if files:
        (data, source, report), name = _own_files(args, files), None
    elif args.dataset == SYNTHETIC_TASK:
        (data, source, report), name = _synthetic(args), "synthetic-arithmetic-cot"
    else:
        (data, source, report), name = _dss(args), args.dataset
    splits = _pick_splits(data, args, need_train)
    teacher_label_column = None
    if files and args.label_source == "llm" and "train" in splits:  # a DSS dataset's loader did it
        where = files.get(args.train_split, args.train_split)
        splits["train"], teacher_label_column = with_teacher_labels(splits["train"], where)
    return LoadedData(splits, name, spec.metric, source, spec, report, teacher_label_column)


def _candidates_problem(value: Any) -> str | None:
    """What is wrong with one row's candidates (``"text"``, ``"an empty list"``, ...), or None."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "an object"
    if not isinstance(value, (list, tuple)):
        return type(value).__name__
    if not value:
        return "an empty list"
    for item in value:
        if item is None:
            return "a list holding null"
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            return f"a list holding {type(item).__name__}"
    return None


def _check_candidate_lists(splits: Mapping[str, Any], column: str, places: Mapping[str, str]) -> None:
    """Refuse, before any training or scoring, a held-out row whose ``column`` (``--label-candidates COLUMN``)
    is not a non-empty list of candidate labels (text, or whole numbers): such a column used to fail only
    after training, or to be scored as the label ``"None"`` or an object's keys.

    ``splits``: split name -> ``datasets.Dataset`` (``"train"`` and splits without ``column`` are skipped);
    ``places``: split name -> where it came from, for messages (``"--test-file test.jsonl"``).

    Examples:
        >>> from datasets import Dataset
        >>> _check_candidate_lists({"test": Dataset.from_dict({"choices": [["sea", "tree"]]})}, "choices", {})
        >>> try:
        ...     _check_candidate_lists({"test": Dataset.from_dict({"choices": ["sea,tree"]})}, "choices", {})
        ... except CLIUsageError as error:
        ...     print(str(error).split(";")[0])
        split 'test', row 0 (counting from 0): 'choices' is 'sea,tree' (text)
    """
    for split, dataset in splits.items():
        if split == "train" or column not in dataset.column_names:
            continue
        for row, value in enumerate(dataset.with_format(None)[column]):
            problem = _candidates_problem(value)
            if problem is not None:
                shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
                place = places.get(split, f"split {split!r}")
                raise CLIUsageError(
                    f"{place}, row {row} (counting from 0): {column!r} is {shown} ({problem}); expected a "
                    f"non-empty list of candidate labels (text or whole numbers) for --label-candidates {column}"
                )


def _split_place(args: DataArguments, chosen: str) -> str:
    """Where the split ``chosen`` (``"valid"``, ``"test"``, ...) comes from: ``"--test-file PATH"``, else
    ``"split 'test'"``."""
    split = "valid" if chosen == "validation" else chosen
    field_name = _FILE_FIELDS.get(split)
    path = getattr(args, field_name) if field_name else None
    return f"{_FILE_OPTIONS[split]} {path}" if path else f"split {chosen!r}"


def build_features(
    data: LoadedData,
    tokenizer: Any,
    data_args: DataArguments,
    *,
    predict_prefix: str = PREDICT_PREFIX,
    explain_prefix: str = EXPLAIN_PREFIX,
    with_rationale: bool | Collection[str] = True,
    return_report: bool = False,
    model: Any = None,
) -> Any:
    """Tokenise every split into the two prefixed DSS tasks (:func:`hf_cotmi.prepare_dss_features`).

    The layout (seq2seq, or one sequence per task for a decoder-only student) follows ``model``.
    ``data_args.empty_rationale`` (``keep``, ``drop`` or ``error``) decides what happens to training
    examples without a rationale; held-out splits keep theirs (counted), so they are evaluated whole.

    Args:
        data: the loaded splits.
        tokenizer: the student's tokenizer.
        data_args: the length limits, the empty-rationale policy and ``chat_template``.
        predict_prefix: prefix of the label task.
        explain_prefix: prefix of the rationale task.
        with_rationale: keep the rationale task in every split (True), in none (False), or in the splits
            named (e.g. ``{"train"}``: held-out splits then carry the label task only).
        return_report: also return the :class:`~hf_cotmi.data.report.FeaturesReport` of every split.
        model: the student (its ``config.is_encoder_decoder`` picks the layout); None: seq2seq.

    Returns:
        Split name -> tokenised ``Dataset``; ``(that dict, FeaturesReport)`` with ``return_report``.

    Raises:
        EmptyRationaleError: (:class:`~hf_cotmi.data.features.EmptyRationaleError`) training examples without
            a rationale, with ``empty_rationale="error"``; its message names the ``--empty-rationale`` ways on.

    Examples:
        >>> # features = build_features(data, tokenizer, DataArguments(dataset="synthetic"), with_rationale={"train"})
        >>> # features["train"].column_names  ->  [..., 'expl_input_ids', ..., 'rationale_labels']
    """
    from datasets import DatasetDict

    from .data.features import prepare_dss_features
    from .data.report import FeaturesReport

    def keeps_rationale(split: str) -> bool:
        return with_rationale if isinstance(with_rationale, bool) else split in with_rationale

    features: dict[str, Any] = {}
    report = FeaturesReport(
        max_input_length=data_args.max_input_length,
        max_label_length=data_args.max_label_length,
        max_rationale_length=data_args.max_rationale_length,
    )
    for split, dataset in data.splits.items():
        try:
            encoded, counted = prepare_dss_features(
                DatasetDict({split: dataset}),  # so that counts and errors name the split
                tokenizer,
                max_input_length=data_args.max_input_length,
                max_label_length=data_args.max_label_length,
                max_rationale_length=data_args.max_rationale_length,
                predict_prefix=predict_prefix,
                explain_prefix=explain_prefix,
                with_rationale=keeps_rationale(split),
                empty_rationale=data_args.empty_rationale if split == "train" else "keep",
                return_report=True,
                model=model,
                chat_template=data_args.chat_template,
            )
        except EmptyRationaleError as error:
            raise _EmptyRationaleOptionError(
                error.split, error.count, error.total, error.first_rows
            ) from error
        features[split], report.splits[split] = encoded[split], counted.splits[split]
    return (features, report) if return_report else features


class _EmptyRationaleOptionError(EmptyRationaleError):
    """:class:`~hf_cotmi.data.features.EmptyRationaleError`, with its attributes, worded in the options that
    decide it (:func:`_empty_rationale_message`): what :func:`build_features` raises, which
    ``except EmptyRationaleError`` catches as it catches :func:`~hf_cotmi.data.features.prepare_dss_features`'.
    """

    def __str__(self) -> str:
        return _empty_rationale_message(self)


def _empty_rationale_message(error: EmptyRationaleError) -> str:
    """The refusal of ``empty_rationale="error"`` in the options' terms: its ways on are
    ``--empty-rationale keep`` and ``drop``, not the Python-only ``with_rationale=False`` of
    :class:`~hf_cotmi.data.features.EmptyRationaleError`'s message.

    Examples:
        >>> from hf_cotmi.data.features import EmptyRationaleError
        >>> message = _empty_rationale_message(EmptyRationaleError("train", 2, 9, [0, 4]))
        >>> message.startswith("split 'train': 2 of 9 examples have no rationale (first rows: [0, 4]); keep")
        True
        >>> "with_rationale" in message, message.endswith("or drop them with --empty-rationale drop")
        (False, True)
    """
    return (
        f"{error.finding}; keep them with --empty-rationale keep (their rationale target is only the "
        "end-of-sequence token) or drop them with --empty-rationale drop"
    )


# ------------------------------------------------------------------------------------------ the sidecar


def read_sidecar(path: str) -> dict[str, Any]:
    """Read the ``hf_cotmi_config.json`` a training run wrote into ``path`` (``{}`` when there is none).

    ``path`` is a local folder (a run's output folder, a ``checkpoint-N/`` in it, LoRA adapters), or else a
    Hugging Face Hub repository id (a run pushed with ``push_to_hub``, which uploads the file too): the file
    then comes from the Hub, or the Hugging Face cache, as ``from_pretrained`` gets the model's files (see
    :func:`_sidecar_file`). Keys it does not know (a newer hf-cotmi's) are kept and ignored by its readers.

    Raises:
        CLIUsageError: the file is not valid JSON or holds something other than a JSON object (naming the
            file): a damaged sidecar must not pass for none, which would silently drop the run's settings.
            Or ``path`` is not a local folder and the Hub refuses the repository (no such repository or
            revision, private or gated): the error loading the model would give.

    Examples:
        >>> read_sidecar("/nonexistent")
        {}
    """
    file = _sidecar_file(path)
    if file is None:
        return {}
    fix = "restore it from the run (or a checkpoint-N/ of it), or delete it to use the defaults"
    if not os.path.isdir(path):
        fix = "upload the run's own copy to the repository again, or give the run's output folder instead"
    return read_model_json(
        path,
        file,
        invalid=f"it holds the settings evaluate and predict reuse: {fix}",
        expected=f"expected a JSON object of the run's settings, as training writes it: {fix}",
    )


# the Hub repositories whose sidecar could not be read, warned of once in a process
_UNREACHABLE_SIDECARS: set[str] = set()


def _sidecar_file(path: str) -> str | None:
    """Where the sidecar of the model ``path`` is on this machine, or None when it has none.

    A local folder's own, or a Hub repository's, fetched as :func:`~hf_cotmi.students.model_file` fetches a
    file of a model (a repository without the file, a model trained elsewhere, has none). When the Hub cannot
    be reached and the file is not in the cache, a ``UserWarning`` (once for each repository) names it and
    says the run's settings are replaced by the defaults (the model may still load from the cache; if it
    cannot, its error follows).
    """
    try:
        return model_file(path, SIDECAR_NAME)
    except HubFileUnreachable:
        if path not in _UNREACHABLE_SIDECARS:  # once: predict --input-file reads it twice
            import warnings

            _UNREACHABLE_SIDECARS.add(path)
            warnings.warn(
                f"could not read {SIDECAR_NAME} of the Hugging Face Hub repository {path!r} (offline or the Hub "
                "unreachable, and it is not in the cache): the training run's settings (prefixes, task, data, "
                "input column, lengths, chat template) are unknown and the defaults are used; connect to the Hub "
                "once to cache the file, or give the run's output folder as the model",
                UserWarning,
                stacklevel=3,
            )
        return None


def recorded_input_column(model_path: str) -> str:
    """The input column of the files a run was trained on (``--input-column``), as its sidecar records it;
    ``"input"`` without one. ``predict --input-file`` reads JSON Lines in that layout. ``model_path`` is a
    folder or a Hub repository id (:func:`read_sidecar`).

    Examples:
        >>> recorded_input_column("/nonexistent")
        'input'
    """
    data = read_sidecar(model_path).get("data")
    column = data.get("input_column") if isinstance(data, dict) else None
    return column if isinstance(column, str) and column else "input"


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float (nested in dicts, lists and tuples) replaced by ``None``.

    JSON has no NaN or Infinity: ``json.dump`` would write the bare words ``NaN``/``Infinity``, which
    strict JSON readers (``jq``, JavaScript, most other languages) refuse. ``results.json`` and
    ``evaluate --output-file`` hold ``null`` there instead (e.g. a baseline without a test split).

    Examples:
        >>> json_safe({"baseline": float("nan"), "metrics": {"test_accuracy": 0.5}, "rows": [float("inf")]})
        {'baseline': None, 'metrics': {'test_accuracy': 0.5}, 'rows': [None]}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json(path: str, values: dict[str, Any], **options: Any) -> str:
    """Write ``values`` to ``path`` as strict JSON, atomically; return ``path``.

    Non-finite numbers become ``null`` (see :func:`json_safe`); ``default=`` converts what ``json`` cannot
    take (numpy numbers) first, other ``options`` go to ``json.dumps`` (``sort_keys=True``). Missing parent
    folders are made. The text goes to a temporary file beside ``path`` that then replaces it, so an
    interrupted write (disk full, Ctrl-C) leaves the old file whole, or none, never a partial one.

    Examples:
        >>> import os, tempfile
        >>> path = write_json(os.path.join(tempfile.mkdtemp(), "m.json"), {"ece": float("nan"), "n": 2})
        >>> print(open(path).read().strip())
        {
          "ece": null,
          "n": 2
        }
    """
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    default = options.pop("default", None)
    if default is not None:  # convert what json cannot take (numpy numbers) first, so NaN from it is caught
        values = json.loads(json.dumps(values, default=default))
    text = json.dumps(json_safe(values), indent=2, allow_nan=False, **options)
    write_text_atomically(path, text + "\n")
    return path


def label_new_tokens(model: Any, generation_max_length: int) -> int:
    """The new tokens a generated label may take under a run's ``generation_max_length``, as training's
    evaluation generated it.

    The Trainer passes ``generation_max_length`` to ``generate`` as ``max_length``, which for an
    encoder-decoder counts the decoder's start token: one new token fewer. :class:`hf_cotmi.DSSMITrainer`
    reads it as new tokens for a decoder-only student (its prompt is not part of the label). ``evaluate``,
    ``predict`` and the examples after training use this, so they reproduce the run's own test figures.

    Examples:
        >>> from types import SimpleNamespace
        >>> seq2seq = SimpleNamespace(config=SimpleNamespace(is_encoder_decoder=True))
        >>> label_new_tokens(seq2seq, 8)
        7
    """
    if resolve_student_type(model) == "causal":
        return generation_max_length
    return max(1, generation_max_length - 1)


def _sidecar_spec(sidecar: dict[str, Any], metric: str | None = None) -> TaskSpec:
    """The task spec a saved run used: its built-in task, or a custom one from the saved candidates; the
    confidence mode (and candidates) the run measured its ECE with is the default, as it was in training."""
    name = sidecar.get("dataset")
    saved = sidecar.get("label_candidates")
    if name in TASKS:
        spec = TASKS[name]
    elif name == "synthetic-arithmetic-cot":
        spec = TASKS[SYNTHETIC_TASK]
    else:
        spec = TaskSpec.custom(
            metric=sidecar.get("task", "text"),
            label_candidates=saved if isinstance(saved, list) else None,
            candidates_column=saved if isinstance(saved, str) else None,
        )
    mode = sidecar.get("confidence")
    if mode == "candidates" and saved and isinstance(saved, (list, str)):
        fixed = tuple(str(c) for c in saved) if isinstance(saved, list) else None
        column = saved if isinstance(saved, str) else None
        spec = replace(spec, confidence=mode, label_candidates=fixed, candidates_column=column)
    elif mode in _PLAIN_CONFIDENCE_MODES:
        spec = replace(spec, confidence=mode)
    return replace(spec, metric=metric) if metric and metric != spec.metric else spec


def _metric_of_new_files(spec: TaskSpec, data_args: DataArguments, sidecar: dict[str, Any]) -> TaskSpec:
    """``spec`` of data given to evaluate anew: files of your own without ``--task`` compare answers as the
    training run did (the task it recorded, e.g. ``equation``); a ``--task`` or ``--dataset`` given decides
    by itself.

    Examples:
        >>> new = TaskSpec.custom()
        >>> _metric_of_new_files(new, DataArguments(test_file="t.jsonl"), {"task": "equation"}).metric
        'equation'
        >>> _metric_of_new_files(new, DataArguments(test_file="t.jsonl", task="text"), {"task": "equation"}).metric
        'text'
    """
    recorded = sidecar.get("task")
    if data_args.task or data_args.dataset or recorded not in METRICS or recorded == spec.metric:
        return spec
    return replace(spec, metric=recorded)


# confidence modes that need no candidates
_PLAIN_CONFIDENCE_MODES = ("sequence", "first_token")


def check_confidence_options(confidence: str | None, label_candidates: str | None) -> None:
    """Refuse ``--label-candidates`` beside ``--confidence sequence`` or ``first_token``, which would ignore it.

    Only candidates confidence scores the candidates (and reports the most likely one's accuracy, the
    choice ranking of a multiple-choice task); the generation modes score the generated label alone.

    Raises:
        CLIUsageError: naming both options and what to do instead.

    Examples:
        >>> check_confidence_options("candidates", "yes,no")
        >>> try:
        ...     check_confidence_options("sequence", "yes,no")
        ... except CLIUsageError as error:
        ...     print(str(error).split(";")[0])
        --label-candidates is used only by --confidence candidates
    """
    from .confidence import check_candidates_mode

    try:  # the library's rule, in the command line's words
        check_candidates_mode(confidence, label_candidates or None, "confidence")
    except ValueError as error:
        raise CLIUsageError(
            f"--label-candidates is used only by --confidence candidates; --confidence {confidence} would "
            "ignore it: drop --label-candidates, or use --confidence candidates (or leave --confidence out: "
            "--label-candidates alone means candidates)"
        ) from error


# -------------------------------------------------------------------------------------------- training


def _progress_callback(print_fn: Callable[[str], None]) -> Any:
    from transformers import TrainerCallback

    class ProgressPrinter(TrainerCallback):
        """One line per logging step: step, loss and its components, elapsed time; one per evaluation during
        training (an evaluation after ``train()`` returns is its caller's to report: :func:`evaluate_split`)."""

        def __init__(self) -> None:
            self.start = time.monotonic()
            self.training = False

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.monotonic()
            self.training = True

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.training = False

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any
        ) -> None:
            logs = logs or {}
            elapsed = time.monotonic() - self.start
            width = len(str(state.max_steps))
            if "loss" in logs:
                parts = [f"step {state.global_step:>{width}}/{state.max_steps}", f"loss {logs['loss']:.4f}"]
                for key, name in (
                    ("loss_label", "label"),
                    ("loss_rationale", "rationale"),
                    ("loss_mi", "mi"),
                ):
                    if key in logs:
                        parts.append(f"{name} {logs[key]:.4f}")
                parts.append(f"{elapsed:.0f}s")
                print_fn("  " + "  ".join(parts))
            elif self.training and any(key.startswith("eval_") for key in logs):
                shown = {k: v for k, v in logs.items() if k.startswith("eval_") and isinstance(v, float)}
                shown = {k: v for k, v in shown.items() if not k.endswith(("_runtime", "_per_second"))}
                text = "  ".join(f"{k[5:]} {v:.4f}" for k, v in sorted(shown.items()))
                print_fn(f"  eval at step {state.global_step}: {text}")

    return ProgressPrinter()


def _silent(text: str) -> None:
    """A print function that prints nothing (processes other than the first)."""


def _percent(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _vocabulary(train: Any) -> list[str]:
    return [t for row in train.select_columns(["input", "label", "rationale"]) for t in row.values() if t]


def _built_in_vocabulary(model_args: ModelArguments, data_args: DataArguments) -> list[str]:
    """Words the built-in tokenizer needs beyond the training texts: every number the synthetic task uses."""
    if model_args.model_name_or_path or data_args.dataset != SYNTHETIC_TASK:
        return []
    from .data.synthetic import arithmetic_vocabulary

    return arithmetic_vocabulary(
        max_steps=data_args.synthetic_steps, max_number=data_args.synthetic_max_number
    )


@contextlib.contextmanager
def _warnings_to(print_fn: Callable[[str], None]) -> Iterator[None]:
    """Send ``hf_cotmi`` warnings to ``print_fn`` for a while, even under :func:`quiet_libraries`."""

    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            print_fn(f"warning: {record.getMessage()}")

    handler = Forward(logging.WARNING)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(min(level or logging.WARNING, logging.WARNING))
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _resume_checkpoint(training_args: Any, print_fn: Callable[[str], None]) -> str | None:
    """The checkpoint ``--resume_from_checkpoint`` names (``true``/``latest``: the newest complete one)."""
    from .checkpoints import resolve_resume_checkpoint

    value = training_args.resume_from_checkpoint
    try:
        with _warnings_to(print_fn):
            checkpoint = resolve_resume_checkpoint(value, training_args.output_dir)
    except (ValueError, TypeError) as error:
        raise CLIUsageError(str(error)) from error
    if checkpoint:
        print_fn(f"resuming from {checkpoint}")
    else:
        _warn_of_earlier_checkpoints(training_args.output_dir, print_fn)
    return checkpoint


def _warn_of_earlier_checkpoints(output_dir: str, print_fn: Callable[[str], None]) -> None:
    """Say so when a run that starts from step 0 writes into a folder with an earlier run's checkpoints.

    Its checkpoints would sit beside the earlier ones, and ``--resume_from_checkpoint latest`` could later
    pick an earlier run's with a higher step number.
    """
    from .checkpoints import numbered_checkpoints

    earlier = [path.name for path in numbered_checkpoints(output_dir)]
    if earlier:
        shown = ", ".join(earlier[-3:]) + (f" and {len(earlier) - 3} more" if len(earlier) > 3 else "")
        message = (
            f"warning: {output_dir} holds checkpoints of an earlier run ({shown}); this run starts from step 0 "
            "and saves beside them. To continue the earlier run instead, give --resume_from_checkpoint "
            "latest; to start afresh, choose another --output-dir or remove them first"
        )
        print_fn(message)


def data_report_lines(loaded: LoadedData, features_report: Any = None) -> list[str]:
    """What the loader and the tokeniser counted, as the lines ``train`` and ``demo`` print.

    One line for the loader's :class:`~hf_cotmi.data.report.DSSLoadReport` or
    :class:`~hf_cotmi.data.report.CoTLoadReport` (none for the synthetic task), one per split of the
    :class:`~hf_cotmi.data.report.FeaturesReport`, and a note when training rationales are missing.

    Examples:
        >>> from hf_cotmi.data.report import FeaturesReport, FeaturesSplitReport
        >>> loaded = LoadedData(splits={}, name=None, task="text", source={})
        >>> report = FeaturesReport({"train": FeaturesSplitReport(100, missing_rationales=67)})
        >>> print(data_report_lines(loaded, report)[-1][:50])
        note: 67 of 100 training rationales are missing: k
    """
    lines = []
    if loaded.report is not None:
        lines.append(f"loader counts: {loaded.report}")
    if features_report is None:
        return lines
    lines.append("tokeniser counts:")
    lines += [f"  {split}: {counts}" for split, counts in features_report.splits.items()]
    train = features_report.splits.get("train")
    if train is not None and (train.missing_rationales or train.dropped_rationales):
        missing = train.missing_rationales + train.dropped_rationales
        total = train.examples + train.dropped_rationales
        if train.dropped_rationales:
            what = "those examples were dropped (--empty-rationale drop)"
        else:
            what = (
                "kept, with only the end-of-sequence token as target (--empty-rationale keep; drop would "
                "remove those examples, error would stop)"
            )
        lines.append(f"note: {missing} of {total} training rationales are missing: {what}")
    return lines


def _check_chat_template(data_args: DataArguments, student: Student) -> None:
    """``--chat-template`` needs a decoder-only student whose tokenizer has a chat template."""
    if not data_args.chat_template:
        return
    if resolve_student_type(student.model) != "causal":
        raise CLIUsageError(
            "--chat-template is for decoder-only (causal) students; this student is seq2seq "
            f"({type(student.model).__name__})"
        )
    if not getattr(student.tokenizer, "chat_template", None):
        raise CLIUsageError(
            f"--chat-template: the student's tokenizer ({type(student.tokenizer).__name__}) has no chat "
            "template; use a tokenizer that has one (an instruction-tuned model's) or train without it"
        )


def build_trainer(
    student: Student,
    features: dict[str, Any],
    spec: TaskSpec,
    training_args: Any,
    *,
    confidence: str,
    label_candidates: list[str] | str | None,
    n_bins: int = 10,
    peft: Any = None,
    print_fn: Callable[[str], None] = print,
    chat_template: bool = False,
) -> Any:
    """A :class:`~hf_cotmi.DSSMITrainer` with the task's metric and an :class:`~hf_cotmi.ECECallback`.

    Evaluation runs during training only when ``training_args.eval_strategy`` asks for it; the progress of
    each logging step goes to ``print_fn``, once: transformers' printer is removed (``disable_tqdm``), or its
    progress bar kept without its copy of each log.

    Examples:
        >>> # trainer = build_trainer(student, features, get_task("svamp"), args, confidence="sequence",
        >>> #                         label_candidates=None)
    """
    from .callbacks import ECECallback
    from .metrics import build_compute_metrics
    from .trainer import DSSMITrainer

    ece = ECECallback(
        n_bins=n_bins,
        confidence=confidence,
        label_candidates=label_candidates,
        plot=False,
        is_correct=spec.is_correct,
        chat_template=chat_template,
    )  # type: ignore[arg-type]
    trainer = DSSMITrainer(
        model=student.model,
        args=training_args,
        train_dataset=features["train"],
        eval_dataset=features.get("eval") if training_args.eval_strategy != "no" else None,
        processing_class=student.tokenizer,
        compute_metrics=build_compute_metrics(student.tokenizer, task=spec),
        callbacks=[ece, _progress_callback(print_fn)],
        peft_config=peft,
    )
    _keep_one_progress_printer(trainer)
    trainer.model_card_callback.card_data.chat_template = bool(chat_template)
    return trainer


def _keep_one_progress_printer(trainer: Any) -> None:
    """Leave the logs to :func:`_progress_callback`: remove transformers' printer (``disable_tqdm``), or
    keep its progress bar but not the copy of each log it writes as a Python dict."""
    from transformers import PrinterCallback, ProgressCallback

    if trainer.args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)
        return

    class ProgressBarOnly(ProgressCallback):
        """transformers' progress bar without its ``{'loss': ...}`` line per log."""

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any
        ) -> None:
            return None

    if any(type(callback) is ProgressCallback for callback in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(ProgressBarOnly)


def _how_to_resume(output_dir: str) -> str:
    """What an interrupted run left to resume from, and the flag that does it.

    Examples:
        >>> _how_to_resume("/nonexistent")
        'no complete checkpoint was saved yet, so a rerun starts from step 0'
    """
    from .checkpoints import latest_complete_checkpoint

    newest = latest_complete_checkpoint(output_dir)
    if newest is None:
        return "no complete checkpoint was saved yet, so a rerun starts from step 0"
    return (
        f"the newest complete checkpoint is {newest}: give the same command with "
        "--resume_from_checkpoint latest to continue from it"
    )


def _describe_training(training_args: Any) -> str:
    settings = training_args.loss_settings()
    steps = training_args.max_steps > 0
    length = plural(training_args.max_steps, "step") if steps else f"{training_args.num_train_epochs} epochs"
    return (
        f"training: {length}, batch {_describe_batch(training_args)}, "
        f"lr {training_args.learning_rate:g}; loss = {settings['label_loss_weight']:g} * label + "
        f"{settings['rationale_loss_weight']:g} * rationale + {settings['mi_loss_weight']:g} * MI "
        f"({settings['mi_variant']} variant, {settings['mi_reduction']}, {settings['mi_divergence']})"
    )


def _describe_batch(training_args: Any) -> str:
    """The examples of one optimizer step: the batch per device, and where it is more, how it adds up.

    Examples:
        >>> from types import SimpleNamespace
        >>> one = dict(per_device_train_batch_size=8, train_batch_size=8, world_size=1)
        >>> _describe_batch(SimpleNamespace(**one, gradient_accumulation_steps=1))
        '8'
        >>> _describe_batch(SimpleNamespace(**one, gradient_accumulation_steps=2))
        '8 x 2 accumulation = 16'
        >>> _describe_batch(SimpleNamespace(**{**one, "world_size": 4}, gradient_accumulation_steps=2))
        '8 per device x 4 processes x 2 accumulation = 64'
    """
    per_device = training_args.per_device_train_batch_size
    gpus = training_args.train_batch_size // per_device  # several GPUs of one process (DataParallel)
    factors = [
        (gpus, "GPUs"),
        (training_args.world_size, "processes"),
        (training_args.gradient_accumulation_steps, "accumulation"),
    ]
    factors = [(count, what) for count, what in factors if count > 1]
    if not factors:
        return str(per_device)
    total = per_device * math.prod(count for count, _ in factors)
    first = f"{per_device} per device" if factors[0][1] != "accumulation" else str(per_device)
    return " x ".join([first, *(f"{count} {what}" for count, what in factors)]) + f" = {total}"


def _ece_callback(trainer: Any) -> Any:
    from .callbacks import ECECallback

    return next(c for c in trainer.callback_handler.callbacks if isinstance(c, ECECallback))


def evaluate_split(
    trainer: Any,
    features: Any,
    prefix: str,
    spec: TaskSpec,
    *,
    train: Any = None,
    test: Any = None,
    n_bins: int = 10,
    diagram_path: str | None = None,
    print_fn: Callable[[str], None] = print,
    split_name: str | None = None,
) -> tuple[dict[str, float], float, str | None]:
    """Evaluate one split: accuracy, ECE and confidence, the task's baseline, and the reliability diagram.

    In candidates mode the metrics also hold ``{prefix}_choice_accuracy``, the accuracy of the most likely
    candidate (for a multiple-choice task: choice ranking), beside ``{prefix}_accuracy`` (the generated
    label's); the ECE is computed against the correctness of that candidate, the one the confidence is for.

    Args:
        trainer: a trainer from :func:`build_trainer`.
        features: the tokenised split.
        prefix: metric key prefix (``"test"`` or ``"eval"``).
        spec: the task; its baseline is computed from the raw ``train`` and ``test`` splits.
        diagram_path: where the reliability diagram goes (the main process writes it).
        split_name: the data's name of the split, used in the printed lines (default ``prefix``): e.g.
            ``"valid"`` for a validation split evaluated under the ``"eval"`` prefix.

    Returns:
        ``(metrics, baseline accuracy, diagram path or None)``.

    Examples:
        >>> # metrics, baseline, diagram = evaluate_split(trainer, features["eval"], "eval", spec,
        >>> #                                             split_name="valid")  # prints "valid: accuracy ..."
    """
    name = split_name or prefix
    print_fn(f"evaluating on {plural(features.num_rows, name + ' example')} ...")
    metrics = trainer.evaluate(features, metric_key_prefix=prefix)
    confidences = _ece_callback(trainer).last_results.get(prefix)  # choice accuracy: ECECallback logs it
    trainer.save_metrics(prefix, metrics)
    baseline = spec.baseline_accuracy(train, test)
    mode = _ece_callback(trainer).mode
    print_fn(
        f"{name}: accuracy {_percent(metrics.get(f'{prefix}_accuracy', float('nan')))} "
        f"({spec.baseline_description}: {_percent(baseline)}), ECE {metrics.get(f'{prefix}_ece', float('nan')):.3f}, "
        f"average confidence {metrics.get(f'{prefix}_avg_confidence', float('nan')):.3f} ({mode} confidence)"
    )
    if f"{prefix}_choice_accuracy" in metrics:
        print_fn(
            f"{name}: choice-ranking accuracy {_percent(metrics[f'{prefix}_choice_accuracy'])} (the most likely "
            "candidate's; the ECE is measured against its correctness, the generated label's accuracy is above)"
        )
    result = confidences
    diagram = None
    if result is not None and diagram_path and trainer.is_world_process_zero():
        from .plotting import save_reliability_diagram

        diagram = save_reliability_diagram(
            result.confidences,
            result.correct,
            diagram_path,
            n_bins=n_bins,
            title=f"{spec.name}: {mode} confidence",
        )
    return metrics, baseline, diagram


def _example_candidates(callback: Any, raw: Any) -> tuple[list[str] | None, list[list[str]] | None]:
    """The candidates the examples after training are scored over, as the ECE callback scored the split:
    ``(shared list, None)``, ``(None, each row's own list)`` for a candidates column (CQA's ``choices``), or
    ``(None, None)`` outside candidates mode.

    Examples:
        >>> from types import SimpleNamespace
        >>> from datasets import Dataset
        >>> _example_candidates(SimpleNamespace(mode="candidates", label_candidates="choices"),
        ...                     Dataset.from_dict({"choices": [["sea", "tree"]]}))
        (None, [['sea', 'tree']])
    """
    if callback.mode != "candidates":
        return None, None
    if isinstance(callback.label_candidates, list):
        return callback.label_candidates, None
    column = callback.label_candidates
    if isinstance(column, str) and column in raw.column_names:
        return None, [list(choices) for choices in raw[column]]
    return None, None


def shown_text(text: str) -> str:
    """A label or rationale as ``predict`` and the examples after training print it: the text itself, or
    its quoted form (``""``) when it is empty or blank, so an empty answer is not printed as blank space.

    Examples:
        >>> shown_text("sea"), shown_text(""), shown_text(" ")
        ('sea', '""', '" "')
    """
    return text if text.strip() else json.dumps(text)


def _show_examples(
    trainer: Any,
    raw: Any,
    spec: TaskSpec,
    training_args: Any,
    data_args: DataArguments,
    shown: int,
    print_fn: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Generate rationale and label for the first ``shown`` rows of ``raw`` and print them."""
    from .data.features import student_input_texts

    callback = _ece_callback(trainer)
    raw = raw.select(range(shown))
    label_set, per_row = _example_candidates(callback, raw)
    mode = callback.mode
    if mode == "candidates" and label_set is None and per_row is None:
        mode = "sequence"  # candidates from a column the split lacks
    rows = predict_texts(
        trainer.model,
        trainer.processing_class,
        # NLI rows as the features joined them (the tokenizer's EOS), not the input column's "</s>"
        student_input_texts(raw, trainer.processing_class),
        predict_prefix=training_args.predict_prefix,
        explain_prefix=training_args.explain_prefix,
        label_max_new_tokens=label_new_tokens(trainer.model, training_args.generation_max_length),
        rationale_max_new_tokens=training_args.rationale_max_new_tokens,
        confidence=mode,
        label_candidates=label_set,
        max_input_length=data_args.max_input_length,
        chat_template=data_args.chat_template,
        candidates_per_text=per_row,
    )
    candidates = mode == "candidates"
    what = "the most likely candidate label and the generated label" if candidates else "label"
    first = "the first one" if shown == 1 else f"the first {shown}"
    print_fn(f"{first} of them, with the generated rationale and {what}:")
    for row, gold in zip(rows, raw["label"]):
        row["gold"] = gold
        row["correct"] = bool(spec.is_correct(row["label"], gold))
        print_fn(f"  input:     {row['input']}")
        print_fn(f"  rationale: {shown_text(row['rationale'])}")
        mark = "right" if row["correct"] else "wrong"
        print_fn(
            f"  label:     {shown_text(row['label'])}  (gold {shown_text(gold)}, {mark}, "
            f"confidence {row['confidence']:.2f})"
        )
        if candidates:  # the accuracy counts the generated label, the ECE the candidate above
            row["generated_correct"] = bool(spec.is_correct(row["generated_label"], gold))
            mark = "right" if row["generated_correct"] else "wrong"
            print_fn(
                f"  generated: {shown_text(row['generated_label'])}  ({mark}; the label the accuracy counts)"
            )
    return rows


def _test_phase(
    trainer: Any,
    data: LoadedData,
    features: dict[str, Any],
    prefix: str,
    eval_args: EvaluationArguments,
    data_args: DataArguments,
    print_fn: Callable[[str], None],
) -> dict[str, Any]:
    """Evaluate the held-out split, draw its diagram and show a few examples (nothing when there is none)."""
    spec: TaskSpec = data.spec  # type: ignore[assignment]
    phase: dict[str, Any] = {"metrics": {}, "baseline": float("nan"), "baseline_kind": spec.baseline}
    phase.update(examples=[], reliability_diagram=None)
    if prefix in features:
        phase["metrics"], phase["baseline"], phase["reliability_diagram"] = evaluate_split(
            trainer,
            features[prefix],
            prefix,
            spec,
            train=data.splits["train"],
            test=data.splits[prefix],
            n_bins=eval_args.n_bins,
            diagram_path=os.path.join(trainer.args.output_dir, RELIABILITY_DIAGRAM),
            print_fn=print_fn,
            # the data's name of the split ("valid"), not the metric prefix ("eval")
            split_name=data_args.test_split if prefix == "test" else data_args.eval_split,
        )
        shown = min(eval_args.num_examples_to_show, data.splits[prefix].num_rows)
        if shown > 0 and trainer.is_world_process_zero():
            raw = data.splits[prefix]
            phase["examples"] = _show_examples(trainer, raw, spec, trainer.args, data_args, shown, print_fn)
    else:
        print_fn("not evaluated: the data has no test or validation split (--test-file, --validation-file)")
    # the name results.json had before task baselines; it holds a majority baseline only
    phase["majority_baseline"] = phase["baseline"] if spec.baseline == "majority" else float("nan")
    return phase


def _sidecar(
    trainer: Any, data: LoadedData, model_args: ModelArguments, data_args: DataArguments
) -> dict[str, Any]:
    """What ``evaluate`` and ``predict`` read back from a saved run (or one of its checkpoints)."""
    from . import __version__

    args, callback = trainer.args, _ece_callback(trainer)
    return {
        "hf_cotmi_version": __version__,
        "task": data.task,
        "dataset": data.name,
        "data": data.source,
        "predict_prefix": args.predict_prefix,
        "explain_prefix": args.explain_prefix,
        "max_input_length": data_args.max_input_length,
        "generation_max_length": args.generation_max_length,
        "rationale_max_new_tokens": args.rationale_max_new_tokens,
        "confidence": callback.mode,
        "label_candidates": callback.label_candidates,
        # a local folder by its absolute path (as adapter_config.json and the data paths), a Hub name as given
        "base_model": _model_source(model_args.model_name_or_path) if model_args.model_name_or_path else None,
        "peft": model_args.use_peft,
        "student_type": resolve_student_type(trainer.model),
        "chat_template": bool(data_args.chat_template),
        "held_out_max_samples": held_out_max_samples(data_args),
    }


def held_out_max_samples(data_args: DataArguments) -> dict[str, int]:
    """The held-out splits a run cut to their first N examples (``--max-test-samples``, ``--max-eval-samples``),
    by the data's split name: ``evaluate`` on the recorded data cuts them the same way, so it reproduces
    the run's figures.

    Examples:
        >>> held_out_max_samples(DataArguments(dataset="svamp", max_test_samples=50))
        {'test': 50}
        >>> held_out_max_samples(DataArguments(dataset="esnli", train_split="valid", max_eval_samples=9))
        {}
    """
    limits = {
        data_args.test_split: data_args.max_test_samples,
        data_args.eval_split: data_args.max_eval_samples,
    }
    return {
        split: limit
        for split, limit in limits.items()
        if limit is not None and split != data_args.train_split
    }


def _sidecar_in_checkpoints(sidecar: Callable[[], dict[str, Any]]) -> Any:
    """A callback that writes the sidecar into every ``checkpoint-N/`` the trainer saves, so ``hf-cotmi
    evaluate out/checkpoint-N`` (or a run cut off before the end) reads the run's prefixes and data.

    With ``push_to_hub`` the Trainer uploads a checkpoint as soon as it is saved, before ``on_save``; so the
    sidecar is also written when a push begins, into that checkpoint and into the output folder (what
    ``hub_strategy`` ``checkpoint``, ``all_checkpoints`` and ``every_save`` upload), so the Hub's
    ``last-checkpoint/`` and the repository during training hold it too.
    """
    from transformers import TrainerCallback

    def write_into(folder: str) -> None:
        if os.path.isdir(folder):
            write_json(os.path.join(folder, SIDECAR_NAME), sidecar(), sort_keys=True)

    class _SidecarInCheckpoints(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                write_into(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))

        def on_push_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                write_into(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))
                write_into(args.output_dir)

    return _SidecarInCheckpoints()


@contextlib.contextmanager
def _already_saved(trainer: Any, checkpoint_sidecar: Any) -> Iterator[None]:
    """For the final push: the Trainer's ``push_to_hub`` saves the model, and ``checkpoint_sidecar`` (the
    :func:`_sidecar_in_checkpoints` callback) writes the sidecar when the push begins, but :func:`_save_run`
    has just written both into the same folder; within this, neither is written again.
    """
    trainer.save_model = lambda *args, **kwargs: None
    trainer.remove_callback(checkpoint_sidecar)
    try:
        yield
    finally:
        del trainer.save_model  # the class's save_model again
        trainer.add_callback(checkpoint_sidecar)


_GENERATION_SETTING_FLAGS: dict[str, str] = {
    "generation_max_length": "--generation-max-length",
    "rationale_max_new_tokens": "--rationale-max-new-tokens",
    "generation_config": "--generation-config",
}
"""The command-line flag of each generation setting a :class:`~hf_cotmi.students.GenerationLengthError`
names (its ``setting``; ``generation_config.max_new_tokens`` is a part of ``generation_config``'s)."""


def _generation_length_in_flags(error: GenerationLengthError) -> str:
    """The refusal of a generation length in command-line terms, from its attributes: the setting the flag
    that sets it (:data:`_GENERATION_SETTING_FLAGS`; a setting no flag sets as the error names it), and the
    :class:`~hf_cotmi.ECECallback` that generates with it the calibration it measures.

    Examples:
        >>> from hf_cotmi.students import GenerationLengthError
        >>> def opening(*fields):
        ...     return _generation_length_in_flags(GenerationLengthError(*fields)).split(" for")[0]
        >>> opening("generation_max_length", 2000, 1024)
        '--generation-max-length 2000 leaves no room'
        >>> opening("model.generation_config.max_length", 900, 512)
        'model.generation_config.max_length=900 leaves no room'
        >>> ece = GenerationLengthError("generation_config.max_new_tokens", 900, 512, "labels", "sequence")
        >>> message = _generation_length_in_flags(ece)
        >>> message.split(" for")[0]
        'max_new_tokens=900 of --generation-config leaves no room'
        >>> message.split("; ")[-1]
        'the ECE (--confidence sequence) generates labels with it at each evaluation'
    """
    setting, _, part = error.setting.partition(".")
    flag = _GENERATION_SETTING_FLAGS.get(setting)
    if flag is None:
        named = f"{error.setting}={error.value}"
    else:
        named = f"{part}={error.value} of {flag}" if part else f"{flag} {error.value}"
    callback = None if error.confidence is None else f"the ECE (--confidence {error.confidence})"
    return error.describe(named, callback)


def _check_generation_room(trainer: Any) -> None:
    """The trainer's check of the generation lengths the test phase uses
    (:meth:`~hf_cotmi.DSSMITrainer._check_generation_room`), its refusal a usage error in the flags'
    terms (:func:`_generation_length_in_flags`).

    Raises:
        CLIUsageError: a generation length at or above a decoder-only student's context.
    """
    try:
        trainer._check_generation_room()
    except GenerationLengthError as error:
        raise CLIUsageError(_generation_length_in_flags(error)) from None


def _check_example_room(trainer: Any) -> None:
    """Refuse, before training, generation lengths the examples shown after the test phase cannot use.

    :func:`_show_examples` generates a rationale (``rationale_max_new_tokens``) and a label
    (:func:`label_new_tokens` of ``generation_max_length``) for each example, whatever ``output_rationale``
    and ``predict_with_generate`` are, so a decoder-only student whose context cannot hold either would fail
    there, after the whole run (:func:`hf_cotmi.students.generation_prompt_limit`). A seq2seq student has
    nothing to check.

    Raises:
        CLIUsageError: a length at or above the student's context; it names the setting and the options
            that avoid it.

    Examples:
        >>> from types import SimpleNamespace
        >>> model = SimpleNamespace(config=SimpleNamespace(n_positions=128, is_encoder_decoder=False))
        >>> args = SimpleNamespace(rationale_max_new_tokens=256, generation_max_length=8)
        >>> _check_example_room(SimpleNamespace(model=model, processing_class=None, args=args))
        Traceback (most recent call last):
        ...
        hf_cotmi.run_arguments.CLIUsageError: --rationale-max-new-tokens 256 leaves no room ...
    """
    args = trainer.args
    asked = {
        "rationale_max_new_tokens": args.rationale_max_new_tokens,
        "generation_max_length": label_new_tokens(trainer.model, args.generation_max_length),
    }
    for argument, limit in asked.items():
        try:
            generation_prompt_limit(trainer.model, trainer.processing_class, limit, argument=argument)
        except GenerationLengthError as error:
            raise CLIUsageError(
                f"{_generation_length_in_flags(error)}; the examples shown after the test phase generate that "
                "many tokens "
                f"(pass --num-examples-to-show 0 to show none, or a smaller {_GENERATION_SETTING_FLAGS[argument]})"
            ) from None


def _save_trained(
    trainer: Any,
    data: LoadedData,
    model_args: ModelArguments,
    data_args: DataArguments,
    print_fn: Callable[[str], None],
    *,
    what: str = "failed",
) -> bool:
    """After training, when what follows it fails or is interrupted: save the model, tokenizer and sidecar
    into ``output_dir`` (no ``results.json``, which marks a finished run, and no push), so
    ``hf-cotmi evaluate --model DIR`` can redo the test phase.

    With FSDP or DeepSpeed on several processes nothing is saved: the processes of a sharded model save
    together, and one that did not fail would not join; a line says so. A save that fails itself (a full disk)
    is printed and not raised, so the caller raises the error that stopped the run.

    Args:
        what: how the steps after training stopped, for the printed line ("failed", "were interrupted").

    Returns:
        Whether the model was saved.

    Examples:
        >>> from types import SimpleNamespace
        >>> args = SimpleNamespace(output_dir="out", world_size=2)
        >>> trainer = SimpleNamespace(args=args, is_fsdp_enabled=True)
        >>> _save_trained(trainer, None, None, None, print)
        the steps after training failed; with FSDP or DeepSpeed on several processes the trained model is not saved
        False
    """
    args = trainer.args
    sharded = getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False)
    if sharded and args.world_size > 1:
        print_fn(
            f"the steps after training {what}; with FSDP or DeepSpeed on several processes the trained model "
            "is not saved"
        )
        return False
    try:
        trainer.save_model(_internal_call=True)
        if trainer.is_world_process_zero():
            write_json(
                os.path.join(args.output_dir, SIDECAR_NAME),
                _sidecar(trainer, data, model_args, data_args),
                sort_keys=True,
            )
    except Exception as error:  # the error that stopped the run is the one raised, not this one
        print_fn(f"could not save the trained model: {error}")
        return False
    if trainer.is_world_process_zero():
        print_fn(
            f"the steps after training {what}; saved the trained model and tokenizer to {args.output_dir}/; "
            f"{_evaluate_command(args.output_dir)} redoes the test phase"
        )
    return True


def _evaluate_command(output_dir: str) -> str:
    """The command that redoes the test phase of a model saved in ``output_dir``.

    Examples:
        >>> _evaluate_command("runs/my run")
        "hf-cotmi evaluate --model 'runs/my run'"
    """
    return f"hf-cotmi evaluate --model {shlex.quote(output_dir)}"


def _save_run(
    trainer: Any,
    data: LoadedData,
    model_args: ModelArguments,
    data_args: DataArguments,
    results: dict[str, Any],
    started: float,
    checkpoint_sidecar: Any,
) -> None:
    """Save model, tokenizer and model card, then the sidecar and ``results.json``; with ``push_to_hub``,
    upload the folder after that (each file written once: the push neither saves the model again nor
    rewrites the sidecar through ``checkpoint_sidecar``, the run's :func:`_sidecar_in_checkpoints`).

    ``results.json`` is written last, so a folder that holds one holds a finished run: a model save that
    fails (disk full, interrupted) leaves no results claiming otherwise, and the upload includes it.
    """
    args, output_dir = trainer.args, trainer.args.output_dir
    card_kwargs: dict[str, Any] = {"dataset": data.name} if data.name else {}
    from .model_card import record_run_data  # the card's example input and the test subset it covers

    record_run_data(trainer.model_card_callback.card_data, data, data_args, trainer.processing_class)
    # on every process (sharded FSDP / DeepSpeed models save together); _internal_call: save only, since
    # the Trainer's save_model would push the folder before results.json is in it
    trainer.save_model(_internal_call=True)
    if not args.push_to_hub:
        trainer.create_model_card(**card_kwargs)
    if trainer.is_world_process_zero():
        write_json(
            os.path.join(output_dir, SIDECAR_NAME),
            _sidecar(trainer, data, model_args, data_args),
            sort_keys=True,
        )
        results["total_seconds"] = round(time.monotonic() - started, 1)
        write_json(os.path.join(output_dir, "results.json"), results, default=float)
    if args.push_to_hub:
        # push_to_hub writes the card and uploads the folder; the full repo id as model name: the card's
        # usage snippet loads from it
        with _already_saved(trainer, checkpoint_sidecar):
            trainer.push_to_hub(model_name=trainer.hub_model_id, **card_kwargs)


def _splits_with_a_use(data: LoadedData, training_args: Any) -> LoadedData:
    """The splits whose features the run reads: the validation split only when it is evaluated, during
    training (``eval_strategy``; best-model loading and early stopping need that too) or at the end (the
    data has no test split).

    Examples:
        >>> from types import SimpleNamespace
        >>> data = LoadedData(splits={"train": 1, "eval": 2, "test": 3}, name=None, task="text", source={})
        >>> sorted(_splits_with_a_use(data, SimpleNamespace(eval_strategy="no")).splits)
        ['test', 'train']
        >>> sorted(_splits_with_a_use(data, SimpleNamespace(eval_strategy="steps")).splits)
        ['eval', 'test', 'train']
    """
    if training_args.eval_strategy != "no" or "test" not in data.splits:
        return data
    return replace(data, splits={name: split for name, split in data.splits.items() if name != "eval"})


def _check_evaluation_split(data: LoadedData, data_args: DataArguments, training_args: Any) -> None:
    """Refuse an ``eval_strategy`` with no validation split to evaluate, before the student is loaded (the
    Trainer refused it only when built, after the data was tokenised and the model loaded, in its own words).

    Raises:
        CLIUsageError: it names the strategy and the options that give a validation split.

    Examples:
        >>> from types import SimpleNamespace
        >>> data = LoadedData(splits={"train": 1, "test": 2}, name=None, task="text", source={"train_file": "t"})
        >>> _check_evaluation_split(data, DataArguments(), SimpleNamespace(eval_strategy="no"))
        >>> _check_evaluation_split(data, DataArguments(), SimpleNamespace(eval_strategy="steps"))
        Traceback (most recent call last):
        ...
        hf_cotmi.run_arguments.CLIUsageError: --eval-strategy steps evaluates a validation split ...
    """
    strategy = getattr(training_args.eval_strategy, "value", training_args.eval_strategy)
    if strategy == "no" or "eval" in data.splits:
        return
    dataset = data.source.get("dataset")
    if dataset is None and data_args.validation_file:  # a validation file, not chosen
        give = "--eval-split valid evaluates the file --validation-file gives"
    elif dataset is None:  # your files
        give = "give a validation file with --validation-file"
    elif dataset == SYNTHETIC_TASK:
        give = "generate validation examples with --synthetic-valid-size N"
    else:
        give = f"choose a split of {dataset} other than the training split with --eval-split"
    split = f"--eval-split {data_args.eval_split}"
    if data_args.eval_split == data_args.train_split:
        split += ", the training split"
    raise CLIUsageError(
        f"--eval-strategy {strategy} evaluates a validation split during training, and the data has none "
        f"({split}): {give}, or leave --eval-strategy at no (the default: the test split is evaluated "
        "after training)"
    )


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    eval_args: EvaluationArguments,
    training_args: Any,
    *,
    title: str | None = None,
    extra_vocabulary: Sequence[str] = (),
    print_fn: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train a student with DSS + MI, evaluate accuracy and calibration, show examples, save everything.

    Steps: ``resume_from_checkpoint`` resolved (``true``/``latest``: the newest complete checkpoint in
    ``output_dir``, see :func:`hf_cotmi.resolve_resume_checkpoint`), :func:`load_task_data`,
    :func:`~hf_cotmi.students.load_student`, :func:`build_features` (of the validation split only when it is
    evaluated: during training, or at the end for want of a test split), :func:`build_trainer` and ``train()``,
    :func:`evaluate_split` on the test split (accuracy, ECE, average confidence, the task's baseline, the
    reliability diagram), a few test inputs with their generated rationale and label, then the model,
    tokenizer, model card (``README.md``), ``results.json`` and ``hf_cotmi_config.json`` into
    ``output_dir``; with ``push_to_hub`` the folder goes to the Hub (should the test phase fail, the model,
    tokenizer and ``hf_cotmi_config.json`` are saved before the error goes on). What the loader and the tokeniser
    counted (missing rationales, truncations, unparsed outputs) is printed (:func:`data_report_lines`).
    Without ``model_args.model_name_or_path`` the student is the small T5 (a Llama with
    ``student_type="causal"``) its ``tiny_*`` fields describe (on the synthetic task its vocabulary holds
    every number the task uses).

    Args:
        model_args: the student.
        data_args: the data.
        eval_args: calibration and display options.
        training_args: a :class:`~hf_cotmi.DSSMITrainingArguments`.
        title: first line printed.
        extra_vocabulary: texts added to the built-in tokenizer's vocabulary.
        print_fn: where progress goes.

    Returns:
        ``{"metrics", "baseline", "baseline_kind", "majority_baseline", "examples", "output_dir", "files",
        "train_seconds", "total_seconds", "reliability_diagram", "trainer"}``.

    Examples:
        >>> # from hf_cotmi import DSSMITrainingArguments
        >>> # run_training(ModelArguments(), DataArguments(dataset="synthetic"), EvaluationArguments(),
        >>> #              DSSMITrainingArguments("out", max_steps=200))
    """
    # disable_tqdm hides the libraries' bars too: loading the weights, tokenising, writing the shards
    with _library_progress_bars(shown=not training_args.disable_tqdm):
        return _run_training(
            model_args,
            data_args,
            eval_args,
            training_args,
            title=title,
            extra_vocabulary=extra_vocabulary,
            print_fn=print_fn,
        )


def _run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    eval_args: EvaluationArguments,
    training_args: Any,
    *,
    title: str | None,
    extra_vocabulary: Sequence[str],
    print_fn: Callable[[str], None],
) -> dict[str, Any]:
    """:func:`run_training`'s steps, with the libraries' progress bars as it set them."""
    started = time.monotonic()
    check_confidence_options(eval_args.confidence, eval_args.label_candidates)
    if model_args.use_peft and not model_args.model_name_or_path:
        raise CLIUsageError(
            "--use-peft needs --model: LoRA adapters are saved without their base weights, and the built-in "
            "student is built from random weights that are not saved, so the run could never be loaded"
        )
    if training_args.process_index != 0:  # one process reports (multi-GPU runs)
        print_fn = _silent
    if title:
        print_fn(title)
    resume = _resume_checkpoint(training_args, print_fn)
    data = load_task_data(data_args)
    _check_evaluation_split(data, data_args, training_args)
    spec: TaskSpec = data.spec  # type: ignore[assignment]
    sizes = ", ".join(f"{split} {dataset.num_rows}" for split, dataset in data.splits.items())
    labels = f"; training labels from {data.teacher_label_column!r}" if data.teacher_label_column else ""
    print_fn(
        f"data: {data.name or 'your files'} ({sizes} examples; answers compared as {spec.metric}{labels})"
    )
    vocabulary = [*extra_vocabulary, *_built_in_vocabulary(model_args, data_args)]
    student = load_student(model_args, _vocabulary(data.splits["train"]), extra_vocabulary=vocabulary)
    print_fn(f"student: {student.description}" + (" + LoRA adapters" if model_args.use_peft else ""))
    _check_chat_template(data_args, student)
    used = _splits_with_a_use(data, training_args)
    features, features_report = build_features(
        used,
        student.tokenizer,
        data_args,
        predict_prefix=training_args.predict_prefix,
        explain_prefix=training_args.explain_prefix,
        return_report=True,
        model=student.model,
    )
    for line in data_report_lines(data, features_report):
        print_fn(line)
    prefix = "test" if "test" in features else "eval"
    columns = features[prefix].column_names if prefix in features else []
    try:
        mode, candidates = spec.resolve_confidence(eval_args.confidence, eval_args.label_candidates, columns)
    except ValueError as error:
        raise CLIUsageError(str(error)) from None
    if isinstance(candidates, str):  # a column: each held-out row's own candidates
        places = {"eval": _split_place(data_args, data_args.eval_split)}
        places["test"] = _split_place(data_args, data_args.test_split)
        _check_candidate_lists(used.splits, candidates, places)
    if training_args.generation_max_length is None:
        training_args.generation_max_length = data_args.max_label_length
    trainer = build_trainer(
        student,
        features,
        spec,
        training_args,
        confidence=mode,
        label_candidates=candidates,
        n_bins=eval_args.n_bins,
        # saved adapters loaded with --model are trained further, not wrapped in a second set
        peft=peft_config(model_args, resolve_student_type(student.model))
        if model_args.use_peft and not hasattr(student.model, "peft_config")
        else None,
        print_fn=print_fn,
        chat_template=data_args.chat_template,
    )
    checkpoint_sidecar = _sidecar_in_checkpoints(lambda: _sidecar(trainer, data, model_args, data_args))
    trainer.add_callback(checkpoint_sidecar)
    if prefix in features:  # the test phase generates: a length the context cannot hold fails now, not after
        _check_generation_room(trainer)
        if min(eval_args.num_examples_to_show, data.splits[prefix].num_rows) > 0:
            _check_example_room(trainer)
    print_fn(_describe_training(training_args))
    train_started = time.monotonic()
    try:
        with _warnings_to(print_fn):  # what the trainer warns of (a fallback, nothing left to train) is shown
            train_output = trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_how_to_resume(training_args.output_dir)) from None
    results: dict[str, Any] = {"output_dir": training_args.output_dir}
    results["train_seconds"] = round(time.monotonic() - train_started, 1)
    trainer.save_metrics("train", train_output.metrics)
    try:
        results.update(_test_phase(trainer, data, features, prefix, eval_args, data_args, print_fn))
    except KeyboardInterrupt:  # what was trained is kept, as below
        output_dir = training_args.output_dir
        if _save_trained(trainer, data, model_args, data_args, print_fn, what="were interrupted"):
            kept = (
                f"the trained model is saved in {output_dir}/; {_evaluate_command(output_dir)} redoes the "
                "test phase"
            )
        else:
            kept = f"training had finished but the trained model was not saved; {_how_to_resume(output_dir)}"
        raise KeyboardInterrupt(kept) from None
    except Exception:  # what was trained is kept: the model is saved before the error goes on
        _save_trained(trainer, data, model_args, data_args, print_fn)
        raise
    if training_args.push_to_hub:
        print_fn(f"pushing {training_args.output_dir} to the Hub as {trainer.hub_model_id} ...")
    with _warnings_to(print_fn):  # what the model card leaves out for the Hub (a local base model) is shown
        _save_run(trainer, data, model_args, data_args, results, started, checkpoint_sidecar)
    output_dir = training_args.output_dir
    results["files"] = sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
    results["trainer"] = trainer
    print_fn(f"saved model, tokenizer, model card (README.md) and results to {output_dir}/")
    return results


# ------------------------------------------------------------------------------------ evaluate / predict


def _recorded_columns(
    data_args: DataArguments, sidecar: dict[str, Any], explicit: Collection[str] = ()
) -> dict[str, str]:
    """The column names a run trained on its own files recorded, for the column options not given (none
    when it trained on a ``--dataset``: those have no column options)."""
    source = sidecar.get("data") or {}
    return {
        name: source[name]
        for name in COLUMN_FIELDS
        if isinstance(source.get(name), str) and not _given(data_args, name, explicit)
    }


def _load_with_recorded_columns(
    data_args: DataArguments, carried: dict[str, str], model_path: str
) -> LoadedData:
    """:func:`load_task_data` for evaluate; a column name taken from the sidecar that names no column of the
    file (:class:`_MissingColumnError`, by its ``column``) says so, and names the recorded names that are not
    the defaults (a default name is no news: evaluate would have read it anyway)."""
    try:
        return load_task_data(data_args, need_train=False)
    except _MissingColumnError as error:
        defaults = DataArguments()
        renamed = {field: name for field, name in carried.items() if name != getattr(defaults, field)}
        if error.column not in renamed.values():  # a column option given, or a default name
            raise
        names = ", ".join(f"--{field.replace('_', '-')} {name}" for field, name in renamed.items())
        raise CLIUsageError(
            f"{error} (evaluate used the column names the training run recorded in {SIDECAR_NAME} of "
            f"{model_path!r}: {names})"
        ) from error


def _recorded_in(model_path: str) -> str:
    """Where the run's settings evaluate reuses came from, for an error about one: the sidecar of the run
    folder, or of the Hub repository ``model_path`` names."""
    if os.path.isdir(model_path):
        return f"{SIDECAR_NAME} in {model_path!r}"
    return f"the {SIDECAR_NAME} of the Hub repository {model_path!r}"


def _data_for_evaluation(
    data_args: DataArguments,
    sidecar: dict[str, Any],
    model_path: str,
    split: str,
    explicit: Collection[str] = (),
) -> tuple[LoadedData, bool]:
    """The split to evaluate: the data given, else the data the run recorded, and whether it is the latter.

    What the run recorded fills the options the caller left at their defaults (``explicit`` names the ones
    set on purpose, even to the default); files of your own given anew are read with the run's column
    names. Of recorded files, only the evaluated split's is read. The split is whole: the first-N cut the
    run made (:func:`_recorded_limit`) is the caller's to make, which then knows the split's size.
    """
    no_data = not (
        data_args.dataset or data_args.train_file or data_args.validation_file or data_args.test_file
    )
    wanted = "valid" if split == "validation" else split
    if no_data:
        source = sidecar.get("data") or {}
        if not source:
            if not os.path.exists(model_path):
                raise CLIUsageError(
                    f"--model {model_path!r} is not a local folder, and no {SIDECAR_NAME} naming its data came "
                    "from the Hub; check the path, or give the data of a Hub model with --dataset or --test-file"
                )
            raise CLIUsageError(
                f"no data given and {model_path!r} has no {SIDECAR_NAME} naming its data; use --dataset or --test-file"
            )
        # the saved data source fills what the command line left at its default; a flag given wins
        values = {
            k: v
            for k, v in source.items()
            if k in DataArguments.__dataclass_fields__ and not _given(data_args, k, explicit)
        }
        if any(values.get(name) for name in _FILE_FIELDS.values()):
            # of the recorded files only the evaluated split's is read: a training file moved or deleted
            # since must not stop the evaluation of the test file (nor be reported as a --train-file given)
            needed = _FILE_FIELDS.get(wanted, "")
            path = values.get(needed)
            if not path:
                recorded = ", ".join(name for name, key in _FILE_FIELDS.items() if values.get(key))
                raise CLIUsageError(
                    f"the data has no {split!r} split (the run recorded files for: {recorded}); choose another "
                    "with --split"
                )
            if not os.path.isfile(path):
                raise CLIUsageError(
                    f"{_recorded_in(model_path)} records {path!r} as the {split!r} data, and it does "
                    f"not exist or is not a file; give the data with {_FILE_OPTIONS[wanted]}"
                )
            files = set(_FILE_FIELDS.values())
            values = {k: v for k, v in values.items() if k not in files or k == needed}
        folder = values.get("data_dir")
        if folder and not os.path.isdir(folder):  # a folder of the machine the run trained on
            raise CLIUsageError(
                f"{_recorded_in(model_path)} records data_dir {folder!r} (where the run read --dataset "
                f"{source.get('dataset')}), and it does not exist here or is not a "
                "folder; give the release folder with --data-dir, or other data with --test-file or --dataset"
            )
        data_args = DataArguments(**{**asdict(data_args), **values})
        carried: dict[str, str] = {}
    else:
        # new files of your own are laid out as the run's were: its column names, where no flag names others
        carried = _recorded_columns(data_args, sidecar, explicit) if not data_args.dataset else {}
        data_args = replace(data_args, **carried)
    data = _load_with_recorded_columns(
        replace(data_args, train_split="", eval_split="", test_split=wanted), carried, model_path
    )
    if "test" not in data.splits:
        raise CLIUsageError(f"the data has no {split!r} split; choose another with --split")
    return data, no_data


def default_diagram_path(model_path: str, split: str) -> str:
    """Where ``hf-cotmi evaluate`` writes its reliability diagram without ``--plot-file``.

    Inside the model folder when it is a local one, otherwise in the current folder.

    Examples:
        >>> default_diagram_path("/nonexistent/hub-name", "test")
        'reliability_diagram_test.png'
    """
    name = f"reliability_diagram_{split}.png"
    return os.path.join(model_path, name) if os.path.isdir(model_path) else name


def run_evaluation(
    model_path: str,
    data_args: DataArguments,
    eval_args: EvaluationArguments,
    *,
    split: str = "test",
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    plot_file: str | None = None,
    device: str | None = None,
    explicit_options: Collection[str] = (),
    disable_tqdm: bool = False,
    base_model: str | None = None,
) -> dict[str, Any]:
    """Accuracy, ECE, average confidence and the reliability diagram of a saved student on one split.

    Settings the training run saved in ``hf_cotmi_config.json`` (prefixes, task and data source; read from
    the Hub for a repository id, see :func:`read_sidecar`) are used where ``data_args`` leaves them open
    (files of your own given anew without ``task`` are compared by the run's task, e.g. ``equation``); on
    that recorded data the confidence mode (and candidates) the run measured its ECE with is the default.
    Of recorded files, only the evaluated split's is read. Files of your own given in ``data_args``
    (``test_file``, ``validation_file``) are read with the column names the run recorded (``input_column``,
    ...) where ``data_args`` leaves those at their defaults.
    ``explicit_options`` names ``data_args`` fields set on purpose: they win over the recorded values even
    when they equal the default (the CLI passes the column flags given). The diagram goes to ``plot_file``,
    by default :func:`default_diagram_path`. A ``tqdm`` progress bar over the examples shows while they are
    scored (``"test: sequence confidence"``), unless ``disable_tqdm``. LoRA adapters load onto ``base_model``
    (``--base-model``) when it is given, instead of the base model their config names (see
    :func:`~hf_cotmi.students.load_student`).

    Returns:
        :func:`hf_cotmi.evaluate_calibration`'s dict plus ``"split"``, ``"dataset"``, ``"model"``, ``"task"``,
        and ``"base_model"`` when it is given (a local folder by its absolute path: a folder ``./gpt2``
        recorded as ``gpt2`` would read as the Hub's ``gpt2``); where the run evaluated only the first N
        examples of the split (``--max-test-samples``) and so does this, on the recorded data,
        ``"run_max_samples"`` (N) and ``"split_examples"`` (the split's size, more than N).

    Examples:
        >>> # run_evaluation("demo-out", DataArguments(), EvaluationArguments())["accuracy"]
    """
    from .evaluation import evaluate_calibration

    check_confidence_options(eval_args.confidence, eval_args.label_candidates)
    _refuse_training_only_options(data_args)
    check_model_folder(model_path)
    if _given(eval_args, "num_examples_to_show"):
        raise CLIUsageError("--num-examples-to-show is not used by evaluate (predict shows examples)")
    sidecar = read_sidecar(model_path)
    data, from_sidecar = _data_for_evaluation(data_args, sidecar, model_path, split, explicit_options)
    run_limit = _recorded_limit(sidecar, split, data_args, explicit_options) if from_sidecar else None
    whole = data.splits["test"].num_rows
    if run_limit is not None and run_limit < whole:  # the run's cut: evaluate reproduces its figures
        data.splits["test"] = data.splits["test"].select(range(run_limit))
    else:
        run_limit = None  # the run evaluated the whole split too
    if from_sidecar:
        spec = _sidecar_spec(sidecar, data_args.task or sidecar.get("task"))
    else:
        spec = _metric_of_new_files(data.spec, data_args, sidecar)
    model, tokenizer, _ = load_student(model_path, for_inference=True, device=device, base_model=base_model)
    predict_prefix = sidecar.get("predict_prefix", PREDICT_PREFIX)
    chat_template = bool(data_args.chat_template or sidecar.get("chat_template", False))
    built = build_features(
        data,
        tokenizer,
        replace(
            data_args,
            max_input_length=_evaluation_input_length(data_args, sidecar),
            chat_template=chat_template,
        ),
        predict_prefix=predict_prefix,
        with_rationale=False,
        model=model,
    )["test"]
    try:
        mode, candidates = spec.resolve_confidence(
            eval_args.confidence, eval_args.label_candidates, built.column_names
        )
    except ValueError as error:
        raise CLIUsageError(str(error)) from None
    if isinstance(candidates, str):  # a column: each row's own candidates
        _check_candidate_lists({split: built}, candidates, {split: _split_place(data_args, split)})
    report = evaluate_calibration(
        model,
        tokenizer,
        built,
        confidence=mode,  # type: ignore[arg-type]
        label_candidates=candidates,
        n_bins=eval_args.n_bins,
        prefix=predict_prefix,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens
        or label_new_tokens(model, int(sidecar.get("generation_max_length") or data_args.max_label_length)),
        is_correct=spec.is_correct,
        plot_path=plot_file or default_diagram_path(model_path, split),
        chat_template=chat_template,
        progress_bar=None if disable_tqdm else f"{split}: {mode} confidence",
    )
    report.update(split=split, dataset=data.name, model=model_path, task=spec.metric)
    if base_model is not None:
        report["base_model"] = _model_source(os.fspath(base_model))
    if run_limit is not None:
        report.update(run_max_samples=run_limit, split_examples=whole)
    return report


def _recorded_limit(
    sidecar: dict[str, Any], split: str, data_args: DataArguments, explicit: Collection[str] = ()
) -> int | None:
    """The first-N cut the run made to ``split`` (:func:`held_out_max_samples`), unless a flag sets one or
    asks for other synthetic data (``--synthetic-test-size 50``: that data is not the run's, and its size wins).
    """
    if _given(data_args, "max_test_samples", explicit):
        return None
    if any(_given(data_args, name, explicit) for name in _SYNTHETIC_DATA_FIELDS):
        return None
    return (sidecar.get("held_out_max_samples") or {}).get("valid" if split == "validation" else split)


# DataArguments fields that generate other synthetic data than a run recorded: its first-N cut does not apply
_SYNTHETIC_DATA_FIELDS = ("synthetic_test_size", "synthetic_steps", "synthetic_max_number", "synthetic_seed")

# DataArguments fields that only training reads: evaluate refuses them rather than ignore them
_TRAINING_ONLY_DATA_FIELDS = {
    "train_split": "evaluate reads one split: --split",
    "eval_split": "evaluate reads one split: --split",
    "test_split": "evaluate reads one split: --split",
    "max_train_samples": "",
    "max_eval_samples": "",
    "synthetic_train_size": "",
    "synthetic_valid_size": "",
    "empty_rationale": "",
    "max_rationale_length": "",
    "label_source": "held-out splits are compared with their ground-truth labels",
}


def _given(arguments: Any, name: str, explicit: Collection[str] = ()) -> bool:
    """Whether an options dataclass field was set: it is in ``explicit`` (set on purpose) or its value differs
    from the field's default (without ``explicit``, a flag given with the default value cannot be told apart
    from no flag)."""
    return name in explicit or getattr(arguments, name) != type(arguments).__dataclass_fields__[name].default


def _refuse_training_only_options(data_args: DataArguments) -> None:
    """A usage error for a data option ``evaluate`` would ignore (set to something other than its default)."""
    for name, instead in _TRAINING_ONLY_DATA_FIELDS.items():
        if _given(data_args, name):
            flag = "--" + name.replace("_", "-")
            raise CLIUsageError(f"{flag} is not used by evaluate" + (f" ({instead})" if instead else ""))


def _evaluation_input_length(data_args: DataArguments, sidecar: dict[str, Any]) -> int:
    """``--max-input-length`` when the user set it (it differs from the default), else the training run's."""
    if _given(data_args, "max_input_length") or sidecar.get("max_input_length") is None:
        return int(data_args.max_input_length)
    return int(sidecar["max_input_length"])


def run_prediction(
    model_path: str,
    texts: Sequence[str | InputRecord],
    *,
    label_candidates: str | None = None,
    confidence: str | None = None,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    rationale_max_new_tokens: int | None = None,
    device: str | None = None,
    base_model: str | None = None,
) -> list[dict[str, Any]]:
    """Label, confidence and rationale of a saved student for each text (see :func:`predict_texts`).

    Inputs are truncated to the ``max_input_length`` the training run saved in ``hf_cotmi_config.json`` (read
    from the Hub for a repository id, see :func:`read_sidecar`); without that file, to the student's own
    limit (:func:`hf_cotmi.students.input_length_limit`). A decoder-only student trained with
    ``--chat-template`` is prompted with its chat template again. Without ``confidence`` the mode is the
    run's: its candidates, else the mode it measured its ECE with. LoRA adapters load onto ``base_model``
    (``--base-model``) when it is given, instead of the base model their config names (see
    :func:`~hf_cotmi.students.load_student`).

    Candidates confidence without ``label_candidates`` (a run over a column of each example's own candidates,
    CQA's ``choices``, or ``confidence="candidates"``) scores each input's own choices: its record's list in
    the run's column (``choices`` for a run without one), else the ``Answer Choices:`` lines of its text
    (:func:`hf_cotmi.prediction_inputs.question_choices`); each row then also holds its ``choices``.

    Raises:
        CLIUsageError: no text; empty ``label_candidates``; candidates confidence and an input without
            choices (named: ``texts`` may be :class:`~hf_cotmi.data.textfiles.InputRecord` with their line).

    Examples:
        >>> # run_prediction("demo-out", ["mia has 4 pens . mia buys 3 more . ..."])[0]["label"]
        >>> # run_prediction("cqa-out", ["Where?\\nAnswer Choices:\\n(a) sea\\n(b) tree"])[0]["choices"]
    """
    from .prediction_inputs import input_records

    check_confidence_options(confidence, label_candidates)
    if not texts:
        raise CLIUsageError("no input text: give texts as arguments, or --input-file FILE")
    records = input_records(texts)
    sidecar = read_sidecar(model_path)
    mode, candidates, choices = _prediction_candidates(sidecar, records, confidence, label_candidates)
    model, tokenizer, _ = load_student(model_path, for_inference=True, device=device, base_model=base_model)
    rows = predict_texts(
        model,
        tokenizer,
        [record.text for record in records],
        predict_prefix=sidecar.get("predict_prefix", PREDICT_PREFIX),
        explain_prefix=sidecar.get("explain_prefix", EXPLAIN_PREFIX),
        label_max_new_tokens=max_new_tokens
        or label_new_tokens(model, int(sidecar.get("generation_max_length") or 64)),
        rationale_max_new_tokens=rationale_max_new_tokens
        or int(sidecar.get("rationale_max_new_tokens") or 256),
        confidence=mode,
        label_candidates=candidates,
        batch_size=batch_size,
        max_input_length=int(sidecar.get("max_input_length") or input_length_limit(model, tokenizer)),
        chat_template=bool(sidecar.get("chat_template", False)),
        candidates_per_text=choices,
    )
    for row, own in zip(rows, choices or ()):
        row["choices"] = own
    return rows


def _prediction_candidates(
    sidecar: dict[str, Any],
    records: Sequence[InputRecord],
    confidence: str | None,
    label_candidates: str | None,
) -> tuple[str, list[str] | None, list[list[str]] | None]:
    """``(mode, shared candidates, each input's choices)`` of ``predict``: the options given, else the run's.

    Examples:
        >>> run = {"confidence": "candidates", "label_candidates": "choices"}
        >>> _prediction_candidates(run, [InputRecord("q", "line 1", {"choices": ["sea", "tree"]})], None, None)
        ('candidates', None, [['sea', 'tree']])
        >>> _prediction_candidates(run, [InputRecord("q", "line 1")], "sequence", None)
        ('sequence', None, None)
    """
    from .prediction_inputs import choices_per_input

    saved, saved_mode = sidecar.get("label_candidates"), sidecar.get("confidence")
    candidates: list[str] | None = None
    column: str | None = None
    if label_candidates:
        candidates = [c.strip() for c in label_candidates.split(",") if c.strip()]
        if not candidates:
            raise CLIUsageError(f"--label-candidates {label_candidates!r} names no label")
    elif confidence in (None, "candidates") and isinstance(saved, list):
        candidates = [str(c) for c in saved]
    elif confidence in (None, "candidates") and isinstance(saved, str) and saved:
        column = saved  # the run scored each example's own candidates (CQA's choices)
    if confidence:
        mode = confidence
    elif candidates or column:
        mode = "candidates"
    else:  # the mode the run measured its ECE with
        mode = saved_mode if saved_mode in _PLAIN_CONFIDENCE_MODES else "sequence"
    if mode != "candidates":
        return mode, None, None
    if candidates:
        return mode, candidates, None
    if column:
        needed_by = f"the run's confidence is candidates over each question's own {column!r}"
    else:
        column = TASKS["cqa"].candidates_column or "choices"
        needed_by = (
            "--confidence candidates needs --label-candidates (comma-separated labels) "
            "or each input's own choices"
        )
    return mode, None, choices_per_input(records, column, needed_by=needed_by)
