"""Hostile data files: every error names the file, the 1-based line (or record) and the field or key."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hf_cotmi import load_cot_dataset
from hf_cotmi.cli import _read_inputs
from hf_cotmi.data.jsonfiles import DataFormatError, read_json_file, read_jsonl
from hf_cotmi.data.textfiles import read_csv_records, read_input_lines
from hf_cotmi.run_arguments import CLIUsageError
from hf_cotmi.teacher.generate import read_teacher_inputs

BOM = b"\xef\xbb\xbf"
GOOD = {"input": "1 + 1 ?", "label": "2", "rationale": "1 + 1 = 2 ."}


def jsonl_bytes(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8")


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ValueError) as caught:
        load_cot_dataset(path)
    return str(caught.value)


# ----------------------------------------------------------------------------------- duplicate keys


def test_a_duplicate_key_in_a_json_lines_record_names_the_file_line_and_key(tmp_path):
    path = write(
        tmp_path / "dup.jsonl",
        jsonl_bytes(json.dumps(GOOD), '{"input": "x", "label": "3", "rationale": "r", "label": "4"}'),
    )
    message = error_of(path)
    assert message == f"{path}, line 2: the key 'label' appears twice in one object; expected each key once"


def test_a_duplicate_key_in_a_json_array_names_the_record_and_its_line(tmp_path):
    text = "[\n" + json.dumps(GOOD) + ",\n" + '{"input": "x",\n "input": "y", "label": "1"}\n]'
    path = write(tmp_path / "dup.json", text)
    assert error_of(path) == (
        f"{path}, record 2 (line 3): the key 'input' appears twice in one object; expected each key once"
    )


def test_the_dss_reader_refuses_duplicate_keys_too(tmp_path):
    path = write(tmp_path / "train.json", jsonl_bytes('{"a": 1}', '{"a": 1, "a": 2}'))
    with pytest.raises(DataFormatError, match=r"train\.json, line 2: the key 'a' appears twice"):
        read_jsonl(path)


def test_a_duplicate_csv_header_names_line_1_and_the_header(tmp_path):
    path = write(tmp_path / "dup.csv", "input,label,rationale,label\na,1,r,2\n")
    assert error_of(path) == (
        f"{path}, line 1: the header 'label' appears twice (columns 2 and 4); expected each column name once"
    )


def test_an_empty_csv_header_is_refused(tmp_path):
    path = write(tmp_path / "blank.csv", "input,,label\na,b,c\n")
    assert "line 1: the header of column 2 is empty" in error_of(path)


# ------------------------------------------------------------------------------------ lines and records


def test_csv_lines_are_file_lines_even_after_a_quoted_multi_line_cell(tmp_path):
    path = write(tmp_path / "d.csv", 'input,label,rationale\n"two\nlines",1,r\nb,2\n')
    assert error_of(path) == (
        f"{path}, line 4: 2 fields, but the header (line 1) names 3; expected one field per column "
        "(quote cells that hold commas)"
    )
    header, records = read_csv_records(write(tmp_path / "ok.csv", 'input,label\n"a\nb",1\n\nc,2\n'))
    assert header == ["input", "label"] and records == [(2, ["a\nb", "1"]), (5, ["c", "2"])]


def test_malformed_csv_names_the_line_and_long_cells_are_read(tmp_path):
    path = write(tmp_path / "q.csv", 'input,label,rationale\na,1,r\nb,"2"x,r\n')
    assert error_of(path).startswith(f"{path}, line 3: not valid CSV (")
    long = "why " * 50_000
    data = load_cot_dataset(write(tmp_path / "long.csv", f"input,label,rationale\na,1,{long}\n"))
    assert data["train"][0]["rationale"] == long


def test_csv_cells_stay_text(tmp_path):
    path = write(tmp_path / "d.csv", "input,label,rationale\n007,NA,\n")
    row = load_cot_dataset(path)["train"][0]
    assert row == {"input": "007", "label": "NA", "rationale": ""}


def test_a_null_label_names_the_file_line_as_well_as_the_row(tmp_path):
    lines = [json.dumps(GOOD), "", json.dumps(dict(GOOD, label=None))]
    path = write(tmp_path / "null.jsonl", jsonl_bytes(*lines))
    assert "row 1: 'label' is missing (null); the record is at line 3 of the file" in error_of(path)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json_and_name_the_line(tmp_path, literal):
    lines = [
        json.dumps(GOOD),
        json.dumps(GOOD).replace('"label": "' + GOOD["label"] + '"', f'"label": {literal}'),
    ]
    assert literal in lines[1]
    path = write(tmp_path / "nan.jsonl", jsonl_bytes(*lines))
    assert f"nan.jsonl, line 2: {literal} is not a JSON value" in error_of(path)


def test_numbers_in_a_mixed_column_become_the_text_of_the_number(tmp_path):
    rows = [dict(GOOD, label=value) for value in (2.5, 12345678901, 7.0)]
    path = write(tmp_path / "mixed.jsonl", jsonl_bytes(*(json.dumps(r) for r in rows)))
    assert load_cot_dataset(path)["train"]["label"] == ["2.5", "12345678901", "7"]  # not 1.2345678901e+10


def test_an_empty_input_names_the_file_line(tmp_path):
    path = write(tmp_path / "blank.csv", "input,label,rationale\na,1,r\n  ,2,r\n")
    assert "row 1: 'input' is empty ('  '); the record is at line 3 of the file" in error_of(path)


def test_empty_inputs_in_features_are_counted_and_reported(caplog):
    from datasets import Dataset

    from hf_cotmi import build_word_tokenizer, prepare_dss_features

    tok = build_word_tokenizer(["a b r 1 2"])
    data = Dataset.from_dict({"input": ["a b", " ", ""], "label": ["1", "2", "1"], "rationale": ["r"] * 3})
    with caplog.at_level("WARNING", logger="hf_cotmi.data.features"):
        _, report = prepare_dss_features(data, tok, return_report=True)
    assert report.splits["dataset"].empty_inputs == 2
    assert "2 of 3 examples have an empty input" in caplog.text
    assert "2 empty inputs" in str(report.splits["dataset"])


def test_nli_pairs_with_a_blank_side_are_counted_as_empty_inputs():
    """The separator joining premise and hypothesis is never blank: the sides are what count."""
    from datasets import Dataset

    from hf_cotmi import build_word_tokenizer, prepare_dss_features

    tok = build_word_tokenizer(["a b r 1 2"])
    data = Dataset.from_dict(
        {
            "premise": ["a", " ", "a", ""],
            "hypothesis": ["b", "b", "", " "],
            "label": ["1"] * 4,
            "rationale": ["r"] * 4,
        }
    )
    _, report = prepare_dss_features(data, tok, return_report=True)
    assert report.splits["dataset"].empty_inputs == 3


def test_a_null_label_in_parquet_names_the_record(tmp_path):
    path = tmp_path / "null.parquet"
    table = pa.table({"input": ["a", "b", "c"], "label": ["1", "2", None], "rationale": ["r", "r", "r"]})
    pq.write_table(table, path)
    assert "row 2: 'label' is missing (null); the record is at record 3 of the file" in error_of(path)


def test_a_mixed_type_label_column_names_the_line_and_field(tmp_path):
    lines = [json.dumps(GOOD), json.dumps(dict(GOOD, label=3))]
    path = write(tmp_path / "mixed.jsonl", jsonl_bytes(*lines))
    assert error_of(path) == (
        f"{path}: could not build a table from its records: at line 2 the field 'label' holds a number (3) "
        "but at line 1 text; expected the same type in every record (quote numbers to make them text)"
    )


def test_a_mixed_type_field_in_a_json_array_names_the_record(tmp_path):
    path = write(tmp_path / "mixed.json", json.dumps([GOOD, GOOD, dict(GOOD, label=True)]))
    assert "at record 3 the field 'label' holds true/false (True) but at record 1 text" in error_of(path)


def test_a_field_that_is_not_text_anywhere_names_its_first_line(tmp_path):
    lines = [
        json.dumps(dict(GOOD, label=None)),
        json.dumps(dict(GOOD, label=[1])),
        json.dumps(dict(GOOD, label=[2])),
    ]
    path = write(tmp_path / "lists.jsonl", jsonl_bytes(*lines))
    assert re.fullmatch(
        rf"{re.escape(str(path))}: column 'label' holds .* \(the first at line 2\), expected text",
        error_of(path),
    )


def test_numbers_in_every_record_are_still_read_as_text(tmp_path):
    lines = [json.dumps(dict(GOOD, label=3)), json.dumps(dict(GOOD, label=4.5))]
    data = load_cot_dataset(write(tmp_path / "n.jsonl", jsonl_bytes(*lines)))
    assert data["train"]["label"] == ["3", "4.5"]


# ----------------------------------------------------------------------------------------- empty files


@pytest.mark.parametrize(
    "name,content,expected",
    [
        ("e.jsonl", b"", "the file is empty (no JSON objects)"),
        ("e.jsonl", b"\n  \n", "the file is empty (no JSON objects)"),
        ("e.json", b" [ ] ", "the file is empty (an empty JSON array)"),
        ("e.csv", b"", "the file is empty; expected a CSV header line"),
        ("e.csv", BOM + b"\n", "the file is empty; expected a CSV header line"),
        ("e.csv", b"input,label,rationale\n", "the file has a header line but no records"),
    ],
)
def test_empty_files_say_they_are_empty(tmp_path, name, content, expected):
    path = write(tmp_path / name, content)
    assert error_of(path).startswith(f"{path}: {expected}")


def test_an_empty_parquet_file_says_it_is_empty(tmp_path):
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"input": pa.array([], pa.string()), "label": pa.array([], pa.string())}), path)
    assert error_of(path).startswith(f"{path}: the file is empty (no records)")


# ------------------------------------------------------------------------------ decoding and the BOM


@pytest.mark.parametrize("name", ["bad.jsonl", "bad.json", "bad.csv"])
def test_a_byte_that_is_not_utf8_names_the_file_and_line(tmp_path, name):
    body = {
        "bad.jsonl": jsonl_bytes(json.dumps(GOOD), json.dumps(GOOD)) + b'{"input": "caf\xe9"}\n',
        "bad.json": b"[\n" + json.dumps(GOOD).encode() + b',\n{"input": "caf\xe9"}\n]',
        "bad.csv": b"input,label,rationale\na,1,r\ncaf\xe9,2,r\n",
    }[name]
    path = write(tmp_path / name, body)
    line = 3
    column = body.split(b"\n")[line - 1].index(b"\xe9") + 1
    assert error_of(path) == (
        f"{path}, line {line}: byte 0xe9 at column {column} is not UTF-8; expected a UTF-8 text file"
    )


@pytest.mark.parametrize("name", ["bad.jsonl", "bad.json", "bad.csv", "in.txt"])
def test_the_column_of_a_byte_that_is_not_utf8_counts_characters_not_bytes(tmp_path, name):
    # "数" is 3 bytes and "é" 2 in UTF-8: the bad byte is the 13th character of its line, the 16th byte
    before = '{"input": "数é'
    body = jsonl_bytes(json.dumps(GOOD)) + before.encode() + b'\xff"}\n'
    if name == "bad.csv":
        before = "数é,"
        body = b"input,label,rationale\n" + before.encode() + b"\xff,r\n"
    path = write(tmp_path / name, body)
    expected = f"{path}, line 2: byte 0xff at column {len(before) + 1} is not UTF-8"
    with pytest.raises(DataFormatError) as caught:
        read_input_lines(path) if name == "in.txt" else load_cot_dataset(path)
    assert str(caught.value).startswith(expected)


@pytest.mark.parametrize(
    "name,body",
    [
        ("bom.jsonl", BOM + jsonl_bytes(json.dumps(GOOD), json.dumps(GOOD))),
        ("bom.json", BOM + json.dumps([GOOD, GOOD], indent=1).encode()),
        ("bom.csv", BOM + b"input,label,rationale\n1 + 1 ?,2,1 + 1 = 2 .\n1 + 1 ?,2,1 + 1 = 2 .\n"),
    ],
)
def test_a_utf8_bom_is_handled(tmp_path, name, body):
    data = load_cot_dataset(write(tmp_path / name, body))
    assert data["train"].column_names == ["input", "label", "rationale"]
    assert data["train"][1] == GOOD


def test_a_bom_json_array_is_read_as_an_array(tmp_path):
    kind, records = read_json_file(write(tmp_path / "a.json", BOM + b'[{"a": 1},\n{"a": 2}]'))
    assert kind == "record" and records == [(1, {"a": 1}), (2, {"a": 2})]


@pytest.mark.parametrize(
    "text,expected",
    [
        ('[{"a": 1} {"a": 2}]', "line 1: expected ',' or ']' after record 1"),
        ('[{"a": 1}]\n[{"a": 2}]', "line 2: text after the closing ']' of the array"),
        ('[{"a": 1},\n {"a": }]', "record 2 (line 2): not valid JSON"),
        ('[{"a": 1}, 2]', "record 2 (line 1): expected a JSON object, got a number (2)"),
    ],
)
def test_malformed_json_arrays_name_the_line_or_record(tmp_path, text, expected):
    path = write(tmp_path / "a.json", text)
    with pytest.raises(DataFormatError) as caught:
        read_json_file(path)
    assert str(caught.value).startswith(f"{path}, {expected}")


# --------------------------------------------------------------------------------- Parquet files


def parquet_with(tmp_path: Path, column: pa.Array) -> Path:
    """A Parquet file whose 'input' column is ``column`` (two rows), with text labels and rationales."""
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"input": column, "label": ["1", "2"], "rationale": ["r", "r"]}), path)
    return path


def test_a_file_that_is_not_parquet_names_the_file(tmp_path):
    path = write(tmp_path / "x.parquet", b"\xff\xfe not a Parquet file")
    assert error_of(path).startswith(f"{path}: not a readable Parquet file (")


def test_text_in_parquet_that_is_not_utf8_names_the_record_and_field(tmp_path):
    raw = pa.array([b"ok", b"caf\xe9"], pa.binary())
    # a string column whose bytes are not UTF-8: Arrow writes and reads it without a check
    text = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())
    path = parquet_with(tmp_path, text)
    expected = f"{path}, record 2: the field 'input' holds byte 0xe9 at character 4, which is not UTF-8"
    with pytest.raises(DataFormatError) as caught:
        load_cot_dataset(path)
    assert str(caught.value).startswith(expected)


@pytest.mark.parametrize("kind", [pa.binary(), pa.large_binary()])
def test_a_binary_parquet_column_that_is_not_utf8_names_the_record_and_field(tmp_path, kind):
    path = parquet_with(tmp_path, pa.array([b"\xff1 + 1 ?", b"2 + 2 ?"], kind))
    expected = f"{path}, record 1: the field 'input' holds byte 0xff at character 1, which is not UTF-8"
    with pytest.raises(DataFormatError) as caught:
        load_cot_dataset(path)
    assert str(caught.value).startswith(expected)
    with pytest.raises(DataFormatError) as caught:
        read_teacher_inputs(path, label_column=None)
    assert str(caught.value).startswith(expected)


def test_a_binary_parquet_column_of_utf8_text_reads_as_text(tmp_path):
    path = parquet_with(tmp_path, pa.array([b"1 + 1 ?", "数 ?".encode()], pa.binary()))
    assert load_cot_dataset(path)["train"]["input"] == ["1 + 1 ?", "数 ?"]


def test_predict_refuses_a_parquet_input_file_by_name(tmp_path):
    path = parquet_with(tmp_path, pa.array(["1 + 1 ?", "2 + 2 ?"]))
    with pytest.raises(
        CLIUsageError, match=r"--input-file '.*bad\.parquet' is a Parquet file, which predict"
    ):
        _read_inputs(str(path))


@pytest.mark.parametrize("name", ["inputs.pq", "inputs", "no-columns"])
def test_predict_refuses_a_parquet_input_file_by_its_first_bytes(tmp_path, name):
    path = parquet_with(tmp_path, pa.array(["1 + 1 ?", "2 + 2 ?"])).rename(tmp_path / name)
    if name == "no-columns":  # its footer is all there is between its two PAR1
        pq.write_table(pa.table({}), path)
        assert int.from_bytes(path.read_bytes()[-8:-4], "little") == path.stat().st_size - 12
    assert path.read_bytes()[:4] == b"PAR1"
    with pytest.raises(CLIUsageError) as caught:
        _read_inputs(str(path))
    assert str(caught.value).startswith(f"--input-file {str(path)!r} is a Parquet file, which predict")


@pytest.mark.parametrize(
    "text", ["PAR1 is a word\nPAR1\n", "PAR1", "PAR1PAR", "PAR1 mentions PAR1", "PAR1\n\x10\x00\x00\x00PAR1"]
)
def test_predict_reads_a_text_input_file_that_only_starts_like_parquet(tmp_path, text):
    # Parquet also ends with PAR1, after the footer's length, which the footer fits in (the last one: 16 > 2)
    path = write(tmp_path / "in.txt", text)
    assert [record.text for record in _read_inputs(str(path))] == [line for line in text.split("\n") if line]


# ------------------------------------------------------------------------------- predict --input-file


SEPARATORS = ["\u2028", "\u2029", "\u0085", "\x0c", "\x0b", "\x1c", "\x1e"]


def test_input_lines_split_at_newline_only(tmp_path):
    texts = [f"first{sep}half of one input" for sep in SEPARATORS]
    path = write(tmp_path / "in.txt", "\r\n".join(texts) + "\n\n" + json.dumps({"input": "a\u2028b"}) + "\n")
    assert read_input_lines(path) == texts + ["a\u2028b"]
    assert [record.text for record in _read_inputs(str(path))] == texts + ["a\u2028b"]


def test_input_lines_from_standard_input_are_decoded_as_utf8(monkeypatch):
    stream = io.TextIOWrapper(io.BytesIO(BOM + "x\u2028y\nz\n".encode()), encoding="latin-1")
    monkeypatch.setattr(sys, "stdin", stream)
    assert read_input_lines("-") == ["x\u2028y", "z"]


@pytest.mark.parametrize(
    "body,expected",
    [
        (b'ok\n{"input": "a", "input": "b"}\n', "line 2: the key 'input' appears twice"),
        (b'ok\n\n{"text": "a"}\n', "line 3: expected a JSON object with a text field 'input'"),
        (b"ok\n{bad\n", "line 2: not valid JSON"),
        (b"ok\nd\xe9j\xe0\n", "line 2: byte 0xe9 at column 2 is not UTF-8"),
        (b'ok\n{"input": "  "}\n', "line 2: 'input' is blank"),  # not a prediction from no text
    ],
)
def test_bad_input_lines_name_the_file_and_line(tmp_path, body, expected):
    path = write(tmp_path / "in.txt", body)
    with pytest.raises(DataFormatError, match="^" + str(path).replace("\\", "\\\\") + ", " + expected):
        read_input_lines(path)
    with pytest.raises(CLIUsageError, match=f"--input-file: {path}, {expected}"):
        _read_inputs(str(path))


def test_a_missing_input_file_is_a_usage_error(tmp_path):
    with pytest.raises(CLIUsageError, match="does not exist"):
        _read_inputs(str(tmp_path / "none.txt"))
    with pytest.raises(FileNotFoundError):
        read_input_lines(tmp_path / "none.txt")


def test_the_strict_reading_benchmark_runs(tmp_path):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "examples" / "benchmarks" / "strict_reading.py"
    spec = importlib.util.spec_from_file_location("bench_strict_reading", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = module.main(["--records", "50", "--repeats", "1"])
    assert summary["strict_over_baseline"] > 0


# ------------------------------------------------------- numbers JSON cannot hold, values Arrow cannot store


@pytest.mark.parametrize("literal", ["1e400", "-1e400"])
def test_a_number_too_large_for_a_float_is_refused_not_read_as_a_missing_label(tmp_path, literal):
    # Python reads 1e400 as infinity, which the text column would then show as null ("missing")
    line = json.dumps(GOOD).replace(f'"label": "{GOOD["label"]}"', f'"label": {literal}')
    path = write(tmp_path / "huge.jsonl", jsonl_bytes(json.dumps(GOOD), line))
    message = error_of(path)
    assert f"huge.jsonl, line 2: the number {literal} is too large" in message
    assert "missing" not in message


def test_a_number_too_large_for_a_float_in_a_json_array_names_the_record(tmp_path):
    path = write(tmp_path / "huge.json", '[{"input": "a", "label": "b", "rationale": 1e999}]')
    assert "huge.json, record 1 (line 1): the number 1e999 is too large" in error_of(path)


@pytest.mark.parametrize(
    ("values", "line", "field"),
    [
        ([["a", "b"], ["c", 1]], 2, "choices"),  # one list mixes text and a number
        ([["a"], [1]], 2, "choices"),  # lists of text, then a list of numbers
        ([{"x": 1}, {"x": "s"}], 2, "meta"),  # an object's field changes type
        ([1, 2**64], 2, "big"),  # a whole number beyond 64 bits
        ([12345678901234567, 2.5], 2, "mixed"),  # an integer a float cannot hold, then a float
    ],
)
def test_a_value_arrow_cannot_store_names_the_line_and_field(tmp_path, values, line, field):
    rows = [dict(GOOD, **{field: value}) for value in values]
    path = write(tmp_path / "odd.jsonl", jsonl_bytes(*(json.dumps(r) for r in rows)))
    message = error_of(path)
    assert message.startswith(f"{path}, line {line}: the field {field!r} holds ")
    assert "expected" in message


def test_a_lone_surrogate_escape_names_the_line_and_field(tmp_path):
    path = write(
        tmp_path / "sur.json",
        '[{"input": "a", "label": "b", "rationale": "r"},\n'
        ' {"input": "x\\ud800", "label": "b", "rationale": "r"}]',
    )
    message = error_of(path)
    assert message.startswith(f"{path}, record 2: the field 'input' holds ")
    assert "surrogate" in message


def test_a_whole_number_with_too_many_digits_names_the_line(tmp_path):
    # Python refuses to read integers of more than 4300 digits, with a ValueError that names no file
    line = json.dumps(GOOD).replace(f'"label": "{GOOD["label"]}"', '"label": ' + "1" * 5000)
    path = write(tmp_path / "digits.jsonl", jsonl_bytes(line))
    assert f"{path}, line 1: the whole number of 5000 digits is too long" in error_of(path)


def test_json_lines_of_arrays_say_the_file_was_read_as_one_array_and_name_the_line(tmp_path):
    # a line that starts with "[" makes the file one JSON array: its first element "a" is no object
    path = write(tmp_path / "rows.jsonl", jsonl_bytes('["a", "b", "r"]', '["c", "d", "r"]'))
    assert error_of(path) == (
        f"{path}, record 1 (line 1): expected a JSON object, got text ('a'); the file starts with '[', so it "
        "is read as one JSON array of objects"
    )


def test_a_json_lines_record_that_is_null_says_null_not_a_python_type(tmp_path):
    path = write(tmp_path / "null.jsonl", jsonl_bytes(json.dumps(GOOD), "null"))
    assert error_of(path) == f"{path}, line 2: expected a JSON object, got null"
