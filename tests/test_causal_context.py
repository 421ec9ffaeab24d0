"""A decoder-only student's prompt leaves room in its context for the tokens it generates.

A tiny GPT-2 with 64 positions and an input longer than that: before the fix the prompt filled the
context and generation indexed past the position embeddings (IndexError).
"""

from __future__ import annotations

import copy
import logging
import pickle
import re
from types import SimpleNamespace

import pytest
import torch
from conftest import RecordingMetrics, training_arguments
from datasets import Dataset
from transformers import GenerationConfig

from hf_cotmi import (
    DSSMITrainer,
    ECECallback,
    build_tiny_causal_lm,
    build_word_tokenizer,
    prepare_dss_features,
)
from hf_cotmi.confidence import label_confidences
from hf_cotmi.generation import generate_texts, predict_texts
from hf_cotmi.students import GenerationLengthError, generation_prompt_limit, input_length_limit

CONTEXT = 64
WORDS = " ".join(f"w{i}" for i in range(100))  # 200 tokens ("w", "0", ...): longer than the context


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer([WORDS, "predict: explain: yes no"])


@pytest.fixture
def model(tokenizer):
    return build_tiny_causal_lm(tokenizer, "gpt2", hidden_size=16, num_layers=1, max_positions=CONTEXT)


class PromptWidths:
    """Wraps ``model.generate`` to record the prompt width and the total length of each call."""

    def __init__(self, model):
        self.calls: list[tuple[int, int]] = []
        self.generate = model.generate
        model.generate = self

    def __call__(self, *args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        out = self.generate(*args, **kwargs)
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        self.calls.append((int(ids.shape[1]), int(sequences.shape[1])))
        return out


def test_input_length_limit_is_the_smaller_limit_minus_the_generated_tokens(tokenizer, model):
    # the word tokenizer claims 1024, the model has 64 positions
    assert tokenizer.model_max_length == 1024
    assert input_length_limit(model, tokenizer) == CONTEXT
    assert input_length_limit(model, tokenizer, max_new_tokens=8) == CONTEXT - 8
    seq2seq = SimpleNamespace(config=SimpleNamespace(is_encoder_decoder=True, n_positions=64))
    assert input_length_limit(seq2seq, SimpleNamespace(), max_new_tokens=8) == 64  # no prompt in its output


def test_generation_prompt_limit_keeps_the_smaller_of_the_two(tokenizer, model):
    assert generation_prompt_limit(model, tokenizer, 8, max_input_length=40) == 40
    assert generation_prompt_limit(model, tokenizer, 8, max_input_length=64) == 56
    assert generation_prompt_limit(model, tokenizer, 8) == 56
    with pytest.raises(ValueError, match=r"max_new_tokens=64 .* context of 64 tokens"):
        generation_prompt_limit(model, tokenizer, 64)


@pytest.mark.parametrize("new_tokens", [8, 20])
def test_generate_texts_truncates_the_prompt_to_leave_room(tokenizer, model, new_tokens):
    widths = PromptWidths(model)
    (text,) = generate_texts(
        model, tokenizer, [WORDS], prefix="explain: ", max_new_tokens=new_tokens, max_input_length=CONTEXT
    )
    assert widths.calls == [(CONTEXT - new_tokens, CONTEXT)]  # random weights: never EOS
    assert len(text.split()) == new_tokens


def test_label_confidences_sequence_mode_truncates_the_prompt(tokenizer, model):
    widths = PromptWidths(model)
    result = label_confidences(
        model,
        tokenizer,
        {"input": [WORDS], "label": ["yes"]},
        mode="sequence",
        prefix="predict: ",
        max_new_tokens=8,
        max_source_length=CONTEXT,
    )
    assert widths.calls == [(CONTEXT - 8, CONTEXT)]
    assert len(result.predictions[0].split()) == 8 and 0.0 <= result.confidences[0] <= 1.0


def test_predict_texts_with_the_students_own_limit(tokenizer, model):
    widths = PromptWidths(model)
    limit = input_length_limit(model, tokenizer)  # what run_prediction uses without a sidecar
    (row,) = predict_texts(
        model, tokenizer, [WORDS], label_max_new_tokens=4, rationale_max_new_tokens=12, max_input_length=limit
    )
    assert widths.calls == [(CONTEXT - 4, CONTEXT), (CONTEXT - 12, CONTEXT)]
    assert len(row["label"].split()) == 4 and len(row["rationale"].split()) == 12


def test_too_many_new_tokens_is_a_clear_error(tokenizer, model):
    with pytest.raises(ValueError, match="max_new_tokens=70"):
        generate_texts(model, tokenizer, ["w1"], prefix="", max_new_tokens=70)


@pytest.fixture
def features(tokenizer, model):
    return prepare_dss_features(
        Dataset.from_list([{"input": "w1 w2", "label": "yes", "rationale": "no"}] * 4),
        tokenizer,
        model=model,
        max_input_length=16,
        max_label_length=8,
        max_rationale_length=8,
    )


def evaluating_trainer(
    tmp_path, tokenizer, model, features, compute_metrics=None, callbacks=None, **settings
):
    """A trainer that evaluates after its one step, generating when ``compute_metrics`` is given."""
    settings = {"max_steps": 1, "eval_strategy": "steps", "eval_steps": 1, **settings}
    args = training_arguments(tmp_path / "out", **settings)
    return DSSMITrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        train_dataset=features,
        eval_dataset=features,
        compute_metrics=compute_metrics,
        callbacks=callbacks,
    )


def _set_generation_config(**values):
    def setup(model):
        for name, value in values.items():
            setattr(model.generation_config, name, value)

    return setup


@pytest.mark.parametrize(
    "settings, setup, argument, value",
    [
        (
            dict(output_rationale=True, rationale_max_new_tokens=CONTEXT),
            None,
            "rationale_max_new_tokens",
            CONTEXT,
        ),
        (dict(output_rationale=True, rationale_max_new_tokens=256), None, "rationale_max_new_tokens", 256),
        (dict(generation_max_length=CONTEXT + 1), None, "generation_max_length", CONTEXT + 1),
        (
            dict(generation_max_length=None, generation_config=GenerationConfig(max_new_tokens=CONTEXT)),
            None,
            "generation_config.max_new_tokens",
            CONTEXT,
        ),
        (
            dict(generation_max_length=None, generation_config=GenerationConfig(max_length=CONTEXT)),
            None,
            "generation_config.max_length",
            CONTEXT,
        ),
        (
            dict(generation_max_length=None),
            _set_generation_config(max_new_tokens=CONTEXT),
            "model.generation_config.max_new_tokens",
            CONTEXT,
        ),
        (
            dict(generation_max_length=None),
            _set_generation_config(max_length=CONTEXT),
            "model.generation_config.max_length",
            CONTEXT,
        ),
    ],
    ids=[
        "rationale-at-the-context",
        "rationale-default",
        "generation-max-length",
        "generation-config-max-new-tokens",
        "generation-config-max-length",
        "model-max-new-tokens",
        "model-max-length",
    ],
)
def test_generation_lengths_the_context_cannot_hold_are_refused_before_training(
    tmp_path, tokenizer, model, features, settings, setup, argument, value
):
    """Evaluation during training would fail on them only after the first training steps (or the whole run);
    ``train()`` refuses them before any step, naming the setting evaluation takes the length from."""
    if setup is not None:
        setup(model)
    trainer = evaluating_trainer(tmp_path, tokenizer, model, features, RecordingMetrics(), **settings)
    expected = (
        rf"^{re.escape(argument)}={value} leaves no room for a prompt in the student's context of {CONTEXT} "
    )
    with pytest.raises(GenerationLengthError, match=expected) as raised:
        trainer.train()
    assert trainer.state.global_step == 0
    generates = "rationales" if argument == "rationale_max_new_tokens" else "labels"
    error = raised.value
    assert (error.setting, error.value, error.context) == (argument, value, CONTEXT)
    assert (error.generates, error.confidence) == (generates, None)


@pytest.mark.parametrize(
    "settings, setup, callback, compute_metrics, argument, value",
    [
        # the evaluation computes the losses only (no compute_metrics), but the callback generates
        (
            dict(generation_max_length=CONTEXT),
            None,
            ECECallback(confidence="sequence", plot=False),
            False,
            "generation_max_length",
            CONTEXT,
        ),
        (
            dict(generation_max_length=CONTEXT + 1, predict_with_generate=False),
            None,
            ECECallback(confidence="first_token", plot=False),
            False,
            "generation_max_length",
            CONTEXT + 1,
        ),
        # the predictions' length fits; the callback's own does not
        (
            dict(generation_max_length=6),
            None,
            ECECallback(confidence="sequence", max_new_tokens=CONTEXT, plot=False),
            True,
            "ECECallback.max_new_tokens",
            CONTEXT,
        ),
        (
            dict(generation_max_length=None),
            _set_generation_config(max_length=CONTEXT),
            ECECallback(confidence="first_token", plot=False),
            False,
            "model.generation_config.max_length",
            CONTEXT,
        ),
    ],
    ids=[
        "loss-only-evaluation",
        "no-predict-with-generate",
        "callback-max-new-tokens",
        "model-max-length",
    ],
)
def test_ece_generation_lengths_the_context_cannot_hold_are_refused_before_training(
    tmp_path, tokenizer, model, features, settings, setup, callback, compute_metrics, argument, value
):
    """``ECECallback`` generates labels at every evaluation (sequence and first-token confidence), whatever
    ``compute_metrics`` and ``predict_with_generate`` say, with its own ``max_new_tokens`` when it has one: a
    length the context cannot hold failed only at the first evaluation, after the first step. The error names
    the setting and the callback."""
    if setup is not None:
        setup(model)
    metrics = RecordingMetrics() if compute_metrics else None
    trainer = evaluating_trainer(
        tmp_path, tokenizer, model, features, metrics, callbacks=[callback], **settings
    )
    expected = (
        rf"^{re.escape(argument)}={value} leaves no room for a prompt in the student's context of {CONTEXT} "
        rf".*; ECECallback\(confidence='{callback.mode}'\) generates labels with it at each evaluation$"
    )
    with pytest.raises(GenerationLengthError, match=expected) as raised:
        trainer.train()
    assert trainer.state.global_step == 0
    error = raised.value
    assert (error.setting, error.value, error.context) == (argument, value, CONTEXT)
    assert (error.generates, error.confidence) == ("labels", callback.mode)


def test_the_generation_length_error_carries_its_fields_and_pickles_with_them(tokenizer, model):
    """A ``ValueError`` (the handlers that caught one still do), whose message is built from its fields."""
    with pytest.raises(GenerationLengthError) as raised:
        generation_prompt_limit(model, tokenizer, CONTEXT + 3, argument="rationale_max_new_tokens")
    error = raised.value
    assert isinstance(error, ValueError)
    assert (error.setting, error.value, error.context, error.generates, error.confidence) == (
        "rationale_max_new_tokens",
        CONTEXT + 3,
        CONTEXT,
        None,
        None,
    )
    assert str(error) == (
        f"rationale_max_new_tokens={CONTEXT + 3} leaves no room for a prompt in the student's context of "
        f"{CONTEXT} tokens (a decoder-only student generates after its prompt); ask for fewer than {CONTEXT} "
        "new tokens"
    )
    ece = GenerationLengthError("generation_max_length", 70, CONTEXT, "labels", "first_token")
    pickled = pickle.loads(pickle.dumps(ece))
    assert type(pickled) is GenerationLengthError and str(pickled) == str(ece)
    fields = {"setting": "generation_max_length", "value": 70, "context": CONTEXT}
    assert vars(pickled) == vars(ece) == {**fields, "generates": "labels", "confidence": "first_token"}
    ending = "; ECECallback(confidence='first_token') generates labels with it at each evaluation"
    assert str(ece).endswith(ending)
    # pickled and copied, a note added and an attribute set on it stay too
    ece.add_note("while checking the ECE's length")
    ece.origin = "a check of its own"
    for again in (pickle.loads(pickle.dumps(ece)), copy.copy(ece)):
        assert type(again) is GenerationLengthError and again is not ece and str(again) == str(ece)
        assert again.__notes__ == ["while checking the ECE's length"] and again.origin == "a check of its own"
        assert (again.setting, again.value, again.confidence) == ("generation_max_length", 70, "first_token")


@pytest.mark.parametrize(
    "settings, callback",
    [
        # the callback's own length wins over generation_max_length, which nothing else generates with
        (
            dict(generation_max_length=CONTEXT),
            ECECallback(confidence="sequence", max_new_tokens=4, plot=False),
        ),
        # candidates are scored, not generated
        (dict(generation_max_length=CONTEXT), ECECallback(label_candidates=["yes", "no"], plot=False)),
        (
            dict(generation_max_length=CONTEXT, eval_strategy="no"),
            ECECallback(confidence="sequence", plot=False),
        ),
    ],
    ids=["callback-max-new-tokens-fits", "candidates", "no-evaluation"],
)
def test_ece_generation_lengths_that_fit_or_are_not_used_train(
    tmp_path, tokenizer, model, features, settings, callback
):
    trainer = evaluating_trainer(tmp_path, tokenizer, model, features, callbacks=[callback], **settings)
    widths = PromptWidths(model)
    trainer.train()
    assert trainer.state.global_step == 1
    evaluated = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    if settings.get("eval_strategy") == "no":
        assert evaluated == [] and widths.calls == []
        return
    assert len(evaluated) == 1 and 0.0 <= evaluated[0]["eval_ece"] <= 1.0
    if callback.mode == "candidates":
        assert widths.calls == []
    else:  # the callback generated its 4 tokens at most after each prompt
        assert widths.calls and all(0 < total - prompt <= 4 for prompt, total in widths.calls)


@pytest.mark.parametrize(
    "settings, compute_metrics",
    [
        (
            dict(
                output_rationale=True, rationale_max_new_tokens=CONTEXT - 1, generation_max_length=CONTEXT - 1
            ),
            True,
        ),
        (dict(rationale_max_new_tokens=256), True),  # no rationale is generated without output_rationale
        (dict(predict_with_generate=False, generation_max_length=500), False),  # nothing is generated
        (dict(generation_max_length=CONTEXT, output_rationale=True, rationale_max_new_tokens=CONTEXT), False),
        (dict(generation_max_length=CONTEXT, eval_strategy="no"), True),  # no evaluation during training
    ],
    ids=["fits", "rationale-not-generated", "no-generation", "loss-only-evaluation", "no-evaluation"],
)
def test_generation_lengths_that_fit_or_are_not_used_train(
    tmp_path, tokenizer, model, features, settings, compute_metrics
):
    """Without ``compute_metrics`` the evaluation computes the losses only: nothing is generated."""
    metrics = RecordingMetrics() if compute_metrics else None
    trainer = evaluating_trainer(tmp_path, tokenizer, model, features, metrics, **settings)
    trainer.train()
    assert trainer.state.global_step == 1
    evaluated = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    assert len(evaluated) == (0 if settings.get("eval_strategy") == "no" else 1)
    if evaluated:  # compute_metrics got the generated labels
        assert ("eval_n" in evaluated[0]) == (metrics is not None)


def test_evaluate_with_its_own_max_new_tokens_is_accepted(tmp_path, tokenizer, model, features):
    """``generation_max_length`` fills the context, but the call asks for 4 new tokens: those are generated."""
    trainer = evaluating_trainer(
        tmp_path, tokenizer, model, features, RecordingMetrics(), generation_max_length=CONTEXT
    )
    widths = PromptWidths(model)
    assert trainer.evaluate(features, max_new_tokens=4)["eval_n"] == 4
    assert widths.calls and all(total - prompt <= 4 for prompt, total in widths.calls)
    with pytest.raises(ValueError, match=f"max_new_tokens={CONTEXT} leaves no room"):
        trainer.evaluate(features)  # generation_max_length, read as new tokens


def test_a_generation_length_changed_after_building_is_refused_before_any_step(
    tmp_path, tokenizer, model, features
):
    trainer = evaluating_trainer(
        tmp_path,
        tokenizer,
        model,
        features,
        RecordingMetrics(),
        output_rationale=True,
        rationale_max_new_tokens=8,
    )
    trainer.args.rationale_max_new_tokens = CONTEXT
    with pytest.raises(ValueError, match=f"rationale_max_new_tokens={CONTEXT} leaves no room"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_trainer_generation_truncates_feature_prompts(tmp_path, tokenizer, model):
    records = [
        {"input": WORDS, "label": "yes", "rationale": "no yes"},
        {"input": "w3 w4", "label": "no", "rationale": "yes"},
    ]
    # prompt + target fit the context (training works), prompt + 6 generated tokens do not
    features = prepare_dss_features(
        Dataset.from_list(records), tokenizer, student_type="causal", max_input_length=CONTEXT - 3
    )
    assert max(len(ids) for ids in features["expl_input_ids"]) == CONTEXT
    full_prompt = [t for t, label in zip(features[0]["input_ids"], features[0]["labels"]) if label == -100]
    assert len(full_prompt) == CONTEXT - 3
    trainer = DSSMITrainer(model=model, args=training_arguments(tmp_path / "out"), processing_class=tokenizer)
    widths = PromptWidths(model)
    output = trainer.predict(features, max_new_tokens=6)
    assert output.predictions.shape == (2, 6)
    assert widths.calls[0][0] == CONTEXT - 6
    # the long row keeps the start of its prompt, as training truncation does
    model.generate = widths.generate
    model.eval()
    kept = torch.tensor([full_prompt[: CONTEXT - 6]])
    with torch.no_grad():
        alone = model.generate(kept, attention_mask=torch.ones_like(kept), max_new_tokens=6, do_sample=False)
    assert output.predictions[0].tolist() == alone[0, CONTEXT - 6 :].tolist()


def test_training_features_fit_the_context_prompt_cut_target_kept(tokenizer, model):
    """Prompt and target share the context: with limits that add up to more than it, the prompt is cut
    further (and counted as truncated) so that the training forward pass fits; it raised IndexError."""
    rationale = " ".join(f"w{i}" for i in range(10))  # 20 tokens + EOS
    data = Dataset.from_dict(
        {"input": [WORDS, "w1 w2"], "label": ["yes", "no"], "rationale": [rationale] * 2}
    )
    features, report = prepare_dss_features(
        data, tokenizer, model=model, max_input_length=60, max_label_length=8, max_rationale_length=32,
        return_report=True,
    )  # fmt: skip
    rows = features["train"] if hasattr(features, "keys") else features
    for name in ("input_ids", "expl_input_ids"):
        assert max(len(ids) for ids in rows[name]) <= CONTEXT, name
    long, short = rows[0], rows[1]
    # the whole target stays, with its loss, as in the short row: the prompt made the room
    target = [t for t in long["rationale_labels"] if t != -100]
    assert target == [t for t in short["rationale_labels"] if t != -100]
    assert long["expl_input_ids"][-len(target) :] == target and len(long["expl_input_ids"]) == CONTEXT
    split_report = next(iter(report.splits.values()))
    assert split_report.truncated_inputs == 1 and split_report.truncated_explain_inputs == 1
    with torch.no_grad():  # the forward pass the loss takes runs
        model(input_ids=torch.tensor([long["expl_input_ids"]]))


def test_the_truncation_warning_names_the_context_that_cut_the_prompt(tokenizer, model, caplog):
    """A prompt cut so that prompt and target fit the student's context was reported as "truncated to
    max_input_length=1000 tokens", a limit it never reached."""
    data = Dataset.from_dict({"input": [WORDS, "w1 w2"], "label": ["yes", "no"], "rationale": ["w1", "w2"]})
    with caplog.at_level(logging.WARNING, logger="hf_cotmi"):
        features = prepare_dss_features(
            data, tokenizer, model=model, max_input_length=1000, max_label_length=8, max_rationale_length=8
        )
    assert len(features[0]["input_ids"]) == CONTEXT  # cut by the context, far below 1000
    expected = (
        f"max_input_length=1000 tokens or fewer, to fit the target in the student's context of {CONTEXT}"
    )
    lines = [line for line in caplog.text.splitlines() if "inputs were truncated" in line]
    assert len(lines) == 2 and all(expected in line for line in lines), lines
