"""DSSMITrainer with chunked_output_projection: the same loss and gradients as the unchunked trainer."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from conftest import training_arguments
from datasets import Dataset
from test_ddp import assert_same_training_logs, run_one_and_two_processes
from tiny_task import make_records, tokenise
from transformers import TrainerCallback

from hf_cotmi import (
    DSSDataCollator,
    DSSMITrainer,
    build_tiny_causal_lm,
    build_tiny_seq2seq,
    prepare_dss_features,
)

KEYS = ("loss", "loss_label", "loss_rationale", "loss_mi")


class GradientSnapshot(TrainerCallback):
    def __init__(self):
        self.grads: list[dict[str, torch.Tensor]] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads.append(
            {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        )


def uneven_records(n=8, seed=5):
    records = make_records(n, seed=seed)
    for i, record in enumerate(records):  # labels, rationales and prompts of different lengths
        record["rationale"] += " so" * (2 * i)
        record["label"] += " apples" * (i % 3)
        record["input"] = "so " * (i % 4) + record["input"]
    return records


@pytest.fixture(scope="module")
def seq2seq_features(tiny_tokenizer):
    return tokenise(uneven_records(), tiny_tokenizer)


@pytest.fixture(scope="module")
def causal_features(tiny_tokenizer):
    return prepare_dss_features(Dataset.from_list(uneven_records()), tiny_tokenizer, student_type="causal")


def build(kind, tokenizer, seed=3):
    if kind == "t5":
        return build_tiny_seq2seq(tokenizer, "t5", seed=seed)
    return build_tiny_causal_lm(tokenizer, kind, seed=seed)


def one_step(
    tmp_path,
    tokenizer,
    features,
    model,
    chunked,
    batch_size=8,
    accumulation=1,
    peft_config=None,
    expect_chunked=None,
    **extra,
):
    snapshot = GradientSnapshot()
    args = training_arguments(
        tmp_path / f"chunked{chunked}-{batch_size}x{accumulation}",
        max_steps=1,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=0.0,
        max_grad_norm=0.0,
        chunked_output_projection=chunked,
        **extra,
    )
    trainer = DSSMITrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        train_dataset=features,
        callbacks=[snapshot],
        data_collator=DSSDataCollator(tokenizer, model=model),
        peft_config=peft_config,
    )
    trainer.train()
    # the chunked path really ran (or, for the fallback cases, really did not)
    expected = chunked if expect_chunked is None else expect_chunked
    assert (trainer._chunkable_output_projection(trainer.model) is not None) == expected
    return trainer.state.log_history[0], snapshot.grads[0]


def assert_same_step(first, second, rel=1e-5):
    (log_a, grads_a), (log_b, grads_b) = first, second
    for key in KEYS:
        assert math.isclose(log_a[key], log_b[key], rel_tol=rel), (key, log_a[key], log_b[key])
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 3
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize(
    ("kind", "mi"),
    [
        ("t5", dict(mi_variant="paper")),
        ("t5", dict(mi_variant="masked", mi_reduction="mean", mi_divergence="kl")),
        ("llama", dict(mi_variant="paper")),
        ("llama", dict(mi_variant="masked", mi_reduction="max", mi_divergence="kl")),
        ("gpt2", dict(mi_variant="masked", mi_reduction="mean")),
    ],
)
def test_a_step_gives_the_same_loss_and_gradients_as_the_unchunked_trainer(
    tmp_path, tiny_tokenizer, seq2seq_features, causal_features, kind, mi
):
    features = seq2seq_features if kind == "t5" else causal_features
    unchunked = one_step(tmp_path, tiny_tokenizer, features, build(kind, tiny_tokenizer), False, **mi)
    model = build(kind, tiny_tokenizer)
    head = model.get_output_embeddings().weight
    head_name = next(
        n for n, p in model.named_parameters() if p is head
    )  # tied to the embeddings for T5, GPT-2
    chunked = one_step(tmp_path, tiny_tokenizer, features, model, True, output_projection_chunk_size=9, **mi)
    assert_same_step(chunked, unchunked)
    assert chunked[1][head_name].abs().sum() > 0


@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_gradient_accumulation_with_chunking(
    tmp_path, tiny_tokenizer, seq2seq_features, causal_features, kind
):
    features = seq2seq_features if kind == "t5" else causal_features
    full = one_step(
        tmp_path, tiny_tokenizer, features, build(kind, tiny_tokenizer), True, 8, 1, mi_variant="masked"
    )
    accum = one_step(
        tmp_path, tiny_tokenizer, features, build(kind, tiny_tokenizer), True, 2, 4, mi_variant="masked"
    )
    assert_same_step(full, accum)


def saved_tensor_shapes(trainer, batch):
    shapes = []

    def pack(tensor):
        shapes.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trainer.compute_loss(trainer.model, batch).backward()
    return shapes


@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_no_logits_are_held_for_backward(tmp_path, tiny_tokenizer, seq2seq_features, causal_features, kind):
    features = seq2seq_features if kind == "t5" else causal_features
    vocab = len(tiny_tokenizer)
    held = {}
    for chunked in (False, True):
        model = build(kind, tiny_tokenizer)
        args = training_arguments(tmp_path / str(chunked), chunked_output_projection=chunked)
        trainer = DSSMITrainer(model=model, args=args, processing_class=tiny_tokenizer)
        batch = trainer.data_collator([features[i] for i in range(8)])
        model.train()
        held[chunked] = [s for s in saved_tensor_shapes(trainer, batch) if len(s) == 3 and s[-1] == vocab]
    assert held[False]  # the unchunked trainer keeps [B, n, V] log-probabilities (so this check can fail)
    assert held[True] == []


def test_evaluation_gives_the_same_components(tmp_path, tiny_tokenizer, causal_features):
    metrics = {}
    for chunked in (False, True):
        args = training_arguments(
            tmp_path / str(chunked), chunked_output_projection=chunked, mi_variant="masked"
        )
        trainer = DSSMITrainer(
            model=build("llama", tiny_tokenizer), args=args, processing_class=tiny_tokenizer
        )
        metrics[chunked] = trainer.evaluate(causal_features, max_new_tokens=2)
    for key in ("eval_loss", "eval_loss_label", "eval_loss_rationale", "eval_loss_mi"):
        assert math.isclose(metrics[True][key], metrics[False][key], rel_tol=1e-5), key


def test_lora_on_attention_is_chunked_and_lora_on_the_head_falls_back(
    tmp_path, tiny_tokenizer, causal_features, caplog
):
    peft = pytest.importorskip("peft")

    def lora(modules):
        return peft.LoraConfig(
            r=4, lora_alpha=8, target_modules=modules, task_type="CAUSAL_LM", lora_dropout=0.0
        )

    for modules in (["q_proj", "v_proj"], ["q_proj", "lm_head"]):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hf_cotmi"):
            chunked = one_step(
                tmp_path / modules[-1],
                tiny_tokenizer,
                causal_features,
                build("llama", tiny_tokenizer),
                True,
                peft_config=lora(modules),
                expect_chunked=modules[-1] != "lm_head",
            )
        unchunked = one_step(
            tmp_path / modules[-1],
            tiny_tokenizer,
            causal_features,
            build("llama", tiny_tokenizer),
            False,
            peft_config=lora(modules),
        )
        assert_same_step(chunked, unchunked)
        fell_back = "cannot use it" in caplog.text
        assert fell_back == (modules[-1] == "lm_head"), caplog.text
        if fell_back:
            assert "not a plain nn.Linear" in caplog.text


def soft_capped_gemma(tokenizer):
    """A tiny Gemma 2 with final logit soft-capping (a model the chunked path cannot take)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=3.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    return Gemma2ForCausalLM(config)


def test_logit_soft_capping_falls_back_with_a_warning(tmp_path, tiny_tokenizer, causal_features, caplog):
    def gemma():
        return soft_capped_gemma(tiny_tokenizer)

    with caplog.at_level(logging.WARNING, logger="hf_cotmi"):
        chunked = one_step(tmp_path, tiny_tokenizer, causal_features, gemma(), True, expect_chunked=False)
    assert "final_logit_softcapping=3.0" in caplog.text
    assert_same_step(chunked, one_step(tmp_path, tiny_tokenizer, causal_features, gemma(), False))


def test_bf16_autocast_step_is_close_to_the_unchunked_one(tmp_path, tiny_tokenizer, causal_features):
    logs = {}
    for chunked in (False, True):
        log, grads = one_step(
            tmp_path, tiny_tokenizer, causal_features, build("llama", tiny_tokenizer), chunked, bf16=True
        )
        logs[chunked] = (log, grads)
    for key in KEYS:
        assert math.isclose(logs[True][0][key], logs[False][0][key], rel_tol=2e-2), key
    for name, grad in logs[False][1].items():
        other = logs[True][1][name]
        assert other.dtype == grad.dtype
        cosine = torch.nn.functional.cosine_similarity(other.flatten(), grad.flatten(), dim=0)
        assert cosine > 0.99, name


def test_the_chunk_size_is_checked(tmp_path):
    with pytest.raises(ValueError, match="output_projection_chunk_size must be an integer >= 1"):
        training_arguments(tmp_path, output_projection_chunk_size=0)


CAUSAL_SCRIPT = Path(__file__).parent / "scripts" / "ddp_train_causal.py"


@pytest.mark.slow
def test_two_process_ddp_with_chunking_matches_one_unchunked_process(tmp_path):
    """Untied Llama head under DDP (find_unused_parameters, the Trainer's default): same losses and norms."""
    single, multi = run_one_and_two_processes(CAUSAL_SCRIPT, tmp_path, "chunked")
    assert_same_training_logs(single, multi, (*KEYS, "grad_norm"))
    for key in ("eval_loss", "eval_loss_label", "eval_loss_rationale", "eval_loss_mi"):
        assert math.isclose(single["eval"][key], multi["eval"][key], rel_tol=1e-5), key


# ---------------------------------------------------------------- flat (single-task) batches


@pytest.fixture(scope="module")
def flat_features(seq2seq_features, causal_features):
    """Label-task-only features for DataCollatorForSeq2Seq (it pads the labels with -100)."""
    columns = ["input_ids", "attention_mask", "labels"]
    return {"t5": seq2seq_features.select_columns(columns), "llama": causal_features.select_columns(columns)}


def flat_step(tmp_path, tokenizer, features, model, chunked, monkeypatch):
    """One optimizer step (batch 4, gradient accumulation 2) on flat batches: the logged loss, the gradients
    before the optimizer, the micro-batches and how often the chunked path ran."""
    from transformers import DataCollatorForSeq2Seq

    chunked_calls = []
    chunked_sums = DSSMITrainer._chunked_sums

    def counting_chunked_sums(self, *args, **kwargs):
        chunked_calls.append(1)
        return chunked_sums(self, *args, **kwargs)

    monkeypatch.setattr(DSSMITrainer, "_chunked_sums", counting_chunked_sums)
    snapshot = GradientSnapshot()
    args = training_arguments(
        tmp_path / f"flat-chunked{chunked}",
        max_steps=1,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=0.0,
        max_grad_norm=0.0,
        chunked_output_projection=chunked,
        output_projection_chunk_size=5,
    )
    trainer = DSSMITrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        train_dataset=features,
        callbacks=[snapshot],
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
    )
    batches = []
    compute_loss = trainer.compute_loss

    def recording_compute_loss(model, inputs, *args, **kwargs):
        batches.append({k: v.clone() for k, v in inputs.items()})
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording_compute_loss
    trainer.train()
    monkeypatch.setattr(DSSMITrainer, "_chunked_sums", chunked_sums)
    return trainer.state.log_history[0]["loss"], snapshot.grads[0], batches, len(chunked_calls)


def models_own_step(model, batches):
    """The reference: the model's own loss (``model(**batch).loss``, a token mean) of each micro-batch times
    the tokens it averaged over, divided by the tokens of all micro-batches (the token mean over the step, as
    plain Seq2SeqTrainer gives it), and its gradients."""
    model.train()
    shifted = not model.config.is_encoder_decoder  # a causal LM's loss scores labels[:, 1:]
    counts = [(batch["labels"][:, 1:] if shifted else batch["labels"]).ne(-100).sum() for batch in batches]
    loss = sum(model(**batch).loss * count for batch, count in zip(batches, counts)) / sum(counts)
    loss.backward()
    return loss.item(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_a_flat_step_with_chunking_gives_the_unchunked_loss_and_gradients(
    tmp_path, tiny_tokenizer, flat_features, kind, monkeypatch
):
    features = flat_features[kind]
    chunked = flat_step(tmp_path, tiny_tokenizer, features, build(kind, tiny_tokenizer), True, monkeypatch)
    unchunked = flat_step(tmp_path, tiny_tokenizer, features, build(kind, tiny_tokenizer), False, monkeypatch)
    loss, grads, batches, chunked_calls = chunked
    assert len(batches) == 2 and all("pred" not in batch for batch in batches)
    assert all(batch["labels"].eq(-100).any() for batch in batches)  # label padding in every micro-batch
    assert chunked_calls == 2  # both micro-batches took the chunked path
    assert unchunked[3] == 0
    reference_loss, reference_grads = models_own_step(build(kind, tiny_tokenizer), batches)
    for name, value in (("unchunked", unchunked[0]), ("model's own loss", reference_loss)):
        assert math.isclose(loss, value, rel_tol=1e-5), (name, loss, value)
    model = build(kind, tiny_tokenizer)
    head = model.get_output_embeddings().weight
    head_name = next(n for n, p in model.named_parameters() if p is head)  # tied to the embeddings for T5
    assert grads[head_name].abs().sum() > 0
    for other in (unchunked[1], reference_grads):
        assert grads.keys() == other.keys() and len(grads) > 3
        for name in grads:
            torch.testing.assert_close(grads[name], other[name], atol=1e-6, rtol=1e-4, msg=name)


def flat_trainer(tmp_path, tokenizer, model, chunked, **extra):
    from transformers import DataCollatorForSeq2Seq

    args = training_arguments(tmp_path / f"flat-eval-{chunked}", chunked_output_projection=chunked, **extra)
    collator = DataCollatorForSeq2Seq(tokenizer, model=model)
    return DSSMITrainer(model=model, args=args, processing_class=tokenizer, data_collator=collator)


@pytest.mark.parametrize("kind", ["t5", "llama"])
@pytest.mark.parametrize("with_generate", [True, False])
def test_flat_evaluation_and_predictions_match_the_unchunked_trainer(
    tmp_path, tiny_tokenizer, flat_features, kind, with_generate
):
    """evaluate() and predict() on flat batches: the same loss with chunking on; predict() still returns the
    generated labels, or (predict_with_generate=False) the label logits."""
    results = {}
    for chunked in (False, True):
        trainer = flat_trainer(
            tmp_path,
            tiny_tokenizer,
            build(kind, tiny_tokenizer),
            chunked,
            predict_with_generate=with_generate,
            per_device_eval_batch_size=3,  # a short last batch
        )
        metrics = trainer.evaluate(flat_features[kind], max_new_tokens=2)
        output = trainer.predict(flat_features[kind], max_new_tokens=2)
        results[chunked] = metrics, output
    (metrics, output), (chunked_metrics, chunked_output) = results[False], results[True]
    assert math.isclose(chunked_metrics["eval_loss"], metrics["eval_loss"], rel_tol=1e-5)
    assert math.isclose(chunked_output.metrics["test_loss"], output.metrics["test_loss"], rel_tol=1e-5)
    assert math.isclose(output.metrics["test_loss"], metrics["eval_loss"], rel_tol=1e-5)
    assert len(chunked_output.predictions) == len(flat_features[kind])
    if not with_generate:
        assert chunked_output.predictions.shape[-1] == len(tiny_tokenizer)  # the label logits
    torch.testing.assert_close(
        torch.as_tensor(chunked_output.predictions), torch.as_tensor(output.predictions), atol=1e-5, rtol=1e-5
    )


def test_a_flat_batch_falls_back_with_the_same_warning(tmp_path, tiny_tokenizer, flat_features, caplog):
    features = flat_features["llama"]
    losses = {}
    for chunked in (False, True):
        trainer = flat_trainer(tmp_path, tiny_tokenizer, soft_capped_gemma(tiny_tokenizer), chunked)
        batch = trainer.data_collator([features[i] for i in range(8)])
        trainer.model.train()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hf_cotmi"):
            losses[chunked] = trainer.compute_loss(trainer.model, batch).item()
        assert ("final_logit_softcapping=3.0" in caplog.text) == chunked, caplog.text
    assert math.isclose(losses[True], losses[False], rel_tol=1e-6)
