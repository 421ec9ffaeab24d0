"""From ``generate-rationales`` to ``train`` and ``evaluate``: the generator's output file is the training file.

- ``--label-source llm`` on your files trains on the teacher's labels (``teacher_label``), held-out splits
  keep the gold labels; without it the gold labels are trained on.
- ``evaluate --test-file NEW`` compares answers as the training run did (its recorded ``--task``).
- An output file that ``train --train-file`` could not read as JSON Lines is refused before any request.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_runs import one_error_line, run

from hf_cotmi import generate_rationales
from hf_cotmi.pipeline import (
    CLIUsageError,
    DataArguments,
    EvaluationArguments,
    load_task_data,
    run_evaluation,
)

NLI_LABELS = ("entailment", "neutral", "contradiction")


class CannedTeacher:
    """A teacher backend answering each record by index with ``answer(index)`` (no model, no server)."""

    batch_size, concurrency, retries = 4, 1, 0

    def __init__(self, answer):
        self.answer = answer
        self.requests = 0

    def generate(self, requests):
        self.requests += len(requests)
        return [self.answer(request.index) for request in requests]

    def settings(self):
        return {"model": "canned", "temperature": 0.0}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def nli_output(folder: Path) -> Path:
    """Generated NLI rationales where the teacher's answer differs from the gold label on every other record."""
    rows = [{"input": f"A man walks {i}.</s>A person moves.", "label": NLI_LABELS[i % 3]} for i in range(6)]
    inputs = write_jsonl(folder / "nli-in.jsonl", rows)

    def answer(index: int) -> str:
        return f"Walking is moving. So the answer is {NLI_LABELS[(index + index % 2) % 3]}."

    out = folder / "nli.jsonl"
    generate_rationales(inputs, out, backend=CannedTeacher(answer), task="nli", progress=False)
    return out


def test_label_source_llm_trains_your_files_on_the_teachers_labels(tmp_path):
    out = nli_output(tmp_path)
    lines = read_jsonl(out)
    gold, teacher = [line["label"] for line in lines], [line["teacher_label"] for line in lines]
    assert gold != teacher  # the two sources differ, so the test can tell them apart

    default = load_task_data(DataArguments(train_file=str(out), test_file=str(out)))
    assert default.splits["train"]["label"] == gold

    llm = load_task_data(DataArguments(train_file=str(out), test_file=str(out), label_source="llm"))
    assert llm.splits["train"]["label"] == teacher
    assert llm.splits["test"]["label"] == gold  # held-out splits are compared with their gold labels
    assert llm.splits["train"]["rationale"] == [line["rationale"] for line in lines]


def test_label_source_llm_reads_an_llm_label_column_too(tmp_path):
    rows = [{"input": f"q {i} ?", "label": "yes", "rationale": "r .", "llm_label": f"a{i}"} for i in range(3)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    data = load_task_data(DataArguments(train_file=str(train), label_source="llm"))
    assert data.splits["train"]["label"] == ["a0", "a1", "a2"]


def test_label_source_llm_without_teacher_labels_is_an_error_naming_the_file_and_columns(tmp_path):
    rows = [{"input": "q ?", "label": "yes", "rationale": "r ."}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(CLIUsageError) as raised:
        load_task_data(DataArguments(train_file=str(train), label_source="llm"))
    message = str(raised.value)
    assert "--label-source llm" in message and str(train) in message and "teacher_label" in message
    assert "['input', 'label', 'rationale']" in message


def test_label_source_llm_with_a_missing_teacher_label_names_the_row(tmp_path):
    rows = [
        {"input": "q 0 ?", "label": "yes", "rationale": "r .", "teacher_label": "no"},
        {"input": "q 1 ?", "label": "yes", "rationale": "r .", "teacher_label": None},
    ]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(CLIUsageError, match=r"train\.jsonl, row 1: 'teacher_label' is missing"):
        load_task_data(DataArguments(train_file=str(train), label_source="llm"))


def arithmetic_output(folder: Path) -> Path:
    """Generated arithmetic rationales (the teacher is wrong on every third record)."""
    rows = [{"input": f"Tom has {a} apples and buys {a + 1}.", "label": f"({a} + {a + 1})"} for a in range(8)]

    def answer(index: int) -> str:
        extra = index + 2 if index % 3 == 0 else index + 1
        return f"He has {index} and buys {extra}. The answer is ({index} + {extra})."

    inputs = write_jsonl(folder / "arith-in.jsonl", rows)
    out = folder / "arith.jsonl"
    generate_rationales(inputs, out, backend=CannedTeacher(answer), task="arithmetic", progress=False)
    return out


FAST = ["--max-steps", "1", "--per-device-train-batch-size", "4", "--save-strategy", "no", "--use-cpu",
        "--disable-tqdm", "true", "--report-to", "none", "--generation-max-length", "4",
        "--rationale-max-new-tokens", "2", "--num-examples-to-show", "0", "--tiny-d-model", "16",
        "--tiny-num-layers", "1", "--tiny-num-heads", "2", "--tiny-d-ff", "32"]  # fmt: skip


def test_the_docs_flow_trains_on_the_teachers_labels_and_evaluates_equations(tmp_path, capsys):
    out = arithmetic_output(tmp_path)
    student = tmp_path / "student"
    code, stdout, err = run(
        capsys, "train", "--train-file", str(out), "--test-file", str(out), "--task", "equation",
        "--label-source", "llm", *FAST, "--output-dir", str(student),
    )  # fmt: skip
    assert code == 0, err
    assert "answers compared as equation; training labels from 'teacher_label'" in stdout

    # a new test file laid out as the training file, its gold labels written differently but equal in value
    renamed = [
        {
            "input": line["input"],
            "label": "( {1}.0 + {0}.0 )".format(*re.findall(r"\d+", line["label"])),
            "rationale": "",
        }
        for line in read_jsonl(out)
    ]
    test = write_jsonl(tmp_path / "test.jsonl", renamed)
    report = run_evaluation(
        str(student),
        DataArguments(test_file=str(test)),
        EvaluationArguments(),
        plot_file=str(tmp_path / "d.png"),
    )
    assert report["task"] == "equation"  # the run's --task, not the text default
    given = run_evaluation(
        str(student),
        DataArguments(test_file=str(test), task="text"),
        EvaluationArguments(),
        plot_file=str(tmp_path / "e.png"),
    )
    assert given["task"] == "text"  # a --task given still wins


@pytest.mark.parametrize("name", ["train.csv", "train.parquet", "train.txt", "train"])
def test_an_output_file_train_would_not_read_as_json_lines_is_refused_before_any_request(tmp_path, name):
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"input": "What is 1 plus 1?", "label": "2"}])
    teacher = CannedTeacher(lambda index: "One and one. The answer is (1 + 1).")
    with pytest.raises(ValueError, match=r"output_file .*\.jsonl"):
        generate_rationales(inputs, tmp_path / name, backend=teacher, task="arithmetic", progress=False)
    assert teacher.requests == 0 and not (tmp_path / name).exists()


def test_the_command_refuses_such_an_output_file_as_a_usage_error(tmp_path, capsys):
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"input": "What is 1 plus 1?", "label": "2"}])
    code, _, err = run(
        capsys, "generate-rationales", "--input-file", str(inputs), "--output-file", str(tmp_path / "out.csv"),
        "--teacher-model", str(tmp_path / "no-such-teacher"),
    )  # fmt: skip
    assert code == 2
    assert "argument --output-file" in one_error_line(err, "generate-rationales")


@pytest.mark.parametrize("name", ["train.jsonl", "train.JSONL", "train.json"])
def test_json_lines_and_json_output_files_are_read_back_by_train(tmp_path, name):
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"input": "What is 1 plus 1?", "label": "2"}])
    teacher = CannedTeacher(lambda index: "One and one. The answer is (1 + 1).")
    generate_rationales(inputs, tmp_path / name, backend=teacher, task="arithmetic", progress=False)
    data = load_task_data(DataArguments(train_file=str(tmp_path / name), task="equation"))
    assert data.splits["train"]["label"] == ["2"] and data.splits["train"]["rationale"] == ["One and one."]
