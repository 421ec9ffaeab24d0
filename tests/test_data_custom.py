"""load_cot_dataset: files (JSONL, JSON, CSV, Parquet) and datasets objects, column checks, reports."""

from __future__ import annotations

import copy as copy_module
import json
import logging
import pickle
from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from hf_cotmi import load_cot_dataset
from hf_cotmi.data.custom import MissingColumnError, as_text_column
from hf_cotmi.data.jsonfiles import DataFormatError

ROWS = [
    {"question": "1 + 2 ?", "answer": 3, "why": "1 + 2 = 3 .", "source": "a"},
    {"question": "2 + 2 ?", "answer": 4, "why": "", "source": "b"},
    {"question": "5 - 1 ?", "answer": 4, "why": None, "source": "c"},
    {"question": "3 * 3 ?", "answer": 9, "why": "   ", "source": "d"},
    {"question": "8 / 2 ?", "answer": 4, "source": "e"},  # no rationale field at all
]
MISSING = 4  # "", None, blank, absent
COLUMNS = {"input_column": "question", "label_column": "answer", "rationale_column": "why"}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def check_rows(dataset: Dataset) -> None:
    assert dataset["input"] == [row["question"] for row in ROWS]
    assert dataset["label"] == [str(row["answer"]) for row in ROWS]
    assert dataset["rationale"][0] == "1 + 2 = 3 ."
    assert dataset["rationale"][2] == "" and dataset["rationale"][4] == ""  # nulls become ""
    assert dataset["source"] == [row["source"] for row in ROWS]  # other columns are kept


def test_jsonl_with_renamed_columns_and_report(tmp_path: Path, caplog):
    path = write_jsonl(tmp_path / "cot.jsonl", ROWS)
    with caplog.at_level(logging.WARNING, logger="hf_cotmi"):
        data, report = load_cot_dataset(path, **COLUMNS, return_report=True)
    assert isinstance(data, DatasetDict) and list(data) == ["train"]
    check_rows(data["train"])
    assert report.splits["train"].records == len(ROWS)
    assert report.splits["train"].missing_rationales == MISSING == report.missing_rationales
    assert f"{MISSING} of {len(ROWS)} records have an empty or missing rationale" in caplog.text
    assert str(path) in report.source


def test_json_array_and_split_name(tmp_path: Path):
    path = tmp_path / "cot.json"
    path.write_text(json.dumps(ROWS))
    data = load_cot_dataset(path, **COLUMNS, split="test")
    assert list(data) == ["test"]
    check_rows(data["test"])


def test_csv_reads_every_cell_as_text(tmp_path: Path):
    path = tmp_path / "cot.csv"
    path.write_text('input,label,rationale\n"a, b",007,r1\nc,NA,\n')
    data, report = load_cot_dataset(path, return_report=True)
    assert data["train"]["input"] == ["a, b", "c"]
    assert data["train"]["label"] == ["007", "NA"]  # no number or missing-value guessing
    assert data["train"]["rationale"] == ["r1", ""]
    assert report.missing_rationales == 1


def test_parquet(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "cot.parquet"
    table = pa.table({"input": ["x", "y"], "label": [1, 2], "rationale": ["because", None]})
    pq.write_table(table, path)
    data, report = load_cot_dataset(path, return_report=True)
    assert data["train"]["label"] == ["1", "2"]
    assert data["train"]["rationale"] == ["because", ""]
    assert report.missing_rationales == 1


def test_dataset_datasetdict_and_mapping(tmp_path: Path):
    dataset = Dataset.from_list([{"input": "x", "label": "y", "rationale": "z"}])
    assert load_cot_dataset(dataset)["train"][0] == {"input": "x", "label": "y", "rationale": "z"}
    both = load_cot_dataset(DatasetDict({"train": dataset, "test": dataset}))
    assert list(both) == ["train", "test"]
    path = write_jsonl(tmp_path / "test.jsonl", ROWS)
    own = Dataset.from_list([{"question": "q", "answer": "a", "why": "w"}])
    mixed, report = load_cot_dataset({"train": own, "test": path}, **COLUMNS, return_report=True)
    assert mixed["train"][0] == {"input": "q", "label": "a", "rationale": "w"}
    check_rows(mixed["test"])
    assert (
        report.splits["test"].missing_rationales == MISSING and report.splits["train"].missing_rationales == 0
    )


def test_missing_column_lists_columns(tmp_path: Path):
    path = write_jsonl(tmp_path / "cot.jsonl", ROWS)
    with pytest.raises(ValueError) as info:
        load_cot_dataset(path, input_column="question", label_column="answer")
    message = str(info.value)
    assert "no column 'rationale'" in message and "'question', 'answer', 'why', 'source'" in message
    assert str(path) in message and "rationale_column=" in message


def test_a_missing_column_error_carries_what_is_missing(tmp_path: Path):
    path = write_jsonl(tmp_path / "cot.jsonl", ROWS)
    with pytest.raises(MissingColumnError) as info:
        load_cot_dataset(path, input_column="question", label_column="reply", rationale_column="why")
    error = info.value
    assert isinstance(error, ValueError)  # the except clauses written before it had a class still catch it
    assert (error.where, error.column, error.target) == (str(path), "reply", "label")
    assert error.columns == ["question", "answer", "why", "source"]
    assert str(error) == (
        f"{path}: no column 'reply' (for 'label'); the columns are ['question', 'answer', 'why', 'source']. "
        "Pass label_column= (--label-column on the command line) to name the right one"
    )
    # a split of a DatasetDict names itself; pickled (between processes), the attributes and message stay
    data = DatasetDict({"test": Dataset.from_dict({"input": ["x"], "label": ["y"]})})
    with pytest.raises(MissingColumnError) as info:
        load_cot_dataset(data)
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.where, copy.column, copy.target, copy.columns) == (
        "split 'test' of the DatasetDict",
        "rationale",
        "rationale",
        ["input", "label"],
    )
    assert str(copy) == str(info.value) and type(copy) is MissingColumnError
    # a note added and an attribute set on it stay too, pickled or copied
    info.value.add_note("while loading the test split")
    info.value.origin = "a check of its own"
    for again in (pickle.loads(pickle.dumps(info.value)), copy_module.copy(info.value)):
        assert type(again) is MissingColumnError and again is not info.value and str(again) == str(info.value)
        assert again.__notes__ == ["while loading the test split"] and again.origin == "a check of its own"
        assert (again.where, again.column, again.columns) == (
            "split 'test' of the DatasetDict",
            "rationale",
            ["input", "label"],
        )


def test_load_task_data_raises_a_missing_column_error_that_is_a_usage_error_too(tmp_path: Path):
    """The pipeline's loader refuses a column option naming no column with a ``MissingColumnError`` (its
    attributes and message the loader's), which the CLI prints as a usage error: one line, exit status 2."""
    from hf_cotmi.pipeline import load_task_data
    from hf_cotmi.run_arguments import CLIUsageError, DataArguments

    path = str(write_jsonl(tmp_path / "cot.jsonl", ROWS))
    args = DataArguments(
        train_file=path, input_column="question", label_column="reply", rationale_column="why"
    )
    try:
        load_task_data(args)
    except MissingColumnError as caught:
        error = caught
    assert isinstance(error, CLIUsageError)
    assert (error.where, error.column, error.target) == (path, "reply", "label")
    assert error.columns == ["question", "answer", "why", "source"]
    with pytest.raises(MissingColumnError) as loader:
        load_cot_dataset(path, input_column="question", label_column="reply", rationale_column="why")
    assert str(error) == str(loader.value)
    # pickled or copied (it took a message and a column before), it stays what it is, its note too
    error.add_note("from load_task_data")
    for again in (pickle.loads(pickle.dumps(error)), copy_module.copy(error)):
        assert type(again) is type(error) and str(again) == str(error) and again.column == "reply"
        assert again.__notes__ == ["from load_task_data"]


def test_null_label_is_an_error_naming_the_row(tmp_path: Path):
    rows = [dict(ROWS[0]), dict(ROWS[1], answer=None)]
    path = write_jsonl(tmp_path / "cot.jsonl", rows)
    with pytest.raises(ValueError, match=r"cot\.jsonl, row 1: 'answer' is missing \(null\)"):
        load_cot_dataset(path, **COLUMNS)


def test_rename_clash(tmp_path: Path):
    rows = [{"question": "q", "input": "other", "label": "l", "rationale": "r"}]
    with pytest.raises(ValueError, match="a column named 'input' already exists"):
        load_cot_dataset(Dataset.from_list(rows), input_column="question")


def test_file_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_cot_dataset(tmp_path / "nope.jsonl")
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match=r"unsupported file type '\.txt'; expected one of \.jsonl, \.json"):
        load_cot_dataset(tmp_path / "data.txt")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "label": "b", "rationale": "c"}\n{"input": \n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl, line 2: not valid JSON"):
        load_cot_dataset(bad)
    mixed = write_jsonl(
        tmp_path / "mixed.jsonl", [{"input": "a", "label": [1]}, {"input": "b", "label": "x"}]
    )
    with pytest.raises(DataFormatError, match=r"mixed\.jsonl: could not build a table"):
        load_cot_dataset(mixed)


def test_argument_errors():
    dataset = Dataset.from_list([{"input": "x", "label": "y", "rationale": "z"}])
    with pytest.raises(ValueError, match="must differ"):
        load_cot_dataset(dataset, label_column="input")
    with pytest.raises(TypeError, match="source must be a path"):
        load_cot_dataset(42)
    nested = Dataset.from_list([{"input": "x", "label": ["y"], "rationale": "z"}])
    with pytest.raises(ValueError, match="column 'label' holds .*expected text"):
        load_cot_dataset(nested)


def test_nan_is_a_missing_number_not_the_text_nan(tmp_path: Path):
    # JSON refuses NaN; a Parquet file or a Dataset can hold it, and "nan" must not become a label
    for missing in (float("nan"), float("inf"), float("-inf")):  # infinity: what JSON refuses as well
        data = Dataset.from_dict({"input": ["a", "b"], "label": [2.0, missing], "rationale": ["r", "r"]})
        with pytest.raises(ValueError, match=r"row 1: 'label' is missing"):
            load_cot_dataset(data)
    data = Dataset.from_dict({"input": ["a", "b"], "label": ["2", "3"], "rationale": [1.5, float("nan")]})
    out, report = load_cot_dataset(data, return_report=True)
    assert out["train"]["rationale"] == ["1.5", ""] and report.missing_rationales == 1


NLI_NAMES = ["entailment", "neutral", "contradiction"]


def nli_dataset(labels: list[int]) -> Dataset:
    features = Features(
        {"premise": Value("string"), "label": ClassLabel(names=NLI_NAMES), "explanation": Value("string")}
    )
    rows = {
        "premise": [f"premise {i}" for i in range(len(labels))],
        "label": labels,
        "explanation": [f"because {i}" for i in range(len(labels))],
    }
    return Dataset.from_dict(rows, features=features)


def test_a_class_label_column_becomes_its_names():
    columns = {"input_column": "premise", "rationale_column": "explanation"}
    data = load_cot_dataset(nli_dataset([2, 0, 1]), **columns)
    assert data["train"]["label"] == ["contradiction", "entailment", "neutral"]
    assert data["train"].features["label"] == Value("string")
    splits = DatasetDict({"train": nli_dataset([1, 1]), "test": nli_dataset([0, 2])})
    both = load_cot_dataset(splits, **columns)
    assert both["train"]["label"] == ["neutral", "neutral"]
    assert both["test"]["label"] == ["entailment", "contradiction"]
    shown = as_text_column(nli_dataset([0, -1, 2]), "label", "x")
    assert list(shown["label"]) == ["entailment", None, "contradiction"]


def test_the_class_label_no_label_value_is_a_missing_label():
    # GLUE-style test splits mark "no label" with -1: a missing label, refused like a null one
    with pytest.raises(
        ValueError,
        match=r"^the Dataset, row 1: 'label' is missing \(null, or the ClassLabel value -1: no label\)",
    ):
        load_cot_dataset(nli_dataset([0, -1, 2]), input_column="premise", rationale_column="explanation")


def test_single_precision_numbers_are_written_as_they_read(tmp_path: Path):
    # a float32 column (GLUE STS-B labels on the Hub, pandas float32 saved as Parquet) holds 3.8 as
    # 3.7999999523...: the label text must be "3.8", the shortest text that reads back as that float32
    import numpy as np
    import pandas as pd

    values = [3.8, 0.1, 7.0, 2.5, -1.2e-7]
    expected = ["3.8", "0.1", "7", "2.5", "-1.2e-07"]
    for dtype in ("float32", "float16"):
        stored = np.array(values, dtype=dtype)
        want = [str(int(v)) if v.is_integer() else str(v) for v in stored]  # numpy's own shortest text
        if dtype == "float32":
            assert want == expected
        features = Features({"input": Value("string"), "label": Value(dtype), "rationale": Value("string")})
        rows = {"input": [f"q{i}" for i in range(5)], "label": stored.tolist(), "rationale": ["r"] * 5}
        data = load_cot_dataset(Dataset.from_dict(rows, features=features))
        assert data["train"]["label"] == want, dtype
        assert [float(np.dtype(dtype).type(text)) for text in want] == stored.astype("float64").tolist()
    path = tmp_path / "f32.parquet"
    pd.DataFrame(
        {"input": ["a", "b"], "label": np.array([3.8, 0.3], dtype="float32"), "rationale": ["r", "r"]}
    ).to_parquet(path)
    assert load_cot_dataset(path)["train"]["label"] == ["3.8", "0.3"]
    # double precision keeps Python's shortest text
    assert load_cot_dataset(Dataset.from_dict({"input": ["a"], "label": [0.1 + 0.2], "rationale": ["r"]}))[
        "train"
    ]["label"] == ["0.30000000000000004"]


@pytest.mark.parametrize("format_type", ["numpy", "torch", "pandas", "arrow"])
def test_a_formatted_dataset_is_read_as_plain_values(format_type):
    # with_format/set_format change what indexing returns (arrays, tensors, Series, Arrow scalars): the loader
    # reads the values themselves, and returns plain text columns
    rows = {"input": ["a ?", "b ?", "c ?"], "label": [7.0, 2.5, 3.0], "rationale": ["r", None, "  "]}
    data, report = load_cot_dataset(Dataset.from_dict(rows).with_format(format_type), return_report=True)
    assert data["train"].format["type"] is None
    assert data["train"].to_dict() == {
        "input": rows["input"],
        "label": ["7", "2.5", "3"],
        "rationale": ["r", "", "  "],
    }
    assert report.missing_rationales == 2
    classes = Features(
        {"input": Value("string"), "label": ClassLabel(names=["no", "yes"]), "rationale": Value("string")}
    )
    labelled = Dataset.from_dict(
        {"input": ["a ?", "b ?"], "label": [1, 0], "rationale": ["r", "s"]}, features=classes
    )
    data = load_cot_dataset(DatasetDict({"test": labelled.with_format(format_type)}))
    assert data["test"]["label"] == ["yes", "no"]
    with pytest.raises(ValueError, match=r"row 1: 'input' is missing"):
        load_cot_dataset(Dataset.from_dict({**rows, "input": ["a", None, "c"]}).with_format(format_type))
