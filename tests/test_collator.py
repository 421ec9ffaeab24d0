from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from hf_cotmi import DSSDataCollator, build_tiny_seq2seq


def test_pads_both_parts_and_prepares_decoder_inputs(tiny_tokenizer, tiny_features):
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    features = [tiny_features[i] for i in range(3)]
    batch = DSSDataCollator(tiny_tokenizer, model=model)(features)
    assert set(batch) == {"pred", "expl"}
    for part, (ids_key, label_key) in {
        "pred": ("input_ids", "labels"),
        "expl": ("expl_input_ids", "rationale_labels"),
    }.items():
        sub = batch[part]
        assert set(sub) == {"input_ids", "attention_mask", "labels", "decoder_input_ids"}
        longest = max(len(f[ids_key]) for f in features)
        assert sub["input_ids"].shape == (3, longest)
        for row, feature in enumerate(features):
            n = len(feature[ids_key])
            assert sub["input_ids"][row, :n].tolist() == feature[ids_key]
            assert (sub["input_ids"][row, n:] == tiny_tokenizer.pad_token_id).all()
            assert sub["attention_mask"][row].sum() == n
            m = len(feature[label_key])
            assert sub["labels"][row, :m].tolist() == feature[label_key]
            assert (sub["labels"][row, m:] == -100).all()
        # T5 shifts right and starts with the pad id
        expected = torch.cat([torch.zeros(3, 1, dtype=torch.long), sub["labels"][:, :-1].clamp_min(0)], dim=1)
        assert torch.equal(sub["decoder_input_ids"], expected)


def test_pad_to_multiple_of(tiny_tokenizer, tiny_features):
    batch = DSSDataCollator(tiny_tokenizer, pad_to_multiple_of=8)([tiny_features[i] for i in range(2)])
    for part in ("pred", "expl"):
        assert batch[part]["input_ids"].shape[1] % 8 == 0
        assert batch[part]["labels"].shape[1] % 8 == 0
        assert "decoder_input_ids" not in batch[part]


def test_features_without_rationale_give_pred_only(tiny_tokenizer, tiny_features):
    features = [{k: tiny_features[i][k] for k in ("input_ids", "attention_mask", "label")} for i in range(2)]
    batch = DSSDataCollator(tiny_tokenizer)(features)
    assert set(batch) == {"pred"} and "labels" not in batch["pred"]


def test_mixed_batch_is_an_error_naming_the_features(tiny_tokenizer, tiny_features):
    features = [
        dict(tiny_features[0]),
        {k: tiny_features[1][k] for k in ("input_ids", "attention_mask", "labels")},
    ]
    with pytest.raises(ValueError, match=r"features \[1\]"):
        DSSDataCollator(tiny_tokenizer)(features)


def test_missing_input_ids_is_an_error(tiny_tokenizer):
    with pytest.raises(ValueError, match="feature 0 has no 'input_ids'"):
        DSSDataCollator(tiny_tokenizer)([{"text": "x"}])


def test_seq2seq_labels_are_right_padded_whatever_the_tokenizer_padding_side(tiny_tokenizer):
    # a tokenizer set to pad on the left (as for batched generation) must not left-pad decoder targets
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.padding_side = "left"
    features = [
        {"input_ids": [5, 1], "attention_mask": [1, 1], "labels": [6, 1]},
        {"input_ids": [5, 6, 1], "attention_mask": [1, 1, 1], "labels": [6, 7, 8, 1]},
    ]
    for multiple in (None, 8):
        batch = DSSDataCollator(tokenizer, pad_to_multiple_of=multiple)(features)
        width = 4 if multiple is None else 8
        assert batch["pred"]["labels"].tolist() == [
            [6, 1] + [-100] * (width - 2),
            [6, 7, 8, 1] + [-100] * (width - 4),
        ]
    assert batch["pred"]["input_ids"][0, -2:].tolist() == [5, 1]  # the inputs follow the tokenizer


@pytest.mark.parametrize("student_type", ["seq2seq", "causal"])
@pytest.mark.parametrize("without", [0, 1])
def test_batch_mixing_features_with_and_without_labels_is_an_error(tiny_tokenizer, student_type, without):
    features = [
        {"input_ids": [5, 6, 1], "attention_mask": [1, 1, 1], "labels": [-100, 6, 1]},
        {"input_ids": [5, 7, 1], "attention_mask": [1, 1, 1], "labels": [-100, 7, 1]},
    ]
    del features[without]["labels"]
    with pytest.raises(ValueError, match="'labels'"):
        DSSDataCollator(tiny_tokenizer, student_type=student_type)(features)


def test_causal_features_as_tensors(tiny_tokenizer):
    # rows of a dataset in torch (or numpy) format hold tensors, not lists
    rows = [
        {"input_ids": [3, 5, 6, 1], "attention_mask": [1, 1, 1, 1], "labels": [-100, -100, 6, 1]},
        {"input_ids": [3, 5, 1], "attention_mask": [1, 1, 1], "labels": [-100, 5, 1]},
    ]
    collator = DSSDataCollator(tiny_tokenizer, student_type="causal")
    expected = collator(rows)["pred"]
    for convert in (torch.tensor, np.array):
        batch = collator([{k: convert(v) for k, v in row.items()} for row in rows])["pred"]
        assert set(batch) == set(expected)
        for key, value in expected.items():
            assert torch.equal(batch[key], value), key
