"""The loaders on the real Distilling Step-by-Step files in ../shared/data/dss (skipped when absent).

The PaLM accuracies are the ones the DSS release reports for its parsing rules (CQA 77.2%, SVAMP 74.0%,
e-SNLI 73.0% on the test splits); reproducing them checks both the parsers and the record alignment.
"""

from __future__ import annotations

import json
import pathlib

import pytest
from conftest import DSS_DATA

from hf_cotmi import (
    DSSDataCollator,
    equation_accuracy,
    load_dss_dataset,
    prepare_dss_features,
    safe_eval_arithmetic,
    text_accuracy,
)

pytestmark = pytest.mark.realdata


def _load(name: str):
    if not (DSS_DATA / name).is_dir():
        pytest.skip(f"real DSS data not found at {DSS_DATA / name}")
    return load_dss_dataset(name, DSS_DATA, return_report=True)


@pytest.fixture(scope="module")
def svamp():
    return _load("svamp")


@pytest.fixture(scope="module")
def cqa():
    return _load("cqa")


@pytest.fixture(scope="module")
def esnli():
    return _load("esnli")


def _lines(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_svamp_splits_and_palm_accuracy(svamp):
    data, report = svamp
    assert {split: data[split].num_rows for split in data} == {"train": 720, "valid": 80, "test": 200}
    raw_train = _lines(DSS_DATA / "svamp" / "svamp_train.json")
    assert sorted([*data["train"]["input"], *data["valid"]["input"]]) == sorted(r["input"] for r in raw_train)
    accuracy = equation_accuracy(data["test"]["llm_label"], data["test"]["label"])
    assert accuracy == pytest.approx(0.740, abs=0.001)
    # every gold equation is valid arithmetic
    assert all(safe_eval_arithmetic(label) is not None for split in data for label in data[split]["label"])
    for split in data:
        assert report.splits[split].unparsed == sum(1 for x in data[split]["llm_label"] if not x)
        assert report.splits[split].unparsed < 0.03 * data[split].num_rows


def test_cqa_palm_accuracy(cqa):
    data, report = cqa
    assert data["test"].num_rows == 1221
    assert data["train"].num_rows + data["valid"].num_rows == 9741
    test = data["test"]
    assert text_accuracy(test["llm_label"], test["label"], normalize=False) == pytest.approx(0.772, abs=0.001)
    # normalisation (case folding) only ever adds matches
    assert text_accuracy(test["llm_label"], test["label"]) >= text_accuracy(
        test["llm_label"], test["label"], normalize=False
    )
    raw = _lines(DSS_DATA / "cqa" / "cqa_test.json")
    assert test["choices"] == [r["choices"] for r in raw]
    assert test["label"] == [r["answer"] for r in raw]
    assert all(label in choices for label, choices in zip(test["label"], test["choices"]))
    assert report.unparsed == sum(1 for split in data for x in data[split]["llm_label"] if not x)


def test_esnli_palm_accuracy(esnli):
    data, report = esnli
    assert {split: data[split].num_rows for split in data} == {"valid": 9842, "test": 9824}
    test = data["test"]
    assert text_accuracy(test["llm_label"], test["label"], normalize=False) == pytest.approx(0.730, abs=0.001)
    raw = _lines(DSS_DATA / "esnli" / "esnli_test.json")
    names = ["entailment", "neutral", "contradiction"]
    assert test["label"] == [names[r["label"]] for r in raw]
    assert test["premise"] == [r["premise"] for r in raw]


def test_llm_labels_for_training(svamp):
    data = load_dss_dataset("svamp", DSS_DATA, label_source="llm", drop_unparsed={"train"})
    gt, report = svamp
    assert data["train"].num_rows == 720 - report.splits["train"].unparsed
    assert all(data["train"]["label"])
    assert data["test"]["label"] == gt["test"]["label"]


def test_real_svamp_features_feed_the_collator(svamp):
    from hf_cotmi.tiny import build_word_tokenizer

    data, _ = svamp
    texts = [
        text for split in data for column in ("input", "rationale", "label") for text in data[split][column]
    ]
    tok = build_word_tokenizer(texts)
    features, report = prepare_dss_features(data, tok, max_rationale_length=64, return_report=True)
    assert {s: report.splits[s].examples for s in report.splits} == {"train": 720, "valid": 80, "test": 200}
    full = [len(ids) for ids in tok(text_target=list(data["train"]["rationale"]))["input_ids"]]
    assert report.splits["train"].truncated_rationales == sum(n > 64 for n in full) > 0
    assert max(len(ids) for ids in features["train"]["rationale_labels"]) == 64
    batch = DSSDataCollator(tok)([features["test"][i] for i in range(4)])
    assert set(batch) == {"pred", "expl"}
    decoded = tok.batch_decode(features["test"]["labels"][:20], skip_special_tokens=True)
    expected = [safe_eval_arithmetic(label) for label in data["test"]["label"][:20]]
    assert [safe_eval_arithmetic(text) for text in decoded] == expected
