"""``DSSMITrainingArguments``: every knob of DSS + MI training, on top of ``Seq2SeqTrainingArguments``."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

from transformers import Seq2SeqTrainingArguments

from .chunked_losses import DEFAULT_CHUNK_SIZE
from .losses import DIVERGENCES, REDUCTIONS, VARIANTS
from .prefixes import EXPLAIN_PREFIX, PREDICT_PREFIX


@dataclass
class DSSMITrainingArguments(Seq2SeqTrainingArguments):
    """Training arguments for :class:`~hf_cotmi.DSSMITrainer`.

    The loss is ``label_loss_weight * label_loss + rationale_loss_weight * rationale_loss +
    mi_loss_weight * mi_loss`` (Chen et al. 2024 use 0.5, 0.5, 0.1). Special cases:

    - ``mi_loss_weight=0``: plain Distilling Step-by-Step (Hsieh et al. 2023).
    - ``rationale_loss_weight=0`` and ``mi_loss_weight=0``: standard fine-tuning on labels; the rationale
      pass is skipped.

    Everything else is ``Seq2SeqTrainingArguments``. Four defaults differ: ``remove_unused_columns=False``
    (every column reaches the collator and the callbacks; ``True`` drops the columns neither
    ``model.forward`` nor :class:`~hf_cotmi.DSSDataCollator` uses, and keeps the rationale columns),
    ``predict_with_generate=True``, ``logging_nan_inf_filter=False`` (the logged loss is the real value,
    NaN included), and ``greater_is_better``, which is ``False`` (lower is better) for a
    ``metric_for_best_model`` naming an ECE (``eval_ece``, ``eval_ood_ece``) or a loss component
    (``eval_loss_mi``, ...) as well as for one ending in ``loss``; transformers would maximise those.

    Values are checked when the arguments are built, and a ``ValueError`` names the field: negative, NaN or
    infinite loss weights or learning rate, batch sizes or ``gradient_accumulation_steps`` below 1,
    ``max_steps=0`` (or below -1), ``label_smoothing_factor`` other than 0 (the trainer's losses are its
    own), ``output_rationale`` without ``predict_with_generate``, and mixed precision that cannot take
    effect on this machine. ``fp16`` on
    the CPU (``use_cpu=True``, or no GPU or other accelerator) is refused rather than silently ignored: use
    ``bf16=True`` with ``use_cpu=True`` for bfloat16 on the CPU. ``bf16`` without ``use_cpu`` on a machine
    without a bfloat16-capable accelerator is refused too (add ``use_cpu=True``). So is a launch of several
    processes (``torchrun``: ``WORLD_SIZE`` > 1) that transformers would not join into one distributed run:
    on a machine without a GPU that needs ``use_cpu=True``, or each process would train alone. ``fsdp`` on
    the CPU is refused as well: accelerate shards only on GPU-class devices and would train with DDP instead.

    Args:
        label_loss_weight: weight of the label task (``predict:`` -> label) cross-entropy.
        rationale_loss_weight: weight of the rationale task (``explain:`` -> rationale) cross-entropy.
        mi_loss_weight: weight of the mutual-information term; 0 turns it off.
        mi_reduction: ``"max"`` (paper) or ``"mean"`` over decoder positions.
        mi_divergence: ``"ce"`` (paper) or ``"kl"``.
        mi_variant: ``"paper"`` (released behaviour) or ``"masked"`` (padding excluded, one softmax).
        predict_prefix: prefix of the label-task input.
        explain_prefix: prefix of the rationale-task input.
        output_rationale: also generate rationales in ``predict()``/``evaluate()`` and hand them back.
        rationale_max_new_tokens: longest generated rationale, in new tokens.
        stop_on_non_finite: stop training with :class:`~hf_cotmi.NonFiniteLossError` at the first step
            whose loss or gradient norm is NaN or infinite, before the optimizer applies it (see
            :class:`~hf_cotmi.StopOnNonFiniteCallback`); ``False`` trains on.
        chunked_output_projection: compute both cross-entropies and the MI term from the hidden states
            before the output projection, a chunk of positions at a time, recomputing each chunk's logits in
            the backward pass, so no ``[B, n, V]`` logits are held (see ``docs/concepts/mi-loss.md``). Models
            whose head is not a plain bias-free ``nn.Linear`` (e.g. LoRA on the head) or that transform the
            logits after it (final logit soft-capping) fall back to the unchunked path with a warning. Flat
            (single-task) batches from ``DataCollatorForSeq2Seq`` are chunked too. ``predict_with_generate=False``
            evaluation that keeps predictions (``predict()``) returns the label logits, so it is not chunked.
        output_projection_chunk_size: tokens (batch rows x positions) whose logits exist at once when
            ``chunked_output_projection`` is on; a chunk takes ``chunk_size * vocab * 4`` bytes.
        logging_nan_inf_filter: transformers' filter that logs the running average in place of a NaN/inf
            loss; default ``False`` here so the logged loss is the real one.

    Examples:
        >>> args = DSSMITrainingArguments("out", mi_loss_weight=0.1, report_to="none")
        >>> args.remove_unused_columns, args.predict_with_generate
        (False, True)
    """

    label_loss_weight: float = field(
        default=0.5,
        metadata={"help": f"Weight of the label-task cross-entropy ({PREDICT_PREFIX}<input> -> label)."},
    )
    rationale_loss_weight: float = field(
        default=0.5,
        metadata={
            "help": f"Weight of the rationale-task cross-entropy ({EXPLAIN_PREFIX}<input> -> rationale). "
            "0 together with mi_loss_weight=0 is standard fine-tuning (the rationale pass is skipped)."
        },
    )
    mi_loss_weight: float = field(
        default=0.1,
        metadata={"help": "Weight of the mutual-information loss (Chen et al. 2024). 0 is plain DSS."},
    )
    mi_reduction: str = field(
        default="max",
        metadata={"help": "How the MI loss reduces over decoder positions.", "choices": list(REDUCTIONS)},
    )
    mi_divergence: str = field(
        default="ce",
        metadata={
            "help": "ce: cross-entropy as in the paper; kl: KL divergence of the normalised distributions.",
            "choices": list(DIVERGENCES),
        },
    )
    mi_variant: str = field(
        default="paper",
        metadata={
            "help": "paper: the released behaviour (no masking, double softmax); "
            "masked: padding positions excluded and a single softmax.",
            "choices": list(VARIANTS),
        },
    )
    predict_prefix: str = field(default=PREDICT_PREFIX, metadata={"help": "Prefix of the label-task input."})
    explain_prefix: str = field(
        default=EXPLAIN_PREFIX, metadata={"help": "Prefix of the rationale-task input."}
    )
    output_rationale: bool = field(
        default=False,
        metadata={
            "help": f"Also generate rationales from the {EXPLAIN_PREFIX.strip()} input in evaluate()/predict(); "
            "predict() returns them and writes predictions.jsonl to the output directory."
        },
    )
    rationale_max_new_tokens: int = field(
        default=256,
        metadata={"help": "Longest generated rationale (new tokens) when output_rationale is set."},
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={
            "help": "Drop the dataset columns that neither the model's forward nor the DSS collator uses "
            "(the rationale columns are kept either way). Default False for DSS: text columns stay for callbacks."
        },
    )
    predict_with_generate: bool = field(
        default=True, metadata={"help": "Generate labels in evaluate()/predict() to compute metrics."}
    )
    stop_on_non_finite: bool = field(
        default=True,
        metadata={
            "help": "Stop training with an error (naming the step and the loss components) as soon as the "
            "loss or the gradient norm is NaN or infinite, before that step changes the weights."
        },
    )
    chunked_output_projection: bool = field(
        default=False,
        metadata={
            "help": "Compute the label and rationale cross-entropies and the MI term from the hidden states "
            "before the output projection, output_projection_chunk_size tokens at a time, recomputing the "
            "logits in backward: no [batch, positions, vocab] logits are held. Same loss and gradients; one "
            "more output-projection product per pass. Falls back (with a warning) for heads it cannot "
            "take apart (LoRA on the head, a bias, final logit soft-capping)."
        },
    )
    output_projection_chunk_size: int = field(
        default=DEFAULT_CHUNK_SIZE,
        metadata={
            "help": "Tokens (batch rows x positions) projected at once with chunked_output_projection; a "
            "chunk's float32 logits take chunk_size x vocab x 4 bytes (with their softmax and gradient, the "
            "temporary peak is about two to three times that)."
        },
    )
    logging_nan_inf_filter: bool = field(
        default=False,
        metadata={
            "help": "Replace NaN/inf training losses by the running average in the logs (transformers' "
            "default True hides them). Default False for DSS: the logged loss is the real value."
        },
    )

    def __post_init__(self) -> None:
        """Refuse values that would train nothing, diverge at once or be silently ignored.

        Every error is a ``ValueError`` that names the field and says what was expected.
        """
        self.check_loss_weights()
        for name, value, choices in (
            ("mi_reduction", self.mi_reduction, REDUCTIONS),
            ("mi_divergence", self.mi_divergence, DIVERGENCES),
            ("mi_variant", self.mi_variant, VARIANTS),
        ):
            if value not in choices:
                raise ValueError(f"{name}={value!r} is not supported; expected one of {', '.join(choices)}")
        for name in (
            "rationale_max_new_tokens",
            "output_projection_chunk_size",
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
        ):
            value = getattr(self, name)
            if not _is_integer(value) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not _is_integer(self.max_steps) or self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(
                f"max_steps must be a positive number of optimizer steps, or -1 to train for num_train_epochs; "
                f"got {self.max_steps!r}" + (" (0 steps would train nothing)" if self.max_steps == 0 else "")
            )
        if self.max_steps == -1 and (
            not _is_number(self.num_train_epochs)
            or not math.isfinite(self.num_train_epochs)
            or self.num_train_epochs <= 0
        ):
            raise ValueError(
                f"num_train_epochs must be a finite number > 0 when max_steps is -1; got {self.num_train_epochs!r}"
            )
        if (
            not _is_number(self.learning_rate)
            or not math.isfinite(self.learning_rate)
            or self.learning_rate < 0
        ):
            raise ValueError(
                f"learning_rate must be a finite non-negative number, got {self.learning_rate!r}"
            )
        if not _is_number(self.max_grad_norm) or math.isnan(self.max_grad_norm):
            raise ValueError(
                f"max_grad_norm must be a number (0 turns clipping off), got {self.max_grad_norm!r}"
            )
        if not _is_number(self.label_smoothing_factor) or self.label_smoothing_factor != 0:
            raise ValueError(
                f"label_smoothing_factor={self.label_smoothing_factor!r} would be ignored: DSSMITrainer computes "
                "its label, rationale and MI terms itself, without label smoothing; leave it at 0"
            )
        if self.output_rationale and not self.predict_with_generate:
            raise ValueError(
                "output_rationale=True needs predict_with_generate=True (the rationales are generated)"
            )
        _check_mixed_precision(self)
        _minimise_lower_is_better_metric(self)
        super().__post_init__()
        _check_processes_train_together(self)
        _check_fsdp_can_take_effect(self)

    def check_loss_weights(self) -> None:
        """Refuse loss weights that are negative, not finite, not numbers, or all 0.

        Run when the arguments are built and again by ``DSSMITrainer.train()``, so that a weight changed
        afterwards (``args.mi_loss_weight = -0.1``) is refused too, before any step.

        Raises:
            ValueError: naming the weight and its value, or saying that all three are 0.

        Examples:
            >>> args = DSSMITrainingArguments("out")
            >>> args.mi_loss_weight = -0.1
            >>> args.check_loss_weights()
            Traceback (most recent call last):
            ...
            ValueError: mi_loss_weight must be a finite non-negative number, got -0.1
        """
        weights = {
            "label_loss_weight": self.label_loss_weight,
            "rationale_loss_weight": self.rationale_loss_weight,
            "mi_loss_weight": self.mi_loss_weight,
        }
        for name, value in weights.items():
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
        if all(value == 0 for value in weights.values()):
            raise ValueError(
                "label_loss_weight, rationale_loss_weight and mi_loss_weight are all 0: nothing would be "
                "trained; give at least one a positive weight"
            )

    @property
    def needs_rationale_pass(self) -> bool:
        """Whether training runs the ``explain:`` pass (False for standard fine-tuning).

        Examples:
            >>> DSSMITrainingArguments("out", rationale_loss_weight=0, mi_loss_weight=0).needs_rationale_pass
            False
        """
        return self.rationale_loss_weight > 0 or self.mi_loss_weight > 0

    def loss_settings(self) -> dict[str, float | str]:
        """The loss weights and MI settings, e.g. for the model card.

        Examples:
            >>> DSSMITrainingArguments("out").loss_settings()["mi_loss_weight"]
            0.1
        """
        return {
            "label_loss_weight": self.label_loss_weight,
            "rationale_loss_weight": self.rationale_loss_weight,
            "mi_loss_weight": self.mi_loss_weight,
            "mi_reduction": self.mi_reduction,
            "mi_divergence": self.mi_divergence,
            "mi_variant": self.mi_variant,
        }


_LOWER_IS_BETTER = re.compile(r"(^|_)(ece|loss(_label|_rationale|_mi)?)$")
"""Metric names where lower is better: an ECE (``ece``, ``eval_ood_ece``) and the loss and its components."""


def _minimise_lower_is_better_metric(args: DSSMITrainingArguments) -> None:
    """Default ``greater_is_better`` to ``False`` for a ``metric_for_best_model`` that is an ECE or a loss term.

    transformers defaults it to ``True`` unless the name ends in ``"loss"``: ``eval_ece`` or ``eval_loss_mi``
    as the best-model metric would keep the worst checkpoint. A ``greater_is_better`` given is kept.
    """
    metric = args.metric_for_best_model
    if args.greater_is_better is None and isinstance(metric, str) and _LOWER_IS_BETTER.search(metric):
        args.greater_is_better = False


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _accelerator_available() -> bool:
    """Whether a device that runs float16 mixed precision is present (CUDA, XPU, NPU, MLU, HPU, MPS)."""
    from transformers.utils import import_utils

    names = ("cuda", "xpu", "npu", "mlu", "hpu", "mps")
    return any(getattr(import_utils, f"is_torch_{name}_available", lambda: False)() for name in names)


def _check_processes_train_together(args: DSSMITrainingArguments) -> None:
    """Refuse a launch of several processes (``WORLD_SIZE`` > 1) that the Trainer would not join into one run.

    On a machine without a GPU, transformers joins the processes of ``torchrun`` only with ``use_cpu=True``;
    otherwise each process trains its own copy of the model and writes the same output folder.
    """
    launched = os.environ.get("WORLD_SIZE", "1")
    if not launched.isdigit() or int(launched) <= 1 or args.world_size > 1:
        return
    raise ValueError(
        f"this process is one of {launched} (WORLD_SIZE={launched}, set by torchrun or accelerate launch), but the "
        "Trainer does not run them as one distributed run: without a GPU, transformers joins processes only "
        "with use_cpu=True, so each process would train its own copy and write the same output folder; add "
        "use_cpu=True (--use-cpu) to train on the CPU with gloo, or start a single process"
    )


def _check_fsdp_can_take_effect(args: DSSMITrainingArguments) -> None:
    """Refuse ``fsdp`` where accelerate would not shard: on the CPU (``use_cpu=True``, or no accelerator).

    accelerate (1.16) turns its FSDP plugin on only for GPU-class devices (CUDA, XPU, NPU, MLU, ...); for
    processes on the CPU (gloo) it keeps the plugin off without a word, and the Trainer trains with DDP, every
    process holding the whole model. PyTorch/XLA's FSDP (``fsdp_config["xla"]``) has its own path and is
    left alone.
    """
    if not args.fsdp or (args.fsdp_config or {}).get("xla"):
        return
    if not args.use_cpu and _accelerator_available():
        return
    where = "use_cpu=True is set" if args.use_cpu else "this machine has no GPU or other accelerator"
    raise ValueError(
        f"fsdp=True cannot take effect: {where}, and accelerate shards a model with FSDP only on a GPU (or "
        "another accelerator); on the CPU it leaves FSDP off without an error and the Trainer trains with DDP, "
        "each process holding the whole model. Drop --fsdp/--fsdp-config to train with DDP on the CPU "
        "(torchrun --nproc_per_node N ... --use-cpu), or run on GPUs"
    )


def _check_mixed_precision(args: DSSMITrainingArguments) -> None:
    """Refuse ``fp16``/``bf16`` settings that cannot take effect on this machine (instead of ignoring them)."""
    fp16 = [name for name in ("fp16", "fp16_full_eval") if getattr(args, name, False)]
    if fp16 and (args.use_cpu or not _accelerator_available()):
        where = "use_cpu=True is set" if args.use_cpu else "this machine has no GPU or other accelerator"
        raise ValueError(
            f"{fp16[0]}=True cannot take effect: float16 mixed precision needs a GPU and {where}, so training "
            "would silently run in float32; use bf16=True with use_cpu=True (--bf16 --use_cpu) for bfloat16 "
            f"on the CPU, or drop --{fp16[0]}"
        )
    bf16 = [name for name in ("bf16", "bf16_full_eval") if getattr(args, name, False)]
    if bf16 and not args.use_cpu:
        from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

        if not is_torch_bf16_gpu_available() and not is_torch_xla_available():
            raise ValueError(
                f"{bf16[0]}=True: this machine has no accelerator with bfloat16 support; add use_cpu=True "
                f"(--use_cpu) to train in bfloat16 mixed precision on the CPU, or drop --{bf16[0]}"
            )
