"""Finite or stop: a diverging run ends with an error naming the step and the losses, never NaN weights."""

from __future__ import annotations

import math
import re

import pytest
import torch
from conftest import training_arguments
from safetensors.torch import load_file
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

from hf_cotmi import (
    DSSMITrainer,
    DSSMITrainingArguments,
    NonFiniteLossError,
    StopOnNonFiniteCallback,
    build_tiny_seq2seq,
    label_confidences,
)

DIVERGING = dict(learning_rate=1e3, max_grad_norm=0.0, optim="sgd")


def make_args(tmp_path, **overrides):
    return training_arguments(tmp_path / "out", **{"max_steps": 8, **overrides})


def all_finite(tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


class PoisonWeight(TrainerCallback):
    """Sets one weight to NaN at a chosen hook and step, to make the next loss or the weights non-finite."""

    def __init__(self, hook: str, step: int):
        self.hook, self.step = hook, step

    def _poison(self, state, model):
        if state.global_step == self.step:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("nan")

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if self.hook == "step_begin":
            self._poison(state, model)

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.hook == "optimizer_step":
            self._poison(state, model)


def test_a_diverging_run_stops_before_applying_the_non_finite_step(tmp_path, tiny_tokenizer, tiny_features):
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    args = make_args(tmp_path, save_strategy="steps", save_steps=1, **DIVERGING)
    trainer = DSSMITrainer(
        model=model, args=args, processing_class=tiny_tokenizer, train_dataset=tiny_features
    )
    with pytest.raises(NonFiniteLossError) as caught:
        trainer.train()
    message = str(caught.value)
    step = int(re.search(r"at step (\d+) of 8", message).group(1))
    assert 1 < step < 8
    # the overflow ends in NaN on some CPUs and in inf on others; both must be named
    assert re.search(r"gradient norm (nan|inf|-inf)\)", message)
    for component in ("loss_label", "loss_rationale", "loss_mi"):
        assert component in message
    assert f"checkpoint-{step - 1}" in message
    # the weights were never touched by the non-finite step, and no checkpoint holds NaN
    assert all_finite(model.parameters())
    checkpoints = sorted((tmp_path / "out").glob("checkpoint-*"))
    assert [p.name for p in checkpoints] == [f"checkpoint-{i}" for i in range(1, step)]
    for checkpoint in checkpoints:
        assert all_finite(load_file(checkpoint / "model.safetensors").values())


def test_a_non_finite_loss_names_the_step_and_the_components(tmp_path, tiny_tokenizer, tiny_features):
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    trainer = DSSMITrainer(
        model=model,
        args=make_args(tmp_path),
        processing_class=tiny_tokenizer,
        train_dataset=tiny_features,
        callbacks=[PoisonWeight("step_begin", step=2)],
    )
    with pytest.raises(
        NonFiniteLossError, match=r"at step 3 of 8: the loss and the gradient norm are not"
    ) as caught:
        trainer.train()
    assert re.search(r"loss_label nan, loss_rationale nan, loss_mi nan", str(caught.value))
    assert trainer.state.global_step == 2
    assert len(trainer.state.log_history) == 2  # steps 1 and 2 logged, step 3 never was


def test_weights_that_turn_non_finite_are_never_saved(tmp_path, tiny_tokenizer, tiny_features):
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    args = make_args(tmp_path, save_strategy="steps", save_steps=2)
    trainer = DSSMITrainer(
        model=model,
        args=args,
        processing_class=tiny_tokenizer,
        train_dataset=tiny_features,
        callbacks=[PoisonWeight("optimizer_step", step=3)],  # after the gradient check of step 4
    )
    with pytest.raises(NonFiniteLossError, match=r"after step 4 of 8: the weight '.+' is no longer finite"):
        trainer.train()
    assert [p.name for p in (tmp_path / "out").glob("checkpoint-*")] == ["checkpoint-2"]


def test_switched_off_training_goes_on_and_logs_the_real_loss(tmp_path, tiny_tokenizer, tiny_features):
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    args = make_args(tmp_path, stop_on_non_finite=False, max_steps=3)
    trainer = DSSMITrainer(
        model=model,
        args=args,
        processing_class=tiny_tokenizer,
        train_dataset=tiny_features,
        callbacks=[PoisonWeight("step_begin", step=1)],
    )
    assert not any(isinstance(c, StopOnNonFiniteCallback) for c in trainer.callback_handler.callbacks)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert math.isfinite(losses[0]) and math.isnan(losses[1]) and math.isnan(losses[2])
    assert math.isnan(trainer.state.log_history[-1]["train_loss"])
    # what such a model reports afterwards: a clear error naming a broken weight, not a NaN ECE
    with pytest.raises(ValueError, match=r"not finite for 2 of 2 examples .*parameter tensors hold NaN"):
        label_confidences(trainer.model, tiny_tokenizer, {"input": ["a", "b"], "label": ["x", "y"]})


def test_on_by_default_and_the_logged_loss_is_unfiltered(tmp_path):
    args = DSSMITrainingArguments(str(tmp_path), report_to="none")
    assert args.stop_on_non_finite is True and args.logging_nan_inf_filter is False


def test_a_plain_trainer_is_stopped_by_the_gradient_check(tmp_path, tiny_tokenizer, tiny_features):
    from tiny_task import make_records, tokenise

    features = tokenise(make_records(16), tiny_tokenizer, with_rationale=False).remove_columns(
        ["input", "label"]
    )
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    args = Seq2SeqTrainingArguments(
        str(tmp_path / "plain"), max_steps=4, per_device_train_batch_size=4, report_to="none",
        use_cpu=True, save_strategy="no", disable_tqdm=True, logging_steps=1,
    )  # fmt: skip
    from transformers import DataCollatorForSeq2Seq

    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=features,
        data_collator=DataCollatorForSeq2Seq(tiny_tokenizer, model=model),
        callbacks=[StopOnNonFiniteCallback(), PoisonWeight("step_begin", step=1)],
    )
    with pytest.raises(NonFiniteLossError, match=r"at step 2 of 4: the gradient norm is not finite"):
        trainer.train()


@pytest.mark.parametrize("name", ["label_loss_weight", "rationale_loss_weight", "mi_loss_weight"])
def test_infinite_weights_are_refused(name):
    with pytest.raises(ValueError, match=name):
        DSSMITrainingArguments("out", report_to="none", **{name: float("inf")})


def test_the_gradient_norm_matches_a_naive_sum_of_squares(tiny_tokenizer):
    from hf_cotmi.callbacks import _gradient_norm_tensor

    def _gradient_norm(model):
        return float(_gradient_norm_tensor(model))

    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    for index, parameter in enumerate(model.parameters()):
        parameter.grad = torch.full_like(parameter, 0.01 * (index % 5))
    expected = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in model.parameters()))
    assert _gradient_norm(model) == pytest.approx(expected, rel=1e-5)
    next(model.parameters()).grad.view(-1)[0] = float("inf")
    assert _gradient_norm(model) == float("inf")


@pytest.mark.slow
def test_the_cli_exits_1_and_saves_no_model_when_training_diverges(tmp_path, capsys):
    from hf_cotmi.cli import main

    out = tmp_path / "student"
    code = main(
        ["demo", "--output-dir", str(out), "--max-steps", "8", "--logging-steps", "1",
         "--synthetic-train-size", "32", "--synthetic-test-size", "4", "--num-examples-to-show", "1",
         "--use-cpu", "--learning_rate", "1e3", "--max_grad_norm", "0", "--optim", "sgd"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    (error,) = [line for line in captured.err.splitlines() if "error:" in line]
    assert re.search(
        r"NonFiniteLossError: training stopped at step \d of 8: .* not finite \(loss_label ", error
    )
    assert not (out / "model.safetensors").exists()
    assert "loss 0.0000" not in captured.out


def test_under_fp16_scaler_overflows_are_left_to_the_scaler_but_a_nan_loss_is_not(tiny_tokenizer):
    from types import SimpleNamespace

    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, float("inf"))  # what an overflowing loss scale leaves
    state = SimpleNamespace(global_step=4, max_steps=10)

    def check(fp16, components):
        sums = dict(components)
        trainer = SimpleNamespace(training_loss_components=lambda: sums)
        callback = StopOnNonFiniteCallback(trainer)
        args = SimpleNamespace(fp16=fp16, logging_nan_inf_filter=False, output_dir=None)
        callback.on_step_begin(args, state, None)
        sums.update({k: v + 1.0 for k, v in components.items()})
        callback.on_pre_optimizer_step(args, state, None, model=model)

    check(True, {"loss_label": 2.0})  # a skipped fp16 step: no error
    with pytest.raises(NonFiniteLossError, match="at step 5 of 10: the gradient norm is not finite"):
        check(False, {"loss_label": 2.0})
    with pytest.raises(
        NonFiniteLossError, match=r"the loss is not finite \(loss_label nan; gradient norm not"
    ):
        check(True, {"loss_label": float("nan")})


@pytest.mark.parametrize("mode", ["sequence", "first_token"])
def test_a_model_with_nan_weights_is_named_not_read_as_forced_steps(tiny_tokenizer, mode):
    """NaN scores are not a logits processor's forcing: the confidence is NaN and the finiteness check
    names the broken weights (taken as forced, every step counted as given and the confidence was 1.0)."""
    import torch

    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"not finite for 2 of 2 examples .*parameter tensors hold NaN"):
        label_confidences(model, tiny_tokenizer, {"input": ["a", "b"], "label": ["x", "y"]}, mode=mode)
