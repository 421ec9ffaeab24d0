"""Decoder-only features and collation: one sequence per task, the loss on the target and EOS only."""

from __future__ import annotations

import logging

import pytest
import torch
from datasets import Dataset
from tiny_task import make_records

from hf_cotmi import DSSDataCollator, build_tiny_causal_lm, build_tiny_seq2seq, prepare_dss_features
from hf_cotmi.data.causal import encode_causal_task
from hf_cotmi.student_types import resolve_student_type
from hf_cotmi.tiny import build_word_tokenizer


def records_dataset(n: int = 6, seed: int = 0) -> Dataset:
    records = make_records(n, seed=seed)
    for i, record in enumerate(records):  # targets of different lengths
        record["rationale"] += " so" * i
    return Dataset.from_list(records)


def byte_level_tokenizer(texts):
    """A GPT-2-like byte-level BPE tokenizer trained on the fly: no pad token, BOS = EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


def loss_tokens(ids, labels):
    return [t for t, label in zip(ids, labels) if label != -100]


@pytest.mark.parametrize("architecture", ["llama", "qwen2", "gpt2"])
def test_only_the_target_and_eos_carry_loss(tiny_tokenizer, architecture):
    data = records_dataset()
    model = build_tiny_causal_lm(tiny_tokenizer, architecture)
    features = prepare_dss_features(data, tiny_tokenizer, model=model)
    eos, bos = tiny_tokenizer.eos_token_id, tiny_tokenizer.bos_token_id
    for row, record in zip(features, data):
        for ids_key, label_key, prefix, target in (
            ("input_ids", "labels", "predict: ", record["label"]),
            ("expl_input_ids", "rationale_labels", "explain: ", record["rationale"]),
        ):
            ids, labels = row[ids_key], row[label_key]
            assert len(ids) == len(labels)
            carried = loss_tokens(ids, labels)
            assert carried[-1] == eos
            assert tiny_tokenizer.decode(carried[:-1]) == tiny_tokenizer.decode(
                tiny_tokenizer(target, add_special_tokens=False)["input_ids"]
            )
            prompt = ids[: len(ids) - len(carried)]
            assert all(label == -100 for label in labels[: len(prompt)])  # every prompt token is -100
            assert prompt[0] == bos
            expected_prompt = tiny_tokenizer(prefix + record["input"], add_special_tokens=False)["input_ids"]
            assert prompt[1:] == expected_prompt


def test_byte_level_tokenizer_without_pad_token(caplog):
    data = records_dataset()
    tok = byte_level_tokenizer(list(data["input"]) + list(data["rationale"]) + ["predict: explain: 0 1 2 3"])
    assert tok.pad_token is None
    features = prepare_dss_features(data, tok, student_type="causal")
    with caplog.at_level(logging.WARNING, logger="hf_cotmi"):
        collator = DSSDataCollator(tok, student_type="causal")
    assert tok.pad_token == tok.eos_token and "no pad token" in caplog.text
    batch = collator([features[i] for i in range(len(features))])
    for row, record in enumerate(data):
        # Padding is the EOS id here, yet each row's own closing EOS still carries loss.
        labels = batch["pred"]["labels"][row]
        carried = labels[labels != -100].tolist()
        assert carried[-1] == tok.eos_token_id
        assert tok.decode(carried[:-1]).strip() == record["label"]
        # the target is the rest of the joint text: " 14" is one pre-token with its space
        assert tok.decode(carried[:-1]).startswith(" ")


def test_truncation_cuts_the_input_and_keeps_the_target(tiny_tokenizer):
    data = records_dataset(4)
    features, report = prepare_dss_features(
        data,
        tiny_tokenizer,
        student_type="causal",
        max_input_length=6,
        max_rationale_length=5,
        return_report=True,
    )
    counts = report.splits["dataset"]
    assert counts.truncated_inputs == counts.truncated_explain_inputs == 4
    assert counts.truncated_labels == 0
    assert counts.truncated_rationales == 4
    for row, record in zip(features, data):
        labels = row["labels"]
        prompt = [t for t, label in zip(row["input_ids"], labels) if label == -100]
        assert len(prompt) == 6
        assert tiny_tokenizer.decode(prompt) == "<s> predict : tom has " + record["input"].split()[2]
        assert tiny_tokenizer.decode(loss_tokens(row["input_ids"], labels)) == record["label"] + " </s>"
        rationale = loss_tokens(row["expl_input_ids"], row["rationale_labels"])
        assert len(rationale) == 5 and rationale[-1] == tiny_tokenizer.eos_token_id


CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} : {{ message['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


def test_chat_template_puts_loss_on_the_assistant_turn_only():
    tok = build_word_tokenizer(["user assistant tom has 3 apples and buys 4 more . how many ? 7 so"])
    tok.chat_template = CHAT_TEMPLATE
    data = Dataset.from_dict(
        {
            "input": ["tom has 3 apples and buys 4 more . how many ?"],
            "label": ["7"],
            "rationale": ["3 + 4 so 7"],
        }
    )
    row = prepare_dss_features(data, tok, student_type="causal", chat_template=True)[0]
    ids, labels = row["input_ids"], row["labels"]
    prompt = [t for t, label in zip(ids, labels) if label == -100]
    assert (
        tok.decode(prompt)
        == "user : predict : tom has 3 apples and buys 4 more . how many ? </s> assistant :"
    )
    assert (
        prompt
        == tok(
            tok.apply_chat_template(
                [{"role": "user", "content": "predict: " + data[0]["input"]}],
                tokenize=False,
                add_generation_prompt=True,
            ),
            add_special_tokens=False,
        )["input_ids"]
    )
    assert tok.decode(loss_tokens(ids, labels)) == "7 </s>"
    # truncation in chat mode cuts the user's content, never the template around it or the target
    cut, report = prepare_dss_features(
        data, tok, student_type="causal", chat_template=True, max_input_length=8, return_report=True
    )
    prompt = [t for t, label in zip(cut[0]["input_ids"], cut[0]["labels"]) if label == -100]
    assert len(prompt) <= 8 and tok.decode(prompt).endswith("</s> assistant :")
    assert report.splits["dataset"].truncated_inputs == 1
    assert tok.decode(loss_tokens(cut[0]["input_ids"], cut[0]["labels"])) == "7 </s>"


def test_chat_template_errors_are_clear(tiny_tokenizer):
    data = records_dataset(1)
    with pytest.raises(ValueError, match="no chat template"):
        prepare_dss_features(data, tiny_tokenizer, student_type="causal", chat_template=True)
    with pytest.raises(ValueError, match="causal"):
        prepare_dss_features(data, tiny_tokenizer, chat_template=True)


def test_layout_follows_the_model_or_the_explicit_choice(tiny_tokenizer):
    causal = build_tiny_causal_lm(tiny_tokenizer, "llama")
    seq2seq = build_tiny_seq2seq(tiny_tokenizer, "t5")
    assert resolve_student_type(causal) == "causal" and resolve_student_type(seq2seq) == "seq2seq"
    assert resolve_student_type() == "seq2seq"
    assert DSSDataCollator(tiny_tokenizer, model=causal).student_type == "causal"
    with pytest.raises(ValueError, match="is_encoder_decoder"):
        DSSDataCollator(tiny_tokenizer, model=seq2seq, student_type="causal")
    with pytest.raises(ValueError, match="student_type"):
        resolve_student_type(student_type="decoder")
    data = records_dataset(2)
    by_model = prepare_dss_features(data, tiny_tokenizer, model=causal)
    by_name = prepare_dss_features(data, tiny_tokenizer, student_type="causal")
    assert by_model["labels"] == by_name["labels"] and -100 in by_model["labels"][0]
    assert -100 not in prepare_dss_features(data, tiny_tokenizer, model=seq2seq)["labels"][0]


def test_collator_aligns_targets_and_keeps_each_row_exact(tiny_tokenizer):
    """Targets start at one column; each row's target logits equal those of the row run alone."""
    data = records_dataset(5)
    model = build_tiny_causal_lm(tiny_tokenizer, "gpt2")  # absolute positions: padding must not shift them
    model.eval()
    features = prepare_dss_features(data, tiny_tokenizer, model=model)
    rows = [features[i] for i in range(5)]
    batch = DSSDataCollator(tiny_tokenizer, model=model, pad_to_multiple_of=8)(rows)
    for part, ids_key, label_key in (
        ("pred", "input_ids", "labels"),
        ("expl", "expl_input_ids", "rationale_labels"),
    ):
        sub = batch[part]
        assert sub["input_ids"].shape[1] % 8 == 0
        starts = [int((row != -100).nonzero()[0]) for row in sub["labels"]]
        assert len(set(starts)) == 1
        with torch.no_grad():
            logits = model(**{k: v for k, v in sub.items() if k != "labels"}).logits
        for index, feature in enumerate(rows):
            ids = torch.tensor([feature[ids_key]])
            n_target = sum(1 for label in feature[label_key] if label != -100)
            with torch.no_grad():
                alone = model(input_ids=ids).logits[0, -n_target - 1 : -1]
            batched = logits[index, starts[0] - 1 : starts[0] - 1 + n_target]
            torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)
            real = sub["attention_mask"][index].bool()
            assert sub["input_ids"][index][real].tolist() == feature[ids_key]
            assert (sub["labels"][index][~real] == -100).all()


def test_collator_rejects_unaligned_labels(tiny_tokenizer):
    collator = DSSDataCollator(tiny_tokenizer, student_type="causal")
    with pytest.raises(ValueError, match="feature 0: 'labels' has 2 positions"):
        collator([{"input_ids": [3, 5, 6], "labels": [6, 1]}])


def test_the_sequence_starts_as_the_tokenizer_starts_texts(tiny_tokenizer):
    from tokenizers import processors

    from hf_cotmi.data.causal import leading_special_ids

    tok = byte_level_tokenizer(["tom has 3 apples"])  # BOS is EOS and nothing is added: no BOS
    assert leading_special_ids(tok) == []
    # a Llama-like tokenizer that puts BOS in front of every text (and nothing after it)
    llama_like = build_word_tokenizer(["tom has 3 apples"])
    bos = llama_like.bos_token_id
    llama_like.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    assert leading_special_ids(llama_like) == [bos]
    data = Dataset.from_dict({"input": ["tom has 3 apples"], "label": ["3"], "rationale": ["3"]})
    row = prepare_dss_features(data, llama_like, student_type="causal")[0]
    assert row["input_ids"][0] == bos and row["input_ids"][1] != bos


def test_a_chat_turn_is_tokenised_as_the_whole_conversation_tokenises_it():
    """A SentencePiece-style tokenizer marks a word's start ("▁yes") only at the start of a text: inside the
    conversation the assistant turn is "yes", and that is what the student must be trained on."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>", "<s>", "[INST]", "[/INST]", "▁hi", "hi", "▁yes", "yes", "▁", " "]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", bos_token="<s>",
        additional_special_tokens=["[INST]", "[/INST]"],
    )  # fmt: skip
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
        "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    )
    assert tok.convert_ids_to_tokens(tok("yes", add_special_tokens=False)["input_ids"]) == ["▁yes"]
    conversation = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}], tokenize=False
    )
    whole = tok(conversation, add_special_tokens=False)["input_ids"]
    enc = encode_causal_task(
        tok, ["hi"], ["yes"], max_prompt_length=50, max_target_length=10, chat_template=True
    )
    target = [t for t in enc.labels[0] if t != -100]
    assert tok.convert_ids_to_tokens(target) == ["yes", "</s>"]
    assert enc.input_ids[0] == whole  # prompt + target: the conversation's own ids


@pytest.mark.parametrize("blank", ["", "   "])
def test_an_empty_target_is_only_eos_for_a_byte_level_tokenizer(blank):
    """An empty rationale (kept, as in DSS) or label trains the student to stop: its target is EOS alone, not
    the separator's space token before it."""
    data = Dataset.from_dict({"input": ["tom has 3 apples"], "label": [blank], "rationale": [blank]})
    tok = byte_level_tokenizer(["tom has 3 apples so 3", "predict: explain:"])
    assert tok(" ", add_special_tokens=False)["input_ids"]  # a space alone is a token here
    row, report = prepare_dss_features(data, tok, student_type="causal", return_report=True)
    for ids_key, label_key, prefix in (
        ("input_ids", "labels", "predict: "),
        ("expl_input_ids", "rationale_labels", "explain: "),
    ):
        ids, labels = row[0][ids_key], row[0][label_key]
        assert loss_tokens(ids, labels) == [tok.eos_token_id]
        assert ids[:-1] == tok(prefix + "tom has 3 apples", add_special_tokens=False)["input_ids"]
    counts = report.splits["dataset"]
    assert counts.missing_rationales == counts.empty_labels == 1


def test_a_prompt_of_no_tokens_is_refused_naming_the_split_row_and_task():
    """A tokenizer that puts nothing in front of a text (GPT-2, Qwen) with an empty prefix and an empty input
    gave a prompt of zero tokens: the target's first token was never scored (no position before it), or
    predicted from a padding position in a batch. Every other row is fine."""
    from datasets import DatasetDict

    data = records_dataset(3)
    tok = byte_level_tokenizer(list(data["input"]) + list(data["rationale"]) + ["predict: explain: 0 1 2 3"])
    rows = data.to_list()
    rows[1]["input"] = ""
    splits = DatasetDict({"train": Dataset.from_list(rows[:1]), "test": Dataset.from_list(rows)})
    with pytest.raises(ValueError, match=r"split 'test', row 1, label task.*no tokens") as caught:
        prepare_dss_features(splits, tok, student_type="causal", predict_prefix="")
    assert "predict_prefix" in str(caught.value)
    with pytest.raises(ValueError, match=r"split 'test', row 1, rationale task.*no tokens"):
        prepare_dss_features(splits, tok, student_type="causal", explain_prefix="")
    # a prefix gives the prompt its tokens; the empty input is counted, as before
    features = prepare_dss_features(splits, tok, student_type="causal")
    assert features["test"][1]["labels"][0] == -100
    # a tokenizer that puts BOS in front of every text gives the empty prompt that token
    llama_like = build_word_tokenizer(list(data["input"]) + list(data["rationale"]))
    features = prepare_dss_features(
        splits, llama_like, student_type="causal", predict_prefix="", explain_prefix=""
    )
    row = features["test"][1]
    assert row["input_ids"][0] == llama_like.bos_token_id and row["labels"][0] == -100


def test_raw_prompts_of_no_tokens_are_refused_naming_the_example():
    from hf_cotmi import label_confidences
    from hf_cotmi.causal_confidence import candidate_target_ids, causal_prompts
    from hf_cotmi.generation import generate_texts

    data = records_dataset(3)
    tok = byte_level_tokenizer(list(data["input"]) + list(data["label"]) + ["predict: explain: 0 1 2 3"])
    with pytest.raises(ValueError, match=r"example 1: .*no tokens"):
        causal_prompts(tok, ["a", ""])
    with pytest.raises(ValueError, match=r"example 6: .*no tokens"):
        causal_prompts(tok, ["a", ""], first_index=5)
    model = build_tiny_causal_lm(tok, "gpt2")
    records = [{"input": "tom has 3 apples", "label": "3"}, {"input": "", "label": "3"}]
    for options in (dict(mode="sequence", max_new_tokens=2), dict(label_candidates=["3", "4"])):
        with pytest.raises(ValueError, match=r"example 1: .*no tokens"):
            label_confidences(model, tok, records, prefix="", **options)
    with pytest.raises(ValueError, match=r"example 1: .*no tokens"):
        generate_texts(model, tok, ["tom has", ""], prefix="", max_new_tokens=2)
    # a candidate's target split off an empty prompt text is still its tokens and EOS
    assert candidate_target_ids(tok, "", ["3"])[0][-1] == tok.eos_token_id
