"""DSSMITrainer end to end with tiny models built in code (offline)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import RecordingMetrics, training_arguments
from tiny_task import make_records, tokenise
from transformers import AutoModelForSeq2SeqLM, Seq2SeqTrainingArguments, TrainerCallback

from hf_cotmi import DSSDataCollator, DSSMITrainer, DSSMITrainingArguments, build_tiny_seq2seq
from hf_cotmi.losses import mutual_information_loss


class GradientSnapshot(TrainerCallback):
    """Keeps a copy of every parameter gradient just before each optimizer step."""

    def __init__(self):
        self.grads: list[dict[str, torch.Tensor]] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads.append(
            {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        )


def reference_loss(model, batch, weights=(0.5, 0.5, 0.1)):
    """The DSS + MI objective written directly with the model's own forward and loss."""
    pred, expl = batch["pred"], batch["expl"]
    out_p = model(**pred)
    out_e = model(**expl)
    label_loss = F.cross_entropy(out_p.logits.flatten(0, 1), pred["labels"].flatten(), ignore_index=-100)
    rationale_loss = F.cross_entropy(out_e.logits.flatten(0, 1), expl["labels"].flatten(), ignore_index=-100)
    p = torch.softmax(out_p.logits.detach(), -1).max(1).values
    q = torch.softmax(out_e.logits, -1).max(1).values
    mi = torch.nn.CrossEntropyLoss()(q, p)
    return weights[0] * label_loss + weights[1] * rationale_loss + weights[2] * mi


def test_training_loss_matches_an_independent_reference(tmp_path, tiny_tokenizer, tiny_features, make_args):
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    args = make_args(tmp_path, max_steps=1, per_device_train_batch_size=8, learning_rate=0.0)
    features = tiny_features.select(range(8))
    batch = DSSDataCollator(tiny_tokenizer, model=model)([features[i] for i in range(8)])
    expected = reference_loss(model, batch).item()
    trainer = DSSMITrainer(model=model, args=args, processing_class=tiny_tokenizer, train_dataset=features)
    trainer.train()
    logged = trainer.state.log_history[0]
    assert math.isclose(logged["loss"], expected, rel_tol=1e-5)
    for key in ("loss_label", "loss_rationale", "loss_mi"):
        assert key in logged
    recombined = 0.5 * logged["loss_label"] + 0.5 * logged["loss_rationale"] + 0.1 * logged["loss_mi"]
    assert math.isclose(recombined, logged["loss"], rel_tol=1e-5)


def _one_step(tmp_path, tokenizer, features, batch_size, accumulation, name, variant, pad_to):
    model = build_tiny_seq2seq(tokenizer, "t5", seed=1)
    snapshot = GradientSnapshot()
    args = training_arguments(
        tmp_path / name / "out",
        max_steps=1,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_grad_norm=0.0,
        mi_variant=variant,
    )
    trainer = DSSMITrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        train_dataset=features,
        callbacks=[snapshot],
        data_collator=DSSDataCollator(tokenizer, model=model, pad_to_multiple_of=pad_to),
    )
    trainer.train()
    return trainer.state.log_history[0], snapshot.grads[0]


@pytest.mark.parametrize(
    "variant,pad_to",
    [
        ("masked", None),
        # The paper variant reduces over padded positions too, so its value depends on how far a batch is
        # padded; with a fixed padded length it is as invariant as the rest.
        ("paper", 64),
    ],
)
def test_gradient_accumulation_gives_the_same_loss_and_gradients(tmp_path, tiny_tokenizer, variant, pad_to):
    # Labels and rationales of different lengths, so per-micro-batch means would differ from the whole mean.
    records = make_records(8, seed=5)
    for i, record in enumerate(records):
        record["rationale"] = record["rationale"] + " so" * (3 * i)
        record["label"] = record["label"] + " apples" * (i % 3)
    features = tokenise(records, tiny_tokenizer)
    log_full, grads_full = _one_step(tmp_path, tiny_tokenizer, features, 8, 1, "full", variant, pad_to)
    log_accum, grads_accum = _one_step(tmp_path, tiny_tokenizer, features, 2, 4, "accum", variant, pad_to)
    for key in ("loss", "loss_label", "loss_rationale", "loss_mi"):
        assert math.isclose(log_full[key], log_accum[key], rel_tol=1e-5), key
    assert grads_full.keys() == grads_accum.keys()
    for name in grads_full:
        torch.testing.assert_close(grads_full[name], grads_accum[name], atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("chunked", [False, True])
def test_gradient_accumulation_with_lora_gives_the_same_loss_and_gradients(tmp_path, tiny_tokenizer, chunked):
    """LoRA + MI (and the chunked output projection): (batch 8, accumulation 1) and (batch 2, accumulation 4)."""
    peft = pytest.importorskip("peft")
    records = make_records(8, seed=5)
    for i, record in enumerate(records):
        record["rationale"] = record["rationale"] + " so" * (3 * i)
        record["label"] = record["label"] + " apples" * (i % 3)
    features = tokenise(records, tiny_tokenizer)

    def one_step(name, batch_size, accumulation):
        snapshot = GradientSnapshot()
        # init_lora_weights=False: lora_B is not zero, so lora_A gets a gradient too
        config = peft.LoraConfig(
            r=4, lora_alpha=8, target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM", lora_dropout=0.0,
            init_lora_weights=False,
        )  # fmt: skip
        trainer = DSSMITrainer(
            model=build_tiny_seq2seq(tiny_tokenizer, "t5", seed=1),
            args=training_arguments(
                tmp_path / name / "out",
                max_steps=1,
                per_device_train_batch_size=batch_size,
                gradient_accumulation_steps=accumulation,
                max_grad_norm=0.0,
                mi_variant="masked",
                chunked_output_projection=chunked,
            ),
            processing_class=tiny_tokenizer,
            train_dataset=features,
            callbacks=[snapshot],
            peft_config=config,
        )
        trainer.train()
        assert (trainer._chunkable_output_projection(trainer.model) is not None) == chunked
        return trainer.state.log_history[0], snapshot.grads[0]

    log_full, grads_full = one_step("full", 8, 1)
    log_accum, grads_accum = one_step("accum", 2, 4)
    for key in ("loss", "loss_label", "loss_rationale", "loss_mi"):
        assert math.isclose(log_full[key], log_accum[key], rel_tol=1e-5), key
    assert grads_full.keys() == grads_accum.keys()
    assert any("lora_A" in n for n in grads_full) and all("lora_" in n for n in grads_full)
    for name in grads_full:
        assert grads_full[name].abs().max() > 0, name
        torch.testing.assert_close(grads_full[name], grads_accum[name], atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("architecture", ["t5", "bart", "encoder-decoder"])
def test_trains_evaluates_and_predicts_for_each_architecture(
    tmp_path, tiny_tokenizer, tiny_features, architecture, make_args
):
    model = build_tiny_seq2seq(tiny_tokenizer, architecture)
    calls = []

    def compute_metrics(eval_pred):
        calls.append(eval_pred)
        return {"n": float(len(eval_pred.predictions))}

    args = make_args(tmp_path, max_steps=3, eval_strategy="steps", eval_steps=3)
    trainer = DSSMITrainer(
        model=model,
        args=args,
        processing_class=tiny_tokenizer,
        train_dataset=tiny_features,
        eval_dataset=tiny_features,
        compute_metrics=compute_metrics,
    )
    trainer.train()
    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert evals, trainer.state.log_history
    last = evals[-1]
    for key in ("eval_loss_label", "eval_loss_rationale", "eval_loss_mi", "eval_n"):
        assert key in last
    combined = 0.5 * last["eval_loss_label"] + 0.5 * last["eval_loss_rationale"] + 0.1 * last["eval_loss_mi"]
    assert math.isclose(combined, last["eval_loss"], rel_tol=1e-4)
    assert calls and calls[-1].predictions.shape[0] == len(tiny_features)


@pytest.mark.parametrize("given_to", ["trainer", "evaluate"])
def test_generation_kwargs_reach_every_set_of_a_dict_of_eval_sets(
    tmp_path, tiny_tokenizer, tiny_features, given_to, make_args
):
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    lengths = []

    def compute_metrics(eval_pred):
        ids = eval_pred.predictions
        lengths.append(int(((ids != -100) & (ids != tiny_tokenizer.pad_token_id)).sum(1).max()))
        return {"n": float(len(eval_pred.predictions))}

    sets = {"first": tiny_features.select(range(4)), "second": tiny_features.select(range(4, 10))}
    args = make_args(tmp_path, generation_max_length=12)
    trainer = DSSMITrainer(
        model=model,
        args=args,
        processing_class=tiny_tokenizer,
        eval_dataset=sets if given_to == "trainer" else None,
        compute_metrics=compute_metrics,
    )
    metrics = trainer.evaluate(None if given_to == "trainer" else sets, max_new_tokens=2)
    assert metrics["eval_first_n"] == 4 and metrics["eval_second_n"] == 6
    assert "eval_first_loss_label" in metrics and "eval_second_loss_label" in metrics
    # at most 2 generated tokens per example (padding aside); without the kwargs the limit would be 12
    assert len(lengths) == 2 and max(lengths) <= 2, lengths
    lengths.clear()
    trainer.evaluate(None if given_to == "trainer" else sets)
    assert max(lengths) > 2, lengths  # the untrained model runs on towards generation_max_length


def test_evaluation_without_rationales_gives_label_loss_only(tmp_path, tiny_tokenizer, make_args):
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    label_only = tokenise(make_records(6), tiny_tokenizer, with_rationale=False)
    trainer = DSSMITrainer(model=model, args=make_args(tmp_path), processing_class=tiny_tokenizer)
    metrics = trainer.evaluate(label_only)
    assert "eval_loss_rationale" not in metrics
    assert math.isclose(metrics["eval_loss"], 0.5 * metrics["eval_loss_label"], rel_tol=1e-5)


def test_predict_reports_the_same_loss_components_as_evaluate(
    tmp_path, tiny_tokenizer, tiny_features, make_args
):
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    trainer = DSSMITrainer(model=model, args=make_args(tmp_path), processing_class=tiny_tokenizer)
    evaluated = trainer.evaluate(tiny_features, metric_key_prefix="test")
    predicted = trainer.predict(tiny_features).metrics
    for name in ("loss", "loss_label", "loss_rationale", "loss_mi"):
        assert math.isclose(predicted[f"test_{name}"], evaluated[f"test_{name}"], rel_tol=1e-5), name
    # the components were read once: a later evaluation starts from fresh sums
    assert math.isclose(
        trainer.evaluate(tiny_features)["eval_loss_label"], evaluated["test_loss_label"], rel_tol=1e-5
    )


def test_predict_with_output_rationale_returns_and_writes_rationales(
    tmp_path, tiny_tokenizer, tiny_features, make_args
):
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    args = make_args(tmp_path, output_rationale=True, rationale_max_new_tokens=5)
    trainer = DSSMITrainer(model=model, args=args, processing_class=tiny_tokenizer)
    output = trainer.predict(tiny_features.select(range(5)))
    label_ids, rationale_ids = output.predictions
    assert label_ids.shape[0] == rationale_ids.shape[0] == 5
    assert rationale_ids.shape[1] <= 5 + 1 or (rationale_ids[:, 6:] == tiny_tokenizer.pad_token_id).all()
    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 5 and set(rows[0]) == {"input", "prediction", "rationale"}
    assert rows[0]["input"] == tiny_features[0]["input"]
    decoded = tiny_tokenizer.decode(
        [t for t in rationale_ids[0].tolist() if t != -100], skip_special_tokens=True
    ).strip()
    assert rows[0]["rationale"] == decoded


def test_weights_zero_skip_terms(tmp_path, tiny_tokenizer, tiny_features, make_args):
    # plain DSS: no MI term
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    trainer = DSSMITrainer(
        model=model,
        args=make_args(tmp_path / "dss", max_steps=1, mi_loss_weight=0.0),
        processing_class=tiny_tokenizer,
        train_dataset=tiny_features,
    )
    trainer.train()
    assert "loss_mi" not in trainer.state.log_history[0]
    assert "loss_rationale" in trainer.state.log_history[0]

    # standard fine-tuning: rationale pass skipped, so features without rationales train
    label_only = tokenise(make_records(8), tiny_tokenizer, with_rationale=False)
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    trainer = DSSMITrainer(
        model=model,
        args=make_args(tmp_path / "ft", max_steps=1, rationale_loss_weight=0.0, mi_loss_weight=0.0),
        processing_class=tiny_tokenizer,
        train_dataset=label_only,
    )
    trainer.train()
    log = trainer.state.log_history[0]
    assert "loss_rationale" not in log
    assert math.isclose(log["loss"], 0.5 * log["loss_label"], rel_tol=1e-5)


def test_missing_rationales_with_rationale_weight_is_a_clear_error(tmp_path, tiny_tokenizer, make_args):
    label_only = tokenise(make_records(8), tiny_tokenizer, with_rationale=False)
    trainer = DSSMITrainer(
        model=build_tiny_seq2seq(tiny_tokenizer, "t5"),
        args=make_args(tmp_path, max_steps=1),
        processing_class=tiny_tokenizer,
        train_dataset=label_only,
    )
    with pytest.raises(ValueError, match="rationale"):
        trainer.train()


def test_flat_batch_trains_as_plain_seq2seq(tmp_path, tiny_tokenizer, make_args):
    from transformers import DataCollatorForSeq2Seq

    label_only = tokenise(make_records(8), tiny_tokenizer, with_rationale=False).remove_columns(
        ["input", "label"]
    )
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    collator = DataCollatorForSeq2Seq(tiny_tokenizer, model=model)
    batch = collator([label_only[i] for i in range(8)])
    expected = model(**batch).loss.item()
    trainer = DSSMITrainer(
        model=model,
        args=make_args(tmp_path, max_steps=1, per_device_train_batch_size=8, learning_rate=0.0),
        processing_class=tiny_tokenizer,
        data_collator=collator,
        train_dataset=label_only,
    )
    trainer.train()
    assert math.isclose(trainer.state.log_history[0]["loss"], expected, rel_tol=1e-5)


def test_seq2seq_training_arguments_are_converted(tmp_path, tiny_tokenizer, tiny_features):
    args = Seq2SeqTrainingArguments(
        str(tmp_path / "o"), max_steps=1, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True
    )
    trainer = DSSMITrainer(
        model=build_tiny_seq2seq(tiny_tokenizer, "t5"),
        args=args,
        processing_class=tiny_tokenizer,
        train_dataset=tiny_features,
    )
    assert isinstance(trainer.args, DSSMITrainingArguments)
    assert trainer.args.remove_unused_columns is False
    trainer.train()
    assert "loss_mi" in trainer.state.log_history[0]


def test_peft_config_for_a_model_that_already_has_adapters_is_refused(
    tmp_path, tiny_tokenizer, tiny_features, make_args
):
    """A PeftModel with peft_config again would be wrapped twice (peft only warns); the error says what to do."""
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM")
    wrapped = peft.get_peft_model(build_tiny_seq2seq(tiny_tokenizer, "t5"), config)
    with pytest.raises(ValueError, match="already has PEFT adapters"):
        DSSMITrainer(
            model=wrapped,
            args=make_args(tmp_path, max_steps=1),
            processing_class=tiny_tokenizer,
            train_dataset=tiny_features,
            peft_config=config,
        )
    # the wrapped model alone trains its adapters
    trainer = DSSMITrainer(
        model=wrapped,
        args=make_args(tmp_path, max_steps=1),
        processing_class=tiny_tokenizer,
        train_dataset=tiny_features,
    )
    assert [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert not any("base_model.model.base_model" in n for n, _ in trainer.model.named_parameters())


def test_peft_trains_and_saves_only_the_adapter(tmp_path, tiny_tokenizer, tiny_features, make_args):
    peft = pytest.importorskip("peft")
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM")
    trainer = DSSMITrainer(
        model=model,
        args=make_args(tmp_path, max_steps=2, learning_rate=1e-2),
        processing_class=tiny_tokenizer,
        train_dataset=tiny_features,
        peft_config=config,
    )
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    trainer.train()
    base = trainer.model.get_base_model()
    for name, param in base.named_parameters():
        if "lora_" not in name:
            torch.testing.assert_close(param, before[name.replace("base_layer.", "")], msg=name)
    trainer.save_model()
    saved = {p.name for p in (tmp_path / "out").iterdir()}
    assert "adapter_model.safetensors" in saved and "adapter_config.json" in saved
    assert "model.safetensors" not in saved


def test_resume_from_checkpoint_reproduces_an_uninterrupted_run(
    tmp_path, tiny_tokenizer, tiny_features, make_args
):
    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                control.should_training_stop = True

    def run(output, callbacks=(), resume=None):
        model = build_tiny_seq2seq(tiny_tokenizer, "t5", seed=3)
        args = make_args(tmp_path / output, max_steps=4, save_strategy="steps", save_steps=2, logging_steps=1)
        trainer = DSSMITrainer(
            model=model,
            args=args,
            processing_class=tiny_tokenizer,
            train_dataset=tiny_features,
            callbacks=list(callbacks),
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run("full")
    # an interrupted run: stops after the checkpoint at step 2, then a fresh trainer resumes it
    run("resumed", callbacks=[StopAt()])
    resumed = run("resumed", resume=str(tmp_path / "resumed" / "out" / "checkpoint-2"))
    final_full = [e for e in full.state.log_history if "loss" in e][-1]
    final_resumed = [e for e in resumed.state.log_history if "loss" in e][-1]
    assert final_full["step"] == final_resumed["step"] == 4
    assert math.isclose(final_full["loss"], final_resumed["loss"], rel_tol=1e-5)
    assert math.isclose(final_full["loss_mi"], final_resumed["loss_mi"], rel_tol=1e-5)


@pytest.fixture
def trained_from(tmp_path, tiny_tokenizer, tiny_features, make_args):
    """``trained_from(resume, model=None, callbacks=(), **overrides)``: a T5 DSSMITrainer (seed 3 unless a
    model is given) saving in ``tmp_path / "out"`` after ``train(resume_from_checkpoint=resume)``."""

    def train(resume=None, model=None, callbacks=(), **overrides):
        trainer = DSSMITrainer(
            model=model or build_tiny_seq2seq(tiny_tokenizer, "t5", seed=3),
            args=make_args(tmp_path, save_strategy="steps", logging_steps=1, **overrides),
            processing_class=tiny_tokenizer,
            train_dataset=tiny_features,
            callbacks=list(callbacks),
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    return train


def test_resuming_a_checkpoint_at_max_steps_trains_no_further_step(
    tmp_path, tiny_tokenizer, trained_from, caplog
):
    """transformers alone takes one more optimizer step from a checkpoint that already reached ``max_steps``
    (step 5 of 4, with new weights under a constant learning rate); the run is finished, so nothing trains."""
    from safetensors.torch import load_file

    # 8 steps an epoch (batch 2 of 16 examples): the budget ends inside the first epoch
    budget = dict(max_steps=4, per_device_train_batch_size=2, save_steps=4)
    constant = dict(lr_scheduler_type="constant", learning_rate=1e-2)
    trained_from(**budget, **constant)
    checkpoint = tmp_path / "out" / "checkpoint-4"
    saved = load_file(str(checkpoint / "model.safetensors"))
    model = build_tiny_seq2seq(tiny_tokenizer, "t5", seed=4)  # other weights: the checkpoint's must be loaded
    with caplog.at_level("WARNING", logger="hf_cotmi"):
        resumed = trained_from(str(checkpoint), model=model, **budget, **constant)
    assert resumed.state.global_step == 4
    assert [e["step"] for e in resumed.state.log_history if "loss" in e] == [1, 2, 3, 4]
    for name, value in model.state_dict().items():
        if name in saved:
            torch.testing.assert_close(value, saved[name], msg=name)
    assert "already reached max_steps=4" in caplog.text
    assert not (tmp_path / "out" / "checkpoint-5").exists()


def test_resuming_a_run_that_stopped_early_with_restored_callback_states_trains_no_further(
    tmp_path, trained_from, caplog
):
    """With ``restore_callback_states_from_checkpoint=True`` the checkpoint's ``TrainerControl`` comes back
    with ``should_training_stop`` (early stopping, or any callback, ended the run there), but transformers
    clears it when training begins and trains on; without the option the run goes on, as before."""

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                control.should_training_stop = True

    budget = dict(max_steps=6, save_steps=2)
    trained_from(callbacks=[StopAt()], restore_callback_states_from_checkpoint=True, **budget)
    checkpoint = str(tmp_path / "out" / "checkpoint-2")
    with caplog.at_level("WARNING", logger="hf_cotmi"):
        stopped = trained_from(checkpoint, restore_callback_states_from_checkpoint=True, **budget)
    assert stopped.state.global_step == 2
    assert "was saved when training stopped" in caplog.text
    assert trained_from(checkpoint, **budget).state.global_step == 6


@pytest.mark.parametrize("restore", [True, False])
def test_a_finished_run_resumed_with_a_larger_max_steps_trains_on(tmp_path, trained_from, restore):
    """The checkpoint at the old budget recorded ``should_training_stop`` (the budget's own stop): a larger
    ``max_steps`` continues it, with or without restored callback states."""
    run = dict(per_device_train_batch_size=2, save_steps=4, restore_callback_states_from_checkpoint=restore)
    trained_from(max_steps=4, **run)
    extended = trained_from(str(tmp_path / "out" / "checkpoint-4"), max_steps=8, **run)
    assert extended.state.global_step == 8
    assert [e["step"] for e in extended.state.log_history if "loss" in e] == list(range(1, 9))


def test_resume_of_a_lora_run_reproduces_every_logged_step(
    tmp_path, tiny_tokenizer, tiny_features, make_args
):
    """6 steps straight against 3 steps, a checkpoint of the adapter, and 3 resumed steps (across an epoch end)."""
    peft = pytest.importorskip("peft")

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                control.should_training_stop = True

    def run(output, callbacks=(), resume=None):
        config = peft.LoraConfig(
            r=4, lora_alpha=8, target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM", lora_dropout=0.0
        )
        args = make_args(
            tmp_path / output, max_steps=6, save_strategy="steps", save_steps=3, learning_rate=1e-2
        )
        trainer = DSSMITrainer(
            model=build_tiny_seq2seq(tiny_tokenizer, "t5", seed=3),
            args=args,
            processing_class=tiny_tokenizer,
            train_dataset=tiny_features,
            callbacks=list(callbacks),
            peft_config=config,
        )
        trainer.train(resume_from_checkpoint=resume)
        return {e["step"]: e for e in trainer.state.log_history if "loss" in e}

    full = run("full")
    run("resumed", callbacks=[StopAt()])
    checkpoint = tmp_path / "resumed" / "out" / "checkpoint-3"
    assert (checkpoint / "adapter_model.safetensors").is_file() and not (
        checkpoint / "model.safetensors"
    ).exists()
    resumed = run("resumed", resume=str(checkpoint))
    assert sorted(full) == sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in full:
        for key in ("loss", "loss_label", "loss_rationale", "loss_mi", "grad_norm"):
            assert math.isclose(full[step][key], resumed[step][key], rel_tol=1e-5), (step, key)


def test_model_card_and_reload(tmp_path, tiny_tokenizer, tiny_features, make_args):
    from huggingface_hub import ModelCard

    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    args = make_args(tmp_path, max_steps=2, eval_strategy="steps", eval_steps=2, mi_reduction="mean")
    trainer = DSSMITrainer(
        model=model,
        args=args,
        processing_class=tiny_tokenizer,
        train_dataset=tiny_features,
        eval_dataset=tiny_features,
    )
    trainer.train()
    trainer.save_model()
    trainer.create_model_card(model_name="tiny-student", dataset="svamp", finetuned_from="t5-small")
    card = ModelCard.load(str(tmp_path / "out" / "README.md"))
    data = card.data.to_dict()
    for tag in ("hf-cotmi", "distilling-step-by-step", "chain-of-thought-distillation"):
        assert tag in data["tags"]
    assert data["base_model"] == "t5-small"
    assert data["datasets"] == ["svamp"]
    text = card.text
    assert "| `mi_loss_weight` | 0.1 |" in text and "| `mi_reduction` | mean |" in text
    assert "2305.02301" in text and "2403.03348" in text and "@inproceedings" in text
    metric_names = {m["name"] for m in data["model-index"][0]["results"][0]["metrics"]}
    assert "eval_loss" in metric_names
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(str(tmp_path / "out"))
    batch = DSSDataCollator(tiny_tokenizer, model=reloaded)([tiny_features[0]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch["pred"]).logits, model.cpu()(**batch["pred"]).logits)


def test_mi_loss_weight_changes_the_gradient(tmp_path, tiny_tokenizer, tiny_features, make_args):
    """The MI term reaches the parameters: its gradient equals the difference of the two runs' gradients."""
    model = build_tiny_seq2seq(tiny_tokenizer, "t5", seed=2)
    batch = DSSDataCollator(tiny_tokenizer, model=model)([tiny_features[i] for i in range(4)])
    out_p, out_e = model(**batch["pred"]), model(**batch["expl"])
    mi = mutual_information_loss(out_p.logits, out_e.logits)
    names, params = zip(*model.named_parameters())
    mi_grads = dict(zip(names, torch.autograd.grad(mi, params, allow_unused=True)))

    grads = {}
    for weight in (0.0, 0.1):
        snap = GradientSnapshot()
        trainer = DSSMITrainer(
            model=build_tiny_seq2seq(tiny_tokenizer, "t5", seed=2),
            args=make_args(tmp_path / str(weight), max_steps=1, mi_loss_weight=weight, max_grad_norm=0.0),
            processing_class=tiny_tokenizer,
            train_dataset=tiny_features.select(range(4)),
            callbacks=[snap],
        )
        trainer.train()
        grads[weight] = snap.grads[0]
    checked = 0
    for name, mi_grad in mi_grads.items():
        if mi_grad is None:
            continue
        torch.testing.assert_close(grads[0.1][name] - grads[0.0][name], 0.1 * mi_grad, atol=1e-6, rtol=1e-3)
        checked += 1
    assert checked > 5


def test_model_card_snippet_uses_the_full_repository_id(tmp_path, tiny_tokenizer, make_args):
    # push_to_hub passes only the part after the "/" as model_name
    trainer = DSSMITrainer(
        model=build_tiny_seq2seq(tiny_tokenizer, "t5"),
        args=make_args(tmp_path, hub_model_id="someone/tiny-student"),
        processing_class=tiny_tokenizer,
    )
    trainer.create_model_card(model_name="tiny-student")
    text = (tmp_path / "out" / "README.md").read_text()
    assert 'from_pretrained("someone/tiny-student")' in text
    assert "# tiny-student" in text


@pytest.mark.parametrize("rationales", [True, False])
def test_input_tokens_seen_count_both_passes(tmp_path, tiny_tokenizer, make_args, rationales):
    """include_num_input_tokens_seen on DSS's nested batches: every non-padding input token of both tasks."""
    features = tokenise(make_records(8), tiny_tokenizer, with_rationale=rationales)
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    args = make_args(
        tmp_path, max_steps=2, per_device_train_batch_size=4, include_num_input_tokens_seen="non_padding",
        rationale_loss_weight=0.5 if rationales else 0.0, mi_loss_weight=0.1 if rationales else 0.0,
    )  # fmt: skip
    trainer = DSSMITrainer(model=model, args=args, train_dataset=features, processing_class=tiny_tokenizer)
    trainer.train()  # 2 steps of 4: each of the 8 examples once
    expected = sum(len(ids) for ids in features["input_ids"])
    if rationales:
        expected += sum(len(ids) for ids in features["expl_input_ids"])
    assert trainer.state.num_input_tokens_seen == expected


def test_include_for_metrics_inputs_hands_the_label_task_inputs_to_compute_metrics(
    tmp_path, tiny_tokenizer, tiny_features, make_args
):
    """include_for_metrics=["inputs"] on DSS's nested batches: the ``predict:`` inputs reach compute_metrics."""
    compute_metrics = RecordingMetrics()
    features = tiny_features.select(range(6))
    trainer = DSSMITrainer(
        model=build_tiny_seq2seq(tiny_tokenizer, "t5"),
        args=make_args(tmp_path, include_for_metrics=["inputs"], per_device_eval_batch_size=4),
        processing_class=tiny_tokenizer,
        compute_metrics=compute_metrics,
    )
    metrics = trainer.evaluate(features)
    assert metrics["eval_n"] == 6 and "eval_loss_rationale" in metrics
    inputs = compute_metrics.seen[-1].inputs
    assert inputs.shape[0] == 6
    for row, ids in zip(inputs.tolist(), features["input_ids"]):
        assert [t for t in row if t != -100 and t != tiny_tokenizer.pad_token_id] == ids


def test_output_rationale_without_rationale_inputs_says_so(tmp_path, tiny_tokenizer, make_args, caplog):
    """Features without the rationale task cannot give rationales: a warning instead of silence."""
    import logging

    label_only = tokenise(make_records(3), tiny_tokenizer, with_rationale=False)
    args = make_args(tmp_path, output_rationale=True, rationale_max_new_tokens=3)
    trainer = DSSMITrainer(
        model=build_tiny_seq2seq(tiny_tokenizer, "t5"), args=args, processing_class=tiny_tokenizer
    )
    with caplog.at_level(logging.WARNING, logger="hf_cotmi"):
        output = trainer.predict(label_only, max_new_tokens=2)
    assert not isinstance(output.predictions, tuple)
    assert not (tmp_path / "out" / "predictions.jsonl").exists()
    messages = [r.getMessage() for r in caplog.records if "output_rationale=True" in r.getMessage()]
    assert len(messages) == 1 and "no rationale-task inputs" in messages[0]


def test_a_second_train_call_logs_its_own_loss_components(tmp_path, tiny_tokenizer, tiny_features, make_args):
    """One-step runs: the second call's step 0 was taken for a later micro-batch of the first call's step 0,
    so its components got no weight and were missing from its log."""
    trainer = DSSMITrainer(
        model=build_tiny_seq2seq(tiny_tokenizer, "t5"),
        args=make_args(tmp_path, max_steps=1, logging_steps=1),
        processing_class=tiny_tokenizer,
        train_dataset=tiny_features,
    )
    for _ in range(2):
        trainer.train()
        (logged,) = [e for e in trainer.state.log_history if "loss" in e]
        combined = 0.5 * logged["loss_label"] + 0.5 * logged["loss_rationale"] + 0.1 * logged["loss_mi"]
        assert combined == pytest.approx(logged["loss"], rel=1e-3)


def test_evaluation_leaves_the_model_generation_config_as_it_was(
    tmp_path, tiny_tokenizer, tiny_features, make_args, caplog
):
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    config, before = model.generation_config, model.generation_config.to_diff_dict()
    assert "max_length" not in before  # the model names no length: generate's default applies
    trainer = DSSMITrainer(
        model=model,
        args=make_args(tmp_path),
        processing_class=tiny_tokenizer,
        compute_metrics=RecordingMetrics(),
    )
    trainer.evaluate(tiny_features.select(range(4)))
    trainer.predict(tiny_features.select(range(4)))
    trainer.save_model(str(tmp_path / "saved"))
    # Seq2SeqTrainer.prediction_step writes generate's defaults (max_length=20, top_k=50, ...) into the
    # model's generation config; saved, they pinned max_length and made every generate(max_new_tokens=...)
    # of the trained student warn that both limits were set
    assert model.generation_config.to_diff_dict() == before and model.generation_config is config
    saved = json.loads((tmp_path / "saved" / "generation_config.json").read_text())
    assert "max_length" not in saved and "top_k" not in saved, saved
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "saved")
    ids = tiny_tokenizer(["predict: what is 1 + 1"], return_tensors="pt")
    with caplog.at_level("WARNING"):
        reloaded.generate(**ids, max_new_tokens=3)
    assert not [r for r in caplog.records if "max_length" in r.getMessage()], caplog.text


@pytest.mark.parametrize("architecture", ["t5", "llama"])
def test_predict_without_generation_returns_the_label_logits_as_seq2seq_trainer_does(
    tmp_path, tiny_tokenizer, tiny_features, make_args, architecture
):
    """``predict_with_generate=False``: ``Seq2SeqTrainer.predict`` gives the label logits and labels; on DSS
    batches predictions and label_ids were None. Now the ``predict:`` pass's logits, with the labels they
    are scored against: their cross-entropy is the reported label loss."""
    from datasets import Dataset
    from tiny_task import make_records

    from hf_cotmi import build_tiny_causal_lm, prepare_dss_features

    if architecture == "t5":
        model, features = build_tiny_seq2seq(tiny_tokenizer, "t5", seed=2), tiny_features
    else:
        model = build_tiny_causal_lm(tiny_tokenizer, "llama", seed=2)
        features = prepare_dss_features(Dataset.from_list(make_records(16)), tiny_tokenizer, model=model)
    args = make_args(tmp_path, predict_with_generate=False, per_device_eval_batch_size=16)
    trainer = DSSMITrainer(model=model, args=args, processing_class=tiny_tokenizer, train_dataset=features)
    output = trainer.predict(features)
    logits, labels = torch.as_tensor(output.predictions), torch.as_tensor(output.label_ids)
    assert logits.ndim == 3 and logits.shape[:2] == labels.shape and logits.shape[0] == 16
    assert logits.shape[-1] == model.get_output_embeddings().weight.shape[0]
    cross_entropy = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert math.isclose(cross_entropy.item(), output.metrics["test_loss_label"], rel_tol=1e-5)
    if architecture == "t5":  # the logits of the model's own forward on the predict: task
        batch = trainer.data_collator([features[i] for i in range(16)])["pred"]
        with torch.no_grad():
            reference = model.eval()(**batch).logits
        torch.testing.assert_close(logits, reference, atol=1e-5, rtol=1e-5)
