"""The loss components stay on the device until they are logged: training does not wait for the device at
every micro-batch (each ``.item()``, ``float``, ``bool``, ``.tolist()`` on a tensor would), and the logged
values are those of an independent per-batch reference."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import training_arguments
from datasets import Dataset
from tiny_task import make_records, tokenise

import hf_cotmi.callbacks
import hf_cotmi.device_reads
import hf_cotmi.trainer
from hf_cotmi import (
    DSSDataCollator,
    DSSMITrainer,
    build_tiny_causal_lm,
    build_tiny_seq2seq,
    prepare_dss_features,
)

TRAINER_FILE = hf_cotmi.trainer.__file__
CALLBACKS_FILE = hf_cotmi.callbacks.__file__
DEVICE_READS_FILE = hf_cotmi.device_reads.__file__
# what reads a tensor's value on the host (a host-device synchronisation on an accelerator), and torch.tensor,
# whose copy of a host value to the device waits too
READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "nonzero", "cpu", "numpy")


@pytest.fixture
def host_reads(monkeypatch):
    """Every read of a tensor's value made directly by hf_cotmi/trainer.py, hf_cotmi/callbacks.py or
    hf_cotmi/device_reads.py, as ``(file name, function, what)``."""
    calls: list[tuple[str, str, str]] = []

    def record(what: str) -> None:
        caller = sys._getframe(2)
        if caller.f_code.co_filename in (TRAINER_FILE, CALLBACKS_FILE, DEVICE_READS_FILE):
            calls.append((Path(caller.f_code.co_filename).name, caller.f_code.co_name, what))

    def counted(name, original):
        def wrapper(*args, **kwargs):
            record(name)
            return original(*args, **kwargs)

        return wrapper

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch, "tensor", counted("torch.tensor", torch.tensor))
    return calls


def uneven_records(n: int) -> list[dict[str, str]]:
    records = make_records(n, seed=5)
    for i, record in enumerate(
        records
    ):  # targets of different lengths: per-batch means differ from the step's
        record["rationale"] += " so" * (2 * i)
        record["label"] += " apples" * (i % 3)
    return records


def features_for(student: str, tokenizer):
    if student == "causal":
        return prepare_dss_features(Dataset.from_list(uneven_records(16)), tokenizer, student_type="causal")
    return tokenise(uneven_records(16), tokenizer)


def model_for(student: str, tokenizer):
    if student == "causal":
        return build_tiny_causal_lm(tokenizer, "llama", seed=4)
    return build_tiny_seq2seq(tokenizer, "t5", seed=1)


@pytest.mark.parametrize("student", ["seq2seq", "causal"])
@pytest.mark.parametrize("stop_on_non_finite", [False, True])
def test_training_reads_no_loss_component_until_it_logs(
    tmp_path, tiny_tokenizer, host_reads, student, stop_on_non_finite
):
    """4 optimizer steps of 2 micro-batches with the MI loss on, no log on the way. The trainer reads nothing
    from the device, except a decoder-only student's target window (one read per forward pass: its shape
    decides what is computed); the finiteness check reads once per optimizer step."""
    features = features_for(student, tiny_tokenizer)
    args = training_arguments(
        tmp_path / "out",
        max_steps=4,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        logging_steps=100,
        stop_on_non_finite=stop_on_non_finite,
        mi_loss_weight=0.1,
    )
    trainer = DSSMITrainer(
        model=model_for(student, tiny_tokenizer),
        args=args,
        processing_class=tiny_tokenizer,
        train_dataset=features,
    )
    trainer.train()
    assert "loss" not in trainer.state.log_history[-1]  # the summary only: the components were never logged
    forwards = 4 * 2 * 2  # steps x micro-batches x (label and rationale passes)
    in_trainer = [call for call in host_reads if call[0] == "trainer.py"]
    expected_trainer = [("trainer.py", "_label_columns", "tolist")] * forwards if student == "causal" else []
    assert in_trainer == expected_trainer
    checks = [call for call in host_reads if call[0] == "device_reads.py" and call[1] == "read_floats"]
    assert len(checks) == (4 if stop_on_non_finite else 0)
    stored = trainer._components["train"].sums
    assert set(stored) == {"loss_label", "loss_rationale", "loss_mi"}
    assert all(isinstance(value, torch.Tensor) for value in stored.values())


def test_flat_batches_read_nothing_either(tmp_path, tiny_tokenizer, host_reads):
    from transformers import DataCollatorForSeq2Seq

    label_only = tokenise(make_records(8), tiny_tokenizer, with_rationale=False).remove_columns(
        ["input", "label"]
    )
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    args = training_arguments(
        tmp_path / "out",
        max_steps=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        logging_steps=100,
    )
    trainer = DSSMITrainer(
        model=model,
        args=args,
        processing_class=tiny_tokenizer,
        data_collator=DataCollatorForSeq2Seq(tiny_tokenizer, model=model),
        train_dataset=label_only,
    )
    trainer.train()
    assert [call for call in host_reads if call[0] == "trainer.py"] == []
    assert isinstance(trainer._components["train"].sums["loss_label"], torch.Tensor)


def test_reading_the_components_reads_them_all_at_once(tmp_path, tiny_tokenizer, host_reads):
    features = features_for("seq2seq", tiny_tokenizer)
    args = training_arguments(tmp_path / "out", max_steps=1, logging_steps=100, stop_on_non_finite=False)
    trainer = DSSMITrainer(
        model=model_for("seq2seq", tiny_tokenizer),
        args=args,
        processing_class=tiny_tokenizer,
        train_dataset=features,
    )
    trainer.train()
    host_reads.clear()
    components = trainer.training_loss_components()
    assert sorted(components) == ["loss_label", "loss_mi", "loss_rationale"]
    assert all(type(value) is float and math.isfinite(value) for value in components.values())
    assert host_reads == [("device_reads.py", "read_floats", "tolist")]


# ------------------------------------------------------------------ the logged values


def per_batch_terms(model, batch, student: str) -> dict[str, torch.Tensor]:
    """Summed label and rationale NLL, their token counts and the per-example MI terms (paper variant: max over
    the positions of each pass's softmax, then cross-entropy of the rationale's against the label's), from the
    model's own forward."""
    terms: dict[str, torch.Tensor] = {}
    peaks = {}
    for part, name in (("pred", "label"), ("expl", "rationale")):
        sub = batch[part]
        labels = sub["labels"]
        if student == "causal":
            logits = model(input_ids=sub["input_ids"], attention_mask=sub["attention_mask"]).logits[:, :-1]
            labels = labels[:, 1:]  # position t predicts token t + 1
            scored = labels.ne(-100).any(0).nonzero().flatten()
            window = logits[:, int(scored[0]) : int(scored[-1]) + 1]  # the batch's target columns
        else:
            logits = model(**sub).logits
            window = logits
        terms[f"{name}_sum"] = F.cross_entropy(
            logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum"
        )
        terms[f"{name}_tokens"] = labels.ne(-100).sum()
        peaks[name] = torch.softmax(window, -1).max(1).values
    terms["mi_rows"] = -(peaks["label"] * torch.log_softmax(peaks["rationale"], -1)).sum(-1)
    return terms


class RecordingCollator(DSSDataCollator):
    """A DSSDataCollator that keeps every batch it makes, in order."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[dict] = []

    def __call__(self, features):
        batch = super().__call__(features)
        self.batches.append(batch)
        return batch


@pytest.mark.parametrize("student", ["seq2seq", "causal"])
def test_logged_components_equal_a_per_batch_reference(tmp_path, tiny_tokenizer, student):
    """Each logged component is the mean over the logged steps of each step's mean over its two micro-batches
    (tokens for the NLL terms, examples for MI); learning rate 0, so the reference model is the trained one."""
    features = features_for(student, tiny_tokenizer)
    model = model_for(student, tiny_tokenizer)
    collator = RecordingCollator(tiny_tokenizer, model=model)
    steps, accumulation, logging_steps = 4, 2, 2
    args = training_arguments(
        tmp_path / "out",
        max_steps=steps,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=accumulation,
        logging_steps=logging_steps,
        learning_rate=0.0,
        mi_loss_weight=0.1,
    )
    trainer = DSSMITrainer(
        model=model,
        args=args,
        processing_class=tiny_tokenizer,
        train_dataset=features,
        data_collator=collator,
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in logged] == [2, 4]

    model.eval()
    step_means = []
    with torch.no_grad():
        for step in range(steps):
            micro = [
                per_batch_terms(model, b, student)
                for b in collator.batches[step * accumulation :][:accumulation]
            ]
            step_means.append(
                {
                    "loss_label": float(
                        sum(m["label_sum"] for m in micro) / sum(m["label_tokens"] for m in micro)
                    ),
                    "loss_rationale": float(
                        sum(m["rationale_sum"] for m in micro) / sum(m["rationale_tokens"] for m in micro)
                    ),
                    "loss_mi": float(torch.cat([m["mi_rows"] for m in micro]).mean()),
                }
            )
    for index, entry in enumerate(logged):
        window = step_means[index * logging_steps : (index + 1) * logging_steps]
        for name in ("loss_label", "loss_rationale", "loss_mi"):
            expected = sum(means[name] for means in window) / logging_steps
            assert math.isclose(entry[name], expected, rel_tol=1e-5, abs_tol=2e-6), (entry["step"], name)
        recombined = 0.5 * entry["loss_label"] + 0.5 * entry["loss_rationale"] + 0.1 * entry["loss_mi"]
        assert math.isclose(recombined, entry["loss"], rel_tol=1e-5)


def test_the_finiteness_check_reads_the_step_of_a_trainer_that_keeps_tensors():
    """StopOnNonFiniteCallback takes a step's components as the difference of two snapshots of the device sums
    (read at the check, in one go): a NaN micro-batch is named, finite ones are not."""
    from types import SimpleNamespace

    from hf_cotmi import NonFiniteLossError, StopOnNonFiniteCallback

    store = hf_cotmi.trainer._ComponentStore()
    trainer = SimpleNamespace(_training_loss_sums=lambda: dict(store.sums))
    callback = StopOnNonFiniteCallback(trainer)
    args = SimpleNamespace(fp16=False, logging_nan_inf_filter=True, output_dir=None)
    state = SimpleNamespace(global_step=0, max_steps=3)
    for step, value in enumerate([2.5, 1.25, float("nan")]):
        state.global_step = step
        callback.on_step_begin(args, state, None)
        store.add({"loss_label": torch.tensor(value), "loss_mi": torch.tensor(0.5)}, weight=1.0)
        if math.isnan(value):
            with pytest.raises(
                NonFiniteLossError, match=r"at step 3 of 3: the loss is not finite \(loss_label nan, "
            ):
                callback.on_pre_optimizer_step(args, state, None)
        else:
            callback.on_pre_optimizer_step(args, state, None)
    assert math.isnan(hf_cotmi.device_reads.read_floats([store.sums["loss_label"]])[0])


def test_flat_evaluation_through_a_compute_loss_override_reads_once(tmp_path, tiny_tokenizer, host_reads):
    """Whether an override handed the DSS loss on is counted on the device, batch by batch, and read with the
    components in the one read at the end of the evaluation."""
    from transformers import DataCollatorForSeq2Seq

    class PassThrough(DSSMITrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    label_only = tokenise(make_records(8), tiny_tokenizer, with_rationale=False).remove_columns(
        ["input", "label"]
    )
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    args = training_arguments(tmp_path / "out", per_device_eval_batch_size=2)
    trainer = PassThrough(
        model=model,
        args=args,
        processing_class=tiny_tokenizer,
        data_collator=DataCollatorForSeq2Seq(tiny_tokenizer, model=model),
    )
    metrics = trainer.evaluate(label_only)
    assert metrics["eval_loss"] == metrics["eval_loss_label"]
    assert [call for call in host_reads if call[0] == "trainer.py"] == []
    assert [call for call in host_reads if call[0] == "device_reads.py"] == [
        ("device_reads.py", "read_floats", "tolist")
    ]
