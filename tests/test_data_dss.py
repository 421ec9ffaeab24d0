"""load_dss_dataset and the PaLM output parsers, on small release-format fixtures written by the tests."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from hf_cotmi import DSS_DATASETS, load_dss_dataset
from hf_cotmi.data.jsonfiles import DataFormatError
from hf_cotmi.data.parsing import (
    parse_anli_output,
    parse_cqa_output,
    parse_esnli_output,
    parse_palm_output,
    parse_svamp_output,
)

# --------------------------------------------------------------------------- fixture writers


def write_split(
    folder: Path, name: str, split: str, records: list[dict], outputs: list[str], sizes: list[int]
):
    """Write <name>_<split>.json and llm/<split>_CoT_<i>.json with the given array sizes."""
    assert sum(sizes) == len(outputs)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "llm").mkdir(exist_ok=True)
    with open(folder / f"{name}_{split}.json", "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    start = 0
    for i, size in enumerate(sizes):
        (folder / "llm" / f"{split}_CoT_{i}.json").write_text(json.dumps(outputs[start : start + size]))
        start += size


SVAMP_FAILS = {3, 7}  # train records whose PaLM output has no answer sentence


def svamp_records(n: int, offset: int = 0) -> tuple[list[dict], list[str]]:
    records, outputs = [], []
    for k in range(offset, offset + n):
        records.append(
            {"input": f"Tom has {k} apples and buys 2 more. How many?", "label": f"( {k}.0 + 2.0 )"}
        )
        if k - offset in SVAMP_FAILS and offset == 0:
            outputs.append(f"Tom has {k} apples. I do not know.\n\nQ: Sam has 3 pears. How many?\nA: 3.")
        else:
            wrong = k % 5 == 0  # PaLM gets every fifth one wrong
            answer = f"({k} + 3)" if wrong else f"({k} + 2)"
            outputs.append(
                f"Tom has {k} apples. He buys 2 more. The answer is {answer}.\n\n"
                "Q: Sam has 3 pears. How many?\nA: Sam has 3 pears. The answer is (3)."
            )
    return records, outputs


@pytest.fixture
def svamp_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "datasets" / "svamp"
    records, outputs = svamp_records(40)
    # eleven files: lexical order (0, 1, 10, 2, ...) would misalign the outputs
    write_split(folder, "svamp", "train", records, outputs, [3] * 10 + [10])
    records, outputs = svamp_records(10, offset=100)
    write_split(folder, "svamp", "test", records, outputs, [10])
    return tmp_path / "datasets"


def cqa_records() -> tuple[list[dict], list[str]]:
    records = [
        {
            "id": "q1",
            "question": "Where do beavers get wood?",
            "choices": ["british columbia", "body of water", "wooded area", "pay debts", "zoo"],
            "answer": "wooded area",
            "abstractive_explanation": "",
            "extractive_explanation": "",
        },
        {
            "id": "q2",
            "question": "Where is a bridge?",
            "choices": ["bus depot", "beach", "river", "bridge", "sky"],
            "answer": "river",
            "abstractive_explanation": "",
            "extractive_explanation": "",
        },
        {
            "id": "q3",
            "question": "What is red?",
            "choices": ["apple", "sky", "grass", "snow", "coal"],
            "answer": "apple",
            "abstractive_explanation": "",
            "extractive_explanation": "",
        },
    ]
    outputs = [
        "Beavers live near trees. So the answer is (c) wooded area.\n\nQ: What is blue?\nAnswer Choices:\n"
        "(a) sky\nA: The sky is blue. So the answer is (a) sky.",
        "Bridges cross water. So the answer is (b) beach.",
        "Apples are red. So the answer is apple.",  # no choice letter: does not parse
    ]
    return records, outputs


NLI_PAIRS = [
    ("A man plays guitar.", "A person makes music.", 0),
    ("A dog runs.", "The dog is asleep.", 2),
    ("Two women hug.", "The women are sisters.", 1),
]


def esnli_outputs() -> list[str]:
    return [
        "Playing guitar is making music.\nAnswer: entailment\n\nPremise: A cat sits.\nHypothesis: x\nReasonings",
        "A dog cannot run and sleep.\nAnswer: contradiction\n\nPremise: A dog sits.",
        "Hugging women need not be sisters.",  # no answer: does not parse
    ]


def anli_outputs() -> list[str]:
    return [
        "Playing guitar is making music. So the answer is entailment.\n\nPremise: A cat sits.\nHypothesis: x",
        "A dog cannot run and sleep. So the answer is contradiction.",
        "Women hug. So the answer is neutral. So the answer is entailment.",  # ambiguous: does not parse
    ]


def nli_records(name: str) -> list[dict]:
    if name == "esnli":
        return [
            {
                "premise": p,
                "hypothesis": h,
                "label": y,
                "explanation_1": "",
                "explanation_2": "",
                "explanation_3": "",
            }
            for p, h, y in NLI_PAIRS
        ]
    return [
        {"uid": str(i), "premise": p, "hypothesis": h, "label": y, "reason": ""}
        for i, (p, h, y) in enumerate(NLI_PAIRS)
    ]


@pytest.fixture
def release_dir(tmp_path: Path) -> Path:
    root = tmp_path / "datasets"
    records, outputs = cqa_records()
    write_split(root / "cqa", "cqa", "train", records * 4, outputs * 4, [6, 6])
    write_split(root / "cqa", "cqa", "test", records, outputs, [2, 1])
    for name, outputs in (("esnli", esnli_outputs()), ("anli1", anli_outputs())):
        write_split(root / name, name, "valid", nli_records(name), outputs, [3])
        write_split(root / name, name, "test", nli_records(name)[:2], outputs[:2], [1, 1])
    return root


# --------------------------------------------------------------------------- parsers


def test_parse_cqa():
    out = parse_cqa_output(
        "Trees give wood. So the answer is (c) wooded area.\n\nQ: x? So the answer is (a) y."
    )
    assert (out.rationale, out.label, out.parsed) == ("Trees give wood.", "wooded area", True)
    assert parse_cqa_output("So the answer is (e) zoo").label == "zoo"
    assert not parse_cqa_output("no answer sentence").parsed
    assert not parse_cqa_output("A. So the answer is (a) x. So the answer is (b) y.").parsed
    assert parse_cqa_output("A. So the answer is wooded area.") == parse_cqa_output(
        "A. So the answer is wooded area."
    )
    assert parse_cqa_output("A. So the answer is wooded area.").rationale == "A."
    assert not parse_cqa_output("A. So the answer is (c) .").parsed


def test_parse_svamp():
    out = parse_svamp_output("5 + 6 is 11. The answer is (5 + 6).\n\nQ: more\nA: The answer is (1 + 1).")
    assert (out.rationale, out.label) == ("5 + 6 is 11.", "(5 + 6)")
    assert parse_svamp_output("x. The answer is (10 - (3 + 6)).").label == "(10 - (3 + 6))"
    # DSS's greedy match keeps a compound answer whole
    assert parse_svamp_output("x. The answer is (19 - 6) + (18 - 15).").label == "(19 - 6) + (18 - 15)"
    assert parse_svamp_output("x. The answer is 7.").label == ""
    assert not parse_svamp_output("no answer here (1 + 1)").parsed
    assert not parse_svamp_output("The answer is (1). The answer is (2).").parsed


def test_parse_esnli():
    out = parse_esnli_output("Dogs are animals.\nAnswer: entailment\n\nPremise: x\nAnswer: neutral")
    assert (out.rationale, out.label) == ("Dogs are animals.", "entailment")
    # as in DSS, the label runs up to "Premise": an output cut off inside the word keeps the stub
    assert parse_esnli_output("R.\nAnswer: neutral\n\nPre").label == "neutral\n\nPre"
    out = parse_esnli_output("Just a rationale.")
    assert (out.rationale, out.label, out.parsed) == ("Just a rationale.", "", False)


def test_parse_anli():
    out = parse_anli_output(
        "Cats are not dogs. So the answer is contradiction.\n\nPremise: So the answer is x."
    )
    assert (out.rationale, out.label) == ("Cats are not dogs.", "contradiction")
    assert not parse_anli_output("no marker").parsed


def test_parse_palm_output_dispatch():
    assert parse_palm_output("svamp", "a. The answer is (1 + 1).").label == "(1 + 1)"
    with pytest.raises(ValueError, match="no PaLM output parser for 'gsm8k'; known: "):
        parse_palm_output("gsm8k", "")


# --------------------------------------------------------------------------- svamp


def _number(text: str) -> int:
    return int(text.split()[2])  # "Tom has <k> apples ..."


def test_svamp_columns_alignment_and_carved_valid(svamp_dir: Path):
    data, report = load_dss_dataset("svamp", svamp_dir, return_report=True)
    assert list(data) == ["train", "valid", "test"]
    assert (data["train"].num_rows, data["valid"].num_rows, data["test"].num_rows) == (36, 4, 10)
    assert data["train"].column_names == ["input", "label", "rationale", "llm_label"]
    train_inputs = set(data["train"]["input"]) | set(data["valid"]["input"])
    assert train_inputs == {r["input"] for r in svamp_records(40)[0]}
    assert not set(data["train"]["input"]) & set(data["valid"]["input"])
    for split in data:
        for row in data[split]:
            k = _number(row["input"])
            assert row["label"] == f"( {k}.0 + 2.0 )"
            if k in SVAMP_FAILS and split != "test":
                assert (row["llm_label"], row["rationale"]) == ("", "")
            else:
                assert row["rationale"] == f"Tom has {k} apples. He buys 2 more."  # aligned with its record
                assert row["llm_label"] == (f"({k} + 3)" if k % 5 == 0 else f"({k} + 2)")
    unparsed = {
        s: sum(1 for row in data[s] if _number(row["input"]) in SVAMP_FAILS) for s in ("train", "valid")
    }
    assert report.splits["train"].unparsed == unparsed["train"]
    assert report.splits["valid"].unparsed == unparsed["valid"]
    assert report.splits["test"].unparsed == 0
    assert report.unparsed == len(SVAMP_FAILS)
    assert report.splits["train"].records == 36 and report.dropped == 0


def test_svamp_valid_split_is_seeded(svamp_dir: Path):
    first = load_dss_dataset("svamp", svamp_dir)
    again = load_dss_dataset("svamp", svamp_dir)
    other = load_dss_dataset("svamp", svamp_dir, seed=1, valid_fraction=0.25)
    assert first["valid"]["input"] == again["valid"]["input"]
    assert other["valid"].num_rows == 10
    assert set(other["valid"]["input"]) != set(first["valid"]["input"])
    only_valid = load_dss_dataset("svamp", svamp_dir, splits=["valid"])
    assert list(only_valid) == ["valid"] and only_valid["valid"]["input"] == first["valid"]["input"]
    only_train = load_dss_dataset("svamp", svamp_dir, splits=["train"])
    assert only_train["train"]["input"] == first["train"]["input"]  # train excludes valid even when alone


def test_svamp_no_carving(svamp_dir: Path):
    data = load_dss_dataset("svamp", svamp_dir, valid_fraction=0)
    assert list(data) == ["train", "test"] and data["train"].num_rows == 40
    with pytest.raises(FileNotFoundError, match="split 'valid' requested.*valid_fraction=0"):
        load_dss_dataset("svamp", svamp_dir, valid_fraction=0, splits=["valid"])
    with pytest.raises(ValueError, match=r"splits=\[\] names no split"):  # not an empty DatasetDict
        load_dss_dataset("svamp", svamp_dir, splits=[])


def test_label_source_llm_replaces_train_labels_only(svamp_dir: Path):
    gt = load_dss_dataset("svamp", svamp_dir)
    llm = load_dss_dataset("svamp", svamp_dir, label_source="llm")
    assert llm["train"]["label"] == gt["train"]["llm_label"]
    assert llm["train"]["label"] != gt["train"]["label"]
    for split in ("valid", "test"):
        assert llm[split]["label"] == gt[split]["label"]


def test_teacher_labels_go_to_the_split_trained_on(release_dir: Path, capsys):
    """e-SNLI has no train file: training uses valid, and --label-source llm must reach that split."""
    from hf_cotmi.pipeline import load_task_data
    from hf_cotmi.run_arguments import DataArguments

    gt = load_dss_dataset("esnli", release_dir)
    llm = load_dss_dataset("esnli", release_dir, label_source="llm", llm_label_splits=["valid"])
    assert llm["valid"]["label"] == gt["valid"]["llm_label"] != gt["valid"]["label"]
    assert llm["test"]["label"] == gt["test"]["label"]
    with pytest.raises(ValueError, match=r"unknown split\(s\) \['training'\] in llm_label_splits="):
        load_dss_dataset("esnli", release_dir, label_source="llm", llm_label_splits=["training"])
    arguments = DataArguments(
        dataset="esnli", data_dir=str(release_dir), train_split="valid", label_source="llm"
    )
    splits = load_task_data(arguments).splits
    assert splits["train"]["label"] == gt["valid"]["llm_label"]  # what hf-cotmi train trains on
    assert splits["test"]["label"] == gt["test"]["label"]


def test_parse_failures_are_warned_and_can_be_dropped(svamp_dir: Path, caplog):
    with caplog.at_level(logging.WARNING, logger="hf_cotmi"):
        data, report = load_dss_dataset("svamp", svamp_dir, return_report=True)
    assert "did not parse" in caplog.text and "drop_unparsed=True" in caplog.text
    dropped, dropped_report = load_dss_dataset("svamp", svamp_dir, drop_unparsed=True, return_report=True)
    assert dropped_report.dropped == len(SVAMP_FAILS) == dropped_report.unparsed
    for split in data:
        assert dropped[split].num_rows == data[split].num_rows - report.splits[split].unparsed
        assert all(dropped[split]["llm_label"])
        assert dropped_report.splits[split].kept == dropped[split].num_rows
    # the valid split is carved before dropping
    kept_valid = [x for x in data["valid"]["input"] if _number(x) not in SVAMP_FAILS]
    assert dropped["valid"]["input"] == kept_valid
    only_train = load_dss_dataset("svamp", svamp_dir, drop_unparsed={"train"})
    assert only_train["valid"].num_rows == data["valid"].num_rows
    assert only_train["train"].num_rows == data["train"].num_rows - report.splits["train"].unparsed


def test_data_dir_may_be_the_dataset_folder(svamp_dir: Path):
    data = load_dss_dataset("svamp", svamp_dir / "svamp", splits=["test"])
    assert data["test"].num_rows == 10


# --------------------------------------------------------------------------- cqa, esnli, anli1


def test_cqa_input_format_and_choices(release_dir: Path):
    data, report = load_dss_dataset("cqa", release_dir, splits=["test"], return_report=True)
    row = data["test"][0]
    assert row["input"] == (
        "Where do beavers get wood?\nAnswer Choices:\n(a) british columbia\n(b) body of water\n"
        "(c) wooded area\n(d) pay debts\n(e) zoo"
    )
    assert (row["label"], row["llm_label"], row["rationale"]) == (
        "wooded area",
        "wooded area",
        "Beavers live near trees.",
    )
    assert row["choices"] == cqa_records()[0][0]["choices"]
    assert data["test"]["llm_label"] == ["wooded area", "beach", ""]
    assert report.splits["test"].unparsed == 1
    full = load_dss_dataset("cqa", release_dir)
    assert (full["train"].num_rows, full["valid"].num_rows) == (10, 2)


@pytest.mark.parametrize("name", ["esnli", "anli1"])
def test_nli_labels_inputs_and_splits(release_dir: Path, name: str):
    data, report = load_dss_dataset(name, release_dir, return_report=True)
    assert list(data) == ["valid", "test"]  # no train file, and no carving for NLI
    valid = data["valid"]
    assert valid["label"] == ["entailment", "contradiction", "neutral"]
    assert valid["llm_label"] == ["entailment", "contradiction", ""]
    assert valid["premise"] == [p for p, _, _ in NLI_PAIRS]
    assert valid["hypothesis"] == [h for _, h, _ in NLI_PAIRS]
    assert valid["input"][0] == "A man plays guitar.</s>A person makes music."
    assert valid["rationale"][1] == "A dog cannot run and sleep."
    assert report.splits["valid"].unparsed == 1 and report.splits["test"].unparsed == 0
    custom = load_dss_dataset(name, release_dir, nli_separator=" | ", splits=["test"])
    assert custom["test"]["input"][1] == "A dog runs. | The dog is asleep."
    with pytest.raises(FileNotFoundError, match=rf"{name}_train\.json not found"):
        load_dss_dataset(name, release_dir, splits=["train"])


def test_dss_datasets_table():
    assert set(DSS_DATASETS) == {"svamp", "cqa", "esnli", "anli1"}
    assert DSS_DATASETS["svamp"].task == "equation" and DSS_DATASETS["cqa"].task == "text"
    with pytest.raises(TypeError):
        DSS_DATASETS["x"] = DSS_DATASETS["cqa"]  # read-only


# --------------------------------------------------------------------------- errors


def test_unknown_dataset_lists_known(tmp_path: Path):
    with pytest.raises(
        ValueError, match="unknown DSS dataset 'gsm8k'; known datasets: svamp, cqa, esnli, anli1"
    ):
        load_dss_dataset("gsm8k", tmp_path)


def test_missing_data_dir_shows_layout(tmp_path: Path):
    with pytest.raises(FileNotFoundError) as info:
        load_dss_dataset("svamp", tmp_path / "nowhere")
    message = str(info.value)
    assert "nowhere" in message and "svamp_train.json" in message and "train_CoT_0.json" in message
    with pytest.raises(FileNotFoundError, match=r"no folder .*svamp.*expected the Distilling Step-by-Step"):
        load_dss_dataset("svamp", tmp_path)
    (tmp_path / "svamp").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no svamp_<split>\.json file"):
        load_dss_dataset("svamp", tmp_path)


def test_missing_llm_files(svamp_dir: Path):
    for path in (svamp_dir / "svamp" / "llm").glob("test_CoT_*.json"):
        path.unlink()
    with pytest.raises(FileNotFoundError, match=r"test_CoT_0\.json not found.*svamp_test\.json"):
        load_dss_dataset("svamp", svamp_dir)
    assert load_dss_dataset("svamp", svamp_dir, splits=["train"])["train"].num_rows == 36


def test_gap_in_llm_numbering(svamp_dir: Path):
    (svamp_dir / "svamp" / "llm" / "train_CoT_4.json").unlink()
    with pytest.raises(DataFormatError, match=r"without gaps.*missing \['train_CoT_4\.json'\]"):
        load_dss_dataset("svamp", svamp_dir)


def test_record_count_mismatch_names_both(svamp_dir: Path):
    path = svamp_dir / "svamp" / "llm" / "test_CoT_0.json"
    path.write_text(json.dumps(json.loads(path.read_text())[:-1]))
    with pytest.raises(DataFormatError) as info:
        load_dss_dataset("svamp", svamp_dir)
    message = str(info.value)
    assert "svamp_test.json has 10 records" in message and "hold 9 strings" in message
    assert "test_CoT_0.json: 9" in message


def test_malformed_json_line_gives_file_and_line(svamp_dir: Path):
    path = svamp_dir / "svamp" / "svamp_test.json"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:-5]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"svamp_test\.json, line 3: not valid JSON"):
        load_dss_dataset("svamp", svamp_dir)


def test_malformed_llm_file(svamp_dir: Path):
    path = svamp_dir / "svamp" / "llm" / "test_CoT_0.json"
    path.write_text('["ok", 3]')
    with pytest.raises(DataFormatError, match=r"test_CoT_0\.json, array element 1: expected a string"):
        load_dss_dataset("svamp", svamp_dir)
    path.write_text('["ok",')
    with pytest.raises(DataFormatError, match=r"test_CoT_0\.json, line 1: not valid JSON"):
        load_dss_dataset("svamp", svamp_dir)


def test_missing_field_and_bad_nli_label(release_dir: Path, tmp_path: Path):
    records, outputs = cqa_records()
    del records[1]["answer"]
    write_split(tmp_path / "cqa", "cqa", "test", records, outputs, [3])
    with pytest.raises(DataFormatError, match=r"cqa_test\.json, line 2: record has no field 'answer'"):
        load_dss_dataset("cqa", tmp_path)
    records = nli_records("esnli")
    records[2]["label"] = 5
    write_split(tmp_path / "esnli", "esnli", "test", records, esnli_outputs(), [3])
    with pytest.raises(DataFormatError, match=r"esnli_test\.json, line 3: field 'label' must be 0, 1 or 2"):
        load_dss_dataset("esnli", tmp_path)


def test_option_errors(svamp_dir: Path):
    with pytest.raises(ValueError, match="label_source='palm'"):
        load_dss_dataset("svamp", svamp_dir, label_source="palm")
    with pytest.raises(ValueError, match="valid_fraction=1"):
        load_dss_dataset("svamp", svamp_dir, valid_fraction=1)
    with pytest.raises(ValueError, match=r"unknown split\(s\) \['validation'\]"):
        load_dss_dataset("svamp", svamp_dir, splits=["validation"])
    with pytest.raises(ValueError, match=r"\['dev'\] in drop_unparsed="):
        load_dss_dataset("svamp", svamp_dir, drop_unparsed=["dev"])


def test_two_llm_files_with_the_same_number_are_an_error(svamp_dir: Path):
    # train_CoT_01.json and train_CoT_1.json are both number 1: one of them would be dropped without a word
    llm = svamp_dir / "svamp" / "llm"
    (llm / "train_CoT_01.json").write_text((llm / "train_CoT_1.json").read_text())
    with pytest.raises(DataFormatError, match=r"train_CoT_01\.json and train_CoT_1\.json.*number 1"):
        load_dss_dataset("svamp", svamp_dir)
