"""First-token confidence of a student whose targets start with a special token (BERT-to-BERT, BART).

A BERT tokenizer writes every target as ``[CLS] label [SEP]``, and a BERT-to-BERT ``EncoderDecoderModel``
starts decoding from ``[CLS]``: the student learns to emit ``[CLS]`` first whatever the answer, so the top
probability at the first step is that of ``[CLS]``, the same for every input. The first-token confidence
is read at the first step after the tokens every target starts with: the first one about the label.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import processors

from hf_cotmi import build_tiny_seq2seq, build_word_tokenizer, label_confidences

INPUTS = ["a man sleeps", "a cat runs", "two dogs bark", "kids play outside"]
LABELS = ["yes", "no", "not sure", "yes"]


@pytest.fixture(scope="module")
def cls_tokenizer():
    """A word-level tokenizer that writes every text as ``<s> text </s>``, as BERT's writes ``[CLS] text [SEP]``."""
    tokenizer = build_word_tokenizer(["predict: " + x for x in INPUTS] + LABELS)
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} $B {eos}",
        special_tokens=[(bos, tokenizer.bos_token_id), (eos, tokenizer.eos_token_id)],
    )
    assert tokenizer(text_target="yes")["input_ids"][0] == tokenizer.bos_token_id
    return tokenizer


@pytest.fixture(scope="module")
def bert2bert(cls_tokenizer):
    """A tiny BERT-to-BERT student (decoding starts from ``<s>``) fitted to ``<s> label </s>`` targets."""
    model = build_tiny_seq2seq(cls_tokenizer, "encoder-decoder", seed=0)
    assert model.config.decoder_start_token_id == cls_tokenizer.bos_token_id
    encoded = cls_tokenizer(["predict: " + x for x in INPUTS], padding=True, return_tensors="pt")
    labels = cls_tokenizer(text_target=LABELS, padding=True, return_tensors="pt")["input_ids"]
    labels[labels == cls_tokenizer.pad_token_id] = -100
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        model(**encoded, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def _top_probabilities(model, tokenizer, text: str, generated: list[int]) -> list[float]:
    """The top softmax probability at each decoding step of ``generated``, teacher-forced, one example."""
    start = model.config.decoder_start_token_id
    encoded = tokenizer(["predict: " + text], return_tensors="pt")
    with torch.no_grad():
        logits = model(**encoded, decoder_input_ids=torch.tensor([[start] + generated])).logits[0]
    return logits.double().softmax(-1).max(-1).values.tolist()


def test_first_token_confidence_skips_the_token_every_target_starts_with(cls_tokenizer, bert2bert):
    rows = {"input": INPUTS, "label": LABELS}
    result = label_confidences(bert2bert, cls_tokenizer, rows, mode="first_token", max_new_tokens=6)
    for text, confidence in zip(INPUTS, result.confidences):
        generated = bert2bert.generate(
            **cls_tokenizer(["predict: " + text], return_tensors="pt"), max_new_tokens=6
        )
        tokens = generated[0, 1:].tolist()
        assert tokens[0] == cls_tokenizer.bos_token_id  # the student learnt to start with <s>
        assert tokens[1] != cls_tokenizer.bos_token_id
        top = _top_probabilities(bert2bert, cls_tokenizer, text, tokens)
        assert confidence == pytest.approx(top[1], abs=1e-5)  # the step choosing the label's first word
    assert result.accuracy == 1.0
