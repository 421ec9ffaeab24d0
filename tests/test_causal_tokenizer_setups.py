"""Decoder-only students with the tokenizer setups real users bring (GPT-2, Qwen, Llama style), built in code.

Each tokenizer is a byte-level BPE trained on the fly and wrapped in ``PreTrainedTokenizerFast`` with the
special tokens of the family it imitates; no download.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import training_arguments
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from hf_cotmi import (
    DSSMITrainer,
    build_tiny_causal_lm,
    evaluate_calibration,
    label_confidences,
    prepare_dss_features,
)
from hf_cotmi.data.causal import encode_causal_task
from hf_cotmi.generation import generate_texts
from hf_cotmi.prefixes import PREDICT_PREFIX

CONTEXT = 32
LONG_INPUT = " ".join(["tom has 3 apples and buys 4 more ."] * 6)  # about 60 tokens: longer than CONTEXT
CANDIDATES = ["7", "the answer is 12"]


def byte_level_bpe(special_tokens: list[str]) -> Tokenizer:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    texts = [LONG_INPUT, PREDICT_PREFIX + "how many apples ? 7 yes no the answer is 12"] * 20
    backend.train_from_iterator(texts, trainer)
    return backend


@pytest.fixture(scope="module")
def gpt2_tokenizer():
    """GPT-2 style: one special token that is BOS, EOS and unknown; no pad token; nothing added in front."""
    special = "<|endoftext|>"
    return PreTrainedTokenizerFast(
        tokenizer_object=byte_level_bpe([special]), bos_token=special, eos_token=special, unk_token=special
    )


def log_likelihood(model, ids: list[int], target: list[int]) -> float:
    """log p(target | ids): one unpadded sequence, one forward pass, summed by hand."""
    sequence = torch.tensor([ids + target])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=sequence).logits[0].double(), -1)
    return sum(log_probs[len(ids) - 1 + k, token].item() for k, token in enumerate(target))


def test_candidates_are_scored_on_the_prompt_cut_to_leave_them_room_in_the_context(gpt2_tokenizer):
    """A prompt longer than the student's context minus the longest candidate is cut at its end, as training
    cuts it; before, the whole prompt ran and GPT-2 indexed past its position embeddings (IndexError)."""
    tok = gpt2_tokenizer
    model = build_tiny_causal_lm(tok, "gpt2", hidden_size=16, num_layers=1, max_positions=CONTEXT).eval()
    eos = tok.eos_token_id
    targets = [tok(" " + c, add_special_tokens=False)["input_ids"] + [eos] for c in CANDIDATES]
    prompt = tok(PREDICT_PREFIX + LONG_INPUT, add_special_tokens=False)["input_ids"]
    room = CONTEXT - max(len(t) for t in targets)
    assert len(prompt) > CONTEXT and room < CONTEXT - 2  # the candidates differ in length
    scores = np.array([log_likelihood(model, prompt[:room], target) for target in targets])
    expected = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()

    raw = {"input": [LONG_INPUT], "label": ["7"]}
    result = label_confidences(model, tok, raw, label_candidates=CANDIDATES)
    np.testing.assert_allclose(result.candidate_probabilities[0], expected, rtol=1e-4, atol=1e-6)
    # features built without the model (no context known) are cut the same way
    records = Dataset.from_list([{"input": LONG_INPUT, "label": "7", "rationale": "3 + 4 = 7"}])
    features = prepare_dss_features(records, tok, student_type="causal", with_rationale=False)
    assert len(features[0]["input_ids"]) > CONTEXT
    from_features = label_confidences(model, tok, features, label_candidates=CANDIDATES)
    np.testing.assert_allclose(from_features.candidate_probabilities[0], expected, rtol=1e-4, atol=1e-6)
    report = evaluate_calibration(model, tok, raw, label_candidates=CANDIDATES, max_new_tokens=4)
    assert report["num_examples"] == 1


def test_a_candidate_that_fills_the_context_is_a_clear_error(gpt2_tokenizer):
    tok = gpt2_tokenizer
    model = build_tiny_causal_lm(tok, "gpt2", hidden_size=16, num_layers=1, max_positions=4).eval()
    with pytest.raises(ValueError, match=r"example 0: the longest candidate .* 4 tokens"):
        label_confidences(model, tok, {"input": ["a"], "label": ["7"]}, label_candidates=["the answer is 12"])


def fitted_chatml_base_student():
    """A Qwen-base-like student whose generation config ends at ``<|endoftext|>``, with the tokenizer's EOS then
    set to ``<|im_end|>`` (as ChatML fine-tuning recipes do), fitted until its targets end there."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=byte_level_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    model = build_tiny_causal_lm(tok, "qwen2", hidden_size=32, num_layers=1, seed=1)
    tok.eos_token = "<|im_end|>"
    assert model.generation_config.eos_token_id != tok.eos_token_id
    enc = encode_causal_task(
        tok, [PREDICT_PREFIX + x for x in FIT_INPUTS], FIT_LABELS, max_prompt_length=64, max_target_length=8
    )
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        for ids, labels in zip(enc.input_ids, enc.labels):
            model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return tok, model.eval()


FIT_INPUTS = ["tom has 3 apples", "a cat sleeps"]
FIT_LABELS = ["7", "yes"]


def test_generation_stops_at_the_tokenizers_eos_that_every_target_ends_with(tmp_path):
    """Training ends each target with the tokenizer's EOS; generation stopped only at the generation config's
    (another token), ran past the answer and gave "7 7": accuracy 0 for a student that had learnt it."""
    tok, model = fitted_chatml_base_student()
    eos = tok.eos_token_id
    prompts = [tok(PREDICT_PREFIX + x, add_special_tokens=False)["input_ids"] for x in FIT_INPUTS]
    expected_texts, expected_confidences = [], []
    for prompt in prompts:  # greedy by hand, up to and including the first EOS
        ids = torch.tensor([prompt])
        with torch.no_grad():
            full = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False)
        new = full[0, len(prompt) :].tolist()
        assert eos in new and new.index(eos) < len(new) - 1  # the student ran on past its EOS
        answer = new[: new.index(eos) + 1]
        expected_texts.append(tok.decode(answer, skip_special_tokens=True).strip())
        expected_confidences.append(np.exp(log_likelihood(model, prompt, answer)))
    assert expected_texts == FIT_LABELS

    assert generate_texts(model, tok, FIT_INPUTS, prefix=PREDICT_PREFIX, max_new_tokens=6) == FIT_LABELS
    result = label_confidences(
        model, tok, {"input": FIT_INPUTS, "label": FIT_LABELS}, mode="sequence", max_new_tokens=6
    )
    assert result.predictions == FIT_LABELS and result.accuracy == 1.0
    np.testing.assert_allclose(result.confidences, expected_confidences, rtol=1e-4)
    records = Dataset.from_dict({"input": FIT_INPUTS, "label": FIT_LABELS})
    features = prepare_dss_features(records, tok, model=model, with_rationale=False)
    trainer = DSSMITrainer(model=model, args=training_arguments(tmp_path / "out"), processing_class=tok)
    predicted = trainer.predict(features, max_new_tokens=6).predictions
    assert [t.strip() for t in tok.batch_decode(predicted, skip_special_tokens=True)] == FIT_LABELS


def test_training_features_longer_than_the_students_context_are_a_clear_error(gpt2_tokenizer, tmp_path):
    """Features built without the model are not cut to its context; GPT-2 then indexed past its position
    embeddings (IndexError, a device-side assert on a GPU) with nothing naming the cause."""
    tok = gpt2_tokenizer
    model = build_tiny_causal_lm(tok, "gpt2", hidden_size=16, num_layers=1, max_positions=CONTEXT)
    records = Dataset.from_list([{"input": LONG_INPUT, "label": "7", "rationale": "3 + 4 = 7"}] * 2)
    features = prepare_dss_features(records, tok, student_type="causal")
    length = len(features[0]["input_ids"])
    assert length > CONTEXT
    args = training_arguments(tmp_path / "out", per_device_train_batch_size=2)
    trainer = DSSMITrainer(model=model, args=args, processing_class=tok, train_dataset=features)
    with pytest.raises(
        ValueError, match=rf"feature 0: 'input_ids' has {length} tokens .* context of {CONTEXT}"
    ):
        trainer.train()
    # built with the model, the prompts are cut to fit and training runs
    fitted = prepare_dss_features(records, tok, model=model, max_label_length=8, max_rationale_length=16)
    DSSMITrainer(model=model, args=args, processing_class=tok, train_dataset=fitted).train()
