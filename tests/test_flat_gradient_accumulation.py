"""Flat (single-task) batches under gradient accumulation: DSSMITrainer in place of Seq2SeqTrainer.

A user who swaps ``Seq2SeqTrainer`` for ``DSSMITrainer`` and keeps ``DataCollatorForSeq2Seq`` trains on flat
batches. Their loss must be the token mean over the whole optimizer step, whatever the accumulation layout,
and the logged ``loss_label`` must be that step's value.
"""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from test_chunked_trainer import GradientSnapshot, build, uneven_records
from tiny_task import tokenise
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

from hf_cotmi import DSSMITrainer, DSSMITrainingArguments, prepare_dss_features

FLAT_COLUMNS = ["input_ids", "attention_mask", "labels"]


@pytest.fixture(scope="module")
def flat_features(tiny_tokenizer):
    """8 label-task-only examples per student kind, labels of different lengths (DataCollatorForSeq2Seq pads
    them with -100)."""
    records = uneven_records()
    causal = prepare_dss_features(Dataset.from_list(records), tiny_tokenizer, student_type="causal")
    return {
        "t5": tokenise(records, tiny_tokenizer).select_columns(FLAT_COLUMNS),
        "llama": causal.select_columns(FLAT_COLUMNS),
    }


def step_settings(folder, batch_size, accumulation):
    """One optimizer step over the 8 examples that changes nothing (learning rate 0, no clipping)."""
    return dict(
        output_dir=str(folder),
        max_steps=1,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=0.0,
        max_grad_norm=0.0,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        data_seed=0,
    )


def train_one_step(trainer_class, args, tokenizer, features, model):
    """The first log (``loss``, ``loss_label``, ...) and the gradients before the optimizer step."""
    snapshot = GradientSnapshot()
    trainer = trainer_class(
        model=model,
        args=args,
        processing_class=tokenizer,
        train_dataset=features,
        callbacks=[snapshot],
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
    )
    trainer.train()
    return trainer.state.log_history[0], snapshot.grads[0]


def plain_step(tmp_path, tokenizer, features, kind, batch_size, accumulation):
    folder = tmp_path / f"plain-{kind}-{batch_size}x{accumulation}"
    args = Seq2SeqTrainingArguments(**step_settings(folder, batch_size, accumulation))
    return train_one_step(Seq2SeqTrainer, args, tokenizer, features, build(kind, tokenizer))


def dssmi_step(tmp_path, tokenizer, features, kind, batch_size, accumulation, chunked=False):
    folder = tmp_path / f"dssmi-{kind}-{batch_size}x{accumulation}-chunked{chunked}"
    args = DSSMITrainingArguments(
        **step_settings(folder, batch_size, accumulation),
        chunked_output_projection=chunked,
        output_projection_chunk_size=5,
    )
    return train_one_step(DSSMITrainer, args, tokenizer, features, build(kind, tokenizer))


def token_mean_of_the_step(kind, tokenizer, features):
    """Reference written from the model alone: each example's summed token NLL (``model(...).loss`` times the
    tokens it averaged over) over all 8 examples, divided by all their scored tokens."""
    model = build(kind, tokenizer)
    model.train()
    collator = DataCollatorForSeq2Seq(tokenizer, model=model)
    total, tokens = 0.0, 0
    for index in range(len(features)):
        batch = collator([features[index]])
        scored = batch["labels"][:, 1:] if kind == "llama" else batch["labels"]  # causal: shifted
        count = int(scored.ne(-100).sum())
        with torch.no_grad():
            total += model(**batch).loss.item() * count
        tokens += count
    return total / tokens


def assert_same_gradients(grads, reference):
    assert grads.keys() == reference.keys() and len(grads) > 3
    for name in grads:
        torch.testing.assert_close(grads[name], reference[name], atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_a_flat_step_under_accumulation_gives_the_plain_trainers_token_mean_and_gradients(
    tmp_path, tiny_tokenizer, flat_features, kind, chunked
):
    """DSSMITrainer at batch 4 x accumulation 2 on flat batches (label lengths differ, -100 padding): the loss
    and gradients of plain Seq2SeqTrainer at batch 8, the token mean over the whole step.

    Llama computes its loss with ``num_items_in_batch``, so plain Seq2SeqTrainer gives the same at 4 x 2 and
    is compared there too. T5 takes ``**kwargs`` but ignores ``num_items_in_batch`` and returns a per-batch
    mean, which the Trainer then takes as already scaled: its 4 x 2 loss and gradients are the sum of the
    micro-batch means (transformers#47688), which is not reproduced.
    """
    features = flat_features[kind]
    plain_log, plain_grads = plain_step(tmp_path, tiny_tokenizer, features, kind, 8, 1)
    reference = token_mean_of_the_step(kind, tiny_tokenizer, features)
    assert math.isclose(plain_log["loss"], reference, rel_tol=1e-5)
    log, grads = dssmi_step(tmp_path, tiny_tokenizer, features, kind, 4, 2, chunked)
    assert math.isclose(log["loss"], reference, rel_tol=1e-5), (log["loss"], reference)
    assert_same_gradients(grads, plain_grads)
    if kind == "llama":
        accumulated_log, accumulated_grads = plain_step(tmp_path, tiny_tokenizer, features, kind, 4, 2)
        assert math.isclose(log["loss"], accumulated_log["loss"], rel_tol=1e-5)
        assert_same_gradients(grads, accumulated_grads)


@pytest.mark.parametrize("accumulation", [1, 2, 4])
@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_the_logged_loss_label_of_a_flat_step_is_the_logged_loss(
    tmp_path, tiny_tokenizer, flat_features, kind, accumulation
):
    """A flat batch's loss is its label loss: both logged values are the step's, at any accumulation."""
    features = flat_features[kind]
    log, _ = dssmi_step(tmp_path, tiny_tokenizer, features, kind, 8 // accumulation, accumulation)
    assert math.isclose(log["loss_label"], log["loss"], rel_tol=1e-5), log
    reference = token_mean_of_the_step(kind, tiny_tokenizer, features)
    assert math.isclose(log["loss"], reference, rel_tol=1e-5), (log["loss"], reference)


def test_a_causal_flat_step_whose_labels_start_at_the_first_token_is_the_plain_trainers(
    tmp_path, tiny_tokenizer, flat_features
):
    """Labels that are the input ids (language-model fine-tuning): the first token has no position predicting
    it, so neither the loss nor the token count of the step may include it (plain Seq2SeqTrainer counts
    ``labels[..., 1:]``)."""
    features = flat_features["llama"].map(lambda row: {"labels": list(row["input_ids"])})
    assert all(row["labels"][0] != -100 for row in features)
    plain_log, plain_grads = plain_step(tmp_path, tiny_tokenizer, features, "llama", 4, 2)
    reference = token_mean_of_the_step("llama", tiny_tokenizer, features)
    assert math.isclose(plain_log["loss"], reference, rel_tol=1e-5)
    log, grads = dssmi_step(tmp_path, tiny_tokenizer, features, "llama", 4, 2)
    assert math.isclose(log["loss"], reference, rel_tol=1e-5), (log["loss"], reference)
    assert math.isclose(log["loss_label"], reference, rel_tol=1e-5)
    assert_same_gradients(grads, plain_grads)
