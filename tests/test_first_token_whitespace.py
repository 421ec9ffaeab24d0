"""First-token confidence of a decoder-only student whose tokenizer writes a number after a lone space.

Qwen2 and Llama 3 pre-tokenise digits on their own (``\\p{N}`` without a leading space), so the target
``" 12"`` that training appends to a prompt is ``" "``, ``"1"``, ``"2"``, EOS: every numeric answer starts
with the same space token, whose probability is about 1 whatever the answer. The first-token confidence
is read at the first generated token that is not whitespace: the first one about the label.
"""

from __future__ import annotations

import pytest
import torch
from conftest import fit_causal_on_labels
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from hf_cotmi import build_tiny_causal_lm, label_confidences
from hf_cotmi.causal_confidence import causal_prompts
from hf_cotmi.data.causal import encode_causal_task
from hf_cotmi.prefixes import PREDICT_PREFIX

# the pre-tokeniser pattern of Qwen2's tokenizer: a digit is a pre-token of its own, without its space
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# the same question twice with two answers: the student is unsure of the digit, not of the space before it
INPUTS = [
    "tom has 5 apples and 7 pears",
    "a cat has legs",
    "a cat has legs",
    "two dogs and 9 cats",
    "kids play",
]
LABELS = ["12", "3", "4", "11", "none"]


@pytest.fixture(scope="module")
def digit_tokenizer():
    """Byte-level BPE with Qwen2's pre-tokeniser and special tokens (pad is EOS)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator([PREDICT_PREFIX + x + " " + y for x, y in zip(INPUTS, LABELS)] * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def fitted(tokenizer, architecture, steps=60):
    """A tiny decoder fitted on the label task, so that greedy generation writes the labels."""
    model = build_tiny_causal_lm(tokenizer, architecture, seed=1)
    return fit_causal_on_labels(model, tokenizer, INPUTS, LABELS, steps=steps, max_target_length=8)


def greedy_top_probabilities(model, prompt, steps):
    """Greedy decoding one token at a time (a full forward pass each step): tokens and top probabilities."""
    ids, tokens, tops = list(prompt), [], []
    for _ in range(steps):
        with torch.no_grad():
            probs = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)
        token = int(torch.argmax(probs))
        tokens.append(token)
        tops.append(probs.max().item())
        ids.append(token)
        if token == model.generation_config.eos_token_id:
            break
    return tokens, tops


def test_a_number_after_the_prompt_starts_with_a_lone_space_token(digit_tokenizer):
    enc = encode_causal_task(
        digit_tokenizer, [PREDICT_PREFIX + INPUTS[0]], ["12"], max_prompt_length=64, max_target_length=8
    )
    target = [t for t, label in zip(enc.input_ids[0], enc.labels[0]) if label != -100]
    assert [digit_tokenizer.decode([t]) for t in target] == [" ", "1", "2", "<|endoftext|>"]


@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
def test_first_token_confidence_is_read_at_the_first_token_that_is_not_whitespace(
    digit_tokenizer, architecture
):
    tok = digit_tokenizer
    model = fitted(tok, architecture)
    data = {"input": INPUTS, "label": LABELS}
    result = label_confidences(model, tok, data, mode="first_token", max_new_tokens=6, batch_size=2)
    unsure = 0
    for i, prompt in enumerate(causal_prompts(tok, [PREDICT_PREFIX + x for x in INPUTS])):
        tokens, tops = greedy_top_probabilities(model, prompt, 6)
        first = next(k for k, t in enumerate(tokens) if tok.decode([t]).strip())
        assert result.confidences[i] == pytest.approx(tops[first], abs=1e-5)
        if LABELS[i].isdigit():  # the fit writes the space before each number: read past it
            assert first == 1 and tok.decode([tokens[0]]) == " "
            unsure += tops[0] - tops[1] > 0.2  # the space's probability would say nothing of this
        else:
            assert first == 0  # " none" is one token: read at the first step, as before
    assert unsure == 2  # "3" or "4" for the same question
