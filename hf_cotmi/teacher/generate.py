"""``generate_rationales``: from inputs (and gold labels) and a teacher to a training file, resumably.

For every input record the teacher is asked ``num_samples`` times with a few-shot chain-of-thought
prompt; each answer is parsed with the DSS rules and normalised per task (:mod:`hf_cotmi.teacher.answers`),
the samples are voted on, and the record is written as one line to the output file (``input``, ``label``,
``rationale``, ``teacher_label`` and ``teacher_*`` metadata; read it with :func:`hf_cotmi.load_cot_dataset`
or ``hf-cotmi train --train-file``) or, when no sample parsed or ``filter="drop"`` rejects it, to the
rejects file. A rerun with the same settings skips the records already in either file
(:mod:`hf_cotmi.teacher.store`).

Examples:
    >>> summary = generate_rationales("inputs.jsonl", "train.jsonl", base_url="http://127.0.0.1:8000/v1",
    ...                               model="teacher", task="arithmetic")  # doctest: +SKIP
    >>> summary.counts()  # doctest: +SKIP
    {'total': 100, 'parsed': 97, 'unparsable': 3, 'agreed': 88, 'dropped': 0, 'written': 97, 'retries': 2}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .answers import (
    TASKS,
    TeacherAnswer,
    answers_agree,
    answers_read_at_end,
    parse_teacher_output,
    vote_answers,
)
from .backends import (
    CutOffText,
    GenerationRequest,
    LocalCausalBackend,
    OpenAICompatibleBackend,
    TeacherBackend,
    TeacherRequestError,
)
from .options import check_max_records, check_output_file, check_positive, refuse_other_teachers_options
from .prompts import choices_in_input, load_prompt_template, render_prompt
from .retrying import RetryPolicy
from .store import (
    INDEX_FIELD,
    SETTINGS_FIELD,
    JsonlAppender,
    ReplyModelCheck,
    SettingsMismatchError,
    check_known_settings,
    check_settings,
    exclusive_output,
    read_done,
    settings_id,
    sort_by_index,
)

__all__ = [
    "FILTERS",
    "GENERATED_FIELDS",
    "SUMMARY_FIELDS",
    "GenerationSummary",
    "TeacherInput",
    "read_teacher_inputs",
    "refuse_other_teachers_options",
    "generate_rationales",
]

logger = logging.getLogger(__name__)

FILTERS: tuple[str, ...] = ("keep", "mark", "drop")
"""What to do with a rationale whose answer disagrees with the gold label: keep it, keep it and mark it
(``agrees_with_label`` column), or drop it (to the rejects file)."""

SUMMARY_FIELDS: tuple[str, ...] = ("total", "parsed", "unparsable", "agreed", "dropped", "written", "retries")
"""The counts of the summary, in the order the command prints them."""

REJECT_UNPARSABLE = "unparsable"
REJECT_DISAGREES = "disagrees_with_label"


@dataclass
class GenerationSummary:
    """What a generation run left in its files (counts over the whole files, resumed records included).

    Attributes:
        total: input records.
        parsed: records with at least one parsed answer.
        unparsable: records where no sample parsed (in the rejects file).
        agreed: parsed records whose (voted) answer agrees with the gold label.
        dropped: parsed records dropped by ``filter="drop"`` (in the rejects file).
        written: lines in the output file.
        retries: requests retried in this run.
        agreement_rate: mean share of samples agreeing with the vote over parsed records (None if none).
        resumed: records found done when the run started (an earlier run's).
        output_file: the output file.
        rejects_file: the rejects file.

    Examples:
        >>> GenerationSummary(total=2, parsed=2, written=2).counts()["written"]
        2
    """

    total: int = 0
    parsed: int = 0
    unparsable: int = 0
    agreed: int = 0
    dropped: int = 0
    written: int = 0
    retries: int = 0
    agreement_rate: float | None = None
    resumed: int = 0
    output_file: str = ""
    rejects_file: str = ""

    def counts(self) -> dict[str, int]:
        """The seven counts of the command's final JSON line."""
        values = asdict(self)
        return {name: values[name] for name in SUMMARY_FIELDS}

    @property
    def complete(self) -> bool:
        """True when every input record is in the output or the rejects file."""
        return self.parsed + self.unparsable == self.total

    @property
    def new_records(self) -> int:
        """Records this run wrote, to the output or the rejects file (the other counts are over both files,
        an earlier run's records included).

        Examples:
            >>> GenerationSummary(total=6, parsed=3, unparsable=3, written=3, resumed=4).new_records
            2
        """
        return self.parsed + self.unparsable - self.resumed


@dataclass(frozen=True)
class TeacherInput:
    """One input record.

    Attributes:
        input: the text the teacher answers.
        label: the gold label (None when the data has none, or the cell is empty).
        extra: the record's other columns, copied to the output.

    Examples:
        >>> TeacherInput("2 + 2 ?", "4").label
        '4'
    """

    input: str
    label: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


GENERATED_FIELDS: dict[str, str] = {
    "input": "the input text",
    "label": "the gold label, or the teacher's answer without one",
    "rationale": "the kept rationale",
    "reason": "why a record was rejected, in the rejects file",
    "agrees_with_label": "the answer agrees with the gold label, with filter='mark'",
    INDEX_FIELD: "the record's position in the input",
    SETTINGS_FIELD: "the hash of the result-changing settings",
    "teacher_model": "the teacher",
    "teacher_task": "the task",
    "teacher_label": "the teacher's voted answer",
    "teacher_label_source": "where label comes from: gold (the input's), or teacher (the input had none)",
    "teacher_answers": "every sample's answer",
    "teacher_agreement": "the voted answer's share of the samples",
    "teacher_rationales": "every rationale agreeing with the vote",
    "teacher_unparsable_outputs": "the samples that did not parse",
    "teacher_outputs": "the teacher's texts, in the rejects file",
    "teacher_parse_errors": "why each sample did not parse, in the rejects file",
}
"""Every field the generator writes into output and rejects lines, with what it holds. An input column of
one of these names (other than the input and label columns read as such) is refused, not overwritten; other
``teacher_*`` columns are not copied (the prefix is kept for the generator's fields)."""


def _is_generated(name: str) -> bool:
    """True for a field name the generator writes, or keeps for itself (the ``teacher_`` prefix)."""
    return name in GENERATED_FIELDS or name.startswith("teacher_")


def _refuse_generated_names(columns: Sequence[str], copied: Sequence[str], where: str) -> None:
    """A ValueError naming the first of ``copied`` (columns copied through) that a generated field would
    overwrite, and how to fix it.

    Examples:
        >>> _refuse_generated_names(["input", "id"], ["id"], "in.jsonl")
        >>> try:
        ...     _refuse_generated_names(["input", "reason"], ["reason"], "in.jsonl")
        ... except ValueError as error:
        ...     print(str(error).split(" (")[0])
        in.jsonl: column 'reason' has the name of a field the generator writes
    """
    for column in copied:
        if column in GENERATED_FIELDS:
            also = (
                f", or read it as the {column} with {column}_column= (--{column}-column)"
                if column in ("input", "label")
                else ""
            )
            raise ValueError(
                f"{where}: column {column!r} has the name of a field the generator writes ({column!r}: "
                f"{GENERATED_FIELDS[column]}), which would replace its values in the output or rejects file; "
                f"rename the column in the input (e.g. to 'my_{column}'){also}. The columns are {list(columns)}"
            )


def read_teacher_inputs(
    source: Any, *, input_column: str = "input", label_column: str | None = "label", task: str | None = None
) -> list[TeacherInput]:
    """Read inputs (and optional gold labels) from a file or a ``datasets.Dataset``.

    Files: ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet``, read as :func:`hf_cotmi.load_cot_dataset`
    reads them. ``label_column`` may be absent from the data when it is the default ``label``. With
    ``task="multiple_choice"`` every input must show its answer choices
    (:func:`hf_cotmi.teacher.prompts.choices_in_input`), as the task's prompt and answer sentence need them.

    Raises:
        ValueError: no ``input_column``, a named ``label_column`` that is missing, a null / non-text
            input, or for ``multiple_choice`` an input without answer choices (the message names the source
            and row).

    Examples:
        >>> from datasets import Dataset
        >>> rows = read_teacher_inputs(Dataset.from_dict({"input": ["1 + 1 ?"], "id": [7]}))
        >>> rows[0].input, rows[0].label, rows[0].extra
        ('1 + 1 ?', None, {'id': 7})
    """
    from datasets import Dataset

    from ..data.custom import as_text_column, read_table_file

    if isinstance(source, Dataset):
        dataset, where = source, "the Dataset"

        def locate(index: int) -> str:
            return f"row {index}"

    elif isinstance(source, (str, os.PathLike)):
        dataset, locate = read_table_file(Path(source))
        where = str(source)
    else:
        raise TypeError(f"source must be a path or a datasets.Dataset, got {type(source).__name__}")
    columns = dataset.column_names
    if input_column not in columns:
        raise ValueError(
            f"{where}: no column {input_column!r} (the input); the columns are {columns}; name the right one "
            "with input_column= (--input-column on the command line)"
        )
    if label_column is not None and label_column not in columns:
        if label_column != "label":
            raise ValueError(
                f"{where}: no column {label_column!r} (the label); the columns are {columns}; name the right "
                "one with label_column= (--label-column on the command line)"
            )
        label_column = None
    for column in (input_column, label_column):
        if column is not None:  # numbers and booleans become text as load_cot_dataset makes them
            dataset = as_text_column(dataset, column, where, locate)
    others = [key for key in columns if key not in (input_column, label_column)]
    _refuse_generated_names(columns, others, where)
    shadowed = [key for key in others if _is_generated(key)]
    if shadowed:
        logger.warning(
            "%s: columns %s are not copied to the output (the teacher_ prefix is kept for the generator's "
            "fields); rename them to keep them",
            where,
            shadowed,
        )
    rows = []
    for number, record in enumerate(dataset):
        text = record[input_column]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(
                f"{where}, {locate(number)}: {input_column!r} is {text!r}; expected a non-empty text"
            )
        label = record[label_column] if label_column else None
        label = None if label is None or not str(label).strip() else str(label)
        extra = {key: record[key] for key in others if not _is_generated(key)}
        for key, value in extra.items():  # refused now, not when the first finished record is written
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{where}, {locate(number)}: column {key!r} holds a {type(value).__name__}, which a JSON "
                    "Lines output cannot hold; convert the column to text or drop it"
                ) from None
        rows.append(TeacherInput(text, label, extra))
    if task == "multiple_choice":
        _refuse_inputs_without_choices(rows, where, locate)
    return rows


def _refuse_inputs_without_choices(
    rows: Sequence[TeacherInput], where: str, locate: Callable[[int], str]
) -> None:
    """A ValueError naming the first multiple-choice input that shows no answer choices (and how many do
    not), before any request: the teacher could only invent a choice, or answer without one (a reject).

    Examples:
        >>> listed = TeacherInput("Where?\\nAnswer Choices:\\n(a) sea\\n(b) desert")
        >>> _refuse_inputs_without_choices([listed], "in.jsonl", lambda i: f"line {i + 1}")
        >>> try:
        ...     _refuse_inputs_without_choices([listed, TeacherInput("Where?")], "in.jsonl", lambda i: f"line {i + 1}")
        ... except ValueError as error:
        ...     print(str(error).split(" (")[0])
        in.jsonl, line 2: the input shows no answer choices
    """
    missing = [number for number, row in enumerate(rows) if not choices_in_input(row.input)]
    if not missing:
        return
    first = missing[0]
    named = ", ".join(locate(number) for number in missing[:5]) + (", ..." if len(missing) > 5 else "")
    raise ValueError(
        f"{where}, {locate(first)}: the input shows no answer choices ({len(missing)} of the {len(rows)} "
        f"records show none: {named}); it is {_shown_input(rows[first].input)}. "
        "task='multiple_choice' (--task multiple_choice) asks the teacher to pick one of the choices the input "
        "lists after the question, on a line 'Answer Choices:' then one line per choice, '(a) ...', '(b) ...' "
        "(hf_cotmi.data.dss.format_cqa_input writes them); add them to the input, or use task='generic' for "
        "questions without choices"
    )


def _shown_input(text: str, limit: int = 80) -> str:
    """``repr`` of an input, cut to ``limit`` characters with ``...``.

    Examples:
        >>> _shown_input("Where do fish live?"), _shown_input("x" * 100, limit=5)
        ("'Where do fish live?'", "'xxxxx...'")
    """
    return repr(text) if len(text) <= limit else repr(text[:limit])[:-1] + "...'"


def _check_teacher(
    backend: TeacherBackend | None,
    base_url: str | None,
    model: str | None,
    teacher_model: str | None,
    options: dict[str, Any],
) -> None:
    """Refuse a choice of teacher :func:`_make_backend` could not build: none or several, a server without its
    model name, a model name without a server, an option the chosen kind of teacher does not read."""
    chosen = [
        name
        for name, value in (("backend", backend), ("base_url", base_url), ("teacher_model", teacher_model))
        if value
    ]
    if len(chosen) != 1:
        raise ValueError(
            "give exactly one teacher: base_url with model (an OpenAI-compatible server), teacher_model "
            f"(a local model), or backend; got {chosen or 'none'}"
        )
    if backend is not None:
        return
    if base_url and not model:
        raise ValueError("base_url needs model: the model name on the server (--model)")
    if not base_url and model:
        raise ValueError(
            "model names the model on a server (with base_url); for a local teacher use teacher_model"
        )
    refuse_other_teachers_options(options, server=bool(base_url))


def _make_backend(
    backend: TeacherBackend | None,
    base_url: str | None,
    model: str | None,
    teacher_model: str | None,
    options: dict[str, Any],
) -> TeacherBackend:
    """The teacher :func:`_check_teacher` accepted: ``backend``, a server's client, or a local model (loaded)."""
    if backend is not None:
        return backend
    common = {key: options[key] for key in ("max_new_tokens", "temperature", "top_p")}
    if base_url:
        return OpenAICompatibleBackend(
            base_url,
            model,
            api=options["api"],
            api_key_env=options["api_key_env"],
            concurrency=options["concurrency"],
            request_timeout=options["request_timeout"],
            retry_policy=options["retry_policy"],
            stop=options["stop"],
            **common,
        )
    return LocalCausalBackend(
        str(teacher_model),
        batch_size=options["batch_size"],
        device=options["device"],
        chat_template_file=options["chat_template_file"],
        use_chat_template=None if options["api"] == "chat" else False,
        **common,
    )


def _settings_known_before_loading(
    base_url: str | None, model: str | None, teacher_model: str | None, options: dict[str, Any]
) -> dict[str, Any]:
    """The settings a teacher given by name will report (:meth:`TeacherBackend.settings`) that are known
    before it is built: its name, length and sampling; a local teacher's chat template is known once its
    tokenizer loads, and the rest is checked then.

    Examples:
        >>> _settings_known_before_loading(None, None, "m", {"max_new_tokens": 8, "temperature": 0.0, "top_p": None})
        {'model': 'm', 'max_new_tokens': 8, 'temperature': 0.0, 'top_p': None}
    """
    return {
        "model": model if base_url else str(teacher_model),
        **{key: options[key] for key in ("max_new_tokens", "temperature", "top_p")},
    }


def _final_record(
    index: int,
    item: TeacherInput,
    outputs: Sequence[str],
    *,
    task: str,
    filter: str,
    teacher: str,
    settings_hash: str,
) -> tuple[str, dict[str, Any]]:
    """("output" | "rejects", line) for one record whose samples are all in."""
    choices = choices_in_input(item.input) if task == "multiple_choice" else None
    answers = [_parse_sample(task, text, choices) for text in outputs]
    vote = vote_answers(task, [answer.label or None for answer in answers])
    meta = {
        INDEX_FIELD: index,
        "teacher_model": teacher,
        "teacher_task": task,
        "teacher_answers": [answer.label or None for answer in answers],
        "teacher_agreement": vote.agreement,
        SETTINGS_FIELD: settings_hash,
    }
    if not vote.winner:
        line = {
            **item.extra,
            "input": item.input,
            "label": item.label,
            "reason": REJECT_UNPARSABLE,
            "teacher_outputs": list(outputs),
            "teacher_parse_errors": [answer.reason for answer in answers],
            **meta,
        }
        return "rejects", line
    first = vote.winners[0]
    agrees = answers_agree(task, vote.winner, item.label) if item.label is not None else None
    line = {
        **item.extra,
        "input": item.input,
        "label": item.label if item.label is not None else vote.winner,
        "rationale": answers[first].rationale,
        "teacher_label": vote.winner,
        "teacher_label_source": "gold" if item.label is not None else "teacher",
        **meta,
    }
    if len(outputs) > 1:
        line["teacher_rationales"] = [answers[i].rationale for i in vote.winners]
    unparsed = [text for text, answer in zip(outputs, answers) if not answer.parsed]
    if unparsed:
        line["teacher_unparsable_outputs"] = unparsed
    if filter == "mark":
        line["agrees_with_label"] = agrees
    if filter == "drop" and agrees is False:
        return "rejects", {**line, "reason": REJECT_DISAGREES}
    return "output", line


_CUT_OFF = "the text was cut off at max_new_tokens"


def _parse_sample(task: str, text: str, choices: Sequence[str] | None) -> TeacherAnswer:
    """:func:`parse_teacher_output` of one sample; a :class:`CutOffText` keeps its answer only where the text
    it cut off could not give another one, and a reason says the text was cut.

    The rule: the whole lines (the text without its cut last line) must give the same answer as the text, and
    the text the answer is read from must end before the cut (at a next example's ``Q:``, or ``Premise:`` for
    nli and generic: :func:`~hf_cotmi.teacher.answers.answers_read_at_end`). Where it runs on into the
    cut, the uncut text could have gone on to a second answer sentence, or the cut one could have extended the
    answer (``So the answer is 12`` of ``... 125.`` after a line saying 12), which the parser refuses as two
    answers; so such a sample is refused too, however its lines before the cut read.

    Examples:
        >>> _parse_sample("generic", CutOffText("It is after Wednesday. So the answer is Thurs"), None).reason
        'the text was cut off at max_new_tokens in the line of its answer sentence; raise max_new_tokens'
        >>> _parse_sample("generic", CutOffText("Wednesday is before. So the answer is Thursday.\\nQ: Wh"), None).label
        'thursday'
        >>> _parse_sample("generic", CutOffText("Add. So the answer is 12.\\nSo the answer is 12"), None).label
        ''
    """
    answer = parse_teacher_output(task, text, choices=choices)
    if not isinstance(text, CutOffText):
        return answer
    if not answer.parsed:
        reason = f"{answer.reason}; {_CUT_OFF}"
    else:
        whole_lines = parse_teacher_output(task, text[: text.rfind("\n") + 1], choices=choices)
        if not whole_lines.parsed or whole_lines.label != answer.label:
            reason = f"{_CUT_OFF} in the line of its answer sentence"
        elif answers_read_at_end(task, text):  # the rest of the text could give another answer
            reason = f"{_CUT_OFF} after its answer, where a later answer sentence would still be read"
        else:
            return answer
    return TeacherAnswer("", "", f"{reason}; raise max_new_tokens")


def _agrees(task: str, line: dict[str, Any]) -> bool:
    if line.get("teacher_label_source") != "gold":
        return False
    return answers_agree(task, str(line["teacher_label"]), str(line["label"]))


def _summarise(
    total: int, outputs: dict[int, dict], rejects: dict[int, dict], task: str, retries: int, resumed: int
) -> GenerationSummary:
    dropped = [line for line in rejects.values() if line.get("reason") == REJECT_DISAGREES]
    parsed = list(outputs.values()) + dropped
    agreements = [float(line.get("teacher_agreement", 0.0)) for line in parsed]
    return GenerationSummary(
        total=total,
        parsed=len(parsed),
        unparsable=sum(1 for line in rejects.values() if line.get("reason") == REJECT_UNPARSABLE),
        agreed=sum(_agrees(task, line) for line in parsed),
        dropped=len(dropped),
        written=len(outputs),
        retries=retries,
        agreement_rate=sum(agreements) / len(agreements) if agreements else None,
        resumed=resumed,
    )


def _check_distinct_files(source: Any, output_path: Path, rejects_path: Path) -> None:
    """Refuse an output or rejects file that is the source file, or one file for both."""
    named = {"output_file": output_path, "rejects_file": rejects_path}
    if isinstance(source, (str, os.PathLike)):
        named = {"the source": Path(source), **named}
    seen: dict[Path, str] = {}
    for role, path in named.items():
        key = path.resolve()
        if key in seen:
            raise ValueError(f"{role} {str(path)!r} is also {seen[key]}; give each its own file")
        seen[key] = role


def _default_rejects(output_file: Path) -> Path:
    name = output_file.name
    stem, suffix = (name[: -len(".jsonl")], ".jsonl") if name.endswith(".jsonl") else (name, ".jsonl")
    return output_file.with_name(f"{stem}.rejects{suffix}")


_MISSING = object()


def _shown(name: str, value: Any) -> str:
    return f"no {name!r}" if value is _MISSING else f"{name} {value!r}"


def _comparable(value: Any) -> str:
    """``value`` as JSON with sorted keys: a line read back and the input's record compare by content."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _differing_field(line: dict[str, Any], item: TeacherInput) -> tuple[str, Any, Any] | None:
    """The first field where a done line and its input record differ: (name, line's, input's), else None.

    Compared: the input, the gold label (a line whose label is the teacher's had no gold label), and the
    columns copied through (every field but the generator's own, :data:`GENERATED_FIELDS`).

    Examples:
        >>> line = {"input": "a?", "label": "2", "teacher_label_source": "gold", "id": 1}
        >>> _differing_field(line, TeacherInput("a?", "2", {"id": 1})) is None
        True
        >>> _differing_field(line, TeacherInput("a?", "3", {"id": 1}))
        ('label', '2', '3')
    """
    if line.get("input") != item.input:
        return "input", line.get("input", _MISSING), item.input
    gold = line.get("label") if line.get("teacher_label_source", "gold") == "gold" else None
    if gold != item.label:
        return "label", gold, item.label
    copied = {key: value for key, value in line.items() if not _is_generated(key)}
    for key in sorted(set(copied) | set(item.extra)):
        ours, theirs = copied.get(key, _MISSING), item.extra.get(key, _MISSING)
        if ours is _MISSING or theirs is _MISSING or _comparable(ours) != _comparable(theirs):
            return key, ours, theirs
    return None


def _check_resumable(
    done: dict[int, dict], inputs: Sequence[TeacherInput], where: Path, max_records: int | None = None
) -> None:
    for index, line in done.items():
        if max_records is not None and index >= max_records:
            raise ValueError(
                f"{where} already holds {INDEX_FIELD} {index}, beyond --max-records {max_records}; rerun with "
                "a larger --max-records (or without it), or use another output file"
            )
        changed = "the input changed since this file was written. Use another output file"
        if index >= len(inputs):
            raise ValueError(
                f"{where}: the line for {INDEX_FIELD} {index} is beyond the end of the input ({len(inputs)} "
                f"records); {changed}"
            )
        differing = _differing_field(line, inputs[index])
        if differing is not None:
            name, ours, theirs = differing
            raise ValueError(
                f"{where}: the line for {INDEX_FIELD} {index} has {_shown(name, ours)}, but the input's record "
                f"{index} has {_shown(name, theirs)}; {changed}"
            )


def _attach_summary(error: BaseException, summary: GenerationSummary) -> None:
    """Set ``error.summary`` (what the files hold when the run stopped), where the error type allows it."""
    try:
        error.summary = summary  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - an exception type with __slots__
        logger.debug("could not attach the summary to %s", type(error).__name__)


def _without_lone_surrogates(text: str, index: int) -> str:
    """``text`` with each lone UTF-16 surrogate (which UTF-8 cannot hold) replaced by U+FFFD, with a warning.

    A server's JSON may carry one escaped (``"\\ud83d"``, an emoji cut at the token limit); written as it
    is, the line could not be encoded, on every rerun.

    Examples:
        >>> _without_lone_surrogates("a \\ud83d\\ude00 b", 0), _without_lone_surrogates("c \\ud83d", 0)
        ('a 😀 b', 'c �')
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        logger.warning(
            "record %d (%s %d): the teacher's text holds a lone UTF-16 surrogate, which UTF-8 cannot hold; "
            "written as U+FFFD",
            index,
            INDEX_FIELD,
            index,
        )
        # through UTF-16, a surrogate pair becomes its character and a lone surrogate U+FFFD
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _check_run_options(task: str, filter: str, num_samples: int, max_records: int | None) -> None:
    """Refuse an unknown task or filter, a ``num_samples`` that is not positive, a negative ``max_records``."""
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not a built-in task; expected one of {', '.join(TASKS)}")
    if filter not in FILTERS:
        raise ValueError(f"filter={filter!r} must be one of {', '.join(FILTERS)}")
    check_positive("num_samples", num_samples)
    check_max_records(max_records)


def _sampling_temperature(temperature: float | None, num_samples: int) -> float:
    """``temperature`` as a float, by default 0 (greedy) for one sample and 0.7 for several; a warning when
    several samples would all be greedy.

    Examples:
        >>> _sampling_temperature(None, 1), _sampling_temperature(None, 3), _sampling_temperature(1, 1)
        (0.0, 0.7, 1.0)
    """
    if temperature is None:
        temperature = 0.0 if num_samples == 1 else 0.7
    # as the command passes them: temperature=0 and 0.0 must not hash as different settings
    temperature = float(temperature)
    if num_samples > 1 and temperature == 0:
        logger.warning("num_samples=%d with temperature 0: greedy samples are all alike", num_samples)
    return temperature


def _first_inputs(
    source: Any, input_column: str, label_column: str | None, max_records: int | None, task: str
) -> list[TeacherInput]:
    """The input records (:func:`read_teacher_inputs`, checked for ``task``), only the first ``max_records``
    when it is given."""
    inputs = read_teacher_inputs(source, input_column=input_column, label_column=label_column, task=task)
    if max_records is not None:
        inputs = inputs[:max_records]
    return inputs


def _run_settings(
    backend_settings: dict[str, Any],
    *,
    task: str,
    template: str,
    filter: str,
    num_samples: int,
    seed: int | None,
) -> dict[str, Any]:
    """The result-changing settings recorded with the output: the backend's, then the run's (the prompt by
    its SHA-256; ``seed`` None when decoding greedily)."""
    return {
        **backend_settings,
        "task": task,
        "prompt_sha256": hashlib.sha256(template.encode("utf-8")).hexdigest(),
        "filter": filter,
        "num_samples": num_samples,
        "seed": seed,
    }


def _read_done_lines(
    output_path: Path, rejects_path: Path, inputs: Sequence[TeacherInput], max_records: int | None
) -> tuple[dict[int, dict], dict[int, dict]]:
    """The lines already in the output and the rejects file, by index, once checked to belong together (no
    index in both) and to ``inputs``."""
    outputs_done, rejects_done = read_done(output_path), read_done(rejects_path)
    overlap = set(outputs_done.records) & set(rejects_done.records)
    if overlap:
        raise ValueError(
            f"{output_path} and {rejects_path} both hold {INDEX_FIELD} {sorted(overlap)[:5]}; "
            "they do not belong together"
        )
    _check_resumable(outputs_done.records, inputs, output_path, max_records)
    _check_resumable(rejects_done.records, inputs, rejects_path, max_records)
    return dict(outputs_done.records), dict(rejects_done.records)


def _request_units(
    pending: Sequence[int],
    inputs: Sequence[TeacherInput],
    *,
    template: str,
    task: str,
    num_samples: int,
    seed: int | None,
    batch_size: int,
) -> Iterator[list[GenerationRequest]]:
    """The requests of the ``pending`` records, ``num_samples`` each (seeded ``seed + index * num_samples +
    sample``, unseeded when ``seed`` is None), in units of at most ``batch_size``; prompts are rendered as
    the units are taken.

    Examples:
        >>> units = _request_units([0, 1], [TeacherInput("a"), TeacherInput("b")], template="Q: {input}\\nA:",
        ...                        task="generic", num_samples=2, seed=10, batch_size=3)
        >>> [[(r.index, r.sample, r.seed) for r in unit] for unit in units]
        [[(0, 0, 10), (0, 1, 11), (1, 0, 12)], [(1, 1, 13)]]
    """
    unit: list[GenerationRequest] = []
    for index in pending:
        prompt = render_prompt(template, inputs[index].input, task)
        for sample in range(num_samples):
            request_seed = None if seed is None else seed + index * num_samples + sample
            unit.append(GenerationRequest(index, sample, prompt, request_seed))
            if len(unit) == batch_size:
                yield unit
                unit = []
    if unit:
        yield unit


class _Progress:
    """The tqdm progress bar of a run, with the counts of its files (worked out at most twice a second: over
    every line, per record it would grow with n squared)."""

    def __init__(
        self, total: int, resumed: int, enabled: bool, summarise: Callable[[], GenerationSummary]
    ) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, initial=resumed, unit="record", desc="rationales", disable=not enabled)
        self._enabled = enabled
        self._summarise = summarise
        self._shown_at = float("-inf")

    def show(self, summary: GenerationSummary | None = None) -> None:
        """Show the counts of ``summary`` (else of the files now, unless they were shown less than 0.5 s ago)."""
        if not self._enabled or (summary is None and time.monotonic() - self._shown_at < 0.5):
            return
        self._shown_at = time.monotonic()
        counts = (summary or self._summarise()).counts()
        self._bar.set_postfix(
            {key: counts[key] for key in ("parsed", "unparsable", "agreed", "dropped", "retries")}
        )

    def record_done(self) -> None:
        """Count one more record done."""
        self._bar.update(1)
        self.show()

    def close(self, summary: GenerationSummary) -> None:
        """Show the final counts and close the bar."""
        self.show(summary)
        self._bar.close()


class _RecordWriter:
    """Gathers each record's samples as they come and, once all are in, writes its line to the output or the
    rejects file (:func:`_final_record`); ``outputs`` and ``rejects`` hold every line of each file by index,
    those found done when the run started too."""

    def __init__(
        self,
        inputs: Sequence[TeacherInput],
        outputs: dict[int, dict],
        rejects: dict[int, dict],
        output_writer: JsonlAppender,
        rejects_writer: JsonlAppender,
        *,
        num_samples: int,
        task: str,
        filter: str,
        teacher: str,
        settings_hash: str,
    ) -> None:
        self.inputs, self.outputs, self.rejects = inputs, outputs, rejects
        self.output_writer, self.rejects_writer = output_writer, rejects_writer
        self.num_samples = num_samples
        self.line_options = {
            "task": task,
            "filter": filter,
            "teacher": teacher,
            "settings_hash": settings_hash,
        }
        self._samples: dict[int, dict[int, str]] = {}

    def take(self, request: GenerationRequest, text: str) -> bool:
        """Keep one sample's text; True when it was its record's last, and the record is written."""
        samples = self._samples.setdefault(request.index, {})
        kept = _without_lone_surrogates(text, request.index)
        samples[request.sample] = CutOffText(kept) if isinstance(text, CutOffText) else kept
        if len(samples) < self.num_samples:
            return False
        del self._samples[request.index]
        where, line = _final_record(
            request.index,
            self.inputs[request.index],
            [samples[s] for s in range(self.num_samples)],
            **self.line_options,
        )
        self._write(where, request.index, line)
        return True

    def _write(self, where: str, index: int, line: dict[str, Any]) -> None:
        if where == "output":
            self.output_writer.write(line)
            self.outputs[index] = line
        else:
            self.rejects_writer.write(line)
            self.rejects[index] = line


def _unit_texts(
    future: Future, unit: Sequence[GenerationRequest]
) -> tuple[list[str], None] | tuple[None, Exception]:
    """``(texts, None)`` for a unit the teacher finished, one text per request; ``(None, error)`` when it
    failed or returned another number of texts."""
    try:
        texts = future.result()
    except Exception as error:
        return None, error
    if len(texts) != len(unit):
        return None, TeacherRequestError(f"the teacher returned {len(texts)} texts for {len(unit)} prompts")
    return texts, None


def _send_units(
    teacher: TeacherBackend,
    work: Iterator[list[GenerationRequest]],
    take: Callable[[list[GenerationRequest], list[str]], None],
) -> Exception | None:
    """Send the units of ``work`` to the teacher, at most ``teacher.concurrency`` at once, handing the texts of
    each to ``take`` as it finishes.

    The first failure of a unit (the teacher's error, a wrong number of texts) stops the sending: the units
    in flight finish and are taken, then the failure is returned (None when there was none). An exception
    raised meanwhile (Ctrl-C, a write error in ``take``) cancels a server teacher's pending retries and is
    raised at once, without waiting for the requests in flight.
    """
    # a server backend stops its retries when the run ends by an exception; a run starts it afresh
    cancel = teacher.cancel if isinstance(teacher, OpenAICompatibleBackend) else None
    if cancel is not None:
        cancel(False)
    # A server's requests run in daemon threads: after Ctrl-C the process exits without waiting for the
    # answers in flight (up to request_timeout), which nobody would write. A local model's generate keeps
    # to the executor's threads, which the interpreter waits for (native code must not be cut off at exit).
    executor = (
        None
        if cancel is not None
        else ThreadPoolExecutor(max_workers=teacher.concurrency, thread_name_prefix="teacher")
    )
    in_flight: dict[Future, list[GenerationRequest]] = {}
    failure: Exception | None = None
    stopped = False  # by an exception, while the run was in progress

    def submit_next() -> None:
        unit = next(work, None)
        if unit is not None:
            future = (
                _start_daemon_thread(teacher.generate, unit)
                if executor is None
                else executor.submit(teacher.generate, unit)
            )
            in_flight[future] = unit

    try:
        for _ in range(teacher.concurrency):
            submit_next()
        while in_flight:
            finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for future in finished:
                unit = in_flight.pop(future)
                texts, error = _unit_texts(future, unit)
                if texts is None:
                    # stop sending; let what is in flight finish and be written
                    failure = failure or error
                    continue
                take(unit, texts)
                if failure is None:
                    submit_next()
    except BaseException:
        # Ctrl-C, a write error (a full disk), ...: the worker threads must not go on retrying
        # before the process exits, nor the requests in flight be waited for
        stopped = True
        if cancel is not None:
            cancel()
        raise
    finally:
        if executor is not None:
            executor.shutdown(wait=failure is not None and not stopped, cancel_futures=True)
    return failure


def _start_daemon_thread(
    function: Callable[[list[GenerationRequest]], list[str]], unit: list[GenerationRequest]
) -> Future:
    """Run ``function(unit)`` in a new daemon thread named ``teacher-...``; the Future holds its result or error.

    Unlike a ``ThreadPoolExecutor``'s threads, the interpreter does not wait for it when the process exits.
    """
    future: Future = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(function(unit))
        except BaseException as error:  # handed to whoever reads the Future
            future.set_exception(error)

    name = f"teacher-{unit[0].index}-{unit[0].sample}" if unit else "teacher"
    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def _as_run_error(failure: Exception, summary: GenerationSummary) -> Exception:
    """``failure`` as a TeacherRequestError (a local model's error, an odd reply, ... wrapped, with it as the
    cause), carrying ``summary``; a SettingsMismatchError (a reply naming another model) stays as it is."""
    if not isinstance(failure, (TeacherRequestError, SettingsMismatchError)):
        wrapped = TeacherRequestError(f"{type(failure).__name__}: {failure}")
        wrapped.__cause__ = failure
        failure = wrapped
    _attach_summary(failure, summary)
    return failure


def generate_rationales(
    source: Any,
    output_file: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    model: str | None = None,
    teacher_model: str | None = None,
    backend: TeacherBackend | None = None,
    task: str = "generic",
    template_file: str | os.PathLike[str] | None = None,
    filter: str = "keep",
    num_samples: int = 1,
    temperature: float | None = None,
    top_p: float | None = None,
    max_new_tokens: int = 256,
    concurrency: int = 4,
    batch_size: int = 8,
    api: str = "chat",
    api_key_env: str = "OPENAI_API_KEY",
    request_timeout: float = 120.0,
    max_retries: int = 6,
    max_retry_after: float = 300.0,
    retry_policy: RetryPolicy | None = None,
    stop: Sequence[str] | None = None,
    seed: int = 0,
    rejects_file: str | os.PathLike[str] | None = None,
    force: bool = False,
    input_column: str = "input",
    label_column: str | None = "label",
    max_records: int | None = None,
    device: str | None = None,
    chat_template_file: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> GenerationSummary:
    """Ask a teacher for chain-of-thought rationales and write a training file, resumably.

    Give one teacher: ``base_url`` and ``model`` (any OpenAI-compatible server), ``teacher_model`` (a local
    Hugging Face causal model, batched ``generate`` with left padding), or a ready ``backend``.

    Each record is asked ``num_samples`` times (separate requests, seeded ``seed + index * num_samples +
    sample`` when sampling); the answers are parsed (:func:`hf_cotmi.teacher.answers.parse_teacher_output`)
    and voted on, and the first rationale that agrees with the vote is kept (all of them in
    ``teacher_rationales`` when ``num_samples > 1``). Output lines hold ``input``, ``label`` (the gold label,
    or the teacher's when there is none), ``rationale``, ``teacher_label``, ``teacher_label_source``,
    ``teacher_answers``, ``teacher_agreement`` (share of samples agreeing with the vote),
    ``teacher_model``, ``teacher_task``, ``source_index``, ``teacher_settings_id``, the input's other
    columns, and with ``filter="mark"`` ``agrees_with_label``. Records where no sample parsed, and with
    ``filter="drop"`` those whose answer disagrees with the gold label, go to the rejects file with a
    ``reason`` and the teacher's raw texts.

    Lines are appended and flushed as records finish; a rerun skips records already in either file, so a
    crash loses only the requests in flight. A rerun checks both files, and the settings known before the
    teacher is built, before a local teacher loads or a server is asked. Settings that change results
    (teacher, prompt, task, filter, sampling, ``max_new_tokens``, ``num_samples``, ``seed``) are stored in
    ``<output>.settings.json``; a run with other settings refuses to append unless ``force``. So does a run
    whose server replies as another model (the ``model`` field of its replies) than the one the output was
    made from: the name asked for tells servers apart no better than their URL. When every record is done
    both files are put in input order.

    Args:
        source: a ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` file or a ``datasets.Dataset`` with an
            input column and optionally a label column.
        output_file: the JSON Lines training file to write, named ``.jsonl`` (or ``.json``); appended to when
            it exists.
        base_url: root of an OpenAI-compatible API, e.g. ``http://127.0.0.1:8000/v1``.
        model: the model name on that server.
        teacher_model: a local causal model (Hub name or folder) instead of a server.
        backend: a ready :class:`~hf_cotmi.teacher.backends.TeacherBackend` instead of either (its own
            sampling and length settings apply; its ``settings()["temperature"]`` decides whether requests are seeded).
        task: ``nli``, ``multiple_choice``, ``arithmetic`` or ``generic``: prompt, parsing, normalisation.
        template_file: your own prompt template (text with ``{input}`` once) instead of the shipped one.
        filter: ``keep``, ``mark`` or ``drop`` rationales whose answer disagrees with the gold label.
        num_samples: samples per record for self-consistency (majority vote).
        temperature: sampling temperature (default 0, greedy, for one sample; 0.7 for several).
        top_p: nucleus sampling (None: the teacher's default).
        max_new_tokens: longest completion.
        concurrency: server requests in flight at once.
        batch_size: prompts per ``generate`` call of a local teacher.
        api: ``chat`` (chat template of the server or model) or ``completions`` (raw prompt).
        api_key_env: environment variable with the server's API key (never logged or written).
        request_timeout: seconds a server request may take in all (connecting, the teacher's generation,
            the whole reply) before it is given up on and retried (``math.inf``, or above
            ``threading.TIMEOUT_MAX``, some 292 years: no limit).
        max_retries: retries per request (timeouts, connection errors, 429, 5xx).
        max_retry_after: longest wait, in seconds, that a server's ``Retry-After`` can ask for; a longer
            one is capped to it, with a warning (``math.inf``: wait as long as the server asks).
        retry_policy: full control of backoff (overrides ``max_retries`` and ``max_retry_after``).
        stop: stop sequences for server requests.
        seed: base seed of sampled requests.
        rejects_file: where rejected records go (default ``<output stem>.rejects.jsonl``).
        force: append even when the existing output was made with other settings.
        input_column: the input column.
        label_column: the gold label column (None: no gold labels; a missing default ``label`` is fine).
        max_records: use only the first N input records.
        device: device of a local teacher (default: CUDA when available).
        chat_template_file: a Jinja chat template for a local teacher whose tokenizer has none.
        progress: show a tqdm progress bar with the counts.

    Returns:
        A :class:`GenerationSummary` of both files.

    Raises:
        TeacherRequestError: a request failed for good; what finished before is in the files, and
            rerunning the same call continues.
        OSError: a record could not be written (a full disk); the requests in flight are abandoned and a
            server teacher's pending retries cancelled. This and any other exception raised while the run
            is in progress (Ctrl-C included) carries the :class:`GenerationSummary` as ``error.summary``,
            as ``TeacherRequestError`` does.
        SettingsMismatchError: the output was made with other settings and ``force`` is False; or a server's
            reply names another model (its ``model`` field) than the replies the output was made from
            (recorded in ``<output>.settings.json`` at the first reply; checked on every reply, a rerun's
            too): the run stops, what was written before is kept, and the error carries the summary.
        ValueError: an ``output_file`` not named ``.jsonl`` or ``.json``, which ``hf-cotmi train
            --train-file`` would not read as JSON Lines; a line already in the output or rejects file no
            longer matches its input record (the
            input, gold label or a copied column changed; the message names the record and the field),
            an input column has the name of a field the generator writes (:data:`GENERATED_FIELDS`), or for
            ``task="multiple_choice"`` an input shows no answer choices (refused before any request).

    Examples:
        >>> summary = generate_rationales("cqa.jsonl", "cqa-rationales.jsonl",
        ...                               teacher_model="Qwen/Qwen2.5-1.5B-Instruct",
        ...                               task="multiple_choice", filter="drop")  # doctest: +SKIP
    """
    _check_run_options(task, filter, num_samples, max_records)
    check_output_file(output_file)
    temperature = _sampling_temperature(temperature, num_samples)
    top_p = None if top_p is None else float(top_p)
    policy = retry_policy or RetryPolicy(max_retries=max_retries, max_retry_after=max_retry_after)
    template = load_prompt_template(task, template_file)
    inputs = _first_inputs(source, input_column, label_column, max_records, task)
    teacher_options = {
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "api": api,
        "api_key_env": api_key_env,
        "concurrency": concurrency,
        "request_timeout": request_timeout,
        "max_retry_after": max_retry_after,
        "retry_policy": policy,
        "stop": stop,
        "batch_size": batch_size,
        "device": device,
        "chat_template_file": chat_template_file,
    }
    _check_teacher(backend, base_url, model, teacher_model, teacher_options)
    output_path = Path(output_file)
    rejects_path = Path(rejects_file) if rejects_file is not None else _default_rejects(output_path)
    _check_distinct_files(source, output_path, rejects_path)
    with exclusive_output(output_path):  # a second run on the same output would write its records again
        # the files are checked before the teacher loads (minutes for a big local model) or is asked
        outputs, rejects = _read_done_lines(output_path, rejects_path, inputs, max_records)
        existing = [*outputs.values(), *rejects.values()]
        run = {"task": task, "template": template, "filter": filter, "num_samples": num_samples}
        if backend is None:
            known = _settings_known_before_loading(base_url, model, teacher_model, teacher_options)
            known = _run_settings(known, **run, seed=seed if temperature > 0 else None)
            check_known_settings(output_path, known, existing, force=force)
        teacher = _make_backend(backend, base_url, model, teacher_model, teacher_options)
        backend_settings = teacher.settings()
        temperature = float(backend_settings.get("temperature", temperature) or 0.0)  # a given backend's own
        run_seed = seed if temperature > 0 else None
        settings = _run_settings(backend_settings, **run, seed=run_seed)
        settings_hash = settings_id(settings)
        teacher_name = str(settings.get("model", type(teacher).__name__))
        replies = check_settings(output_path, settings, existing, force=force)
        resumed = len(outputs) + len(rejects)
        retries_before = teacher.retries
        work = _request_units(
            [index for index in range(len(inputs)) if index not in outputs and index not in rejects],
            inputs,
            template=template,
            task=task,
            num_samples=num_samples,
            seed=run_seed,
            batch_size=teacher.batch_size,
        )

        def summarise() -> GenerationSummary:
            return _summarise(len(inputs), outputs, rejects, task, teacher.retries - retries_before, resumed)

        progress_bar = _Progress(len(inputs), resumed, progress, summarise)
        progress_bar.show()
        stopped_by: BaseException | None = None  # what ended the run while it was in progress
        with JsonlAppender(output_path) as output_writer, JsonlAppender(rejects_path) as rejects_writer:
            records = _RecordWriter(
                inputs,
                outputs,
                rejects,
                output_writer,
                rejects_writer,
                num_samples=num_samples,
                task=task,
                filter=filter,
                teacher=teacher_name,
                settings_hash=settings_hash,
            )

            def take(unit: list[GenerationRequest], texts: list[str]) -> None:
                for request, text in zip(unit, texts):
                    if records.take(request, text):
                        progress_bar.record_done()

            server = teacher if isinstance(teacher, OpenAICompatibleBackend) else None
            if server is not None:  # each reply must name the model the output was made from
                server.reply_model_check = ReplyModelCheck(
                    output_path, settings, replies, base_url=server.base_url, force=force
                )
            try:
                failure = _send_units(teacher, work, take)
            except BaseException as error:
                stopped_by = error
                raise
            finally:
                if server is not None:
                    server.reply_model_check = None
                summary = summarise()  # once: the last progress counts and the result
                summary.output_file, summary.rejects_file = str(output_path), str(rejects_path)
                progress_bar.close(summary)
                if stopped_by is not None:  # the summary survives any failure (the command prints it)
                    _attach_summary(stopped_by, summary)

        if failure is not None:
            raise _as_run_error(failure, summary)
        if summary.complete:
            sort_by_index(output_path)
            sort_by_index(rejects_path)
        return summary
