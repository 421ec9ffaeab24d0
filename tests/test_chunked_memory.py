"""chunked_output_projection never creates the ``[B, n, V]`` logits, not even for a moment.

``test_chunked_trainer.py`` checks what autograd keeps for the backward pass; a full logits tensor that is
created and freed within the step still sets the peak memory. Here a ``TorchDispatchMode`` sees every
tensor every ATen op produces (forward, backward, optimizer) and the check is that none is as large as
half the logits of the shortest target window of the batch, while each chunk (one position of the batch)
is far smaller. With the projection unchunked the same check must find one, so it can fail.

The vocabulary (about 4000 words) is large against the hidden size (8) and the sequence lengths, so no
weight, attention map or activation of the tiny students comes near the bound.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import training_arguments
from datasets import Dataset
from tiny_task import make_records, tokenise
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from transformers import DataCollatorForSeq2Seq

from hf_cotmi import (
    DSSDataCollator,
    DSSMITrainer,
    build_tiny_causal_lm,
    build_tiny_seq2seq,
    build_word_tokenizer,
    prepare_dss_features,
)

HIDDEN = 8
FILLER_WORDS = 4000


class ProducedTensors(TorchDispatchMode):
    """Every tensor an ATen op produces while the mode is on, as ``(elements, op, shape)``.

    ``elements`` counts the tensor's storage, not its ``numel``: a view or an ``expand`` of a small tensor
    takes no memory of its own (the chunked loss checks its options on an expanded scalar), while a view
    of a large tensor is counted like the tensor it views.

    Examples:
        >>> a, b = torch.ones(3, 4), torch.ones(4, 5)
        >>> with ProducedTensors() as produced:
        ...     _ = (a @ b).expand(2, 3, 5)  # the expanded view has 30 elements but shares 15
        >>> produced.elements
        [15, 15]
    """

    def __init__(self) -> None:
        super().__init__()
        self.produced: list[tuple[int, str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                elements = value.untyped_storage().nbytes() // max(1, value.element_size())
                self.produced.append((elements, str(func), tuple(value.shape)))
        return out

    @property
    def elements(self) -> list[int]:
        return [elements for elements, _, _ in self.produced]

    def at_least(self, bound: int) -> list[tuple[int, str, tuple[int, ...]]]:
        """The produced tensors of ``bound`` elements or more (largest first, one line per op and shape)."""
        return sorted({item for item in self.produced if item[0] >= bound}, reverse=True)

    def projected_rows(self, vocab: int) -> int:
        """Rows (tokens) that a matrix product turned into ``vocab``-wide logits."""
        return sum(
            elements // vocab
            for elements, op, shape in self.produced
            if "mm" in op and shape and shape[-1] == vocab
        )


def target_width(labels: torch.Tensor) -> int:
    """Columns from the first to the last target of the batch: the positions whose logits a pass needs."""
    columns = labels.ne(-100).any(dim=0).nonzero().flatten()
    return int(columns[-1] - columns[0]) + 1


def parts(batch: dict[str, Any]) -> list[dict[str, Any]]:
    return [batch[name] for name in ("pred", "expl") if name in batch] or [batch]


def full_logits_bound(batches: list[dict[str, Any]], vocab: int) -> int:
    """Half the elements of the smallest ``[B, n, V]`` logits any pass of ``batches`` would need."""
    return min(
        part["labels"].shape[0] * target_width(part["labels"]) * vocab // 2
        for batch in batches
        for part in parts(batch)
    )


@pytest.fixture(scope="module")
def wide_tokenizer():
    task_words = (
        " ".join(str(i) for i in range(30)) + " tom has apples and buys more . how many ? starts with + = so"
    )
    return build_word_tokenizer([task_words, " ".join(f"w{i}" for i in range(FILLER_WORDS))])


def long_label_records() -> list[dict[str, str]]:
    records = make_records(8, seed=5)
    for i, record in enumerate(records):
        record["label"] += " apples" * 5  # 7 label tokens with EOS: the bound stays far above one chunk
        record["rationale"] += " so" * (2 * i)
    return records


@pytest.fixture(scope="module")
def seq2seq_features(wide_tokenizer):
    return tokenise(long_label_records(), wide_tokenizer)


@pytest.fixture(scope="module")
def causal_features(wide_tokenizer):
    return prepare_dss_features(
        Dataset.from_list(long_label_records()), wide_tokenizer, student_type="causal"
    )


def build(kind: str, tokenizer):
    if kind == "t5":
        return build_tiny_seq2seq(tokenizer, "t5", d_model=HIDDEN, num_heads=2, d_ff=2 * HIDDEN, seed=1)
    return build_tiny_causal_lm(
        tokenizer, kind, hidden_size=HIDDEN, num_heads=2, intermediate_size=2 * HIDDEN, seed=1
    )


def features_for(kind, seq2seq_features, causal_features):
    return seq2seq_features if kind == "t5" else causal_features


def assert_only_unchunked_makes_full_logits(
    produced: ProducedTensors, bound: int, chunked: bool, chunk_size: int, vocab: int
) -> None:
    assert chunk_size * vocab * 2 <= bound  # a chunk's logits are well below the bound
    large = produced.at_least(bound)
    if chunked:
        assert large == [], f"tensors of >= {bound} elements with chunking on: {large[:5]}"
    else:
        assert large, f"the unchunked path made no tensor of >= {bound} elements: the check cannot fail"


@pytest.mark.parametrize(
    ("kind", "variant", "reduction", "divergence"),
    [
        ("t5", "paper", "max", "ce"),
        ("t5", "masked", "mean", "kl"),
        ("llama", "paper", "mean", "kl"),
        ("llama", "masked", "max", "ce"),
        ("gpt2", "paper", "max", "kl"),  # tied embeddings
        ("gpt2", "masked", "mean", "ce"),
        ("qwen2", "masked", "max", "kl"),
    ],
)
@pytest.mark.parametrize("chunked", [True, False])
def test_a_training_step_never_produces_full_logits(
    tmp_path, wide_tokenizer, seq2seq_features, causal_features, kind, variant, reduction, divergence, chunked
):
    vocab = len(wide_tokenizer)
    features = features_for(kind, seq2seq_features, causal_features)
    args = training_arguments(
        tmp_path,
        chunked_output_projection=chunked,
        output_projection_chunk_size=8,
        mi_variant=variant,
        mi_reduction=reduction,
        mi_divergence=divergence,
    )
    model = build(kind, wide_tokenizer)
    trainer = DSSMITrainer(model=model, args=args, processing_class=wide_tokenizer)
    batch = trainer.data_collator([features[i] for i in range(8)])
    model.train()
    with ProducedTensors() as produced:
        trainer.compute_loss(model, batch).backward()
    bound = full_logits_bound([batch], vocab)
    assert_only_unchunked_makes_full_logits(produced, bound, chunked, 8, vocab)
    if chunked:
        # Only the target windows reach the head (a causal student's prompt never does), once in the
        # forward pass and once more when the backward pass recomputes them.
        target_rows = sum(p["labels"].shape[0] * target_width(p["labels"]) for p in parts(batch))
        assert produced.projected_rows(vocab) == 2 * target_rows
        assert all(p.grad is not None for p in model.get_output_embeddings().parameters())


@pytest.mark.parametrize("kind", ["t5", "llama"])
@pytest.mark.parametrize("chunked", [True, False])
def test_the_evaluation_loss_never_produces_full_logits(
    tmp_path, wide_tokenizer, seq2seq_features, causal_features, kind, chunked
):
    vocab = len(wide_tokenizer)
    features = features_for(kind, seq2seq_features, causal_features)
    args = training_arguments(
        tmp_path, chunked_output_projection=chunked, output_projection_chunk_size=8, mi_variant="masked"
    )
    assert args.predict_with_generate
    model = build(kind, wide_tokenizer)
    trainer = DSSMITrainer(model=model, args=args, processing_class=wide_tokenizer)
    batch = trainer.data_collator([features[i] for i in range(8)])
    bound = full_logits_bound([batch], vocab)
    model.eval()
    for loss_only in (True, False):  # the loss alone, then the loss and the generated labels
        with ProducedTensors() as produced:
            loss, predictions, _ = trainer.prediction_step(
                model, batch, prediction_loss_only=loss_only, max_new_tokens=3
            )
        assert torch.isfinite(loss)
        assert (predictions is None) == loss_only
        assert_only_unchunked_makes_full_logits(produced, bound, chunked, 8, vocab)


def peft_config(setting: str) -> Any:
    """The PEFT config a trainer setting names, None for a full-model setting."""
    if setting not in ("lora-on-attention", "prompt-tuning"):
        return None
    peft = pytest.importorskip("peft")
    if setting == "lora-on-attention":
        return peft.LoraConfig(
            r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", lora_dropout=0.0
        )
    return peft.PromptTuningConfig(num_virtual_tokens=3, task_type="CAUSAL_LM")


def bf16_autocast_on_cpu() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    except RuntimeError:
        return False


TRAINER_SETTINGS = {
    "accumulation": dict(per_device_train_batch_size=4, gradient_accumulation_steps=2),
    "bf16": dict(per_device_train_batch_size=8, bf16=True),
    "gradient-checkpointing": dict(per_device_train_batch_size=8, gradient_checkpointing=True),
    "lora-on-attention": dict(per_device_train_batch_size=4, gradient_accumulation_steps=2),
    "prompt-tuning": dict(per_device_train_batch_size=8),
}


@pytest.mark.parametrize(
    ("kind", "setting"),
    [
        ("t5", "accumulation"),
        ("t5", "bf16"),
        ("llama", "accumulation"),
        ("llama", "bf16"),
        ("gpt2", "bf16"),
        ("llama", "gradient-checkpointing"),
        ("llama", "lora-on-attention"),
        ("llama", "prompt-tuning"),
    ],
)
@pytest.mark.parametrize("chunked", [True, False])
def test_trainer_steps_never_produce_full_logits(
    tmp_path, wide_tokenizer, seq2seq_features, causal_features, kind, setting, chunked
):
    if setting == "bf16" and not bf16_autocast_on_cpu():
        pytest.skip("no bf16 autocast on this CPU")
    vocab = len(wide_tokenizer)
    extra = TRAINER_SETTINGS[setting]
    chunk_size = extra["per_device_train_batch_size"]  # one position of the micro-batch per chunk
    args = training_arguments(
        tmp_path,
        max_steps=1,
        chunked_output_projection=chunked,
        output_projection_chunk_size=chunk_size,
        mi_variant="masked",
        mi_reduction="mean",
        **extra,
    )
    model = build(kind, wide_tokenizer)
    trainer = DSSMITrainer(
        model=model,
        args=args,
        processing_class=wide_tokenizer,
        train_dataset=features_for(kind, seq2seq_features, causal_features),
        data_collator=DSSDataCollator(wide_tokenizer, model=model),
        peft_config=peft_config(setting),
    )
    batches = []
    compute_loss = trainer.compute_loss

    def recording_compute_loss(model, inputs, *args, **kwargs):
        batches.append(inputs)
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording_compute_loss
    with ProducedTensors() as produced:
        trainer.train()
    assert len(batches) == args.gradient_accumulation_steps
    assert all(
        torch.isfinite(torch.tensor(log["loss"])) for log in trainer.state.log_history if "loss" in log
    )
    assert_only_unchunked_makes_full_logits(
        produced, full_logits_bound(batches, vocab), chunked, chunk_size, vocab
    )


@pytest.fixture(scope="module")
def flat_features(wide_tokenizer) -> dict[str, Dataset]:
    """Label-task-only features (no rationale columns) for ``DataCollatorForSeq2Seq``, labels of different
    lengths (the collator pads them with -100)."""
    records = long_label_records()
    for i, record in enumerate(records):
        record["label"] += " apples" * (i % 3)
    columns = ["input_ids", "attention_mask", "labels"]
    causal = prepare_dss_features(Dataset.from_list(records), wide_tokenizer, student_type="causal")
    return {
        "t5": tokenise(records, wide_tokenizer, with_rationale=False).select_columns(columns),
        "llama": causal.select_columns(columns),
    }


def flat_trainer(tmp_path, tokenizer, kind: str, chunked: bool, **extra: Any) -> DSSMITrainer:
    model = build(kind, tokenizer)
    args = training_arguments(
        tmp_path, chunked_output_projection=chunked, output_projection_chunk_size=8, **extra
    )
    collator = DataCollatorForSeq2Seq(tokenizer, model=model)
    return DSSMITrainer(model=model, args=args, processing_class=tokenizer, data_collator=collator)


@pytest.mark.parametrize("kind", ["t5", "llama"])
@pytest.mark.parametrize("chunked", [True, False])
def test_a_flat_training_step_never_produces_full_logits(
    tmp_path, wide_tokenizer, flat_features, kind, chunked
):
    """A flat (single-task) batch from DataCollatorForSeq2Seq takes the chunked path too."""
    vocab = len(wide_tokenizer)
    features = flat_features[kind]
    trainer = flat_trainer(tmp_path, wide_tokenizer, kind, chunked)
    batch = trainer.data_collator([features[i] for i in range(8)])
    assert "pred" not in batch and batch["labels"].eq(-100).any()
    trainer.model.train()
    with ProducedTensors() as produced:
        trainer.compute_loss(trainer.model, batch).backward()
    assert_only_unchunked_makes_full_logits(produced, full_logits_bound([batch], vocab), chunked, 8, vocab)
    if chunked:
        assert produced.projected_rows(vocab) == 2 * batch["labels"].shape[0] * target_width(batch["labels"])


@pytest.mark.parametrize("kind", ["t5", "llama"])
@pytest.mark.parametrize("chunked", [True, False])
def test_the_evaluation_loss_of_a_flat_batch_never_produces_full_logits(
    tmp_path, wide_tokenizer, flat_features, kind, chunked
):
    """The loss alone, and the loss with generated labels (predict_with_generate)."""
    vocab = len(wide_tokenizer)
    features = flat_features[kind]
    trainer = flat_trainer(tmp_path, wide_tokenizer, kind, chunked)
    assert trainer.args.predict_with_generate
    batch = trainer.data_collator([features[i] for i in range(8)])
    bound = full_logits_bound([batch], vocab)
    trainer.model.eval()
    for loss_only in (True, False):
        with ProducedTensors() as produced:
            loss, predictions, _ = trainer.prediction_step(
                trainer.model, batch, prediction_loss_only=loss_only, max_new_tokens=3
            )
        assert torch.isfinite(loss)
        assert (predictions is None) == loss_only
        assert_only_unchunked_makes_full_logits(produced, bound, chunked, 8, vocab)


@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_flat_predictions_without_generation_are_the_label_logits(
    tmp_path, wide_tokenizer, flat_features, kind
):
    """With predict_with_generate=False the predictions of a flat batch are its label logits: that one case
    computes them (the documented fallback), and its loss alone is still chunked."""
    vocab = len(wide_tokenizer)
    features = flat_features[kind]
    trainer = flat_trainer(tmp_path, wide_tokenizer, kind, True, predict_with_generate=False)
    batch = trainer.data_collator([features[i] for i in range(8)])
    bound = full_logits_bound([batch], vocab)
    trainer.model.eval()
    with ProducedTensors() as produced:
        loss, _, _ = trainer.prediction_step(trainer.model, batch, prediction_loss_only=True)
    assert_only_unchunked_makes_full_logits(produced, bound, True, 8, vocab)
    _, logits, labels = trainer.prediction_step(trainer.model, batch, prediction_loss_only=False)
    assert logits.shape == (8, target_width(batch["labels"]), vocab)
    assert labels.shape == logits.shape[:2]  # the labels the logits are scored against, position by position
    reference = trainer.model(**batch).loss
    torch.testing.assert_close(loss, reference.detach(), rtol=1e-5, atol=1e-6)
