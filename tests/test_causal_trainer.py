"""DSSMITrainer with decoder-only students (tiny Llama, Qwen2 and GPT-2 built in code, offline)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import RecordingMetrics, training_arguments
from datasets import Dataset
from tiny_task import make_records
from transformers import AutoModelForCausalLM, TrainerCallback

from hf_cotmi import (
    DSSDataCollator,
    DSSMITrainer,
    build_tiny_causal_lm,
    prepare_dss_features,
)

ARCHITECTURES = ["llama", "qwen2", "gpt2"]


def make_args(tmp_path, **overrides):
    return training_arguments(tmp_path / "out", **overrides)


class GradientSnapshot(TrainerCallback):
    def __init__(self):
        self.grads: list[dict[str, torch.Tensor]] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads.append(
            {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        )


def uneven_features(tokenizer, n=8, seed=5):
    records = make_records(n, seed=seed)
    for i, record in enumerate(records):  # labels, rationales and prompts of different lengths
        record["rationale"] += " so" * (2 * i)
        record["label"] += " apples" * (i % 3)
        record["input"] = "so " * (i % 4) + record["input"]
    return prepare_dss_features(Dataset.from_list(records), tokenizer, student_type="causal")


@pytest.fixture(scope="module")
def causal_features(tiny_tokenizer):
    return uneven_features(tiny_tokenizer)


def naive_objective(model, batch, variant, weights=(0.5, 0.5, 0.1)):
    """DSS + MI from the model's logits for every position, written out row by row."""
    terms = {}
    for part in ("pred", "expl"):
        sub = batch[part]
        logits = model(**{k: v for k, v in sub.items() if k != "labels"}).logits
        labels = sub["labels"]
        predicting = logits[:, :-1]  # position t predicts token t + 1
        targets = labels[:, 1:]
        keep = targets != -100
        terms[part] = (predicting, targets, keep)
    label_loss = F.cross_entropy(terms["pred"][0][terms["pred"][2]], terms["pred"][1][terms["pred"][2]])
    rationale_loss = F.cross_entropy(terms["expl"][0][terms["expl"][2]], terms["expl"][1][terms["expl"][2]])

    def reduced(part, row, detach):
        predicting, targets, keep = terms[part]
        row_logits = predicting[row].detach() if detach else predicting[row]
        if variant == "masked":
            chosen = row_logits[keep[row]]
        else:  # paper: the batch's target window, the padding after each row's target included
            columns = keep.any(0).nonzero().flatten()
            chosen = row_logits[int(columns[0]) : int(columns[-1]) + 1]
        return torch.softmax(chosen, -1).max(0).values

    per_row = []
    for row in range(batch["pred"]["labels"].shape[0]):
        p, q = reduced("pred", row, True), reduced("expl", row, False)
        if variant == "masked":
            per_row.append(-((p / p.sum()) * torch.log(q / q.sum())).sum())
        else:
            per_row.append(-(p * torch.log_softmax(q, -1)).sum())
    mi = torch.stack(per_row).mean()
    return weights[0] * label_loss + weights[1] * rationale_loss + weights[2] * mi


def assert_one_step_matches_the_naive_reference(tmp_path, model, tokenizer, features, variant):
    """One DSSMITrainer step (lr 0, no clipping): its loss and every gradient equal naive_objective's.

    Returns the collated batch the reference used (the trainer's one batch holds the same 8 examples).
    """
    batch = DSSDataCollator(tokenizer, model=model)([features[i] for i in range(8)])
    expected = naive_objective(model, batch, variant)
    names, params = zip(*model.named_parameters())
    expected_grads = dict(zip(names, torch.autograd.grad(expected, params, allow_unused=True)))
    snapshot = GradientSnapshot()
    args = make_args(
        tmp_path,
        max_steps=1,
        per_device_train_batch_size=8,
        learning_rate=0.0,
        max_grad_norm=0.0,
        mi_variant=variant,
    )
    trainer = DSSMITrainer(
        model=model, args=args, processing_class=tokenizer, train_dataset=features, callbacks=[snapshot]
    )
    assert trainer.student_type == "causal"
    trainer.train()
    assert math.isclose(trainer.state.log_history[0]["loss"], expected.item(), rel_tol=1e-5)
    checked = 0
    for name, grad in expected_grads.items():
        if grad is not None:
            torch.testing.assert_close(snapshot.grads[0][name], grad, atol=1e-6, rtol=1e-4, msg=name)
            checked += 1
    assert checked == len(snapshot.grads[0]) > 5
    return batch


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("variant", ["masked", "paper"])
def test_loss_and_gradient_match_a_naive_reference(
    tmp_path, tiny_tokenizer, causal_features, architecture, variant
):
    model = build_tiny_causal_lm(tiny_tokenizer, architecture, seed=4)
    assert_one_step_matches_the_naive_reference(tmp_path, model, tiny_tokenizer, causal_features, variant)


def test_only_target_positions_reach_the_output_projection(tmp_path, tiny_tokenizer, causal_features):
    model = build_tiny_causal_lm(tiny_tokenizer, "llama")
    shapes = []
    model.lm_head.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    trainer = DSSMITrainer(
        model=model,
        args=make_args(tmp_path, max_steps=1, per_device_train_batch_size=8),
        processing_class=tiny_tokenizer,
        train_dataset=causal_features,
    )
    batch = trainer.data_collator([causal_features[i] for i in range(8)])
    trainer.train()
    widths = [int((sub["labels"] != -100).any(0).sum()) for sub in (batch["pred"], batch["expl"])]
    full = [sub["input_ids"].shape[1] for sub in (batch["pred"], batch["expl"])]
    # the head sees the positions that predict a target, never the prompt nor the last position
    assert [s[1] for s in shapes[:2]] == widths
    assert all(w + 1 < f for w, f in zip(widths, full))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_gradient_accumulation_gives_the_same_loss_and_gradients(
    tmp_path, tiny_tokenizer, causal_features, architecture
):
    def one_step(name, batch_size, accumulation):
        snapshot = GradientSnapshot()
        args = make_args(
            tmp_path / name,
            max_steps=1,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_grad_norm=0.0,
            mi_variant="masked",
        )
        trainer = DSSMITrainer(
            model=build_tiny_causal_lm(tiny_tokenizer, architecture, seed=1),
            args=args,
            processing_class=tiny_tokenizer,
            train_dataset=causal_features,
            callbacks=[snapshot],
        )
        trainer.train()
        return trainer.state.log_history[0], snapshot.grads[0]

    log_full, grads_full = one_step("full", 8, 1)
    log_accum, grads_accum = one_step("accum", 2, 4)
    for key in ("loss", "loss_label", "loss_rationale", "loss_mi"):
        assert math.isclose(log_full[key], log_accum[key], rel_tol=1e-5), key
    for name in grads_full:
        torch.testing.assert_close(grads_full[name], grads_accum[name], atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_generation_returns_new_tokens_only_and_stops_at_eos(
    tmp_path, tiny_tokenizer, causal_features, architecture
):
    model = build_tiny_causal_lm(tiny_tokenizer, architecture, seed=2)
    args = make_args(tmp_path, output_rationale=True, rationale_max_new_tokens=4)
    trainer = DSSMITrainer(model=model, args=args, processing_class=tiny_tokenizer)
    subset = causal_features.select(range(5))
    output = trainer.predict(subset, max_new_tokens=3)
    label_ids, rationale_ids = output.predictions
    assert label_ids.shape == (5, 3) and rationale_ids.shape == (5, 4)
    model.eval()
    for row in range(5):
        ids, labels = subset[row]["input_ids"], subset[row]["labels"]
        prompt = torch.tensor([[t for t, label in zip(ids, labels) if label == -100]])
        with torch.no_grad():
            alone = model.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=3, do_sample=False
            )
        assert (
            label_ids[row].tolist() == alone[0, prompt.shape[1] :].tolist()
        )  # no prompt, left padding exact
    # the label ids returned for metrics are the target and EOS, as generation returns
    target = [t for t in output.label_ids[0].tolist() if t != -100]
    assert tiny_tokenizer.decode(target) == subset[0]["label"] + " </s>"
    # stop at EOS: make the first token the model generates for row 0 its EOS; the rest is padding
    first = int(label_ids[0, 0])
    model.generation_config.eos_token_id = first
    stopped = trainer.predict(subset, max_new_tokens=3).predictions[0]
    assert stopped[0].tolist() == [first, tiny_tokenizer.pad_token_id, tiny_tokenizer.pad_token_id]


def test_evaluation_logs_components_and_decodes_targets(tmp_path, tiny_tokenizer, causal_features):
    compute_metrics = RecordingMetrics()
    trainer = DSSMITrainer(
        model=build_tiny_causal_lm(tiny_tokenizer, "qwen2"),
        args=make_args(tmp_path, max_steps=2, eval_strategy="steps", eval_steps=2),
        processing_class=tiny_tokenizer,
        train_dataset=causal_features,
        eval_dataset=causal_features,
        compute_metrics=compute_metrics,
    )
    trainer.train()
    last = [e for e in trainer.state.log_history if "eval_loss" in e][-1]
    combined = 0.5 * last["eval_loss_label"] + 0.5 * last["eval_loss_rationale"] + 0.1 * last["eval_loss_mi"]
    assert math.isclose(combined, last["eval_loss"], rel_tol=1e-4) and last["eval_n"] == 8
    train_logs = [e for e in trainer.state.log_history if "loss" in e]
    assert all("loss_mi" in e for e in train_logs)


def test_a_model_init_student_gets_the_collator_of_its_layout(tmp_path, tiny_tokenizer, causal_features):
    """With ``model_init`` the default collator is built once the model exists: a decoder-only student gets the
    target-aligned layout (built before, it had the seq2seq one, and generation refused its batches)."""
    trainer = DSSMITrainer(
        model_init=lambda: build_tiny_causal_lm(tiny_tokenizer, "llama"),
        args=make_args(tmp_path, max_steps=1),
        processing_class=tiny_tokenizer,
        train_dataset=causal_features,
        eval_dataset=causal_features,
        compute_metrics=lambda eval_pred: {"n": float(len(eval_pred.predictions))},
    )
    assert trainer.student_type == trainer.data_collator.student_type == "causal"
    trainer.train()
    assert trainer.evaluate()["eval_n"] == len(causal_features)


@pytest.mark.parametrize("architecture,modules", [("llama", ["q_proj", "v_proj"]), ("gpt2", ["c_attn"])])
def test_lora_trains_and_saves_only_the_adapter(
    tmp_path, tiny_tokenizer, causal_features, architecture, modules
):
    peft = pytest.importorskip("peft")
    model = build_tiny_causal_lm(tiny_tokenizer, architecture)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=modules,
        task_type="CAUSAL_LM",
        fan_in_fan_out=architecture == "gpt2",
    )
    trainer = DSSMITrainer(
        model=model,
        args=make_args(tmp_path, max_steps=2, learning_rate=1e-2),
        processing_class=tiny_tokenizer,
        train_dataset=causal_features,
        peft_config=config,
    )
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    assert any(not torch.equal(p, lora[n]) for n, p in trainer.model.named_parameters() if n in lora)
    for name, param in trainer.model.get_base_model().named_parameters():
        if "lora_" not in name:
            torch.testing.assert_close(param, before[name.replace("base_layer.", "")], msg=name)
    trainer.save_model()
    saved = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= saved and "model.safetensors" not in saved


def test_resume_from_checkpoint_reproduces_an_uninterrupted_run(tmp_path, tiny_tokenizer, causal_features):
    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                control.should_training_stop = True

    def run(output, callbacks=(), resume=None):
        args = make_args(tmp_path / output, max_steps=4, save_strategy="steps", save_steps=2)
        trainer = DSSMITrainer(
            model=build_tiny_causal_lm(tiny_tokenizer, "llama", seed=3),
            args=args,
            processing_class=tiny_tokenizer,
            train_dataset=causal_features,
            callbacks=list(callbacks),
        )
        trainer.train(resume_from_checkpoint=resume)
        return [e for e in trainer.state.log_history if "loss" in e][-1]

    full = run("full")
    run("resumed", callbacks=[StopAt()])
    resumed = run("resumed", resume=str(tmp_path / "resumed" / "out" / "checkpoint-2"))
    assert full["step"] == resumed["step"] == 4
    for key in ("loss", "loss_label", "loss_mi"):
        assert math.isclose(full[key], resumed[key], rel_tol=1e-5), key


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_saved_student_reloads_with_auto_model_for_causal_lm(
    tmp_path, tiny_tokenizer, causal_features, architecture
):
    model = build_tiny_causal_lm(tiny_tokenizer, architecture)
    trainer = DSSMITrainer(
        model=model,
        args=make_args(tmp_path, max_steps=1),
        processing_class=tiny_tokenizer,
        train_dataset=causal_features,
    )
    trainer.train()
    trainer.save_model()
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    assert type(reloaded) is type(model)
    batch = DSSDataCollator(tiny_tokenizer, model=reloaded)([causal_features[i] for i in range(3)])
    inputs = {k: v for k, v in batch["pred"].items() if k != "labels"}
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, model.cpu()(**inputs).logits)


def test_generation_length_defaults_to_the_generation_config_as_new_tokens(
    tmp_path, tiny_tokenizer, causal_features
):
    model = build_tiny_causal_lm(tiny_tokenizer, "llama", seed=2)
    model.generation_config.max_length = 5  # shorter than every prompt: read as new tokens, not the total
    args = make_args(tmp_path, generation_max_length=None)
    trainer = DSSMITrainer(model=model, args=args, processing_class=tiny_tokenizer)
    ids = trainer.predict(causal_features.select(range(3))).predictions
    assert ids.shape == (3, 5)
    assert (ids != tiny_tokenizer.pad_token_id).any()


def test_a_model_without_logits_to_keep_trains_the_same(tmp_path, tiny_tokenizer, causal_features, caplog):
    from transformers import LlamaForCausalLM

    class WithoutLogitsToKeep(LlamaForCausalLM):
        def forward(self, input_ids=None, attention_mask=None, position_ids=None, use_cache=None, **kwargs):
            return super().forward(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=use_cache,
            )

    def first_loss(model, name):
        args = make_args(tmp_path / name, max_steps=1, per_device_train_batch_size=8, learning_rate=0.0)
        trainer = DSSMITrainer(
            model=model, args=args, processing_class=tiny_tokenizer, train_dataset=causal_features
        )
        trainer.train()
        return trainer.state.log_history[0]

    model = build_tiny_causal_lm(tiny_tokenizer, "llama", seed=6)
    plain = WithoutLogitsToKeep(model.config)
    plain.load_state_dict(model.state_dict())
    seen = []
    plain.lm_head.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    with_keep = first_loss(model, "keep")
    with caplog.at_level("WARNING", logger="hf_cotmi"):
        without = first_loss(plain, "plain")
    assert "takes no logits_to_keep" in caplog.text
    batch = DSSDataCollator(tiny_tokenizer, model=plain)([causal_features[i] for i in range(8)])
    widths = [int((sub["labels"] != -100).any(0).sum()) for sub in (batch["pred"], batch["expl"])]
    assert seen[:2] == widths  # the hook cut the hidden states to the positions that predict a target
    for key in ("loss", "loss_label", "loss_rationale", "loss_mi"):
        assert math.isclose(with_keep[key], without[key], rel_tol=1e-5), key


@pytest.mark.parametrize("variant", ["masked", "paper"])
def test_a_bert_decoder_student_trains_like_the_reference(tmp_path, tiny_tokenizer, causal_features, variant):
    """The shape of the offline MiniLM causal student: BertLMHeadModel with is_decoder=True.

    Loss and gradients match the naive reference on every position's logits, and the head sees only the
    target window (``logits_to_keep``: the positions that predict a target).
    """
    from transformers import BertConfig, BertLMHeadModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        is_decoder=True,
        pad_token_id=tiny_tokenizer.pad_token_id,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = BertLMHeadModel(config)
    seen = []
    model.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    batch = assert_one_step_matches_the_naive_reference(
        tmp_path, model, tiny_tokenizer, causal_features, variant
    )
    seen = seen[-2:]  # the trainer's two passes (the reference's passes came first)
    widths = [int((sub["labels"] != -100).any(0).sum()) for sub in (batch["pred"], batch["expl"])]
    assert seen == widths
    assert all(w < sub["input_ids"].shape[1] for w, sub in zip(widths, (batch["pred"], batch["expl"])))


def test_include_for_metrics_inputs_are_the_prompts(tmp_path, tiny_tokenizer, causal_features):
    """include_for_metrics=["inputs"]: a decoder-only student's metrics get the prompts, not the targets."""
    compute_metrics = RecordingMetrics()
    features = causal_features.select(range(5))
    trainer = DSSMITrainer(
        model=build_tiny_causal_lm(tiny_tokenizer, "llama"),
        args=make_args(tmp_path, include_for_metrics=["inputs"], per_device_eval_batch_size=3),
        processing_class=tiny_tokenizer,
        compute_metrics=compute_metrics,
    )
    assert trainer.evaluate(features)["eval_n"] == 5
    rows = compute_metrics.seen[-1].inputs.tolist()
    for row, ids, labels in zip(rows, features["input_ids"], features["labels"]):
        prompt = [t for t, label in zip(ids, labels) if label == -100]
        assert [t for t in row if t != -100 and t != tiny_tokenizer.pad_token_id] == prompt


@pytest.mark.parametrize("generation_max_length", [None, 6])
def test_a_generation_config_passed_to_predict_sets_the_generation(
    tmp_path, tiny_tokenizer, causal_features, generation_max_length
):
    """``predict(ds, generation_config=...)`` generates as ``model.generate(prompt, generation_config=...)``
    does: its ``max_new_tokens`` and beams, not the model's generation config's length (20 new tokens)."""
    from transformers import GenerationConfig

    model = build_tiny_causal_lm(tiny_tokenizer, "llama", seed=2)
    trainer = DSSMITrainer(
        model=model,
        args=make_args(tmp_path, generation_max_length=generation_max_length),
        processing_class=tiny_tokenizer,
    )
    config = GenerationConfig(
        max_new_tokens=3,
        num_beams=2,
        pad_token_id=tiny_tokenizer.pad_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
    )
    subset = causal_features.select(range(5))
    label_ids = trainer.predict(subset, generation_config=config).predictions
    assert label_ids.shape == (5, 3)
    model.eval()
    for row in range(5):
        ids, labels = subset[row]["input_ids"], subset[row]["labels"]
        prompt = torch.tensor([[t for t, label in zip(ids, labels) if label == -100]])
        with torch.no_grad():
            alone = model.generate(prompt, attention_mask=torch.ones_like(prompt), generation_config=config)
        new = alone[0, prompt.shape[1] :].tolist()
        assert label_ids[row].tolist() == new + [tiny_tokenizer.pad_token_id] * (3 - len(new))
