from __future__ import annotations

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
