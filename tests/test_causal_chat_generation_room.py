"""A chat-templated prompt cut to leave room for generation keeps the template's assistant header.

Training cuts the user's content of a chat prompt and keeps the template around it. At generation time
(``DSSMITrainer.predict``/``evaluate`` and ``label_confidences`` on features) a prompt too long for the
student's context minus ``max_new_tokens`` was cut from its end, which dropped the assistant header
(``eot assistant :`` here): the student generated with no assistant turn begun.
"""

from __future__ import annotations

import pytest
import torch
from conftest import training_arguments
from datasets import Dataset

from hf_cotmi import DSSMITrainer, build_tiny_causal_lm, build_word_tokenizer, prepare_dss_features
from hf_cotmi.confidence import label_confidences
from hf_cotmi.prefixes import PREDICT_PREFIX

CONTEXT = 64
NEW_TOKENS = 6
ROOM = CONTEXT - NEW_TOKENS
WORDS = " ".join(f"w{i}" for i in range(30))  # 60 tokens ("w", "0", ...)
TAIL = "eot assistant :"
TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} : {{ message['content'] }} eot {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)
RECORDS = [
    {"input": WORDS, "label": "yes", "rationale": "no yes"},
    {"input": "w3 w4", "label": "no", "rationale": "yes"},
]


@pytest.fixture(scope="module")
def tokenizer():
    tok = build_word_tokenizer([WORDS, "predict: explain: yes no user assistant eot"])
    tok.chat_template = TEMPLATE
    return tok


@pytest.fixture
def model(tokenizer):
    return build_tiny_causal_lm(tokenizer, "gpt2", hidden_size=16, num_layers=1, max_positions=CONTEXT).eval()


def chat_features(tokenizer, chat_template=True):
    # prompt + target fit the context (training works), prompt + NEW_TOKENS generated tokens do not
    return prepare_dss_features(
        Dataset.from_list(RECORDS),
        tokenizer,
        student_type="causal",
        chat_template=chat_template,
        max_input_length=CONTEXT - 3,
        with_rationale=False,
    )


def rendered_ids(tokenizer, content: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def reference_prompt(tokenizer, content: str, room: int) -> list[int]:
    """The chat prompt re-rendered from the longest start of ``content`` (whole tokens) that fits ``room``."""
    words = tokenizer(content, add_special_tokens=False)["input_ids"]
    for keep in range(len(words), -1, -1):
        ids = rendered_ids(tokenizer, tokenizer.decode(words[:keep]))
        if len(ids) <= room:
            return ids
    raise AssertionError("the template alone does not fit")


class RecordedPrompts:
    """Wraps ``model.generate`` to keep the (unpadded) prompt rows of each call."""

    def __init__(self, model):
        self.rows: list[list[list[int]]] = []
        self.generate = model.generate
        model.generate = self

    def __call__(self, *args, **kwargs):
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        self.rows.append([row[keep.bool()].tolist() for row, keep in zip(ids, mask)])
        return self.generate(*args, **kwargs)


def generate_alone(model, prompt: list[int]) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1
        )
    return out[0, len(prompt) :].tolist()


def test_features_prompt_ends_with_the_assistant_header(tokenizer):
    features = chat_features(tokenizer)
    prompt = [t for t, label in zip(features[0]["input_ids"], features[0]["labels"]) if label == -100]
    assert len(prompt) == CONTEXT - 3 and tokenizer.decode(prompt).endswith(TAIL)


def test_trainer_generation_keeps_the_assistant_header(tmp_path, tokenizer, model):
    features = chat_features(tokenizer)
    trainer = DSSMITrainer(model=model, args=training_arguments(tmp_path / "out"), processing_class=tokenizer)
    recorded = RecordedPrompts(model)
    output = trainer.predict(features, max_new_tokens=NEW_TOKENS)
    long_row, short_row = recorded.rows[0]
    expected = reference_prompt(tokenizer, PREDICT_PREFIX + WORDS, ROOM)
    assert len(expected) == ROOM and tokenizer.decode(expected).endswith(TAIL)
    assert tokenizer.decode(long_row).endswith(TAIL)
    assert long_row == expected
    assert short_row == rendered_ids(tokenizer, PREDICT_PREFIX + RECORDS[1]["input"])  # fits: unchanged
    model.generate = recorded.generate
    assert output.predictions[0].tolist() == generate_alone(model, expected)


def test_label_confidences_on_chat_features_keeps_the_assistant_header(tokenizer, model):
    features = chat_features(tokenizer)
    recorded = RecordedPrompts(model)
    result = label_confidences(
        model, tokenizer, features, mode="sequence", max_new_tokens=NEW_TOKENS, chat_template=True
    )
    expected = reference_prompt(tokenizer, PREDICT_PREFIX + WORDS, ROOM)
    assert recorded.rows[0][0] == expected
    model.generate = recorded.generate
    alone = tokenizer.decode(generate_alone(model, expected), skip_special_tokens=True).strip()
    assert result.predictions[0] == alone
    # the same prompt as from the raw text, which re-renders the cut content
    from_text = label_confidences(
        model,
        tokenizer,
        {"input": [WORDS], "label": ["yes"]},
        mode="sequence",
        max_new_tokens=NEW_TOKENS,
        chat_template=True,
    )
    assert from_text.predictions[0] == result.predictions[0]


def test_plain_prompts_still_lose_their_end(tmp_path, tokenizer, model):
    """Without the chat template the end of the input goes, as training truncation does (the tokenizer
    having a chat template does not change that)."""
    features = chat_features(tokenizer, chat_template=False)
    full = [t for t, label in zip(features[0]["input_ids"], features[0]["labels"]) if label == -100]
    trainer = DSSMITrainer(model=model, args=training_arguments(tmp_path / "out"), processing_class=tokenizer)
    recorded = RecordedPrompts(model)
    trainer.predict(features, max_new_tokens=NEW_TOKENS)
    label_confidences(model, tokenizer, features, mode="sequence", max_new_tokens=NEW_TOKENS)
    assert recorded.rows[0][0] == full[:ROOM] and recorded.rows[1][0] == full[:ROOM]


def test_fit_prompts_to_room_errors_are_clear(tokenizer):
    from hf_cotmi.causal_confidence import fit_prompts_to_room

    header = rendered_ids(tokenizer, "")
    plain = tokenizer("w1 w2 w3 w4 w5 w6", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match=r"prompt 7 does not end with the chat template's assistant header"):
        fit_prompts_to_room(tokenizer, [plain], 4, chat_template=True, first_index=7)
    long_chat = rendered_ids(tokenizer, WORDS)
    with pytest.raises(ValueError, match=rf"chat template alone takes {len(header)} tokens"):
        fit_prompts_to_room(tokenizer, [long_chat], len(header) - 1, chat_template=True)
    # the content may be cut down to nothing, the template stays whole
    assert fit_prompts_to_room(tokenizer, [long_chat], len(header), chat_template=True) == [header]
    assert fit_prompts_to_room(tokenizer, [plain], 4) == [plain[:4]]


def test_guessing_treats_prompts_as_plain_when_the_template_cannot_render_a_user_turn():
    from hf_cotmi.causal_confidence import fit_prompts_to_room
    from hf_cotmi.tiny import build_word_tokenizer

    tok = build_word_tokenizer(["a b c d e"])
    # a template that refuses a conversation without a system turn (as some do)
    tok.chat_template = "{{ raise_exception('a system message is required') }}"
    ids = tok("a b c d e", add_special_tokens=False)["input_ids"]
    assert fit_prompts_to_room(tok, [ids], 3, chat_template=None) == [ids[:3]]
    with pytest.raises(Exception, match="system message is required"):
        fit_prompts_to_room(tok, [ids], 3, chat_template=True)
