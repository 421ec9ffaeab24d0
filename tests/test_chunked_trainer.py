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


def test_logit_soft_capping_falls_back_with_a_warning(tmp_path, tiny_tokenizer, causal_features, caplog):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    def gemma():
        torch.manual_seed(0)
        config = Gemma2Config(
            vocab_size=len(tiny_tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            final_logit_softcapping=3.0,
            pad_token_id=tiny_tokenizer.pad_token_id,
            eos_token_id=tiny_tokenizer.eos_token_id,
            bos_token_id=tiny_tokenizer.bos_token_id,
        )
        return Gemma2ForCausalLM(config)

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
