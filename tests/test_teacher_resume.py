"""Teacher generation's files under faults: torn and corrupt lines, edited inputs, odd texts, write errors."""

from __future__ import annotations

import errno
import json
import logging
import os
import re

import pytest

from hf_cotmi import generate_rationales
from hf_cotmi.data.jsonfiles import DataFormatError
from hf_cotmi.teacher import store
from hf_cotmi.teacher.store import check_settings, read_done, sort_by_index


class _SumTeacher:
    """A backend in code: answers 'What is A + 1?' with the sum, or with ``reply(request)`` when given."""

    batch_size, concurrency, retries = 4, 1, 0

    def __init__(self, reply=None) -> None:
        self.reply, self.asked = reply, []

    def generate(self, requests):
        self.asked.extend(request.index for request in requests)
        if self.reply is not None:
            return [self.reply(request) for request in requests]
        return [
            f"Adding. The answer is ({r.prompt.rsplit('What is ', 1)[-1].split('?')[0]})." for r in requests
        ]

    def settings(self):
        return {"backend": "sum", "model": "sum"}


def _write_inputs(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _rows(count):
    return [{"input": f"What is {a} + 1?", "label": f"{a + 1}", "id": f"q{a}"} for a in range(count)]


def _generate(source, out, teacher=None, **options):
    return generate_rationales(
        source, out, backend=teacher or _SumTeacher(), task="arithmetic", progress=False, **options
    )


def test_a_middle_line_that_is_not_utf8_is_refused_naming_the_file_and_line(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"source_index": 0}\n{"source_index": 1, "input": "\xff"}\n{"source_index": 2}\n')
    before = path.read_bytes()
    with pytest.raises(DataFormatError, match=r"out\.jsonl, line 2: byte 0xff at column 31 is not UTF-8"):
        read_done(path)
    assert path.read_bytes() == before


def test_a_last_line_without_its_newline_is_kept_and_a_foreign_one_line_file_is_left_whole(tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_inputs(source, _rows(4))
    _generate(source, out)
    reference = out.read_bytes()
    out.write_bytes(reference[:-1])  # the record is whole, only its newline is missing (an editor saved it)
    teacher = _SumTeacher()
    summary = _generate(source, out, teacher)
    assert teacher.asked == [] and summary.resumed == 4 and out.read_bytes() == reference
    # a user's one-line data file given as the output by mistake: refused, not emptied
    foreign = tmp_path / "data.jsonl"
    foreign.write_bytes(b'{"input": "What is 1 + 1?", "label": "2"}')
    with pytest.raises(DataFormatError, match=r"data\.jsonl, line 1: expected a JSON object with an integer"):
        _generate(source, foreign)
    assert foreign.read_bytes() == b'{"input": "What is 1 + 1?", "label": "2"}'


def test_a_negative_source_index_is_refused(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"source_index": 0}\n{"source_index": -1}\n')
    with pytest.raises(DataFormatError, match=r"out\.jsonl, line 2: expected a JSON object with an integer"):
        read_done(path)


@pytest.mark.parametrize(
    "edit,message",
    [
        ({"label": "99"}, r"source_index 2 has label '3', but the input's record 2 has label '99'"),
        ({"label": ""}, r"source_index 2 has label '3', but the input's record 2 has label None"),
        ({"id": "renamed"}, r"source_index 2 has id 'q2', but the input's record 2 has id 'renamed'"),
        ({"note": "new column"}, r"source_index 0 has no 'note', but the input's record 0 has note None"),
    ],
)
def test_a_record_edited_in_its_label_or_other_columns_is_noticed_on_resume(tmp_path, edit, message):
    # only the input text was compared: a corrected gold label was silently left out of the resumed file
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = _rows(4)
    _write_inputs(source, rows)
    _generate(source, out)
    rows[2] = {**rows[2], **edit}
    _write_inputs(source, rows)
    with pytest.raises(ValueError, match=message + r"; the input changed since this file was written"):
        _generate(source, out)


def test_a_record_removed_from_the_input_is_named(tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_inputs(source, _rows(4))
    _generate(source, out)
    _write_inputs(source, _rows(3))
    with pytest.raises(
        ValueError, match=r"the line for source_index 3 is beyond the end of the input \(3 records\)"
    ):
        _generate(source, out)


def test_a_column_removed_from_the_input_is_noticed_in_a_rejects_line(tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = _rows(3)
    _write_inputs(source, rows)
    _generate(source, out, _SumTeacher(reply=lambda request: "I cannot decide."))  # all rejected
    _write_inputs(source, [{key: value for key, value in row.items() if key != "id"} for row in rows])
    with pytest.raises(
        ValueError, match=r"out\.rejects\.jsonl: the line for source_index 0 has id 'q0', but the"
    ):
        _generate(source, out)


def test_a_resume_without_edits_still_passes_with_every_kind_of_line(tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = _rows(6)
    rows[1]["label"] = "0"  # disagrees: dropped to the rejects file
    rows[4].pop("label")  # no gold label: the teacher's
    rows[5]["nested"] = {"b": [1, 2.5, None], "a": "x"}
    _write_inputs(source, rows)

    def reply(request):
        return "I cannot decide." if request.index == 3 else _SumTeacher().generate([request])[0]

    _generate(source, out, _SumTeacher(reply=reply), filter="drop", max_records=5)
    teacher = _SumTeacher(reply=reply)
    summary = _generate(source, out, teacher, filter="drop")
    assert teacher.asked == [5] and summary.resumed == 5 and summary.complete


def test_a_teacher_text_with_a_lone_surrogate_is_written_with_a_replacement_character(tmp_path, caplog):
    # a server may send "\ud83d" alone (an emoji cut at max_tokens): the write failed with UnicodeEncodeError
    # after the teacher had answered, on every rerun
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_inputs(source, _rows(3))

    def reply(request):
        text = _SumTeacher().generate([request])[0]
        return text.replace("Adding.", "Adding \ud83d\ude00 \ud83d.") if request.index == 1 else text

    with caplog.at_level(logging.WARNING, logger="hf_cotmi.teacher.generate"):
        summary = _generate(source, out, _SumTeacher(reply=reply))
    assert summary.complete and summary.written == 3
    line = json.loads(out.read_text(encoding="utf-8").splitlines()[1])
    assert line["rationale"] == "Adding \U0001f600 \ufffd."
    assert "record 1 (source_index 1)" in caplog.text and "lone UTF-16 surrogate" in caplog.text


def test_a_full_disk_names_the_file_and_a_rerun_ends_with_the_same_files(tmp_path, monkeypatch):
    source = tmp_path / "in.jsonl"
    _write_inputs(source, _rows(10))
    reference, out = tmp_path / "reference.jsonl", tmp_path / "out.jsonl"
    _generate(source, reference)
    real_write, calls = os.write, []

    def write_until_full(fd, data):
        calls.append(len(data))
        if len(calls) < 5:
            return real_write(fd, data)
        if len(calls) == 5:  # half the line fits
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store.os, "write", write_until_full)
    with pytest.raises(
        OSError, match=r"could not write a record to .*out\.jsonl: .*No space left on device.*rerun"
    ) as info:
        _generate(source, out)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.setattr(store.os, "write", real_write)
    assert not out.read_bytes().endswith(b"\n")  # the torn line is there
    summary = _generate(source, out)
    assert summary.complete and summary.resumed == 4
    assert out.read_bytes() == reference.read_bytes()


def test_a_sort_that_fails_leaves_the_file_and_no_partial_copy(tmp_path, monkeypatch):
    path = tmp_path / "o.jsonl"
    path.write_text("".join(json.dumps({"source_index": i}) + "\n" for i in (2, 0, 1)))
    before = path.read_bytes()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        sort_by_index(path)
    assert path.read_bytes() == before
    assert sorted(item.name for item in tmp_path.iterdir()) == ["o.jsonl"]


@pytest.mark.parametrize("stored", ["[]", '"text"', "3"])
def test_a_settings_file_that_is_not_an_object_is_refused_naming_it(tmp_path, stored):
    out = tmp_path / "o.jsonl"
    (tmp_path / "o.jsonl.settings.json").write_text(stored)
    with pytest.raises(
        DataFormatError, match=r"o\.jsonl\.settings\.json: expected a JSON object of settings"
    ):
        check_settings(out, {"temperature": 0.0}, [{"teacher_settings_id": "x"}], force=False)


@pytest.mark.parametrize(
    ("column", "where"),
    [
        ("reason", "rejects"),  # was overwritten in every rejects line by the reason for rejecting
        ("teacher_outputs", "rejects"),
        ("rationale", "output"),  # were left out of the output with only a warning
        ("teacher_agreement", "output"),
        ("source_index", "output"),
        ("agrees_with_label", "output"),
    ],
)
def test_an_input_column_named_like_a_field_the_generator_writes_is_refused_before_any_request(
    tmp_path, column, where
):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_inputs(source, [{**row, column: f"mine {n}"} for n, row in enumerate(_rows(3))])
    teacher = _SumTeacher(reply=(lambda request: "I cannot decide.") if where == "rejects" else None)
    with pytest.raises(
        ValueError,
        match=rf"in\.jsonl: column '{column}' has the name of a field the generator writes .*rename",
    ):
        _generate(source, out, teacher, filter="mark")
    assert teacher.asked == [] and not out.exists()


def _choice_rows():
    """Three multiple-choice records; the last two show no answer choices (a question, or choices inline)."""
    listed = "Where do fish live?\nAnswer Choices:\n(a) sea\n(b) desert"
    return [
        {"input": listed, "label": "sea"},
        {"input": "Where do fish live?", "label": "sea"},
        {"input": "Where do fish live? (a) sea (b) desert", "label": "sea"},
    ]


def test_a_multiple_choice_input_without_answer_choices_is_refused_before_any_request(tmp_path):
    """It went to the teacher, paid for, then was rejected as unparsable or kept with an invented choice."""
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_inputs(source, _choice_rows())
    teacher = _SumTeacher(reply=lambda request: "Fish swim. So the answer is (a) sea.")
    with pytest.raises(
        ValueError,
        match=r"in\.jsonl, line 2: the input shows no answer choices \(2 of the 3 records show none: line "
        r"2, line 3\).*'Answer Choices:'.*task='generic'",
    ):
        generate_rationales(source, out, backend=teacher, task="multiple_choice", progress=False)
    assert teacher.asked == [] and not out.exists()
    generate_rationales(source, tmp_path / "generic.jsonl", backend=teacher, task="generic", progress=False)
    assert teacher.asked == [0, 1, 2]  # other tasks take any input
    _write_inputs(source, _choice_rows()[:1])  # with its choices the record is asked for
    teacher.asked.clear()
    summary = generate_rationales(source, out, backend=teacher, task="multiple_choice", progress=False)
    assert teacher.asked == [0] and summary.written == 1


def test_the_command_refuses_a_multiple_choice_input_without_choices_in_one_line(tmp_path, capsys):
    from hf_cotmi.cli import main

    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_inputs(source, _choice_rows()[:2])
    code = main(
        ["generate-rationales", "--input-file", str(source), "--output-file", str(out), "--task",
         "multiple_choice", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--max-retries", "0",
         "--no-progress"]
    )  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert code == 1 and len(error.splitlines()) == 1 and not out.exists()
    assert re.search(r"in\.jsonl, line 2: the input shows no answer choices", error), error


def test_input_and_label_columns_may_be_named_freely_but_a_leftover_label_column_is_refused(tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_inputs(source, [{"question": f"What is {a} + 1?", "label": f"{a + 1}"} for a in range(2)])
    assert _generate(source, out, input_column="question").complete
    with pytest.raises(ValueError, match=r"column 'label' has the name of a field the generator writes"):
        _generate(source, tmp_path / "other.jsonl", input_column="question", label_column=None)


def test_every_field_the_generator_writes_is_in_generated_fields(tmp_path):
    from hf_cotmi.teacher.generate import GENERATED_FIELDS

    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = _rows(6)
    rows[1]["label"] = "0"  # disagrees: dropped to the rejects file
    rows[4].pop("label")  # no gold label
    _write_inputs(source, rows)

    def reply(request):  # record 3 never parses, record 2 parses in one sample of two
        if request.index == 3 or (request.index == 2 and request.sample == 1):
            return "I cannot decide."
        return _SumTeacher().generate([request])[0]

    for filter in ("mark", "drop"):
        out.unlink(missing_ok=True)
        out.with_name("out.rejects.jsonl").unlink(missing_ok=True)
        _generate(source, out, _SumTeacher(reply=reply), filter=filter, num_samples=2, force=True)
        written = [
            json.loads(line)
            for path in (out, out.with_name("out.rejects.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()
        ]
        assert {line.get("reason") for line in written} >= {"unparsable"}
        fields = {key for line in written for key in line} - {"id"}
        assert fields <= set(GENERATED_FIELDS), fields - set(GENERATED_FIELDS)
