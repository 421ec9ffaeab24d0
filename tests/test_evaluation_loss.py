"""The evaluation loss and its components are means over the whole evaluation set, as the training loss is
over an optimizer step: token means for the two cross-entropies, an example mean for the MI term, and
``eval_loss`` their weighted sum. So they do not depend on ``per_device_eval_batch_size``, and they equal a
reference computed example by example from the model's logits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import RecordingMetrics, training_arguments
from datasets import Dataset
from tiny_task import make_records, tokenise
from transformers import DataCollatorForSeq2Seq, TrainerCallback

from hf_cotmi import DSSMITrainer, build_tiny_causal_lm, build_tiny_seq2seq, prepare_dss_features

EXAMPLES = 7  # not a multiple of 3: the last batch of 3 is short
WEIGHTS = {"loss_label": 0.5, "loss_rationale": 0.5, "loss_mi": 0.1}  # DSSMITrainingArguments' defaults


def uneven_records() -> list[dict[str, str]]:
    """Labels, rationales and prompts of different lengths, so a mean of batch means is not the token mean."""
    records = make_records(EXAMPLES, seed=3)
    for i, record in enumerate(records):
        record["rationale"] += " so" * (3 * i)
        record["label"] += " apples" * (i % 3)
        record["input"] = "so " * (i % 4) + record["input"]
    return records


def student_and_features(kind: str, tokenizer) -> tuple[torch.nn.Module, Dataset]:
    if kind == "seq2seq":
        return build_tiny_seq2seq(tokenizer, "t5", seed=5), tokenise(uneven_records(), tokenizer)
    model = build_tiny_causal_lm(tokenizer, kind, seed=5)
    features = prepare_dss_features(Dataset.from_list(uneven_records()), tokenizer, student_type="causal")
    return model, features


def _logits_and_targets(model: torch.nn.Module, ids: list[int], labels: list[int], causal: bool):
    """One example alone (no padding): the logits of the positions that predict its targets, and the targets."""
    ids_t, labels_t = torch.tensor([ids]), torch.tensor([labels])
    if causal:
        logits = model(input_ids=ids_t, attention_mask=torch.ones_like(ids_t)).logits[0, :-1]
        targets = labels_t[0, 1:]
    else:
        logits = model(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), labels=labels_t).logits[0]
        targets = labels_t[0]
    keep = targets.ne(-100)
    return logits[keep], targets[keep]


@torch.no_grad()
def reference_metrics(
    model: torch.nn.Module, features: Dataset, prefix: str, causal: bool
) -> dict[str, float]:
    """Summed NLLs over the set divided by its tokens; the masked MI term summed over examples divided by their
    number; and the weighted sum, as the training loss combines them. Written out example by example."""
    model.eval()
    label_sum = label_tokens = rationale_sum = rationale_tokens = mi_sum = 0.0
    for row in features:
        label_logits, label_targets = _logits_and_targets(model, row["input_ids"], row["labels"], causal)
        rationale_logits, rationale_targets = _logits_and_targets(
            model, row["expl_input_ids"], row["rationale_labels"], causal
        )
        label_sum += F.cross_entropy(label_logits, label_targets, reduction="sum").item()
        label_tokens += len(label_targets)
        rationale_sum += F.cross_entropy(rationale_logits, rationale_targets, reduction="sum").item()
        rationale_tokens += len(rationale_targets)
        p = torch.softmax(label_logits, -1).max(0).values
        q = torch.softmax(rationale_logits, -1).max(0).values
        mi_sum += (-(p / p.sum()) * torch.log(q / q.sum())).sum().item()
    means = {
        "loss_label": label_sum / label_tokens,
        "loss_rationale": rationale_sum / rationale_tokens,
        "loss_mi": mi_sum / len(features),
    }
    metrics = {f"{prefix}_{name}": value for name, value in means.items()}
    metrics[f"{prefix}_loss"] = sum(WEIGHTS[name] * value for name, value in means.items())
    return metrics


def label_only_student(tokenizer, *, flat: bool) -> tuple[torch.nn.Module, Dataset, float]:
    """A tiny T5, the uneven records' features without rationales (flat: without the text columns too, as
    ``DataCollatorForSeq2Seq`` takes them) and the reference label token mean over them."""
    model = build_tiny_seq2seq(tokenizer, "t5", seed=5)
    features = tokenise(uneven_records(), tokenizer, with_rationale=False)
    if flat:
        features = features.remove_columns(["input", "label"])
    label = reference_metrics(model, tokenise(uneven_records(), tokenizer), "eval", False)["eval_loss_label"]
    return model, features, label


def assert_metrics_match(metrics: dict[str, float], expected: dict[str, float], context: object) -> None:
    for key, value in expected.items():
        assert math.isclose(metrics[key], value, rel_tol=2e-5), (context, key, metrics[key], value)


@pytest.mark.parametrize("kind", ["seq2seq", "gpt2", "llama"])
@pytest.mark.parametrize("loss_only", [True, False], ids=["loss-only", "generating"])
def test_evaluation_loss_is_the_set_mean_at_every_batch_size(tmp_path, tiny_tokenizer, kind, loss_only):
    model, features = student_and_features(kind, tiny_tokenizer)
    sets = {"whole": features, "part": features.select(range(4))}
    expected = {}
    for name, one_set in sets.items():
        expected.update(reference_metrics(model, one_set, f"eval_{name}", kind != "seq2seq"))
    for batch_size in (1, 3, EXAMPLES):
        args = training_arguments(
            tmp_path / "out",
            per_device_eval_batch_size=batch_size,
            mi_variant="masked",  # "paper" reduces over padded positions: its value depends on the padding
            generation_max_length=2,
        )
        trainer = DSSMITrainer(
            model=model,
            args=args,
            processing_class=tiny_tokenizer,
            compute_metrics=None if loss_only else RecordingMetrics(),
        )
        metrics = trainer.evaluate(sets)
        assert_metrics_match(metrics, expected, batch_size)
        if not loss_only:
            assert metrics["eval_whole_n"] == EXAMPLES and metrics["eval_part_n"] == 4
        if batch_size == 3:  # predict() reports the same figures
            predicted = trainer.predict(features).metrics
            whole = {k.replace("eval_whole", "test"): v for k, v in expected.items() if "whole" in k}
            assert_metrics_match(predicted, whole, "predict")


def test_label_only_features_give_the_weighted_label_token_mean(tmp_path, tiny_tokenizer):
    """Nested batches without rationales: the label term only, weighted as in training."""
    model, features, label = label_only_student(tiny_tokenizer, flat=False)
    for batch_size in (1, 3):
        args = training_arguments(tmp_path / "out", per_device_eval_batch_size=batch_size)
        metrics = DSSMITrainer(model=model, args=args, processing_class=tiny_tokenizer).evaluate(features)
        assert "eval_loss_rationale" not in metrics and "eval_loss_mi" not in metrics
        assert_metrics_match(metrics, {"eval_loss_label": label, "eval_loss": 0.5 * label}, batch_size)


@pytest.mark.parametrize("loss_only", [True, False], ids=["loss-only", "generating"])
@pytest.mark.parametrize("trainer_class", ["DSSMITrainer", "PassThrough"])
def test_a_flat_batch_gives_the_label_token_mean(tmp_path, tiny_tokenizer, loss_only, trainer_class):
    """A flat batch (``DataCollatorForSeq2Seq``) trains on the unweighted label token mean; it is evaluated on it,
    at every batch size, also by a subclass whose ``compute_loss`` hands ``super().compute_loss`` on unchanged
    (that is the DSS loss: the set mean stays)."""
    model, features, label = label_only_student(tiny_tokenizer, flat=True)
    trainer_type = {"DSSMITrainer": DSSMITrainer, "PassThrough": PassThrough}[trainer_class]
    for batch_size in (1, 3):
        args = training_arguments(
            tmp_path / "out", per_device_eval_batch_size=batch_size, generation_max_length=2
        )
        trainer = trainer_type(
            model=model,
            args=args,
            processing_class=tiny_tokenizer,
            data_collator=DataCollatorForSeq2Seq(tiny_tokenizer, model=model),
            compute_metrics=None if loss_only else RecordingMetrics(),
        )
        metrics = trainer.evaluate(features)
        assert_metrics_match(metrics, {"eval_loss_label": label, "eval_loss": label}, batch_size)


class LastRowRepeated(DSSMITrainer):
    """Reads the last row of every evaluation batch as one the sampler repeated to fill it (as accelerate does on
    several processes), so the loss must leave it out."""

    def _rows_not_repeated(self, batch_size: int) -> int:
        return batch_size - 1


@pytest.mark.parametrize("flat", [False, True], ids=["nested", "flat"])
def test_repeated_rows_are_left_out_of_the_evaluation_loss(tmp_path, tiny_tokenizer, flat):
    model = build_tiny_seq2seq(tiny_tokenizer, "t5", seed=5)
    features = tokenise(uneven_records(), tiny_tokenizer)
    kept = features.select([0, 1, 3, 4])  # batches of 3: [0 1 (2)] [3 4 (5)] [(6)]
    expected = reference_metrics(model, kept, "eval", False)
    extra = {}
    if flat:
        features = features.select_columns(["input_ids", "attention_mask", "labels"])
        extra["data_collator"] = DataCollatorForSeq2Seq(tiny_tokenizer, model=model)
        label = expected["eval_loss_label"]
        expected = {"eval_loss_label": label, "eval_loss": label}
    args = training_arguments(tmp_path / "out", per_device_eval_batch_size=3, mi_variant="masked")
    trainer = LastRowRepeated(model=model, args=args, processing_class=tiny_tokenizer, **extra)
    assert_metrics_match(trainer.evaluate(features), expected, "repeats")


class SeenMetrics(TrainerCallback):
    """Keeps the metrics ``on_evaluate`` and ``on_predict`` get (copies, as they were then)."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, float]] = {}

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.seen["evaluate"] = dict(metrics)

    def on_predict(self, args, state, control, metrics=None, **kwargs):
        self.seen["predict"] = dict(metrics)


def test_callbacks_get_the_evaluation_loss_that_is_returned(tmp_path, tiny_tokenizer):
    """``on_predict`` is called inside the base ``predict``: it got the batch-mean ``test_loss`` and no
    ``test_loss_*`` while the returned metrics had the set means."""
    model, features = student_and_features("seq2seq", tiny_tokenizer)
    expected = reference_metrics(model, features, "test", False)
    for batch_size in (1, 3):
        callback = SeenMetrics()
        args = training_arguments(
            tmp_path / "out", per_device_eval_batch_size=batch_size, mi_variant="masked"
        )
        trainer = DSSMITrainer(model=model, args=args, processing_class=tiny_tokenizer, callbacks=[callback])
        returned = trainer.predict(features).metrics
        assert_metrics_match(returned, expected, batch_size)
        assert_metrics_match(callback.seen["predict"], expected, batch_size)
        evaluated = trainer.evaluate(features)
        expected_eval = {k.replace("test", "eval", 1): v for k, v in expected.items()}
        assert_metrics_match(evaluated, expected_eval, batch_size)
        assert_metrics_match(callback.seen["evaluate"], expected_eval, batch_size)
        assert_metrics_match(trainer.state.log_history[-1], expected_eval, batch_size)


class LossPlusOne(DSSMITrainer):
    """A subclass whose ``compute_loss`` adds 1 to the loss."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return (result[0] + 1.0, result[1]) if return_outputs else result + 1.0


@pytest.mark.parametrize("loss_only", [True, False], ids=["loss-only", "generating"])
def test_a_compute_loss_override_keeps_its_eval_loss(tmp_path, tiny_tokenizer, loss_only):
    """Flat batches are scored through ``compute_loss``; the set-mean ``eval_loss`` replaced the override's."""
    model, features, label = label_only_student(tiny_tokenizer, flat=True)
    # one batch: transformers' mean of the batch losses is the set's label token mean, plus the override's 1
    args = training_arguments(tmp_path / "out", per_device_eval_batch_size=EXAMPLES, generation_max_length=2)
    trainer = LossPlusOne(
        model=model,
        args=args,
        processing_class=tiny_tokenizer,
        data_collator=DataCollatorForSeq2Seq(tiny_tokenizer, model=model),
        compute_metrics=None if loss_only else RecordingMetrics(),
    )
    metrics = trainer.evaluate(features)
    assert_metrics_match(metrics, {"eval_loss_label": label, "eval_loss": label + 1.0}, "override")


class PassThrough(DSSMITrainer):
    """A subclass whose ``compute_loss`` override hands the DSS loss on unchanged."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


class OwnLoss(DSSMITrainer):
    """A subclass whose ``compute_loss`` is the model's own loss, without the DSS objective."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss


@pytest.mark.parametrize("subclass", [PassThrough, LossPlusOne], ids=["pass-through", "loss-plus-one"])
@pytest.mark.parametrize("loss_only", [True, False], ids=["loss-only", "generating"])
def test_a_compute_loss_override_does_not_change_the_loss_of_nested_batches(
    tmp_path, tiny_tokenizer, subclass, loss_only
):
    """Nested DSS batches are scored by the DSS objective, not through ``compute_loss``: ``eval_loss`` is the set
    mean at every batch size, whatever the override does (it was the batch-size dependent mean of batch
    losses)."""
    model, features = student_and_features("seq2seq", tiny_tokenizer)
    expected = reference_metrics(model, features, "eval", False)
    for batch_size in (1, 3, EXAMPLES):
        args = training_arguments(
            tmp_path / "out",
            per_device_eval_batch_size=batch_size,
            mi_variant="masked",
            generation_max_length=2,
        )
        trainer = subclass(
            model=model,
            args=args,
            processing_class=tiny_tokenizer,
            compute_metrics=None if loss_only else RecordingMetrics(),
        )
        assert_metrics_match(trainer.evaluate(features), expected, (subclass.__name__, batch_size))


@pytest.mark.parametrize("loss_only", [True, False], ids=["loss-only", "generating"])
def test_a_compute_loss_of_its_own_keeps_transformers_eval_loss(tmp_path, tiny_tokenizer, loss_only):
    """An override that never calls ``super().compute_loss``: ``eval_loss`` is transformers' mean of the batch
    losses (each batch's weighted by its size), here the model's own label token mean per batch of 3."""
    model, features, label = label_only_student(tiny_tokenizer, flat=True)
    collator = DataCollatorForSeq2Seq(tiny_tokenizer, model=model)
    model.eval()
    batch_losses = []
    with torch.no_grad():
        for start in range(0, EXAMPLES, 3):
            rows = [features[i] for i in range(start, min(start + 3, EXAMPLES))]
            batch_losses.append((len(rows), model(**collator(rows)).loss.item()))
    expected = sum(size * loss for size, loss in batch_losses) / EXAMPLES
    assert not math.isclose(expected, label, rel_tol=1e-3)  # the batch means differ from the set mean
    args = training_arguments(tmp_path / "out", per_device_eval_batch_size=3, generation_max_length=2)
    trainer = OwnLoss(
        model=model,
        args=args,
        processing_class=tiny_tokenizer,
        data_collator=collator,
        compute_metrics=None if loss_only else RecordingMetrics(),
    )
    metrics = trainer.evaluate(features)
    assert_metrics_match(metrics, {"eval_loss": expected}, "own loss")
    assert "eval_loss_label" not in metrics  # nothing was scored by the DSS objective
