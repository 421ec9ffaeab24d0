"""The local teacher decodes as asked, whatever the model's own generation config says.

``temperature=0`` is greedy decoding and ``temperature > 0`` sampling, one text per request: a generation config
that ships beam search (``num_beams``) or several sequences per prompt (``num_return_sequences``) must not turn
greedy into beam search, nor hand back more texts than prompts.
"""

from __future__ import annotations

import pytest
import torch

from hf_cotmi.teacher import GenerationRequest, LocalCausalBackend
from hf_cotmi.teacher.backends import CutOffText
from hf_cotmi.teacher.tiny import _WORDS
from hf_cotmi.tiny import build_tiny_causal_lm, build_word_tokenizer

_PROMPTS = [
    "Q: how many apples ?\nA:",
    "Q: what is 1 + 2 + 3 + 4 + 5 and 6 ?\nA:",
    "Q: 1 ?\nA:",
    "Q: he has 3 apples and she has 4 apples . how many apples are there ?\nA:",
    "Q: 7 * 8 ?\nA:",
]
_NEW_TOKENS = 12


def _teacher():
    """A tiny random Llama that never writes EOS (its output row is zero), so each text is 12 tokens long."""
    tokenizer = build_word_tokenizer([_WORDS])
    model = build_tiny_causal_lm(tokenizer, "llama", hidden_size=64, max_positions=256, seed=1).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight[tokenizer.eos_token_id] = 0
    return model, tokenizer


def _greedy_by_hand(model, tokenizer, prompt: str) -> str:
    """Greedy decoding written out: the argmax of a full forward pass, one token at a time, no cache."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(_NEW_TOKENS):
            logits = model(input_ids=torch.tensor([ids[0].tolist() + new])).logits[0, -1]
            token = int(logits.argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
    return tokenizer.decode(new, skip_special_tokens=True)


def _backend(model, tokenizer, temperature: float) -> LocalCausalBackend:
    return LocalCausalBackend(
        "tiny",
        max_new_tokens=_NEW_TOKENS,
        temperature=temperature,
        device="cpu",
        use_chat_template=False,
        model=model,
        tokenizer=tokenizer,
    )


@pytest.mark.parametrize(
    "shipped",
    [{"num_beams": 4}, {"do_sample": True, "num_return_sequences": 2}, {"do_sample": True, "top_k": 5}],
    ids=["beam-search", "two-sequences-sampled", "sampling"],
)
def test_temperature_zero_is_greedy_whatever_the_generation_config_ships(shipped):
    model, tokenizer = _teacher()
    reference = [_greedy_by_hand(model, tokenizer, prompt) for prompt in _PROMPTS]
    for name, value in shipped.items():
        setattr(model.generation_config, name, value)
    backend = _backend(model, tokenizer, temperature=0.0)
    texts = backend.generate([GenerationRequest(i, 0, p, None) for i, p in enumerate(_PROMPTS)])
    assert texts == reference


def test_sampling_gives_one_text_per_request_when_the_config_asks_for_several_sequences():
    model, tokenizer = _teacher()
    model.generation_config.do_sample = True
    model.generation_config.num_return_sequences = 2
    backend = _backend(model, tokenizer, temperature=0.7)
    requests = [GenerationRequest(0, sample, _PROMPTS[0], 100 + sample) for sample in range(3)]
    texts = backend.generate(requests)
    assert len(texts) == 3
    assert texts == [backend.generate([request])[0] for request in requests]  # each follows its own seed
    assert len(set(texts)) == 3


def test_a_text_that_ran_into_max_new_tokens_is_marked_cut_off():
    """The local teacher gave no sign of a text cut at max_new_tokens (a server's finish_reason 'length'), so
    an answer sentence the cut ended ('So the answer is 1' of 14) was read as the teacher's answer."""
    model, tokenizer = _teacher()
    backend = _backend(model, tokenizer, temperature=0.0)
    requests = [GenerationRequest(i, 0, p, None) for i, p in enumerate(_PROMPTS)]
    cut = backend.generate(requests)
    assert all(isinstance(text, CutOffText) for text in cut)  # the model never writes EOS
    # make a word the first text holds, and some other text lacks, a stop token: those rows stop before the limit
    first = tokenizer(cut[0], add_special_tokens=False)["input_ids"]
    others = [set(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in cut[1:]]
    stop = next(token for token in first[1:-1] if any(token not in ids for ids in others))
    backend.stop_token_ids = sorted({*backend.stop_token_ids, stop})
    texts = backend.generate(requests)
    stopped = [stop in tokenizer(text, add_special_tokens=False)["input_ids"] for text in cut]
    assert stopped[0] and not all(stopped)
    assert len(texts[0]) < len(cut[0])
    for text, before, was_stopped in zip(texts, cut, stopped):
        assert isinstance(text, CutOffText) is not was_stopped
        assert was_stopped or text == before  # the rows that did not stop are as before
