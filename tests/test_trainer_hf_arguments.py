"""Seq2SeqTrainingArguments a Hugging Face user passes to DSSMITrainer take effect as they would on Seq2SeqTrainer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import training_arguments
from datasets import Dataset
from tiny_task import make_records
from transformers import TrainerCallback

from hf_cotmi import (
    DSSDataCollator,
    DSSMITrainer,
    build_tiny_causal_lm,
    build_tiny_seq2seq,
    prepare_dss_features,
)

DSS_COLUMNS = {
    "input_ids",
    "attention_mask",
    "labels",
    "expl_input_ids",
    "expl_attention_mask",
    "rationale_labels",
}


def student_and_features(architecture, tokenizer, seq2seq_features):
    if architecture == "llama":
        records = Dataset.from_list(make_records(16))
        return build_tiny_causal_lm(tokenizer), prepare_dss_features(
            records, tokenizer, student_type="causal"
        )
    return build_tiny_seq2seq(tokenizer, architecture), seq2seq_features


class RecordingCollator:
    """A DSSDataCollator that keeps the column names of every feature it is given."""

    def __init__(self, tokenizer, model):
        self.collate = DSSDataCollator(tokenizer, model=model)
        self.columns: set[str] = set()

    def __call__(self, features):
        for feature in features:
            self.columns.update(feature)
        return self.collate(features)


# ------------------------------------------------------------------------- remove_unused_columns


@pytest.mark.parametrize("architecture", ["t5", "llama"])
def test_remove_unused_columns_keeps_the_rationale_columns(
    tmp_path, tiny_tokenizer, tiny_features, architecture
):
    """Seq2SeqTrainer keeps only the columns model.forward takes; the rationale task's are used too."""

    def run(remove):
        model, features = student_and_features(architecture, tiny_tokenizer, tiny_features)
        collator = RecordingCollator(tiny_tokenizer, model)
        args = training_arguments(tmp_path / str(remove), max_steps=1, remove_unused_columns=remove)
        trainer = DSSMITrainer(
            model=model,
            args=args,
            processing_class=tiny_tokenizer,
            data_collator=collator,
            train_dataset=features,
            eval_dataset=features.select(range(8)),
        )
        trainer.train()
        metrics = trainer.evaluate()
        return trainer.state.log_history[0], metrics, collator.columns

    kept_log, kept_metrics, all_columns = run(False)
    removed_log, removed_metrics, used_columns = run(True)
    assert DSS_COLUMNS <= used_columns and "input" in all_columns
    assert "input" not in used_columns  # columns nothing uses are still removed
    for key in ("loss", "loss_label", "loss_rationale", "loss_mi"):
        assert math.isclose(removed_log[key], kept_log[key], rel_tol=1e-6), key
    for key in ("eval_loss", "eval_loss_label", "eval_loss_rationale", "eval_loss_mi"):
        assert math.isclose(removed_metrics[key], kept_metrics[key], rel_tol=1e-6), key


# ------------------------------------------------------------------------------------ NEFTune


class EmbeddingNoise(TrainerCallback):
    """Records, for each embedding module of the student's encoder and decoder, how far its training outputs
    are from the plain lookup ``weight[ids]`` (its hooks are registered at train begin, after NEFTune's)."""

    def __init__(self, model, alpha):
        self.alpha = alpha
        self.modules = {
            "encoder": model.get_encoder().embed_tokens,
            "decoder": model.get_decoder().embed_tokens,
        }
        self.seen: dict[str, list[tuple[float, float]]] = {name: [] for name in self.modules}
        self.handles = []

    def record(self, name):
        def hook(module, inputs, output):
            if not module.training:
                return
            clean = F.embedding(inputs[0], module.weight) * getattr(module, "embed_scale", 1.0)
            bound = self.alpha / math.sqrt(output.shape[1] * output.shape[2])
            self.seen[name].append((float((output - clean).detach().abs().max()), bound))

        return hook

    def on_train_begin(self, args, state, control, **kwargs):
        self.handles = [m.register_forward_hook(self.record(n)) for n, m in self.modules.items()]

    def on_train_end(self, args, state, control, **kwargs):
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize("architecture", ["t5", "bart"])
def test_neftune_adds_noise_to_a_seq2seq_students_embeddings(
    tmp_path, tiny_tokenizer, tiny_features, architecture
):
    """transformers 5 gives T5/BART's encoder and decoder their own embedding modules (weights tied to
    get_input_embeddings(), where the Trainer hooks NEFTune), so the noise never reached the model."""
    model = build_tiny_seq2seq(tiny_tokenizer, architecture)
    probe = EmbeddingNoise(model, alpha=5.0)
    args = training_arguments(tmp_path, max_steps=2, neftune_noise_alpha=5.0)
    trainer = DSSMITrainer(
        model=model,
        args=args,
        processing_class=tiny_tokenizer,
        train_dataset=tiny_features,
        callbacks=[probe],
    )
    trainer.train()
    for name, seen in probe.seen.items():
        assert len(seen) == 4, name  # two steps, two passes (predict: and explain:)
        for largest, bound in seen:
            assert 0 < largest <= bound * (1 + 1e-5), (name, largest, bound)
    # after training the embeddings are plain again
    batch = DSSDataCollator(tiny_tokenizer, model=model)([tiny_features[i] for i in range(2)])["pred"]
    trainer.model.train()
    for module in probe.modules.values():
        assert not hasattr(module, "neftune_noise_alpha")
    with torch.no_grad():
        ids = batch["input_ids"]
        encoder = probe.modules["encoder"]
        clean = F.embedding(ids, encoder.weight) * getattr(encoder, "embed_scale", 1.0)
        assert torch.equal(encoder(ids), clean)


def test_neftune_still_reaches_a_causal_students_embeddings(tmp_path, tiny_tokenizer):
    model, features = student_and_features("llama", tiny_tokenizer, None)
    embeddings = model.get_input_embeddings()
    seen = []

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            def hook(module, inputs, output):
                seen.append(float((output - F.embedding(inputs[0], module.weight)).abs().max().detach()))

            self.handle = embeddings.register_forward_hook(hook)

        def on_train_end(self, args, state, control, **kwargs):
            self.handle.remove()

    args = training_arguments(tmp_path, max_steps=1, neftune_noise_alpha=5.0)
    DSSMITrainer(
        model=model, args=args, processing_class=tiny_tokenizer, train_dataset=features, callbacks=[Probe()]
    ).train()
    assert len(seen) == 2 and all(value > 0 for value in seen)


# -------------------------------------------------------------------- average_tokens_across_devices


class TwoProcesses:
    """Stands in for an Accelerator of two processes whose counts are the same as this one's."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.num_processes = 2

    def reduce(self, tensor, reduction="sum"):
        assert reduction == "sum"
        return tensor * 2

    def __getattr__(self, name):
        return getattr(self.accelerator, name)


@pytest.mark.parametrize("average", [True, False])
def test_average_tokens_across_devices_decides_whose_tokens_a_loss_is_averaged_over(
    tmp_path, tiny_tokenizer, tiny_features, average
):
    """True: each process divides by the token counts of all processes (and DDP averages the gradients);
    False: each process takes the mean over its own batch, as Seq2SeqTrainer does."""
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    args = training_arguments(tmp_path, average_tokens_across_devices=average)
    trainer = DSSMITrainer(
        model=model, args=args, processing_class=tiny_tokenizer, train_dataset=tiny_features
    )
    batch = DSSDataCollator(tiny_tokenizer, model=model)([tiny_features[i] for i in range(8)])
    local = trainer._get_num_items_in_batch([batch], torch.device("cpu"))
    trainer.accelerator = TwoProcesses(trainer.accelerator)
    counts = trainer._get_num_items_in_batch([batch], torch.device("cpu"))
    trainer.accelerator = trainer.accelerator.accelerator
    labels = int(batch["pred"]["labels"].ne(-100).sum())
    assert float(local.label_tokens) == labels and local.world_size == 1
    expected_tokens, expected_world = (2 * labels, 2) if average else (labels, 1)
    assert float(counts.label_tokens) == expected_tokens and counts.world_size == expected_world
    # either way this process's share of a sum equals its own mean when all processes see the same counts
    model.train()
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch, num_items_in_batch=counts)
        plain = trainer.compute_loss(model, batch)
    assert math.isclose(float(loss), float(plain), rel_tol=1e-6)


# ------------------------------------------------------------------ metric_for_best_model direction


@pytest.mark.parametrize(
    "metric,greater",
    [
        ("eval_ece", False),
        ("ece", False),
        ("eval_ood_ece", False),
        ("eval_loss_mi", False),
        ("loss_label", False),
        ("eval_anli_loss_rationale", False),
        ("eval_loss", False),
        ("eval_accuracy", True),
        ("eval_choice_accuracy", True),
        ("eval_avg_confidence", True),
    ],
)
def test_metric_for_best_model_defaults_to_the_direction_of_the_metric(metric, greater):
    """transformers maximises every metric whose name does not end in "loss": an ECE or a loss component
    (eval_loss_mi) would keep the worst checkpoint unless greater_is_better=False was remembered."""
    args = training_arguments("out", metric_for_best_model=metric)
    assert args.greater_is_better is greater


def test_an_explicit_greater_is_better_is_kept():
    assert training_arguments(
        "out", metric_for_best_model="eval_ece", greater_is_better=True
    ).greater_is_better


def test_load_best_model_at_end_keeps_the_best_calibrated_checkpoint(tmp_path, tiny_tokenizer, tiny_features):
    from hf_cotmi import ECECallback

    args = training_arguments(
        tmp_path,
        max_steps=4,
        learning_rate=3e-2,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="eval_ece",
    )
    trainer = DSSMITrainer(
        model=build_tiny_seq2seq(tiny_tokenizer, "t5"),
        args=args,
        processing_class=tiny_tokenizer,
        train_dataset=tiny_features,
        eval_dataset=tiny_features.select(range(8)),
        callbacks=[ECECallback(n_bins=5, plot=False)],
    )
    trainer.train()
    history = {entry["step"]: entry["eval_ece"] for entry in trainer.state.log_history if "eval_ece" in entry}
    assert len(set(history.values())) > 1  # the checkpoints differ, so the direction matters
    lowest = min(history, key=history.get)
    assert trainer.state.best_metric == history[lowest]
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{lowest}")


# ------------------------------------------------------------------------- save_only_model


@pytest.mark.parametrize("how", ["path", "true"])
def test_resuming_a_save_only_model_checkpoint_is_refused_naming_save_only_model(
    tmp_path, tiny_tokenizer, tiny_features, how
):
    """Such a checkpoint has no optimizer, scheduler or RNG state: transformers resumes from a path to it with
    a fresh optimizer and a restarted learning-rate schedule, without a word."""

    def trainer(max_steps):
        args = training_arguments(
            tmp_path, max_steps=max_steps, save_strategy="steps", save_steps=1, save_only_model=True
        )
        return DSSMITrainer(
            model=build_tiny_seq2seq(tiny_tokenizer, "t5"),
            args=args,
            processing_class=tiny_tokenizer,
            train_dataset=tiny_features,
        )

    trainer(1).train()
    resumed = trainer(2)
    resume = str(tmp_path / "checkpoint-1") if how == "path" else True
    with pytest.raises(ValueError, match="save_only_model=True") as error:
        resumed.train(resume_from_checkpoint=resume)
    assert "checkpoint-1" in str(error.value)
    assert resumed.state.global_step == 0


# ------------------------------------------------------------- predict(): order and iterable datasets


def varied_length_records(count):
    """Records whose inputs differ in length, so that length grouping reorders them."""
    records = make_records(count, seed=3)
    for index, record in enumerate(records):
        record["input"] += " ." * (index * 3 % 11)
    return records


def read_jsonl(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.parametrize("architecture", ["t5", "llama"])
def test_predict_keeps_the_dataset_order_with_group_by_length(tmp_path, tiny_tokenizer, architecture):
    """transformers reads prediction sets in a shuffled length-grouped order under
    train_sampling_strategy="group_by_length": predictions.jsonl paired row i's input with another row's
    prediction, and predict() returned the rows out of order."""
    records = Dataset.from_list(varied_length_records(12))
    if architecture == "llama":
        model = build_tiny_causal_lm(tiny_tokenizer)
        features = prepare_dss_features(records, tiny_tokenizer, student_type="causal")
    else:
        model = build_tiny_seq2seq(tiny_tokenizer, "t5")
        features = prepare_dss_features(records, tiny_tokenizer)
    args = training_arguments(
        tmp_path,
        train_sampling_strategy="group_by_length",
        per_device_eval_batch_size=4,
        output_rationale=True,
        rationale_max_new_tokens=3,
    )
    trainer = DSSMITrainer(model=model, args=args, processing_class=tiny_tokenizer)
    output = trainer.predict(features)
    gold = tiny_tokenizer.batch_decode(
        np.where(output.label_ids < 0, tiny_tokenizer.pad_token_id, output.label_ids),
        skip_special_tokens=True,
    )
    # row i of the output is row i of the set
    assert [text.strip() for text in gold] == list(records["label"])
    lines = read_jsonl(tmp_path / "predictions.jsonl")
    assert [line["input"] for line in lines] == list(records["input"])
    assert [line["prediction"] for line in lines] == [
        row["prediction"] for row in trainer.decode_predictions(output.predictions)
    ]


@pytest.mark.parametrize("architecture", ["t5", "llama"])
def test_predict_writes_the_predictions_of_an_iterable_dataset(tmp_path, tiny_tokenizer, architecture):
    """A datasets.IterableDataset has column names but no column lists: writing predictions.jsonl failed
    with "Object of type IterableColumn is not JSON serializable" after the whole prediction pass."""
    model, features = student_and_features(architecture, tiny_tokenizer, None)
    if architecture != "llama":
        features = prepare_dss_features(Dataset.from_list(make_records(16)), tiny_tokenizer)
    test_set = features.select(range(6))
    args = training_arguments(tmp_path, output_rationale=True, rationale_max_new_tokens=3)
    trainer = DSSMITrainer(model=model, args=args, processing_class=tiny_tokenizer)
    trainer.predict(test_set)
    sized = read_jsonl(tmp_path / "predictions.jsonl")
    trainer.predict(test_set.to_iterable_dataset())
    streamed = read_jsonl(tmp_path / "predictions.jsonl")
    assert [line["input"] for line in streamed] == list(test_set["input"])
    assert streamed == sized


class RowDicts(torch.utils.data.IterableDataset):
    """The rows of a ``datasets.Dataset`` as a torch iterable set that does not split itself between
    dataloader workers (no ``get_worker_info``): each worker given it reads every row."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        return iter(self.dataset)


def test_predict_keeps_the_order_of_an_iterable_set_read_by_several_workers(tmp_path, tiny_tokenizer):
    """With dataloader_num_workers=2 each worker read its own shard of a two-shard datasets.IterableDataset
    and the DataLoader took their batches in turn: predict() returned the examples out of order, and
    predictions.jsonl paired each input (re-read in order) with another example's prediction."""
    records = Dataset.from_list(make_records(12, seed=3))
    features = prepare_dss_features(records, tiny_tokenizer)
    assert len(set(records["label"])) > 1  # so a gold label out of place would show

    def predict(test_set, folder):
        args = training_arguments(
            tmp_path / folder,
            dataloader_num_workers=2,
            per_device_eval_batch_size=2,
            output_rationale=True,
            rationale_max_new_tokens=3,
        )
        model = build_tiny_seq2seq(tiny_tokenizer, "t5", seed=11)
        trainer = DSSMITrainer(model=model, args=args, processing_class=tiny_tokenizer)
        output = trainer.predict(test_set)
        gold = tiny_tokenizer.batch_decode(
            np.where(output.label_ids < 0, tiny_tokenizer.pad_token_id, output.label_ids),
            skip_special_tokens=True,
        )
        return [text.strip() for text in gold], read_jsonl(tmp_path / folder / "predictions.jsonl")

    sized_gold, sized_lines = predict(features, "sized")
    streamed_gold, streamed_lines = predict(features.to_iterable_dataset(num_shards=2), "streamed")
    assert sized_gold == list(records["label"])
    assert streamed_gold == sized_gold
    assert [line["input"] for line in streamed_lines] == list(records["input"])
    assert streamed_lines == sized_lines


def test_evaluate_counts_each_example_once_with_several_workers(tmp_path, tiny_tokenizer):
    """A torch IterableDataset that does not split itself between workers was read whole by each of
    dataloader_num_workers=2 workers: the accuracy's rows counted every example twice, the ECE's once."""
    from hf_cotmi import ECECallback

    features = prepare_dss_features(Dataset.from_list(make_records(12, seed=3)), tiny_tokenizer)

    def evaluate(eval_set, folder):
        args = training_arguments(tmp_path / folder, dataloader_num_workers=2, per_device_eval_batch_size=2)
        callback = ECECallback(n_bins=5, plot=False)
        trainer = DSSMITrainer(
            model=build_tiny_seq2seq(tiny_tokenizer, "t5", seed=11),
            args=args,
            processing_class=tiny_tokenizer,
            compute_metrics=lambda prediction: {"n": float(len(prediction.label_ids))},
            callbacks=[callback],
        )
        metrics = trainer.evaluate(eval_set)
        assert len(callback.last_results["eval"].confidences) == len(features)
        timings = ("runtime", "per_second", "preparation_time")
        return {k: v for k, v in metrics.items() if not any(t in k for t in timings)}

    sized = evaluate(features, "sized")
    streamed = evaluate(RowDicts(features), "streamed")
    assert sized["eval_n"] == len(features) and "eval_ece" in sized
    assert streamed == pytest.approx(sized)
